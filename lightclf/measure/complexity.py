"""Cost figures every run carries: parameters, forward MACs, size on disk, receptive field.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2) on one image in eval
mode, forward only (its backward count is wrong for depthwise convs). ``ddsnet_macs`` is an
independent analytic count for our own network that the tests hold the counter to.
"""

from __future__ import annotations

import copy
import io
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lightclf.models.ddsnet import DDSNet

__all__ = ["Complexity", "measure_complexity", "count_macs", "ddsnet_macs", "inference_copy", "state_dict_bytes"]


@dataclass(frozen=True)
class Complexity:
    """A network's static cost: parameters, forward MACs, size on disk and receptive field."""

    params: int  # parameters of the deployed (inference) network
    trainable_params: int
    train_params: int  # incl. training-only parts (GoogLeNet's auxiliary heads)
    macs: int  # forward multiply-adds for one image at ``resolution``
    size_mb: float  # fp32 state_dict on disk, 1 MB = 1e6 bytes
    receptive_field: int | None  # theoretical, pixels; None where not derived (baselines)
    resolution: int

    def as_dict(self) -> dict:
        return asdict(self)


def inference_copy(model: nn.Module) -> nn.Module:
    """A CPU eval-mode copy without training-only heads (GoogLeNet's aux classifiers)."""
    model = copy.deepcopy(model).cpu().eval()
    if getattr(model, "aux_logits", False) and hasattr(model, "aux1"):
        model.aux_logits = False
        model.aux1 = model.aux2 = None
    return model


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Parameters of ``model`` (only those that train with ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of the fp32 ``state_dict`` as ``torch.save`` writes it."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


@torch.no_grad()
def count_macs(model: nn.Module, resolution: int, in_chans: int = 3, count_norm: bool = False) -> int:
    """Forward MACs of one ``in_chans x resolution x resolution`` image, eval mode.

    Convolutions and linear layers only, as the MobileNet papers count (569M for v1, 300M
    for v2 at 224). ``count_norm`` adds one MAC per BatchNorm input element, the fvcore
    convention behind timm's published GMACs (0.58 / 0.31), so the two can be compared.
    """
    was_training = model.training
    model.eval()
    norm_elements = 0

    def count_norm_input(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal norm_elements
        norm_elements += inputs[0].numel()

    hooks = []
    if count_norm:
        hooks = [
            m.register_forward_hook(count_norm_input)
            for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]
    try:
        x = torch.zeros(1, in_chans, resolution, resolution, device=next(model.parameters()).device)
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return counter.get_total_flops() // 2 + norm_elements


def ddsnet_macs(model: DDSNet, resolution: int) -> int:
    """Analytic forward MACs of a DDSNet (convs + classifier; BN/act/pool are not MACs)."""
    sizes = model.feature_sizes(resolution)
    stem = model.conv_stem[0]
    macs = 9 * stem.in_channels * stem.out_channels * sizes[0] ** 2
    for block, size_out in zip(model.blocks, sizes[1:]):
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
        for conv in convs:
            k = conv.kernel_size[0] * conv.kernel_size[1]
            macs += k * conv.in_channels // conv.groups * conv.out_channels * size_out**2
    if isinstance(model.classifier, nn.Linear):
        macs += model.classifier.in_features * model.classifier.out_features
    return macs


def receptive_field(model: nn.Module) -> int | None:
    """Theoretical receptive field (px) of a DDSNet-family network, else None."""
    return model.receptive_field() if isinstance(model, DDSNet) else None


def measure_complexity(model: nn.Module, resolution: int, in_chans: int = 3) -> Complexity:
    """All static cost figures of ``model`` at ``resolution`` (the model itself is not changed)."""
    deployed = inference_copy(model)
    return Complexity(
        params=count_params(deployed),
        trainable_params=count_params(deployed, trainable_only=True),
        train_params=count_params(model),
        macs=count_macs(deployed, resolution, in_chans),
        size_mb=round(state_dict_bytes(deployed) / 1e6, 3),
        receptive_field=receptive_field(deployed),
        resolution=resolution,
    )
