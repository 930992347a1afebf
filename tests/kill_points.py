"""Test helper loaded by subprocess fits: pause at a known training step so a test can kill there."""

from __future__ import annotations

import os
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from lightclf.data import Digits


class PauseAtStep(Callback):
    """Before batch ``step`` (steps 0..step-1 trained and logged), write ``marker`` and wait until
    the test creates ``release`` (it kills the fit meanwhile, or signals it and then releases it);
    only once, not again on resume. The wait is for an event, not a time: a slow machine cannot
    make the fit run past the kill point. (``max_wait_s`` only stops a forgotten fit.)"""

    def __init__(self, step: int, marker: str, release: str | None = None, max_wait_s: float = 600.0) -> None:
        self.step, self.marker, self.max_wait_s = step, Path(marker), max_wait_s
        self.release = Path(release) if release else self.marker.with_suffix(".release")

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.write_text(str(self.step))
        if trainer.global_step == self.step:
            deadline = time.monotonic() + self.max_wait_s
            while not self.release.exists() and time.monotonic() < deadline:
                time.sleep(0.05)


class PoisonAtStep(Callback):
    """Before batch ``step``, fill the classifier's weights with NaN: the loss goes NaN there (on
    ``rank`` only, when given: the other DDP ranks train on unharmed)."""

    def __init__(self, step: int, rank: int | None = None) -> None:
        self.step, self.rank = step, rank

    def on_train_batch_start(self, trainer, pl_module, *args) -> None:
        if trainer.global_step == self.step and self.rank in (None, trainer.global_rank):
            pl_module.network.get_classifier().weight.data.fill_(float("nan"))


class NoTestDigits(Digits):
    """Digits whose test split raises when read while ``LIGHTCLF_FORBID_TEST`` is set: a tuning fit
    must never build it."""

    def load_split(self, train: bool):
        if not train and os.environ.get("LIGHTCLF_FORBID_TEST"):
            raise AssertionError("the test split was read during tuning")
        return super().load_split(train)


class InterruptAtStep(Callback):
    """Before batch ``step``, raise KeyboardInterrupt: what Ctrl-C does to a fit."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt
