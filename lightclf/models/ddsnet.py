"""DDSNet: the dilated depthwise-separable network of Sun, Zhang & He (2020).

A MobileNet-v1 body (Howard et al. 2017) whose stride-1 depthwise 3x3 convolutions in the
late stages are dilated, widening the receptive field at no parameter or MAC cost:

* stem: standard 3x3 conv (stride 2, or 1 with ``small_input``)
* 13 depthwise-separable blocks (dw 3x3 + BN + act, pw 1x1 + BN + act)
* global average pool, dropout, linear classifier

1 + 13 x 2 = 27 convolutions + pool + FC = 29 layers. The three compression knobs of the
paper are ``width_multiplier`` (alpha), the input resolution (chosen by the data pipeline)
and ``dilation`` (the rate used by the dilated blocks; ``dilation_schedule`` names where:
``late`` (default), ``early`` or ``all``, or gives one rate per block). ``separable=False`` swaps every dw+pw pair for a
plain 3x3 conv (the paper's ablation); ``dilation=1`` gives MobileNet v1 exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from timm.layers import get_act_layer, make_divisible
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from lightclf.errors import ConfigError
from lightclf.geometry import (
    BLOCK_SPECS,
    DEFAULT_DILATED_BLOCKS,
    DILATION_SCHEDULES,
    STEM_CHS,
    BlockSpec,
    block_strides,
    feature_sizes,
    receptive_field,
    resolve_dilation_schedule,
    schedule_name,
)
from lightclf.models.dilated_dw import DilatedDepthwiseConv2d

__all__ = [
    "DDSNet",
    "BlockSpec",
    "BLOCK_SPECS",
    "DEFAULT_DILATED_BLOCKS",
    "DILATION_SCHEDULES",
    "ConfigError",
    "resolve_dilation_schedule",
    "schedule_name",
]


class BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that normalises narrow channels_last CPU tensors in NCHW.

    PyTorch's channels_last CPU batch-norm kernels vectorise over channels; with fewer channels
    than one AVX-512 vector (16 floats) they fall far behind the NCHW kernels (measured: 8
    channels at 28x28, batch 128, forward + backward 6-8 ms vs 1.3-1.6 ms). At width 0.25 the
    stem and block 0 have 8 channels: the detour (two copies) trains the whole net ~6% faster.
    Same parameters, buffers and maths; only the summation order differs (float rounding).
    """

    NARROW_CHANNELS = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.num_features < self.NARROW_CHANNELS
            and x.device.type == "cpu"
            and x.dim() == 4
            and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)
        ):
            return super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last)
        return super().forward(x)


class ConvBnAct(nn.Sequential):
    """Conv2d (no bias) + BatchNorm + activation; padding keeps 'same' size for odd kernels."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        act_layer: type[nn.Module] = nn.ReLU,
        fast_dilated: bool = False,
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2
        if fast_dilated and dilation > 1 and kernel_size == 3 and stride == 1 and groups == in_chs == out_chs:
            conv = DilatedDepthwiseConv2d(in_chs, dilation)  # same weights and output, fast CPU backward
        else:
            conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, dilation, groups, bias=False)
        super().__init__(
            conv,
            BatchNorm2d(out_chs),
            act_layer(inplace=True),
        )


class SeparableBlock(nn.Sequential):
    """Depthwise 3x3 (optionally dilated) followed by pointwise 1x1: two layers."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int,
        dilation: int,
        act_layer: type[nn.Module],
        fast_dilated: bool = True,
    ) -> None:
        super().__init__()
        self.conv_dw = ConvBnAct(
            in_chs, in_chs, 3, stride, dilation, groups=in_chs, act_layer=act_layer, fast_dilated=fast_dilated
        )
        self.conv_pw = ConvBnAct(in_chs, out_chs, 1, act_layer=act_layer)


