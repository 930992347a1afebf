"""An EMA of the weights that validation, checkpoints and the test use (Lightning's WeightAveraging)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

from lightclf.library_hooks import averaged_model, last_update_step, set_last_update_step

__all__ = ["EMA"]


class EMA(WeightAveraging):
    """An exponential moving average of the weights (Lightning's WeightAveraging) with timm-style
    decay warmup; validation, checkpoints (``state_dict``) and the test after fit all use the
    averaged weights, and the raw weights travel in the checkpoint for resuming.

    Warmup: the decay at update n is ``min(decay, (1 + n) / (10 + n))`` (timm's ModelEmaV3
    warmup), so in a short run the average is not dominated by the random initial weights.
    Lightning's callback, asked to load a checkpoint for ``trainer.test(ckpt_path=...)`` in the
    process that fitted, puts the *raw* weights back into the model; outside fitting the
    checkpoint's ``state_dict`` (the average) is what should be evaluated, so this keeps it.
    """

    def __init__(self, decay: float = 0.999, update_every_n_steps: int = 1, warmup: bool = True, **kwargs: Any):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        if update_every_n_steps < 1:
            raise ValueError(f"EMA update_every_n_steps must be >= 1, got {update_every_n_steps}")
        self.decay, self.warmup, self.update_every_n_steps = decay, warmup, update_every_n_steps
        # AveragedModel's own update (used by WeightAveraging at epoch ends, which this schedule never
        # asks for) runs the same step as the per-batch update below.
        super().__init__(multi_avg_fn=self._averaged_model_update, **kwargs)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and step_idx % self.update_every_n_steps == 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)  # deep-copies the module (see ImageClassifier.__deepcopy__)
        average = averaged_model(self)
        if average is not None:
            # The update count lives on the CPU: reading it (every update) costs no device sync.
            average.n_averaged = average.n_averaged.cpu()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # Lightning's schedule of updates, with the update below in place of AveragedModel's, which
        # reads its count on the host and moves it to the device every step (two syncs on a GPU).
        step = trainer.global_step
        if step > last_update_step(self) and self.should_update(step_idx=step - 1):
            average = averaged_model(self)
            current = [t.detach() for t in (*pl_module.parameters(), *pl_module.buffers())]
            averaged = [t.detach() for t in (*average.module.parameters(), *average.module.buffers())]
            self._step(averaged, current, int(average.n_averaged))
            average.n_averaged += 1
            set_last_update_step(self, step)

    @torch.no_grad()
    def _step(self, averaged: list[torch.Tensor], current: list[torch.Tensor], n: int) -> None:
        """The EMA update after ``n`` earlier ones: the weight is a Python float, so nothing waits
        for the device. Integer buffers (BatchNorm's num_batches_tracked) keep the current count."""
        if n == 0:
            torch._foreach_copy_(averaged, current)
            return
        decay = min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay
        floats = [i for i, t in enumerate(averaged) if t.is_floating_point()]
        others = [i for i, t in enumerate(averaged) if not t.is_floating_point()]
        if floats:
            torch._foreach_lerp_([averaged[i] for i in floats], [current[i] for i in floats], 1.0 - decay)
        if others:
            torch._foreach_copy_([averaged[i] for i in others], [current[i] for i in others])

    def _averaged_model_update(self, averaged: list, current: list, num_averaged: torch.Tensor) -> None:
        self._step(averaged, current, int(num_averaged))

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
