"""Training throughput over whole windows of batches: images per second of wall time, data loading,
optimizer steps and logging included, with FLOP/s and MFU where the device's peak is known."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn

__all__ = ["TrainThroughput"]


def _batch_size(batch: Any) -> int:
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return int(first.shape[0])


class TrainThroughput(L.Callback):
    """Logs ``train/device/samples_per_sec`` (and ``batches_per_sec``, ``flops_per_sec``, ``mfu``) once
    every ``window_size`` training batches: the images of the window over the wall time since the
    previous window ended (or the epoch began), so the wait for each batch's data is counted, as a
    user's epoch time counts it. Validation inside an epoch is left out of the window. On an
    accelerator the clock is read after one synchronisation per window (a read without it would time
    the launches, not the kernels).

    Lightning's ThroughputMonitor, used before, synchronised after every batch; sampled every N
    batches from inside a batch it left part of the data wait out of its windows and overstated img/s
    by about 5%. ``clock`` and ``sync`` are injectable so a test can drive the windows with a fake clock.
    """

    def __init__(
        self,
        window_size: int = 20,
        clock: Callable[[], float] = time.perf_counter,
        sync: Callable[[torch.device], None] | None = None,
    ) -> None:
        if window_size < 1:
            raise ValueError(f"TrainThroughput window_size must be >= 1, got {window_size}")
        self.window_size = window_size
        self.clock = clock
        self.sync = sync
        self._started: float | None = None
        self._images = 0
        self._batches = 0
        self._peak_flops: int | None = None
        self.last: dict[str, float] = {}  # the last window's figures

    def _now(self, trainer: L.Trainer) -> float:
        device = trainer.strategy.root_device
        if self.sync is not None:
            self.sync(device)
        elif device.type == "cuda":
            torch.cuda.synchronize(device)
        return self.clock()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from lightclf.measure.device import available_flops

        # fp16 and bf16 share the tensor cores' peak; anything else counts against the fp32/tf32 one.
        precision = "bf16-mixed" if "16" in str(trainer.precision) else "32"
        self._peak_flops = available_flops(trainer.strategy.root_device, precision)

    def _restart(self, trainer: L.Trainer) -> None:
        self._started, self._images, self._batches = self._now(trainer), 0, 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restart(trainer)  # before the first batch is fetched: its data wait is in the window

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A validation inside fitting (mid-epoch or at its end): the window so far is logged, and the
        # validation's time stays out of the next one. (Lightning sets ``trainer.training`` False here.)
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and self._batches:
            self._log_window(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._restart(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._batches:  # the epoch's last, partial window: a short epoch still logs its img/s
            self._log_window(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, *args) -> None:
        if self._started is None:  # a fit resumed mid-epoch (no epoch start): time from here on
            self._restart(trainer)
            return
        self._images += _batch_size(batch)
        self._batches += 1
        if self._batches >= self.window_size:
            self._log_window(trainer, pl_module)

    def _log_window(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = self._now(trainer)
        seconds = now - self._started
        if seconds > 0:
            metrics = {
                "train/device/samples_per_sec": self._images / seconds,
                "train/device/batches_per_sec": self._batches / seconds,
            }
            flops = getattr(pl_module, "flops_per_batch", None)
            if flops:
                metrics["train/device/flops_per_sec"] = flops * self._batches / seconds
                if self._peak_flops:
                    metrics["train/device/mfu"] = metrics["train/device/flops_per_sec"] / self._peak_flops
            self.last = metrics
            if trainer.is_global_zero:
                for logger in trainer.loggers:  # the step the batch's own metrics are logged at
                    logger.log_metrics(metrics, step=max(0, trainer.global_step - 1))
            trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        self._started, self._images, self._batches = now, 0, 0
