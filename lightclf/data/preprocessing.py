"""How an image becomes the tensor a network sees: defined once, used by fit, test, predict and export.

Each data module declares its :class:`Preprocessing` (resolution, mean/std, channels, eval crop);
the in-memory sets resize their stacks with :meth:`Preprocessing.resize` at setup and normalise
batches with :meth:`Preprocessing.normalize`; ImageFolder's eval transform and ``lightclf
predict`` / ``export`` call :meth:`Preprocessing.__call__` on a PIL image, which runs the same
two functions. The checkpoint stores it (:meth:`as_dict`), so a deployed model preprocesses a
photo exactly as its test set was preprocessed.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["Preprocessing", "resize_uint8"]


def resize_uint8(images: torch.Tensor, size: int | tuple[int, int], chunk: int = 4096) -> torch.Tensor:
    """Resize an N,C,H,W uint8 stack (antialiased bilinear, rounded), chunked to bound memory."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == size:
        return images.contiguous()
    out = []
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk].float()
        part = F.interpolate(part, size=size, mode="bilinear", antialias=True, align_corners=False)
        out.append(part.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


@dataclass(frozen=True)
class Preprocessing:
    """Decode, resize, crop, normalise and repeat channels, in that order.

    Args:
        resolution: the square side the network sees.
        mean / std: per native channel, on [0, 1] pixel values.
        channels: channels the network takes (grey is repeated to 3 after normalising).
        native_channels: 1 decodes images as grey, 3 as RGB.
        crop_fraction: eval crop; the shorter side is resized to ``resolution / crop_fraction``
            and the centre ``resolution`` square kept (1.0: resize to the square, no margin).
    """

    resolution: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int = 3
    native_channels: int = 3
    crop_fraction: float = 1.0

    # -- the two steps every path shares ---------------------------------------------------------
    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N,C,H,W (square) -> uint8 N,C,res,res; the in-memory sets' one resize at setup."""
        return resize_uint8(images, self.resolution)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N,)C,H,W -> float, normalised, grey repeated to the network's channels."""
        batched = images.dim() == 4
        x = images if batched else images.unsqueeze(0)
        mean, std = _stats(self.mean, self.std, x.device)
        x = x.float().div_(255).sub_(mean).div_(std)
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1).contiguous()
        return x if batched else x[0]

    # -- one PIL image (predict, export, ImageFolder's eval split) -------------------------------
    def decode(self, image) -> torch.Tensor:
        """PIL image -> uint8 C,res,res: shorter side to ``resolution / crop_fraction``, centre crop."""
        image = image.convert("L" if self.native_channels == 1 else "RGB")
        x = torch.from_numpy(_pil_array(image))
        x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)
        h, w = x.shape[-2:]
        side = max(self.resolution, round(self.resolution / self.crop_fraction))
        scale = side / min(h, w)
        x = resize_uint8(x[None], (max(side, round(h * scale)), max(side, round(w * scale))))[0]
        top, left = (x.shape[-2] - self.resolution) // 2, (x.shape[-1] - self.resolution) // 2
        return x[:, top : top + self.resolution, left : left + self.resolution].contiguous()

    def __call__(self, image) -> torch.Tensor:
        """PIL image -> the float C,H,W tensor the network sees."""
        return self.normalize(self.decode(image))

    # -- stored in checkpoints -------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        data = dict(data)
        data["mean"], data["std"] = tuple(data["mean"]), tuple(data["std"])
        return cls(**data)


@functools.lru_cache(maxsize=32)
def _stats(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalisation's per-channel mean and std as tensors, made once per device: building them
    from Python lists every batch would be a host-to-device copy (and a sync) per step on a GPU."""
    return tuple(torch.tensor(v, dtype=torch.float32, device=device).view(1, -1, 1, 1) for v in (mean, std))


def _pil_array(image):
    import numpy as np

    return np.array(image, dtype=np.uint8, copy=True)
