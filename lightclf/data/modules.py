"""LightningDataModules with the input resolution as a first-class parameter.

In-memory sets (Fashion-MNIST, CIFAR, scikit-learn digits) are resized once at setup and kept
as one uint8 stack per split *on the training device* (Fashion-MNIST is 47 MB): each batch is
one index of that stack by the epoch-seeded permutation (no per-sample Python, no collate, no
host-to-device copy of images), and normalisation and augmentation run on the device. ImageFolder
decodes per sample in worker processes into uint8 (pinned when training on a GPU) and is
normalised on the device too.
"""

from __future__ import annotations

import gzip
import math
import os
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, random_split

from lightclf.data.preprocessing import Preprocessing
from lightclf.errors import DataError

__all__ = [
    "DataError",
    "InMemorySplit",
    "BatchIndexSampler",
    "EpochSeededSampler",
    "rank_seed",
    "ImageDataModule",
    "FashionMNIST",
    "CIFAR10",
    "CIFAR100",
    "ImageFolder",
    "Digits",
    "FASHION_MNIST_CLASSES",
]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


class InMemorySplit(Dataset):
    """One split as a uint8 N,C,H,W stack and int64 labels on one device, indexed a batch at a time.

    ``split[indices]`` (an int64 tensor of positions) returns that batch in one gather; a
    DataLoader with ``batch_size=None`` and a :class:`BatchIndexSampler` therefore yields whole
    batches with no per-sample indexing and no collate, already on the stack's device.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        if isinstance(index, torch.Tensor):
            index = index.to(self.images.device, non_blocking=True)
        return self.images[index], self.labels[index]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> InMemorySplit:
        device = torch.device(device)
        if self.images.device == device:
            return self
        return InMemorySplit(self.images.to(device), self.labels.to(device))

    def select(self, positions: list[int] | torch.Tensor) -> InMemorySplit:
        """The images at ``positions``, in that order, as a split of their own (one gather at setup)."""
        positions = torch.as_tensor(positions, dtype=torch.int64, device=self.images.device)
        return InMemorySplit(self.images[positions], self.labels[positions])


class EpochSeededSampler(DistributedSampler):
    """This rank's indices of a split, one at a time (per-sample loaders: ImageFolder).

    Training (``shuffle=True``): the epoch's order is a permutation drawn from a generator seeded by
    (seed, epoch), so a run resumed from a checkpoint sees exactly the batches of the uninterrupted
    run (Lightning calls ``set_epoch`` each epoch). Under DDP each rank takes every
    ``world_size``-th index of the same permutation, padded as torch's DistributedSampler pads so
    every rank steps equally often.

    Evaluation (``shuffle=False``): each rank takes a contiguous, unpadded share of the split in
    order, so validation and test metrics synced over ranks count every image exactly once.

    Being a DistributedSampler, Lightning uses it as it is under DDP instead of replacing it.
    """

    def __init__(
        self,
        dataset: Dataset,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
    ) -> None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if num_replicas is None:
            num_replicas = torch.distributed.get_world_size() if distributed else 1
        if rank is None:
            rank = torch.distributed.get_rank() if distributed else 0
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)

    def indices(self) -> torch.Tensor:
        """This rank's indices for the current epoch, in order."""
        n = len(self.dataset)
        if not self.shuffle:
            return torch.arange(self.rank * n // self.num_replicas, (self.rank + 1) * n // self.num_replicas)
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(n, generator=gen)
        order = torch.cat([order, order[: self.total_size - n]])  # every rank gets num_samples indices
        return order[self.rank : self.total_size : self.num_replicas]

    def __iter__(self):
        # A generator: the order is drawn at the first batch, not when the iterator is made. Lightning
        # makes the first epoch's iterator before ``set_epoch``; on resume that would be epoch 0's order.
        yield from self.indices().tolist()

    def __len__(self) -> int:
        return len(self.indices()) if not self.shuffle else self.num_samples


class BatchIndexSampler(EpochSeededSampler):
    """The same indices as :class:`EpochSeededSampler`, one int64 tensor per batch, for
    ``DataLoader(batch_size=None)`` over an :class:`InMemorySplit`. In training the last partial
    batch is dropped when the split holds more than one batch."""

    def __init__(self, dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0, **kwargs) -> None:
        super().__init__(dataset, seed, shuffle=shuffle, **kwargs)
        self.batch_size = batch_size
        self.drop_last_batch = shuffle and self.num_samples > batch_size  # this rank's share, not the split

    def __iter__(self):
        batches = self.indices().split(self.batch_size)  # lazily, as above
        if self.drop_last_batch and len(batches) and len(batches[-1]) < self.batch_size:
            batches = batches[:-1]
        yield from batches

    def __len__(self) -> int:
        count = super().__len__()
        return count // self.batch_size if self.drop_last_batch else math.ceil(count / self.batch_size)


def default_workers() -> int:
    """Decoding workers for per-sample loaders: the cores this process may use, less one for training, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores - 1))


class ImageDataModule(L.LightningDataModule):
    """Base: train/val/test split, resolution, channel handling, loaders.

    Args:
        data_dir: where the data set lives (or is downloaded to).
        resolution: square input size the network sees (the paper's resolution knob).
        channels: 3 repeats grey images to RGB (needed by most baselines); 1 keeps grey.
        batch_size: per-step batch for every split.
        num_workers: decoding processes of per-sample sets (ImageFolder; default: the cores less one,
            at most 8). In-memory sets batch on the training device and use none.
        val_fraction: share of the training set held out for validation (seeded split).
        train_subset / test_subset: cap the number of images (0 = all), for quick studies.
        augment: per-sample random crop (pad, then crop back) and horizontal flip on training batches.
        crop_padding: padding of the random crop in pixels (default: 1/8 of the image side).
        seed: seed of the split and the subsets, so runs compare on the same images. The order of
            the training batches and the augmentation draws are seeded by this *and* the run's
            seed (``seed_everything``), so runs with different seeds see different orders while
            a resumed run sees exactly the batches of the uninterrupted one.
    """

    num_classes: int = 0
    native_channels: int = 3
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    class_names: tuple[str, ...] = ()
    crop_fraction: float = 1.0  # eval crop of photos (1.0: the whole image, resized)

    def __init__(
        self,
        data_dir: str | None = None,
        resolution: int = 32,
        channels: int = 3,
        batch_size: int = 128,
        num_workers: int | None = None,
        val_fraction: float = 0.1,
        train_subset: int = 0,
        test_subset: int = 0,
        augment: bool = False,
        crop_padding: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if resolution < 1:
            raise DataError(f"data.resolution must be >= 1, got {resolution}")
        if channels not in (1, 3):
            raise DataError(f"data.channels must be 1 or 3, got {channels}")
        if not 0.0 < val_fraction < 1.0:
            # 0 would leave no validation split: model selection would fall back on the test set.
            raise DataError(
                f"data.val_fraction must be in (0, 1), got {val_fraction}: a held-out validation split picks the best "
                "checkpoint (never the test set)"
            )
        if batch_size < 1:
            raise DataError(f"data.batch_size must be >= 1, got {batch_size}")
        if channels == 1 and self.native_channels == 3:
            raise DataError(f"data.channels=1 but {type(self).__name__} is RGB: use channels=3")
        self.save_hyperparameters()
        self.data_dir = data_dir
        self.resolution = resolution
        self.channels = channels
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.train_subset = train_subset
        self.test_subset = test_subset
        if crop_padding is not None and crop_padding < 0:
            raise DataError(f"data.crop_padding must be >= 0, got {crop_padding}")
        self.augment = augment
        self.crop_padding = crop_padding
        self.seed = seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    # -- subclasses provide raw (uint8 N,C,H,W, int64 N) arrays for each split ------------------
    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _subset(self, dataset: Dataset, limit: int, salt: int) -> Dataset:
        if limit <= 0 or limit >= len(dataset):
            return dataset
        gen = torch.Generator().manual_seed(self.seed + salt)
        positions = torch.randperm(len(dataset), generator=gen)[:limit].tolist()
        return dataset.select(positions) if isinstance(dataset, InMemorySplit) else Subset(dataset, positions)

    def _check_labels(self, labels: torch.Tensor, where: str) -> None:
        if len(labels) == 0:
            raise DataError(f"{type(self).__name__}: the {where} split at {self.data_dir} is empty")
        bad = (labels < 0) | (labels >= self.num_classes)
        if bad.any():
            raise DataError(
                f"{type(self).__name__}: {int(bad.sum())} {where} labels outside [0, {self.num_classes}) "
                f"(e.g. {int(labels[bad][0])}); check data_dir or num_classes"
            )

    @property
    def preprocessing(self) -> Preprocessing:
        """This data set's preprocessing, shared by its loaders, ``predict`` and ``export``."""
        return Preprocessing(
            resolution=self.resolution,
            mean=tuple(self.mean),
            std=tuple(self.std),
            channels=self.channels,
            native_channels=self.native_channels,
            crop_fraction=self.crop_fraction,
        )

    @property
    def device(self) -> torch.device:
        """Where batches are made: the trainer's device during a run, else the CPU."""
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def setup(self, stage: str | None = None) -> None:
        # The whole uint8 set moves to the training device once; the splits index it there.
        if stage in (None, "fit", "validate") and self.train_set is None:
            images, labels = self.load_split(train=True)
            self._check_labels(labels, "train")
            full = InMemorySplit(self.preprocessing.resize(images), labels).to(self.device)
            n_val = int(round(len(full) * self.val_fraction))
            gen = torch.Generator().manual_seed(self.seed)
            train, val = random_split(range(len(full)), [len(full) - n_val, n_val], generator=gen)
            self.train_set = self._subset(full.select(train.indices), self.train_subset, 1)
            self.val_set = self._subset(full.select(val.indices), self.train_subset // 4 if self.train_subset else 0, 2)
        if stage in (None, "test", "predict") and self.test_set is None:
            images, labels = self.load_split(train=False)
            self._check_labels(labels, "test")
            test = InMemorySplit(self.preprocessing.resize(images), labels).to(self.device)
            self.test_set = self._subset(test, self.test_subset, 3)

    @property
    def order_seed(self) -> int:
        """Seed of the batch order and the augmentation: the data seed and the run's seed."""
        return (self.seed * 7919 + torch.initial_seed()) % 2**31

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        assert dataset is not None, "setup() has not run"
        return DataLoader(
            dataset,
            batch_size=None,  # the sampler yields whole batches; the split gathers each in one index
            sampler=BatchIndexSampler(dataset, self.batch_size, shuffle, seed=self.order_seed),
            num_workers=0,  # the split lives on the training device: nothing for workers to do
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    # -- batch-level pipeline, on the batch's device ---------------------------------------------
    augment_batches: bool = True  # False where the per-sample transform augments (ImageFolder)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N,C,H,W -> float, normalised, channels repeated as requested."""
        return self.preprocessing.normalize(images)

    def augment_batch(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """Per-sample random translation (pad, then crop back) and horizontal flip, on ``x``'s device.

        Each image draws its own offsets and flip (one shared draw per batch, as
        ``torchvision.transforms.v2`` does on a batched tensor, weakens the augmentation). The
        generator lives on ``x``'s device and is seeded by (seed, rank, global step), so a resumed
        run draws exactly what the uninterrupted run drew, with no generator state to checkpoint,
        and DDP ranks draw differently (rank 0 draws what a single-process run draws).
        """
        n, _, h, w = x.shape
        gen = torch.Generator(device=x.device).manual_seed(rank_seed(self.order_seed * 1_000_003 + step, self.rank))
        flip = torch.rand(n, generator=gen, device=x.device) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        pad = self.crop_padding if self.crop_padding is not None else max(1, h // 8)
        if pad == 0:
            return x
        shift = torch.randint(0, 2 * pad + 1, (2, n), generator=gen, device=x.device)
        padded = F.pad(x, (pad, pad, pad, pad))  # zeros = the data set mean after normalisation
        rows = (shift[0].view(-1, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
        cols = (shift[1].view(-1, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
        batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
        channel = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
        return padded[batch, channel, rows, cols]

    @property
    def rank(self) -> int:
        return self.trainer.global_rank if self.trainer is not None else 0

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """uint8 images -> normalised floats (augmented while training), on the batch's device."""
        images, labels = batch
        x = self.normalize(images)
        if self.augment and self.augment_batches and self.trainer is not None and self.trainer.training:
            x = self.augment_batch(x, self.trainer.global_step)
        return x, labels


def rank_seed(seed: int, rank: int) -> int:
    """A seed per DDP rank that leaves rank 0's (and so a single-process run's) unchanged."""
    return seed if rank == 0 else (seed * 1_000_033 + rank) % 2**63


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


class _SafeImageFolder(Dataset):
    """torchvision ImageFolder that skips unreadable images with one warning naming the file."""

    def __init__(self, root: str, transform) -> None:
        from torchvision.datasets import ImageFolder as TVImageFolder

        try:
            self.folder = TVImageFolder(root)
        except (FileNotFoundError, OSError) as err:
            raise DataError(f"data_dir {root}: {err}") from None
        self.transform = transform
        self.bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.folder.samples)

    def __getitem__(self, index: int):
        from PIL import Image

        for offset in range(len(self)):
            i = (index + offset) % len(self)
            if i in self.bad:
                continue
            path, label = self.folder.samples[i]
            try:
                with Image.open(path) as img:
                    img = img.convert("RGB")
                return self.transform(img), label
            except (OSError, ValueError, SyntaxError) as err:
                self.bad.add(i)
                warnings.warn(f"skipping unreadable image {path}: {err}", stacklevel=2)
        raise DataError(f"no readable image in {self.folder.root}")


class _RandomCropFlip:
    """ImageFolder's training transform: random resized crop and flip of the decoded uint8 image
    (normalised later, on the device; a class, not a lambda, so DataLoader workers can pickle it
    under spawn)."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        from torchvision.transforms import v2 as T

        self.preprocessing = preprocessing
        self.crop = T.Compose([
            T.PILToTensor(), T.RandomResizedCrop(preprocessing.resolution, antialias=True), T.RandomHorizontalFlip()
        ])  # fmt: skip

    def __call__(self, image) -> torch.Tensor:
        return self.crop(image.convert("RGB"))


class ImageFolder(ImageDataModule):
    """A directory of class sub-folders (e.g. Caltech-101), torchvision layout.

    ``data_dir`` holds ``train/`` and optionally ``val/`` and ``test/``; without ``val/`` a
    seeded ``val_fraction`` of train is held out; without ``test/`` the val split is used.
    Unreadable (corrupt or truncated) images are skipped with a warning naming the file.
    """

    def __init__(self, *args, expected_num_classes: int | None = None, **kwargs) -> None:
        kwargs.setdefault("resolution", 224)
        kwargs.setdefault("augment", True)
        super().__init__(*args, **kwargs)
        if not self.data_dir:
            raise DataError("data.data_dir is required for ImageFolder")
        root = Path(self.data_dir)
        train = root / "train" if (root / "train").is_dir() else root
        if not train.is_dir():
            raise DataError(f"data.data_dir {root} does not exist")
        classes = sorted(p.name for p in train.iterdir() if p.is_dir())
        if not classes:
            raise DataError(f"data.data_dir {train} has no class sub-folders")
        if expected_num_classes is not None and expected_num_classes != len(classes):
            raise DataError(
                f"data.expected_num_classes={expected_num_classes} but {train} has {len(classes)} class folders"
            )
        self.num_classes = len(classes)
        self.class_names = tuple(classes)
        self.crop_fraction = 0.875  # eval: resize to resolution / 0.875, centre crop (ImageNet practice)
        self.root = root
        self.train_dir = train
        self.mean = (0.485, 0.456, 0.406)
        self.std = (0.229, 0.224, 0.225)

    augment_batches = False  # the per-sample transform augments

    def _transform(self, train: bool):
        """uint8 C,H,W images, normalised on the device after transfer. Eval: the preprocessing's
        decode (resize, centre crop; as `predict` and `export` use it); train: a random resized crop
        and flip of the decoded image."""
        return _RandomCropFlip(self.preprocessing) if train and self.augment else self.preprocessing.decode

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        assert dataset is not None, "setup() has not run"
        workers = default_workers() if self.num_workers is None else self.num_workers
        sampler = EpochSeededSampler(dataset, seed=self.order_seed, shuffle=shuffle)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.device.type == "cuda",  # uint8 batches, pinned: a quarter of float32's bytes, async copies
            drop_last=shuffle and sampler.num_samples > self.batch_size,  # this rank's share
        )

    def setup(self, stage: str | None = None) -> None:
        val_dir, test_dir = self.root / "val", self.root / "test"
        if self.train_set is None:
            train_full = _SafeImageFolder(str(self.train_dir), self._transform(True))
            if val_dir.is_dir():
                self.train_set = self._subset(train_full, self.train_subset, 1)
                self.val_set = _SafeImageFolder(str(val_dir), self._transform(False))
            else:
                n_val = int(round(len(train_full) * self.val_fraction))
                gen = torch.Generator().manual_seed(self.seed)
                perm = torch.randperm(len(train_full), generator=gen).tolist()
                eval_full = _SafeImageFolder(str(self.train_dir), self._transform(False))
                self.train_set = self._subset(Subset(train_full, perm[n_val:]), self.train_subset, 1)
                self.val_set = Subset(eval_full, perm[:n_val])
        if self.test_set is None:
            test = _SafeImageFolder(str(test_dir), self._transform(False)) if test_dir.is_dir() else self.val_set
            self.test_set = self._subset(test, self.test_subset, 3)
