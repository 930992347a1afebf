"""Test helper loaded by subprocess fits: pause at a known training step so a test can kill there."""

from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class PauseAtStep(Callback):
    """Before batch ``step`` (steps 0..step-1 trained and logged), write ``marker`` and sleep; only
    once, not again on resume."""

    def __init__(self, step: int, marker: str, pause_s: float = 10.0) -> None:
        self.step, self.marker, self.pause_s = step, Path(marker), pause_s

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.write_text(str(self.step))
            time.sleep(self.pause_s)  # W&B flushes its log every second meanwhile


class PoisonAtStep(Callback):
    """Before batch ``step``, fill the classifier's weights with NaN: the loss goes NaN there."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, *args) -> None:
        if trainer.global_step == self.step:
            pl_module.network.get_classifier().weight.data.fill_(float("nan"))
