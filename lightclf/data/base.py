"""The data module base: resolution as a first-class knob, seeded splits, device-side normalisation
and augmentation."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, random_split

from lightclf.data.preprocessing import Preprocessing
from lightclf.data.sampling import InMemorySplit, batch_sampler, rank_seed, split_loader
from lightclf.errors import DataError


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
        self.test_locked = False

    def lock_test_split(self) -> None:
        """Refuse every use of the test split from now on (a tuning fit selects on validation only):
        the test set is never built, and asking for it raises."""
        self.test_locked = True

    def check_test_unlocked(self) -> None:
        """Raise if the test split is locked (every path to the test set goes through here)."""
        if self.test_locked:
            raise DataError(
                f"{type(self).__name__}: the test split is locked (--validation_only: tuning never reads test); "
                "remove callbacks that test during fit"
            )

    def wants_test_split(self, stage: str | None) -> bool:
        """Whether ``setup(stage)`` builds the test set: not when locked (a ``test``/``predict`` stage then
        raises), not when it is built already."""
        if stage in ("test", "predict"):
            self.check_test_unlocked()
        return stage in (None, "test", "predict") and self.test_set is None and not self.test_locked

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
        if self.wants_test_split(stage):
            images, labels = self.load_split(train=False)
            self._check_labels(labels, "test")
            test = InMemorySplit(self.preprocessing.resize(images), labels).to(self.device)
            self.test_set = self._subset(test, self.test_subset, 3)

    @property
    def order_seed(self) -> int:
        """Seed of the batch order and the augmentation: the data seed and the run's seed."""
        return (self.seed * 7919 + torch.initial_seed()) % 2**31

    def _loader(self, dataset: Dataset | None, train: bool) -> DataLoader:
        assert dataset is not None, "setup() has not run"
        sampler = batch_sampler(dataset, self.batch_size, train, self.shuffles(train), seed=self.order_seed)
        # batch_size=None: the sampler yields whole batches; the split gathers each in one index.
        # No workers: the split lives on the training device, so there is nothing for them to do.
        return split_loader(dataset, sampler, self.batches_done_in_epoch, train, batch_size=None, num_workers=0)

    def shuffles(self, train: bool) -> bool:
        """Whether a split's loader shuffles: training does, unless the trainer overfits a few
        batches (``overfit_batches``: the same batches in the same order every epoch)."""
        return train and not (self.trainer is not None and self.trainer.overfit_batches > 0)

    def batches_done_in_epoch(self) -> int:
        """The training batches of the current epoch the trainer has already run: nonzero only in a
        fit resumed mid-epoch (Lightning's restored loop progress). Zero outside a running fit (a
        benchmark iterating the loader after one)."""
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return 0
        return trainer.fit_loop.epoch_loop.batch_progress.current.ready

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        self.check_test_unlocked()
        return self._loader(self.test_set, train=False)

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
