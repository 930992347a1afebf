"""Effective receptive fields: the mass radii, and the measurement on nets whose field is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lightclf.geometry import mass_radius
from lightclf.measure.receptive_field import effective_receptive_field


def test_mass_radius_of_a_point_an_even_map_and_an_empty_one():
    point = np.zeros((9, 11))
    point[2, 7] = 5.0
    assert mass_radius(point) == ((0.0, 0.0), (2.0, 7.0))
    # An even 28x28 map: the 50% disc holds half the pixels, so pi r^2 ~ 392 px (r ~ 11.2).
    (r50, r95), centre = mass_radius(np.ones((28, 28)))
    assert centre == (13.5, 13.5)
    assert r50 == pytest.approx(math.sqrt(0.5 * 28 * 28 / math.pi), abs=0.3)
    assert r50 < r95 < 28 / math.sqrt(2)
    with pytest.raises(ValueError, match="zero"):
        mass_radius(np.zeros((4, 4)))


class _OneConv(nn.Module):
    """A 3x3 all-ones convolution: its centre unit reads a 3x3 patch (spaced by the dilation) evenly."""

    def __init__(self, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=dilation, dilation=dilation, bias=False)
        nn.init.ones_(self.conv.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.parametrize("dilation", [1, 2])
def test_erf_of_a_known_convolution(dilation):
    net = _OneConv(dilation).train()
    field = effective_receptive_field(net, torch.randn(5, 1, 9, 9), batch_size=2)
    # Nine taps of equal weight: the centre and its 4 edge neighbours hold 5/9 >= 50%, the corners
    # (sqrt 2 taps away) the rest; a dilation of 2 doubles both radii at the same 9 weights.
    assert (field.r50, field.r95) == pytest.approx((dilation, dilation * math.sqrt(2)), abs=1e-3)
    assert field.unit == (4, 4) and field.feature_map == (9, 9) and field.images == 5
    heat = np.asarray(field.heatmap)
    assert heat.sum() == pytest.approx(1.0, abs=1e-5) and (heat > 0).sum() == 9
    assert net.training  # the mode it came in with is restored
