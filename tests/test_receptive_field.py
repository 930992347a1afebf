"""Effective receptive fields: the mass radii and image share, and the measurement on nets whose
field is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lightclf.geometry import mass_area, mass_radius
from lightclf.measure.receptive_field import effective_receptive_field


def test_mass_radius_of_a_point_an_even_map_and_an_empty_one():
    point = np.zeros((9, 11))
    point[2, 7] = 5.0
    point[0, 0] = -3.0  # negative values read as 0
    assert mass_radius(point) == ((0.0, 0.0), (2.0, 7.0))
    # An even 28x28 map: r50 is the smallest disc around the centre holding half of the 784 pixels
    # (float rounding leaves the running share at 0.49999999999999645 there: it must still count).
    (r50, r95), centre = mass_radius(np.ones((28, 28)))
    assert centre == pytest.approx((13.5, 13.5))
    rows, cols = np.indices((28, 28))
    distance = np.hypot(rows - 13.5, cols - 13.5)
    assert (distance <= r50 + 1e-9).sum() >= 392 > (distance < r50 - 1e-9).sum()
    assert (distance <= r95 + 1e-9).sum() >= 0.95 * 784 > (distance < r95 - 1e-9).sum()
    assert mass_radius(np.ones((28, 28)), fractions=(1.0,))[0] == (math.hypot(13.5, 13.5),)
    with pytest.raises(ValueError, match="zero"):
        mass_radius(np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        mass_radius(np.ones((4, 4)), fractions=(95,))


def test_mass_area_tells_an_even_spread_from_a_concentrated_one():
    assert mass_area(np.ones((28, 28))) == (0.5, 745 / 784)  # ceil(0.95 * 784) = 745 px
    ring = np.zeros((28, 28))
    ring[0, :] = ring[-1, :] = ring[:, 0] = ring[:, -1] = 1.0  # far from the centre, but 108 px only
    assert mass_area(ring) == (54 / 784, 103 / 784)
    assert mass_radius(ring)[0][0] > mass_radius(np.ones((28, 28)))[0][0]  # radii alone would call it the wider
    peak = np.full((10, 10), 1e-3)
    peak[5, 5] = 1.0
    assert mass_area(peak)[0] == 0.01  # one pixel of 100 holds half


class _OneConv(nn.Module):
    """A 3x3 all-ones convolution (then BatchNorm): its centre unit reads a 3x3 patch, spaced by the
    dilation, evenly; in eval mode BatchNorm does not mix pixels of the batch."""

    def __init__(self, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=dilation, dilation=dilation, bias=False)
        self.norm = nn.BatchNorm2d(1)
        nn.init.ones_(self.conv.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


@pytest.mark.parametrize("dilation", [1, 2])
def test_erf_of_a_known_convolution(dilation):
    net = _OneConv(dilation).train()
    field = effective_receptive_field(net, torch.randn(5, 1, 9, 9), batch_size=2)
    # Nine taps of equal weight: the centre and its 4 edge neighbours hold 5/9 >= 50%, the corners
    # (sqrt 2 taps away) the rest; a dilation of 2 doubles both radii at the same 9 weights.
    assert (field.r50, field.r95) == pytest.approx((dilation, dilation * math.sqrt(2)), abs=1e-3)
    assert field.unit == (4, 4) and field.feature_map == (9, 9) and field.images == 5
    heat = np.asarray(field.heatmap)
    assert heat.sum() == pytest.approx(1.0, abs=1e-5) and (heat > 0).sum() == 9  # batch statistics would spread it
    assert net.training  # the mode it came in with is restored


class _ThreeConvs(nn.Module):
    """Three 3x3 all-ones convs as timm-style ``blocks``: the field grows by a tap each block."""

    def __init__(self) -> None:
        super().__init__()
        convs = [nn.Conv2d(1, 1, 3, padding=1, bias=False) for _ in range(3)]
        for conv in convs:
            nn.init.ones_(conv.weight)
        self.blocks = nn.Sequential(*convs)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def test_erf_per_block_grows_block_by_block_and_matches_the_last_layer():
    from lightclf.measure.receptive_field import receptive_field_per_block

    net = _ThreeConvs()
    images = torch.randn(4, 1, 15, 15)
    fields = receptive_field_per_block(net, images, batch_size=2)
    assert [f.block for f in fields] == [0, 1, 2] and all(f.feature_map == (15, 15) for f in fields)
    assert fields[0].r50 == pytest.approx(1.0, abs=1e-3)  # one 3x3 conv: as the single-conv test
    assert fields[0].r50 < fields[1].r50 < fields[2].r50 and fields[0].share50 < fields[2].share50
    last = effective_receptive_field(net, images, batch_size=2)
    assert (fields[-1].r50, fields[-1].r95) == (last.r50, last.r95)
