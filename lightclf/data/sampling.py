"""In-memory splits resident on the training device and the epoch-seeded, per-rank samplers that
batch them by indexing (no per-sample Python, no collate)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, SequentialSampler

from lightclf.errors import DataError


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

    Training (``train=True``, the default when ``shuffle``): the epoch's order is a permutation
    drawn from a generator seeded by (seed, epoch), so a run resumed from a checkpoint sees exactly
    the batches of the uninterrupted run (Lightning calls ``set_epoch`` each epoch); with
    ``shuffle=False`` (``overfit_batches``) it is the split's own order. Under DDP each rank takes
    every ``world_size``-th index of that order, padded as torch's DistributedSampler pads so every
    rank steps equally often.

    Evaluation (``train=False``, the default when not ``shuffle``): each rank takes a contiguous,
    unpadded share of the split in order, so validation and test metrics synced over ranks count
    every image exactly once.

    Being a DistributedSampler, Lightning uses it as it is under DDP instead of replacing it.
    """

    def __init__(
        self,
        dataset: Dataset,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        train: bool | None = None,
        draw_seeds: bool = False,
    ) -> None:
        if shuffle and train is False:
            raise ValueError("an evaluation sampler (train=False) does not shuffle")
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if num_replicas is None:
            num_replicas = torch.distributed.get_world_size() if distributed else 1
        if rank is None:
            rank = torch.distributed.get_rank() if distributed else 0
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.train = shuffle if train is None else train
        self.draw_seeds = draw_seeds  # yield (index, seed) pairs for a SeededDraws set
        self.skip = 0  # items of the epoch's order already trained on (set by ResumableLoader on resume)

    def indices(self) -> torch.Tensor:
        """This rank's indices for the current epoch, in order."""
        n = len(self.dataset)
        if not self.train:
            return torch.arange(self.rank * n // self.num_replicas, (self.rank + 1) * n // self.num_replicas)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        else:
            order = torch.arange(n)
        order = torch.cat([order, order[: self.total_size - n]])  # every rank gets num_samples indices
        return order[self.rank : self.total_size : self.num_replicas]

    def __iter__(self):
        # A generator: the order is drawn at the first batch, not when the iterator is made. Lightning
        # makes the first epoch's iterator before ``set_epoch``; on resume that would be epoch 0's order.
        indices = self.indices()[self.skip :].tolist()
        if not self.draw_seeds:
            yield from indices
            return
        # The image's draws, by (seed, epoch, image). torch's CPU generator keeps a seed's low 32 bits:
        # modulo 2**32 the odd multiplier starts each of a seed's first 200 epochs at least 14M seeds
        # from every other, so in sets under 14M images no two (epoch, image) draws share a seed.
        base = (self.seed * 100_003 + self.epoch) * 1_000_000_007
        yield from ((i, (base + i) % 2**32) for i in indices)

    def __len__(self) -> int:
        return self.num_samples if self.train else len(self.indices())


class BatchIndexSampler(EpochSeededSampler):
    """The same indices as :class:`EpochSeededSampler`, one int64 tensor per batch, for
    ``DataLoader(batch_size=None)`` over an :class:`InMemorySplit`. In training the last partial
    batch is dropped when the split holds more than one batch."""

    def __init__(self, dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0, **kwargs) -> None:
        super().__init__(dataset, seed, shuffle=shuffle, **kwargs)
        self.batch_size = batch_size
        self.drop_last_batch = self.train and self.num_samples > batch_size  # this rank's share, not the split

    def __iter__(self):
        batches = self.indices().split(self.batch_size)  # lazily, as above
        if self.drop_last_batch and len(batches) and len(batches[-1]) < self.batch_size:
            batches = batches[:-1]
        yield from batches[self.skip :]

    def __len__(self) -> int:
        count = super().__len__()
        return count // self.batch_size if self.drop_last_batch else math.ceil(count / self.batch_size)


class OrderedSampler(EpochSeededSampler, SequentialSampler):
    """An :class:`EpochSeededSampler` that never shuffles (evaluation, or training under
    ``overfit_batches``), typed as a SequentialSampler.

    Lightning's ``overfit_batches`` replaces the sampler of every loader of a fit that is not a
    SequentialSampler by a plain one over the dataset. On an in-memory split's ``batch_size=None``
    loader that yields single images, not batches; this type makes Lightning keep ours.
    """

    def __init__(self, dataset: Dataset, seed: int = 0, train: bool = False, **kwargs: Any) -> None:
        super().__init__(dataset, seed, shuffle=False, train=train, **kwargs)
        self.data_source = dataset  # what a SequentialSampler holds


class OrderedBatches(BatchIndexSampler, SequentialSampler):
    """A :class:`BatchIndexSampler` that never shuffles, typed as a SequentialSampler (see
    :class:`OrderedSampler`)."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int = 0, train: bool = False, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size, shuffle=False, seed=seed, train=train, **kwargs)
        self.data_source = dataset


def epoch_sampler(dataset: Dataset, train: bool, shuffle: bool, seed: int = 0, **kwargs: Any) -> EpochSeededSampler:
    """This rank's per-sample sampler of a split: training shuffled, or in order (evaluation; training
    under ``overfit_batches``, sharded as training is) as an :class:`OrderedSampler`."""
    if shuffle:
        return EpochSeededSampler(dataset, seed, shuffle=True, train=train, **kwargs)
    return OrderedSampler(dataset, seed, train=train, **kwargs)


def batch_sampler(
    dataset: Dataset, batch_size: int, train: bool, shuffle: bool, seed: int = 0, **kwargs: Any
) -> BatchIndexSampler:
    """This rank's batches of an in-memory split: training shuffled, or in order (evaluation; training
    under ``overfit_batches``, sharded as training is) as :class:`OrderedBatches`."""
    if shuffle:
        return BatchIndexSampler(dataset, batch_size, shuffle=True, seed=seed, train=train, **kwargs)
    return OrderedBatches(dataset, batch_size, seed=seed, train=train, **kwargs)


class SeededDraws(Dataset):
    """A per-sample training set whose random transform (crop, flip) draws from torch's generator
    seeded for each image and epoch, not from the worker's generator.

    Its sampler (``EpochSeededSampler(draw_seeds=True)``) yields ``(index, seed)`` pairs. An image
    then gets the same crop whichever worker decodes it, so the draws do not depend on
    ``num_workers`` (a laptop and a cluster node train on the same crops), and a fit resumed mid-epoch
    repeats the uninterrupted run's draws for the rest of the epoch.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        # The CPU generator only, put back afterwards: torch.manual_seed would also reseed (and leave
        # reseeded) every GPU's generator, which dropout draws from when decoding runs in the training
        # process (no workers), and costs a stack trace per image where CUDA is not initialised.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self.dataset[index]


