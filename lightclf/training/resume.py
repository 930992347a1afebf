"""What makes a killed fit resumable, exactly: an always-current ``last.ckpt`` (at every epoch's end
and every few minutes inside one), the global random generators' states in every checkpoint, and a
clean, agreed stop on SIGTERM. The training loader's place in its epoch is kept by
:class:`lightclf.data.ResumableLoader`."""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

__all__ = ["AgreedStop", "GracefulStop", "LastCheckpoint", "RandomStates", "resumable_after"]


class AgreedStop(SIGTERMException):
    """A stop on SIGTERM or Ctrl-C that every rank agreed on at the same step (raised by GracefulStop);
    ``by`` names what asked for it: ``SIGTERM`` or ``Ctrl-C``."""

    def __init__(self, by: str) -> None:
        super().__init__(by)
        self.by = by


def resumable_after(trainer: L.Trainer, batch_idx: int) -> bool:
    """Whether a checkpoint taken at the end of training batch ``batch_idx`` resumes exactly.

    Not inside a gradient-accumulation window (the accumulated gradients are not saved), and not
    on a batch that validation or the epoch's end follows: Lightning resumes from a checkpoint
    taken at a batch's end as if what comes after the batch had run, so its validation and the
    epoch-end hooks (records, checkpoints) would be skipped. Conservative where validation runs
    only every few epochs."""
    done = batch_idx + 1
    if done >= trainer.num_training_batches or done % trainer.accumulate_grad_batches:
        return False
    every = trainer.val_check_batch
    return not (isinstance(every, int) and every > 0 and done % every == 0)


class GracefulStop(L.Callback):
    """Stops a fit on SIGTERM (what SLURM sends before preemption) or Ctrl-C at the end of a training
    batch, on every rank at the same step, so checkpointing collectives match and the partial
    epoch's checkpoint (``interrupted.ckpt``) resumes exactly.

    Lightning's own SIGTERM handler broadcasts from inside the signal handler and forwards the signal
    to the other ranks; with SIGTERM sent to every rank, those broadcasts can interleave with the
    training's collectives and hang the fit. Python's Ctrl-C raises wherever the fit is, possibly
    between two parameters' updates. These handlers only set a flag; at the end of a batch the
    ranks agree on it (a max-reduce: every step on the CPU, every ``check_every`` steps on
    accelerators, where reading it is a sync) and all raise :class:`AgreedStop`, at the first batch
    where a checkpoint resumes exactly (:func:`resumable_after`: a stop asked for in an epoch's last
    batch waits for its validation and the next batch). A second Ctrl-C stops at once. The stop
    comes after every other callback's batch-end hook (an EMA update, a checkpoint), so the
    checkpoint holds the whole step. The handlers a fit replaced are put back at its end.
    """

    def __init__(self, check_every: int = 10) -> None:
        self.check_every = check_every
        self.received: str | None = None  # what asked for the stop: "SIGTERM" or "Ctrl-C"
        self.agreed = False
        self._replaced: dict[int, Any] = {}

    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGINT:
            if self.received == "Ctrl-C":  # the second: at once
                raise KeyboardInterrupt
            print("lightclf: stopping at the end of this batch (Ctrl-C again to stop at once)", file=sys.stderr)
        self.received = self.received or ("Ctrl-C" if signum == signal.SIGINT else "SIGTERM")

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            if signum == signal.SIGINT and signal.getsignal(signum) is signal.SIG_IGN:
                continue  # started with Ctrl-C ignored (a background job): it stays ignored
            previous = signal.signal(signum, self._on_signal)
            self._replaced.setdefault(signum, previous)  # the handler from before the fit, kept once

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # From the start of the fit: a SIGTERM during on_fit_start (cost counting, W&B start) would
        # otherwise end the process at once, the run still marked "running".
        if stage == "fit":
            self.received, self.agreed = None, False
            self._install()
            # Last among the callbacks (the model's, such as EMA, are attached by now): the stop
            # must not cut off another callback's update of the step it keeps. A new list, not the
            # one this hook is being called from, whose remaining callbacks must still set up.
            trainer.callbacks = [c for c in trainer.callbacks if c is not self] + [self]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install()  # again: Lightning registers its own handlers after on_fit_start

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self.agreed:
            if trainer.world_size == 1:
                self.agreed = self.received is not None
            elif pl_module.device.type == "cpu" or trainer.global_step % self.check_every == 0:
                flag = torch.tensor(float(self.received is not None), device=pl_module.device)
                self.agreed = bool(trainer.strategy.reduce(flag, reduce_op="max") > 0)
        if self.agreed and resumable_after(trainer, batch_idx):
            raise AgreedStop(self.received or "SIGTERM")  # another rank's signal: its kind is unknown here

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and threading.current_thread() is threading.main_thread():
            for signum, previous in self._replaced.items():
                signal.signal(signum, previous)
            self._replaced.clear()


