"""How far a trained net actually looks: the effective receptive field (Luo et al. 2016).

The theoretical receptive field (``DDSNet.receptive_field``) says which input pixels *can* reach
a unit; the effective one says how much each does. For each image, the gradient of the centre
unit of the last feature map (summed over channels) with respect to the input; its absolute
value, summed over input channels and averaged over images, is the heat map. Its radii are those
of the smallest discs around the map's centre of mass that hold 50% and 95% of the gradient mass.

``lightclf erf --ckpt CKPT`` computes it for any checkpoint; every fit records it at its end
(``erf.json`` in the run folder, ``erf/r50`` and ``erf/r95`` in the W&B summary).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from lightclf.errors import ConfigError
from lightclf.geometry import mass_area, mass_radius

__all__ = ["ReceptiveField", "BlockField", "effective_receptive_field", "receptive_field_per_block"]


@dataclass(frozen=True)
class ReceptiveField:
    """An effective receptive field: radii (px) holding 50% / 95% of the gradient mass, the centre of
    mass (row, col), the number of images averaged, the feature-map unit probed and the heat map
    (input-sized, normalised to sum 1)."""

    r50: float
    r95: float
    centre: tuple[float, float]
    images: int
    unit: tuple[int, int]
    feature_map: tuple[int, int]
    heatmap: list[list[float]]

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def summary(self) -> dict[str, float]:
        return {"erf/r50": self.r50, "erf/r95": self.r95}


def effective_receptive_field(network: nn.Module, images: torch.Tensor, batch_size: int = 64) -> ReceptiveField:
    """The effective receptive field of ``network`` (which has timm's ``forward_features``) on
    ``images`` (normalised N,C,H,W, on the network's device), in eval mode so that BatchNorm's
    running statistics keep images independent."""
    if not hasattr(network, "forward_features"):
        raise ConfigError(f"{type(network).__name__} has no forward_features: its last feature map cannot be probed")
    was_training = network.training
    network.eval()
    unit = feature_map = None
    try:
        # Callers may be inside inference mode (Lightning's test hooks): leave it for the backward.
        with torch.inference_mode(False), torch.enable_grad():
            total = torch.zeros(images.shape[-2:], dtype=torch.float64)
            for start in range(0, len(images), batch_size):
                x = images[start : start + batch_size].clone().requires_grad_(True)  # a normal tensor
                features = network.forward_features(x)
                if features.dim() != 4:
                    raise ConfigError(f"{type(network).__name__}.forward_features returns no spatial map")
                fh, fw = features.shape[-2:]
                unit, feature_map = (fh // 2, fw // 2), (fh, fw)
                # Images are independent in eval mode: the gradient of the sum is each image's own.
                features[:, :, unit[0], unit[1]].sum().backward()
                total += x.grad.abs().sum(dim=(0, 1)).double().cpu()
    finally:
        network.train(was_training)
    (r50, r95), centre = mass_radius(total.numpy())
    heatmap = total / total.sum()
    return ReceptiveField(
        r50=round(r50, 3),
        r95=round(r95, 3),
        centre=(round(centre[0], 3), round(centre[1], 3)),
        images=len(images),
        unit=unit,
        feature_map=feature_map,
        heatmap=[[round(float(v), 7) for v in row] for row in heatmap],
    )


@dataclass(frozen=True)
class BlockField:
    """The effective receptive field at the output of one block: its radii, the share of the image
    (heaviest pixels first) holding 50% / 95% of the gradient, and the map it was probed on."""

    block: int
    r50: float
    r95: float
    share50: float
    share95: float
    feature_map: tuple[int, int]


class _BlockReached(Exception):
    """Raised by a block's forward hook: the blocks after it need not run for this probe."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.output = output


def _stop_here(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
    raise _BlockReached(output)


class _UpToBlock(nn.Module):
    """A network seen up to one block: its ``forward_features`` runs the network until that block
    (whose hook raises :class:`_BlockReached`) and returns the block's output, so that probing the
    early blocks does not pay for the late ones (half the probes' forward work, 13 blocks)."""

    def __init__(self, network: nn.Module, block: nn.Module) -> None:
        super().__init__()
        self.network, self.block = network, block

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        handle = self.block.register_forward_hook(_stop_here)
        try:
            self.network.forward_features(x)
        except _BlockReached as reached:
            return reached.output
        finally:
            handle.remove()
        raise ConfigError(f"{type(self.network).__name__}.forward_features never ran block {self.block!r}")


def receptive_field_per_block(network: nn.Module, images: torch.Tensor, batch_size: int = 64) -> list[BlockField]:
    """The effective receptive field at the output of each of ``network.blocks`` (timm's convention),
    the centre unit of each block's map probed as :func:`effective_receptive_field` probes the last
    one. At the last layer of a small-image net every arm may already cover most of the image; the
    early blocks are where dilation can change what a unit sees."""
    blocks = getattr(network, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or not hasattr(network, "forward_features"):
        raise ConfigError(f"{type(network).__name__} has no blocks to probe one by one")
    out = []
    for index, block in enumerate(blocks):
        field = effective_receptive_field(_UpToBlock(network, block), images, batch_size)
        share50, share95 = mass_area(field.heatmap)
        out.append(BlockField(index, field.r50, field.r95, round(share50, 4), round(share95, 4), field.feature_map))
    return out
