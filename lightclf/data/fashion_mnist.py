"""Fashion-MNIST from its IDX files (the Debian package dataset-fashion-mnist, or a download)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from lightclf.data.base import ImageDataModule
from lightclf.errors import DataError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def _read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file as used by MNIST / Fashion-MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: {body.size} bytes for shape {dims}")
    return body.reshape(dims)


class FashionMNIST(ImageDataModule):
    """Fashion-MNIST (Zalando, MIT): 60k/10k 28x28 grey images, 10 classes.

    Looked up in ``data_dir``, then the Debian package's folder
    (``apt-get install dataset-fashion-mnist`` -> /usr/share/datasets/fashion-mnist), then
    downloaded with torchvision into ``data_dir`` when ``download`` is set.
    """

    num_classes = 10
    native_channels = 1
    mean = (0.2860,)
    std = (0.3530,)
    class_names = FASHION_MNIST_CLASSES

    def __init__(self, *args, download: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.download = download

    def _find_idx(self, stem: str) -> Path | None:
        roots = []
        if self.data_dir:
            # An explicit data_dir is used alone: silently training on other data would mislead.
            if not Path(self.data_dir).is_dir() and not self.download:
                raise DataError(f"data.data_dir {self.data_dir} does not exist (omit it to use {DEBIAN_FASHION_MNIST})")
            roots += [Path(self.data_dir), Path(self.data_dir) / "FashionMNIST" / "raw"]
        else:
            roots.append(DEBIAN_FASHION_MNIST)
        for root in roots:
            for name in (f"{stem}.gz", stem):
                if (root / name).is_file():
                    return root / name
        return None

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        prefix = "train" if train else "t10k"
        img_path = self._find_idx(f"{prefix}-images-idx3-ubyte")
        lbl_path = self._find_idx(f"{prefix}-labels-idx1-ubyte")
        if img_path is None or lbl_path is None:
            if self.download and self.data_dir:
                from torchvision.datasets import FashionMNIST as TVFashionMNIST

                ds = TVFashionMNIST(self.data_dir, train=train, download=True)
                return ds.data.unsqueeze(1).clone(), ds.targets.long().clone()
            where = f"data.data_dir {self.data_dir}" if self.data_dir else str(DEBIAN_FASHION_MNIST)
            raise DataError(
                f"Fashion-MNIST IDX files not found in {where}: run `apt-get install dataset-fashion-mnist` "
                "or set data.download=true with a data_dir"
            )
        images = torch.from_numpy(_read_idx(img_path).copy()).unsqueeze(1)
        labels = torch.from_numpy(_read_idx(lbl_path).astype(np.int64))
        if len(images) != len(labels):
            raise DataError(f"{img_path} has {len(images)} images but {lbl_path} has {len(labels)} labels")
        return images, labels
