"""DDSNet's geometry, torch-free: the blocks, their strides, map sizes, dilation schedules and
receptive fields. The network (``lightclf.models.ddsnet``) is built from it, and the report reads it
without loading torch (per-block map sizes, receptive fields and how many dilated taps land inside
the map, for each schedule). ``mass_radius`` and ``mass_area`` size a measured effective receptive
field (``lightclf.measure.receptive_field``): how far its mass reaches and how evenly it covers the image.

It sits beside ``lightclf.models``, not in it, on purpose: importing anything under
``lightclf.models`` runs that package's ``__init__``, which registers the DDSNet family in timm
(the documented ``import lightclf.models`` contract) and so loads torch and timm, which ``report``
and ``study --dry-run`` never load (tests/test_layout.py holds them to that).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lightclf.errors import ConfigError

__all__ = [
    "BlockSpec",
    "BLOCK_SPECS",
    "STEM_CHS",
    "DEFAULT_DILATED_BLOCKS",
    "SMALL_INPUT_UNSTRIDED_BLOCKS",
    "EARLY_BLOCKS",
    "DILATION_SCHEDULES",
    "resolve_dilation_schedule",
    "schedule_name",
    "block_strides",
    "feature_sizes",
    "receptive_field",
    "taps_inside",
    "BlockGeometry",
    "block_geometry",
    "mass_radius",
    "mass_area",
]


@dataclass(frozen=True)
class BlockSpec:
    """One depthwise-separable block of the DDSNet body: output channels (before the width multiplier) and stride."""

    out_chs: int
    stride: int


# MobileNet v1 body, channels before the width multiplier.
BLOCK_SPECS: tuple[BlockSpec, ...] = (
    BlockSpec(64, 1),
    BlockSpec(128, 2),
    BlockSpec(128, 1),
    BlockSpec(256, 2),
    BlockSpec(256, 1),
    BlockSpec(512, 2),
    *(BlockSpec(512, 1) for _ in range(5)),
    BlockSpec(1024, 2),
    BlockSpec(1024, 1),
)
STEM_CHS = 32
# Stride-1 blocks of the last stages (the 512 x5 stack and the final 1024 block): their
# feature maps are coarse, so a wider receptive field there is what dilation buys.
DEFAULT_DILATED_BLOCKS: tuple[int, ...] = (6, 7, 8, 9, 10, 12)
# Blocks whose stride ``small_input`` drops to 1 (besides the stem): keeps the last stage
# at 4x4 for 32 px inputs so a dilated 3x3 still sees more than its centre tap.
SMALL_INPUT_UNSTRIDED_BLOCKS: tuple[int, ...] = (1,)


# Named dilation schedules: which stride-1 depthwise convs take the rate ``dilation``.
#   late:  the 512 x5 stack and the final 1024 block (DEFAULT_DILATED_BLOCKS): coarse maps (7x7 and
#          4x4 at 28 px with the small-input stem), the paper's reading and the default.
#   early: the stride-1 blocks of the first three stages (64, 128, 256 channels; blocks 0-4): the
#          high-resolution maps (28x28 and 14x14 at 28 px with the small-input stem), where a wider
#          view can change what a unit sees (Dilated-MobileNet's choice).
#   all:   every stride-1 block.
#   none:  no block (= dilation 1).
DILATION_SCHEDULES: tuple[str, ...] = ("late", "early", "all", "none")
EARLY_BLOCKS: tuple[int, ...] = (0, 1, 2, 3, 4)


def resolve_dilation_schedule(
    dilation: int,
    dilation_schedule: str | Sequence[int] | None,
    strides: Sequence[int] | None = None,
    num_blocks: int = len(BLOCK_SPECS),
) -> tuple[int, ...]:
    """One dilation rate per block: an explicit list, or ``dilation`` on the blocks a named schedule
    picks (``late`` by default; ``early`` and ``all`` take only the stride-1 blocks of ``strides``)."""
    strides = tuple(strides) if strides is not None else tuple(spec.stride for spec in BLOCK_SPECS)
    if dilation_schedule is None or isinstance(dilation_schedule, str):
        name = dilation_schedule or "late"
        if name not in DILATION_SCHEDULES:
            raise ConfigError(
                f"dilation_schedule must be one of {DILATION_SCHEDULES} or one rate per block, got {name!r}"
            )
        if dilation < 1:
            raise ConfigError(f"dilation must be >= 1 (1 = undilated), got {dilation}")
        chosen = {
            "late": set(DEFAULT_DILATED_BLOCKS),
            "early": {i for i in EARLY_BLOCKS if strides[i] == 1},
            "all": {i for i in range(num_blocks) if strides[i] == 1},
            "none": set(),
        }[name]
        return tuple(dilation if i in chosen else 1 for i in range(num_blocks))
    schedule = tuple(int(d) for d in dilation_schedule)
    if len(schedule) != num_blocks:
        raise ConfigError(f"dilation_schedule needs {num_blocks} rates (one per block), got {len(schedule)}")
    if any(d < 1 for d in schedule):
        raise ConfigError(f"dilation_schedule must be >= 1 (1 = undilated), got {list(dilation_schedule)}")
    return schedule


def schedule_name(dilations: Sequence[int], strides: Sequence[int]) -> str | None:
    """The named schedule a per-block list of rates is (``none`` when undilated), else None."""
    rate = max(dilations)
    if rate == 1:
        return "none"
    for name in DILATION_SCHEDULES[:-1]:
        if tuple(dilations) == resolve_dilation_schedule(rate, name, strides, len(dilations)):
            return name
    return None


def block_strides(small_input: bool) -> tuple[int, ...]:
    """Each block's stride (``small_input`` drops the first downsampling block's to 1)."""
    return tuple(
        1 if small_input and i in SMALL_INPUT_UNSTRIDED_BLOCKS else spec.stride for i, spec in enumerate(BLOCK_SPECS)
    )


def feature_sizes(img_size: int, stem_stride: int, strides: Sequence[int]) -> list[int]:
    """Spatial size entering each block (after the stem and earlier blocks), then the final map."""
    size = (img_size - 1) // stem_stride + 1
    sizes = []
    for stride in strides:
        sizes.append(size)
        size = (size - 1) // stride + 1
    sizes.append(size)
    return sizes


def receptive_field(stem_stride: int, strides: Sequence[int], dilations: Sequence[int], separable: bool = True,
                    upto: int | None = None) -> int:  # fmt: skip
    """Theoretical receptive field (pixels) of one unit after block ``upto`` (default: the last)."""
    rf, jump = 1, 1
    layers = [(3, stem_stride, 1)]
    count = len(strides) if upto is None else upto + 1
    for stride, dil in list(zip(strides, dilations))[:count]:
        layers.append((3, stride, dil))
        if separable:
            layers.append((1, 1, 1))
    for kernel, stride, dil in layers:
        rf += (kernel - 1) * dil * jump
        jump *= stride
    return rf


def taps_inside(size: int, dilation: int) -> float:
    """Share of a 3x3 conv's taps (rate ``dilation``, stride 1, padding = rate) that read the map
    rather than its zero padding, over every output position of a ``size`` x ``size`` map."""
    per_axis = (size + 2 * max(0, size - dilation)) / (3 * size)
    return per_axis * per_axis


@dataclass(frozen=True)
class BlockGeometry:
    """One block at one input size: map size, stride, dilation rate, receptive field after it and the share of taps on the map."""

    block: int
    channels: int  # before the width multiplier
    stride: int
    map_size: int  # entering the block
    dilation: int
    receptive_field: int  # after this block
    taps_inside: float | None  # share of its depthwise 3x3 conv's taps on the map (stride-1 blocks)


def block_geometry(
    resolution: int, small_input: bool, schedule: str | Sequence[int] | None, dilation: int = 2
) -> list[BlockGeometry]:
    """Per block: stride, map size, dilation, receptive field so far and the share of in-map taps."""
    strides = block_strides(small_input)
    stem_stride = 1 if small_input else 2
    dilations = resolve_dilation_schedule(dilation, schedule, strides)
    sizes = feature_sizes(resolution, stem_stride, strides)
    return [
        BlockGeometry(
            block=i,
            channels=spec.out_chs,
            stride=strides[i],
            map_size=sizes[i],
            dilation=dilations[i],
            receptive_field=receptive_field(stem_stride, strides, dilations, upto=i),
            taps_inside=round(taps_inside(sizes[i], dilations[i]), 4) if strides[i] == 1 else None,
        )
        for i, spec in enumerate(BLOCK_SPECS)
    ]


def _mass(heatmap) -> np.ndarray:
    mass = np.clip(np.asarray(heatmap, dtype=np.float64), 0.0, None)  # |gradient| maps: no negatives
    if mass.sum() <= 0:
        raise ValueError("the gradient map is zero: the probed unit does not depend on the input")
    return mass / mass.sum()


def _first_reaching(cumulative: np.ndarray, fraction: float) -> int:
    """Index of the first cumulative share >= ``fraction``; a share short of it by float rounding
    alone (0.49999999999999645 for half an even map) counts as reaching it."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"a mass fraction is in (0, 1], got {fraction}")
    return min(int(np.searchsorted(cumulative, fraction - 1e-9)), len(cumulative) - 1)


