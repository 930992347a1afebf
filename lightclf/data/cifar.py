"""CIFAR-10 and CIFAR-100 through torchvision (downloaded on first use)."""

from __future__ import annotations

import os

import torch

from lightclf.data.base import ImageDataModule
from lightclf.errors import DataError


class _TorchvisionCIFAR(ImageDataModule):
    native_channels = 3
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)

    def __init__(self, *args, download: bool = True, **kwargs) -> None:
        kwargs.setdefault("augment", True)
        super().__init__(*args, **kwargs)
        self.download = download

    def _dataset_cls(self):
        raise NotImplementedError

    def prepare_data(self) -> None:
        if self.download:
            for train in (True, False):
                self._dataset_cls()(self._root(), train=train, download=True)

    def _root(self) -> str:
        return self.data_dir or os.path.expanduser("~/.cache/lightclf/data")

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            ds = self._dataset_cls()(self._root(), train=train, download=False)
        except RuntimeError as err:
            raise DataError(
                f"{type(self).__name__} not found under {self._root()} ({err}); set data.download=true"
            ) from None
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return images, torch.tensor(ds.targets, dtype=torch.int64)


class CIFAR10(_TorchvisionCIFAR):
    """CIFAR-10 via torchvision (downloaded into data_dir on first use)."""

    num_classes = 10
    class_names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

    def _dataset_cls(self):
        from torchvision.datasets import CIFAR10 as TV

        return TV


class CIFAR100(_TorchvisionCIFAR):
    """CIFAR-100 via torchvision (downloaded into data_dir on first use)."""

    num_classes = 100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)

    def _dataset_cls(self):
        from torchvision.datasets import CIFAR100 as TV

        return TV
