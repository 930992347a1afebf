"""A folder of images per class: decoded per sample in worker processes into uint8, normalised on
the device; unreadable images are skipped with a warning."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from lightclf.data.base import ImageDataModule
from lightclf.data.preprocessing import Preprocessing
from lightclf.data.sampling import SeededDraws, default_workers, epoch_sampler, split_loader
from lightclf.errors import DataError


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

    def _loader(self, dataset: Dataset | None, train: bool) -> DataLoader:
        assert dataset is not None, "setup() has not run"
        # Shard by the trainer's ranks (not only torch.distributed's, which a loader built early lacks)
        # and give each rank its share of the cores.
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        local_ranks = self.trainer.num_devices if self.trainer is not None else 1
        workers = default_workers(local_ranks) if self.num_workers is None else self.num_workers
        seeded = train and self.augment  # the per-sample transform draws: seed them per image and epoch
        sampler = epoch_sampler(
            dataset, train, self.shuffles(train), seed=self.order_seed, num_replicas=world, rank=rank, draw_seeds=seeded
        )
        return split_loader(
            SeededDraws(dataset) if seeded else dataset,
            sampler,
            self.batches_done_in_epoch,
            train,
            batch_size=self.batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.device.type == "cuda",  # uint8 batches, pinned: a quarter of float32's bytes, async copies
            drop_last=train and sampler.num_samples > self.batch_size,  # this rank's share
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
        if self.wants_test_split(stage):
            test = _SafeImageFolder(str(test_dir), self._transform(False)) if test_dir.is_dir() else self.val_set
            self.test_set = self._subset(test, self.test_subset, 3)
