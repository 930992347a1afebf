"""Per-step learning-rate schedules that know the run's length.

torch's OneCycleLR needs the total number of optimizer steps and timm's CosineLRScheduler the
warmup and cycle lengths in steps; a YAML config cannot compute either. These small factories
take the shape of the schedule from the config and the step counts from the Trainer when
``ImageClassifier.configure_optimizers`` runs, and are stepped after every optimizer step.

```yaml
model:
  lr_schedule:
    class_path: lightclf.training.schedules.OneCycle
    init_args: {pct_start: 0.25}
```
"""

from __future__ import annotations

import torch
from timm.scheduler import CosineLRScheduler
from torch.optim.lr_scheduler import OneCycleLR

from lightclf.errors import ConfigError

__all__ = ["LRSchedule", "OneCycle", "WarmupCosine"]


class LRSchedule:
    """Base: ``build(optimizer, total_steps, steps_per_epoch)`` returns a scheduler stepped per step."""

    def build(self, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int):
        raise NotImplementedError


class OneCycle(LRSchedule):
    """One-cycle policy (Smith & Topin 2019) via ``torch.optim.lr_scheduler.OneCycleLR``.

    Args:
        max_lr: peak learning rate; ``None`` takes the optimizer's ``lr``.
        pct_start: share of the run spent warming up from ``max_lr / div_factor``.
        div_factor: initial lr = max_lr / div_factor.
        final_div_factor: final lr = initial lr / final_div_factor.
        anneal_strategy: ``cos`` or ``linear``.
        three_phase: fastai's three-phase variant.
        cycle_momentum: also cycle momentum / Adam's beta1 (off: the optimizer's betas stay as configured).
    """

    def __init__(
        self,
        max_lr: float | None = None,
        pct_start: float = 0.25,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        anneal_strategy: str = "cos",
        three_phase: bool = False,
        cycle_momentum: bool = False,
    ) -> None:
        if not 0.0 < pct_start < 1.0:
            raise ConfigError(f"model.lr_schedule.pct_start must be in (0, 1), got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ConfigError(f"model.lr_schedule.anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self.max_lr = max_lr
        self.pct_start = pct_start
        self.div_factor = div_factor
        self.final_div_factor = final_div_factor
        self.anneal_strategy = anneal_strategy
        self.three_phase = three_phase
        self.cycle_momentum = cycle_momentum

    def build(self, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int) -> OneCycleLR:
        max_lr = self.max_lr if self.max_lr is not None else [g["lr"] for g in optimizer.param_groups]
        return OneCycleLR(
            optimizer,
            max_lr=max_lr,
            total_steps=max(total_steps, 2),
            pct_start=self.pct_start,
            anneal_strategy=self.anneal_strategy,
            div_factor=self.div_factor,
            final_div_factor=self.final_div_factor,
            three_phase=self.three_phase,
            cycle_momentum=self.cycle_momentum,
        )


class WarmupCosine(LRSchedule):
    """Linear warmup, then cosine decay to ``min_lr``, updated every step (timm's CosineLRScheduler).

    Args:
        warmup_epochs: warmup length in epochs (fractions allowed).
        warmup_lr_init: learning rate at step 0.
        min_lr: learning rate at the end of the run.
    """

    def __init__(self, warmup_epochs: float = 1.0, warmup_lr_init: float = 1e-5, min_lr: float = 1e-6) -> None:
        if warmup_epochs < 0:
            raise ConfigError(f"model.lr_schedule.warmup_epochs must be >= 0, got {warmup_epochs}")
        self.warmup_epochs = warmup_epochs
        self.warmup_lr_init = warmup_lr_init
        self.min_lr = min_lr

    def build(self, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int) -> CosineLRScheduler:
        warmup = int(round(self.warmup_epochs * steps_per_epoch))
        return CosineLRScheduler(
            optimizer,
            t_initial=max(total_steps, 1),
            lr_min=self.min_lr,
            warmup_t=min(warmup, max(total_steps - 1, 0)),
            warmup_lr_init=self.warmup_lr_init,
            warmup_prefix=False,
            t_in_epochs=False,
        )
