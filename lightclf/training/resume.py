"""What makes a killed fit resumable: an always-current ``last.ckpt`` and a clean, agreed stop on SIGTERM."""

from __future__ import annotations

import signal
import threading
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

__all__ = ["AgreedStop", "GracefulStop", "LastCheckpoint"]


class AgreedStop(SIGTERMException):
    """A SIGTERM stop every rank agreed on at the same step (raised by GracefulStop)."""


class GracefulStop(L.Callback):
    """Stops a fit on SIGTERM (what SLURM sends before preemption) at the end of the current training
    batch, on every rank at the same step, so checkpointing collectives match.

    Lightning's own SIGTERM handler broadcasts from inside the signal handler and forwards the signal
    to the other ranks; with SIGTERM sent to every rank, those broadcasts can interleave with the
    training's collectives and hang the fit. This handler only sets a flag; at the end of a batch the
    ranks agree on it (a max-reduce: every step on the CPU, every ``check_every`` steps on
    accelerators, where reading it is a sync) and all raise Lightning's ``SIGTERMException``.
    """

    def __init__(self, check_every: int = 10) -> None:
        self.check_every = check_every
        self.received = False

    def _on_sigterm(self, signum, frame) -> None:
        self.received = True

    def _install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)  # Lightning restores its handlers at teardown

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # From the start of the fit: a SIGTERM during on_fit_start (cost counting, W&B start) would
        # otherwise end the process at once, the run still marked "running".
        if stage == "fit":
            self.received = False
            self._install()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install()  # again: Lightning registers its own handlers after on_fit_start

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.world_size == 1:
            stop = self.received
        else:
            if pl_module.device.type != "cpu" and trainer.global_step % self.check_every:
                return
            flag = torch.tensor(float(self.received), device=pl_module.device)
            stop = bool(trainer.strategy.reduce(flag, reduce_op="max") > 0)
        if stop:
            raise AgreedStop()


class LastCheckpoint(ModelCheckpoint):
    """An always-current ``last.ckpt``, rewritten after every epoch (or every N steps).

    Since Lightning 2.6 ``ModelCheckpoint(save_last=True)`` refreshes ``last.ckpt`` only when a
    top-k checkpoint was written in the same step: an epoch that did not improve the monitored
    metric would be lost to a crash. Resuming from this file loses at most one epoch. Lightning
    writes it atomically (an fsspec transaction: a temporary file moved into place), so a kill or a
    full disk mid-write leaves the earlier file whole (tested).
    """

    def __init__(self, dirpath: str | None = None, every_n_train_steps: int | None = None) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="last",
            monitor=None,
            save_top_k=1,
            save_last=False,
            every_n_train_steps=every_n_train_steps,
            enable_version_counter=False,
        )
