"""scikit-learn's 8x8 digits: a tiny real data set for tests and smoke fits."""

from __future__ import annotations

import numpy as np
import torch

from lightclf.data.base import ImageDataModule


class Digits(ImageDataModule):
    """scikit-learn's 8x8 digits (1,797 images, 10 classes): a tiny real set for tests."""

    num_classes = 10
    native_channels = 1
    mean = (0.3,)
    std = (0.38,)
    class_names = tuple(str(i) for i in range(10))

    def __init__(self, *args, test_fraction: float = 0.25, **kwargs) -> None:
        kwargs.setdefault("resolution", 16)
        super().__init__(*args, **kwargs)
        self.test_fraction = test_fraction

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.from_numpy((digits.images * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)
        labels = torch.from_numpy(digits.target.astype(np.int64))
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1234))
        n_test = int(len(labels) * self.test_fraction)
        idx = perm[n_test:] if train else perm[:n_test]
        return images[idx], labels[idx]