class LastCheckpoint(ModelCheckpoint):
    """An always-current ``last.ckpt``, rewritten after every epoch and, inside a long epoch, every
    ``every_minutes`` of training (or every N steps).

    Since Lightning 2.6 ``ModelCheckpoint(save_last=True)`` refreshes ``last.ckpt`` only when a
    top-k checkpoint was written in the same step: an epoch that did not improve the monitored
    metric would be lost to a crash. A SIGKILL (an out-of-memory kill, a machine taken back) gives
    no chance to save: the timed rewrite bounds what it loses to ``every_minutes`` of training, not
    a whole epoch (a width-1.0 DDSNet epoch of Fashion-MNIST takes half an hour on one CPU core).
    Resuming from a mid-epoch file is exact (the loader's place and the random states travel in
    it). Lightning writes it atomically (an fsspec transaction: a temporary file moved into place),
    so a kill or a full disk mid-write leaves the earlier file whole (tested).

    Args:
        every_minutes: rewrite ``last.ckpt`` inside an epoch once this many minutes of training
            passed since the epoch began or the last rewrite; ``None``: at epoch ends only. Short
            epochs (a GPU's) never reach it.
        check_every: under DDP, the ranks agree on rank 0's clock every this many steps (a
            broadcast; a single process reads its clock every step).
    """

    def __init__(
        self,
        dirpath: str | None = None,
        every_n_train_steps: int | None = None,
        every_minutes: float | None = 10.0,
        check_every: int = 50,
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="last",
            monitor=None,
            save_top_k=1,
            save_last=False,
            every_n_train_steps=every_n_train_steps,
            enable_version_counter=False,
        )
        if every_minutes is not None and every_minutes < 0:
            raise ValueError(f"every_minutes must be >= 0 or None, got {every_minutes}")
        self.every_minutes, self.check_every = every_minutes, max(1, check_every)
        self._written_at = time.monotonic()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._written_at = time.monotonic()  # the previous epoch's end wrote last.ckpt

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.every_minutes is None or trainer.fast_dev_run or not resumable_after(trainer, batch_idx):
            return
        due = time.monotonic() - self._written_at >= self.every_minutes * 60
        if trainer.world_size > 1:  # saving is collective: every rank must decide alike
            if trainer.global_step % self.check_every:
                return
            due = trainer.strategy.broadcast(due)
        if due:
            assert self.dirpath is not None  # resolved by ModelCheckpoint.setup
            trainer.save_checkpoint(os.path.join(self.dirpath, "last" + self.FILE_EXTENSION))
            self._written_at = time.monotonic()


class RandomStates(L.Callback):
    """Keeps the global random generators' states (torch's CPU and CUDA ones, Python's, NumPy's) in
    every checkpoint and restores them when a fit resumes from it.

    The data order and augmentation are seeded by (seed, epoch, step) and need no state, but
    dropout and drop-path draw from torch's global generator: without its state a resumed run
    draws other masks than the uninterrupted one. The states are set back when training starts,
    not when the checkpoint is read: the fit-start hooks between the two (cost counting among them)
    may draw. Rank 0's states are saved; every rank of a resumed DDP fit gets them (the ranks share
    their seed, so they drew alike before too). Loading a checkpoint for ``predict`` or ``export``
    does not touch the generators.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        # Tensors and plain numbers only: Lightning's resume loads checkpoints with weights_only.
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state()  # this rank's device (rank 0's, as saved)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, self._pending = self._pending, None
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        random.setstate(state["python"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        cuda = state.get("cuda")
        if isinstance(cuda, torch.Tensor) and pl_module.device.type == "cuda":  # each rank on its own device
            torch.cuda.set_rng_state(cuda, device=pl_module.device)