class PlainBlock(nn.Sequential):
    """The ablation: one standard 3x3 conv in place of the dw + pw pair."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int,
        dilation: int,
        act_layer: type[nn.Module],
        fast_dilated: bool = True,  # no effect: the fast backward is for depthwise convs only
    ) -> None:
        super().__init__()
        self.conv = ConvBnAct(in_chs, out_chs, 3, stride, dilation, act_layer=act_layer)


class DDSNet(nn.Module):
    """Dilated depthwise-separable classifier (MobileNet-v1 body with dilated depthwise convs)."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_multiplier: float = 1.0,
        dilation: int = 2,
        dilation_schedule: str | Sequence[int] | None = None,
        separable: bool = True,
        small_input: bool = False,
        drop_rate: float = 0.0,
        act_layer: str | type[nn.Module] = "relu",
        global_pool: str = "avg",
        round_chs_to: int = 8,
        fast_dilated: bool = True,
    ) -> None:
        """``fast_dilated``: train dilated depthwise convs with lightclf's fast CPU backward
        (identical outputs and gradients up to float rounding; see ``dilated_dw``)."""
        super().__init__()
        if not width_multiplier > 0:
            raise ConfigError(f"width_multiplier must be > 0, got {width_multiplier}")
        if not 0.0 <= drop_rate < 1.0:
            raise ConfigError(f"drop_rate must be in [0, 1), got {drop_rate}")
        if num_classes < 0 or in_chans < 1:
            raise ConfigError(f"num_classes must be >= 0 and in_chans >= 1, got {num_classes}, {in_chans}")
        if global_pool != "avg":
            raise ConfigError(f"global_pool must be 'avg', got {global_pool!r}")
        act = get_act_layer(act_layer) if isinstance(act_layer, str) else act_layer
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.width_multiplier = width_multiplier
        self.separable = separable
        self.small_input = small_input
        self.drop_rate = drop_rate
        self.stem_stride = 1 if small_input else 2
        self.strides = block_strides(small_input)
        self.dilations = resolve_dilation_schedule(dilation, dilation_schedule, self.strides)

        def chs(c: int) -> int:
            return make_divisible(c * width_multiplier, round_chs_to)

        stem_chs = chs(STEM_CHS)
        self.conv_stem = ConvBnAct(in_chans, stem_chs, 3, self.stem_stride, act_layer=act)
        block_cls = SeparableBlock if separable else PlainBlock
        blocks, in_chs = [], stem_chs
        for spec, stride, dil in zip(BLOCK_SPECS, self.strides, self.dilations):
            blocks.append(block_cls(in_chs, chs(spec.out_chs), stride, dil, act, fast_dilated=fast_dilated))
            in_chs = chs(spec.out_chs)
        self.blocks = nn.Sequential(*blocks)
        self.num_features = self.head_hidden_size = in_chs
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(in_chs, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He init over fan-out per group (as timm's EfficientNet family): torch's
                # kaiming_normal_ ignores groups, shrinking depthwise weights by sqrt(C) and
                # driving untrained activations into (slow) denormals.
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def total_stride(self) -> int:
        stride = self.stem_stride
        for s in self.strides:
            stride *= s
        return stride

    def feature_sizes(self, img_size: int) -> list[int]:
        """Spatial size entering each block (after the stem and earlier blocks) for a square input."""
        return feature_sizes(img_size, self.stem_stride, self.strides)

    def check_input_size(self, img_size: int) -> None:
        """Raise ConfigError if ``img_size`` leaves a dilated conv with no tap inside its input."""
        if img_size < 1:
            raise ConfigError(f"resolution must be >= 1, got {img_size}")
        sizes = self.feature_sizes(img_size)
        for i, (dil, size) in enumerate(zip(self.dilations, sizes)):
            # With padding = dilation, every off-centre tap falls in the zero padding once
            # dilation >= size: the "dilated" conv degenerates to a 1x1 conv.
            if dil > 1 and dil >= size:
                raise ConfigError(
                    f"dilation {dil} at block {i} sees only its centre tap on a {size}x{size} map at resolution "
                    f"{img_size}: lower the dilation, raise the resolution or set small_input=True"
                )

    @property
    def dilation_schedule(self) -> str | None:
        """The named schedule of this net's rates (``none``, ``late``, ``early``, ``all``), or None."""
        return schedule_name(self.dilations, self.strides)

    def receptive_field(self) -> int:
        """Theoretical receptive field (pixels) of one output unit of the last conv."""
        return receptive_field(self.stem_stride, self.strides, self.dilations, self.separable)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.conv_stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.flatten(self.global_pool(x)))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create_ddsnet(variant: str, pretrained: bool = False, **kwargs) -> DDSNet:
    if pretrained:
        raise ConfigError(f"{variant} has no pretrained weights; train it with `lightclf fit`")
    return build_model_with_cfg(DDSNet, variant, pretrained=False, feature_cfg=dict(flatten_sequential=True), **kwargs)


def _cfg(**kwargs) -> dict:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "first_conv": "conv_stem.0",
        "classifier": "classifier",
        "license": "mit",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "ddsnet.untrained": _cfg(),
        "ddsnet_nodilation.untrained": _cfg(),
        "ddsnet_plainconv.untrained": _cfg(),
        "ddsnet_plainconv_nodilation.untrained": _cfg(),
    }
)


@register_model
def ddsnet(pretrained: bool = False, **kwargs) -> DDSNet:
    """Proposed net: separable, depthwise convs of the late stride-1 blocks dilated (rate 2)."""
    return _create_ddsnet("ddsnet", pretrained, **{"dilation": 2, "separable": True, **kwargs})


@register_model
def ddsnet_nodilation(pretrained: bool = False, **kwargs) -> DDSNet:
    """Ablation: separable, undilated (= MobileNet v1)."""
    return _create_ddsnet("ddsnet_nodilation", pretrained, **{"dilation": 1, "separable": True, **kwargs})


@register_model
def ddsnet_plainconv(pretrained: bool = False, **kwargs) -> DDSNet:
    """Ablation: plain 3x3 convs (not separable), dilated like the proposed net."""
    return _create_ddsnet("ddsnet_plainconv", pretrained, **{"dilation": 2, "separable": False, **kwargs})


@register_model
def ddsnet_plainconv_nodilation(pretrained: bool = False, **kwargs) -> DDSNet:
    """Ablation: plain 3x3 convs, undilated."""
    return _create_ddsnet("ddsnet_plainconv_nodilation", pretrained, **{"dilation": 1, "separable": False, **kwargs})