class ResumableLoader(DataLoader):
    """A training loader over an :class:`EpochSeededSampler` that resumes mid-epoch exactly.

    A fit resumed from a checkpoint saved inside an epoch (a SIGTERM's ``interrupted.ckpt``, a timed
    ``last.ckpt``) skips the batches of that epoch it already trained on and sees exactly the rest of
    the uninterrupted run's order, instead of restarting the epoch's order and training on its first
    part twice. How many to skip is read from ``batches_done``, the trainer's restored count of the
    epoch's batches, when the epoch's first batch is asked for (after Lightning's ``set_epoch`` and
    its restart bookkeeping): the skip then agrees with Lightning's own count whichever hook saved
    the checkpoint, and workers never read ahead in a stale epoch's order.

    ``state_dict``/``load_state_dict`` make the loader "stateful" to Lightning, which otherwise warns
    that a mid-epoch resume is unreliable; the position itself lives in the trainer's loop state.
    """

    def __init__(self, *args: Any, batches_done: Callable[[], int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches_done = batches_done

    def __iter__(self) -> Iterator[Any]:
        sampler = self.sampler
        if isinstance(sampler, EpochSeededSampler):
            skip = self.batches_done() if self.batches_done is not None else 0
            sampler.skip = skip * (self.batch_size or 1)  # a per-sample loader's sampler counts images
            # The iterator draws its workers' base seed from this generator, not from torch's global
            # one, which dropout draws from: a resumed fit makes its iterator mid-epoch, where the
            # uninterrupted one drew nothing, and its masks would differ from there on.
            self.generator = torch.Generator().manual_seed(sampler.seed * 100_003 + sampler.epoch)
        yield from super().__iter__()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


def split_loader(
    dataset: Dataset, sampler: EpochSeededSampler, batches_done: Callable[[], int], train: bool, **options: Any
) -> DataLoader:
    """The loader of one split: training through :class:`ResumableLoader` (shuffled, or in order
    under ``overfit_batches``), evaluation through a DataLoader with a generator of its own. Neither
    iterator draws its workers' base seed from torch's global generator, which dropout draws from."""
    if train:
        return ResumableLoader(dataset, sampler=sampler, batches_done=batches_done, **options)
    return DataLoader(dataset, sampler=sampler, generator=torch.Generator(), **options)


def default_workers(ranks: int = 1) -> int:
    """Decoding workers for one rank of a per-sample loader: this rank's share of the cores this
    process may use (split between the fits the study runner runs at once and the ranks of this fit),
    less one for training, at most 8 (``lightclf.devices.loader_workers``)."""
    from lightclf.devices import CONCURRENT_FITS_ENV, loader_workers

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    fits = int(os.environ.get(CONCURRENT_FITS_ENV, "1") or 1)
    return loader_workers(None, cores, fits=fits, ranks=ranks)


def rank_seed(seed: int, rank: int) -> int:
    """A seed per DDP rank that leaves rank 0's (and so a single-process run's) unchanged."""
    return seed if rank == 0 else (seed * 1_000_033 + rank) % 2**63