def mass_radius(heatmap, fractions: tuple[float, ...] = (0.5, 0.95)) -> tuple[tuple[float, ...], tuple[float, float]]:
    """Radii of the smallest discs around ``heatmap``'s centre of mass (an H x W array, negative
    values read as 0) holding each fraction of its mass, and that centre (row, column)."""
    mass = _mass(heatmap)
    rows, cols = np.indices(mass.shape, dtype=np.float64)
    cy, cx = float((mass * rows).sum()), float((mass * cols).sum())
    distance = np.hypot(rows - cy, cols - cx).ravel()
    order = distance.argsort()
    cumulative = np.cumsum(mass.ravel()[order])
    radii = tuple(float(distance[order][_first_reaching(cumulative, f)]) for f in fractions)
    return radii, (cy, cx)


def mass_area(heatmap, fractions: tuple[float, ...] = (0.5, 0.95)) -> tuple[float, ...]:
    """Share of the map's pixels, heaviest first, that holds each fraction of its mass: an even map
    gives the fractions themselves, a point ~0. Unlike radii it does not depend on the shape of
    the spread (a ring, the corners), only on how evenly the image is used."""
    mass = np.sort(_mass(heatmap).ravel())[::-1]
    cumulative = np.cumsum(mass)
    return tuple((_first_reaching(cumulative, f) + 1) / mass.size for f in fractions)
