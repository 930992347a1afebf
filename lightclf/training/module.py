"""ImageClassifier: the one LightningModule that trains every network of the study."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lightclf.data.sampling import rank_seed
from lightclf.devices import HOST_READ_WINDOW, host_read_every
from lightclf.errors import ConfigError
from lightclf.measure.complexity import Complexity, measure_complexity
from lightclf.measure.device import cpu_has_native_bf16
from lightclf.models import DDSNet, create_network
from lightclf.training.schedules import LRSchedule

__all__ = ["ImageClassifier", "FINITE_CHECK_EVERY"]

# Steps between host reads of the finite-loss flag on accelerators (the CPU checks every step).
FINITE_CHECK_EVERY = HOST_READ_WINDOW  # steps between host reads of the finite-loss flag off one CPU


class ImageClassifier(L.LightningModule):
    """Cross-entropy image classifier around any network of the factory.

    Args:
        network: registered name (``ddsnet``, ``googlenet``, any timm model) or an nn.Module.
        network_kwargs: passed to the network builder (width_multiplier, dilation, ...).
        num_classes / in_chans / img_size: linked from the data module by the CLI.
        optimizer: LightningCLI callable; default is the paper's Adam (any torch optimizer: AdamW, SGD
            with ``nesterov: true``, ...).
        scheduler: a torch LR scheduler stepped once per epoch (``StepLR``, ``CosineAnnealingLR``, ...).
        lr_schedule: a per-step schedule that knows the run length (``lightclf.training.schedules.OneCycle``,
            ``WarmupCosine``); exclusive with ``scheduler``.
        label_smoothing: cross-entropy label smoothing (also applied to mixup/cutmix targets).
        aux_loss_weight: weight of auxiliary logits (GoogLeNet) in the training loss.
        mixup_alpha / cutmix_alpha: > 0 turns on timm's Mixup / CutMix (one of them per batch).
        ema_decay: keep an EMA of the weights (Lightning's EMAWeightAveraging, via
            ``lightclf.training.ema.EMA``): validated, checkpointed and tested in place of the raw weights.
        tta_flip: test on the mean of the logits of each image and its horizontal mirror.
        channels_last: memory format for training; ``None`` = the one measured faster on this
            device type: channels_last on CPU (``reports/bench``); contiguous on CUDA until measured
            there (``bench-train --device cuda --formats contiguous channels_last``).
        compile: compile the network with ``torch.compile`` (in place: parameter names and
            checkpoints unchanged); ``compile_mode`` is torch.compile's mode, e.g.
            ``reduce-overhead`` (CUDA graphs, for small nets whose steps are launch-bound) or
            ``max-autotune``. Off by default: compiling takes minutes and pays on GPUs.
    """

    def __init__(
        self,
        network: str | nn.Module = "ddsnet",
        network_kwargs: dict[str, Any] | None = None,
        num_classes: int = 10,
        in_chans: int = 3,
        img_size: int = 224,
        optimizer: OptimizerCallable = torch.optim.Adam,  # defaults = the paper's lr 1e-3, betas 0.9/0.999, eps 1e-8
        scheduler: LRSchedulerCallable | None = None,
        label_smoothing: float = 0.0,
        aux_loss_weight: float = 0.3,
        lr_schedule: LRSchedule | None = None,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        ema_decay: float | None = None,
        tta_flip: bool = False,
        channels_last: bool | None = None,
        compile: bool = False,
        compile_mode: str | None = None,
    ) -> None:
        super().__init__()
        ignore = ["optimizer", "scheduler", "lr_schedule"] + ([] if isinstance(network, str) else ["network"])
        self.save_hyperparameters(ignore=ignore)
        if num_classes < 2:
            raise ConfigError(f"model.num_classes must be >= 2, got {num_classes}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"model.label_smoothing must be in [0, 1), got {label_smoothing}")
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ConfigError(f"model.mixup_alpha and cutmix_alpha must be >= 0, got {mixup_alpha}, {cutmix_alpha}")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ConfigError(f"model.ema_decay must be in (0, 1), got {ema_decay}")
        if scheduler is not None and lr_schedule is not None:
            raise ConfigError("model.scheduler and model.lr_schedule are exclusive: pick one")
        if isinstance(network, str):
            self.network_name = network
            self.network = create_network(network, num_classes, in_chans, **(network_kwargs or {}))
        else:
            self.network_name = type(network).__name__
            self.network = network
        self.check_resolution(img_size, in_chans)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.lr_schedule = lr_schedule
        self.mixup = None
        if mixup_alpha > 0 or cutmix_alpha > 0:
            from timm.data import Mixup

            self.mixup = Mixup(
                mixup_alpha=mixup_alpha,
                cutmix_alpha=cutmix_alpha,
                label_smoothing=label_smoothing,
                num_classes=num_classes,
            )
        self.channels_last = channels_last
        self._complexity: Complexity | None = None  # measured once: the run record and flops_per_batch share it
        self._nonfinite: torch.Tensor | None = None  # NaN/inf seen since the last host check (accelerators)
        top5 = min(5, num_classes)
        metrics = MetricCollection(
            {
                "acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
                f"acc{top5}": MulticlassAccuracy(num_classes, top_k=top5, average="micro"),
            }
        )
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def __deepcopy__(self, memo: dict) -> ImageClassifier:
        """A copy of the network, metrics and settings that shares the trainer and the optimizer and
        schedule factories. EMA's ``AveragedModel`` deep-copies the module: under DDP the factories
        LightningCLI builds and the trainer hold locks ("cannot pickle '_thread.lock'"), and a copy
        that only holds averaged weights never builds an optimizer."""
        for shared in (self._trainer, self.optimizer_factory, self.scheduler_factory, self.lr_schedule):
            memo[id(shared)] = shared
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        copied.__setstate__(copy.deepcopy(self.__dict__, memo))
        return copied

    def check_resolution(self, img_size: int, in_chans: int) -> None:
        """Fail before training when the network cannot run at ``img_size``."""
        if isinstance(self.network, DDSNet):
            try:
                self.network.check_input_size(img_size)
            except ConfigError as err:
                raise ConfigError(f"data.resolution: {err}") from None
            return
        was_training = self.network.training
        self.network.eval()
        try:
            with torch.no_grad():
                self.network(torch.zeros(1, in_chans, img_size, img_size))
        except RuntimeError as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(
                f"data.resolution: {img_size} px is too small for {self.network_name} ({first_line})"
            ) from None
        finally:
            self.network.train(was_training)

    def complexity(self) -> Complexity:
        """The deployed network's static cost at the configured resolution (params, MACs, size,
        receptive field), measured on a copy once and kept: the architecture does not change."""
        if self._complexity is None:
            self._complexity = measure_complexity(self.network, self.hparams.img_size, self.hparams.in_chans)
        return self._complexity

    @property
    def flops_per_batch(self) -> int | None:
        """FLOPs of one batch (TrainThroughput's FLOP/s and MFU): forward x3 when training."""
        try:
            data = self.trainer.datamodule
        except RuntimeError:  # not attached to a trainer
            return None
        batch = getattr(data, "batch_size", None)
        macs = self.complexity().macs
        if not macs or not batch:
            return None
        return 2 * macs * batch * (3 if self.training else 1)

    def configure_callbacks(self) -> list[L.Callback]:
        if self.hparams.get("ema_decay") is None:
            return []
        from lightclf.training.ema import EMA

        return [EMA(decay=self.hparams.ema_decay)]

    def setup(self, stage: str) -> None:
        if self.channels_last is None:
            # Measured (reports/bench/README.md): channels_last trains 1.58x faster than
            # contiguous on CPU for the DDSNet family; elsewhere keep PyTorch's default layout.
            self.channels_last = self.device.type == "cpu"
        if self.channels_last:
            self.network.to(memory_format=torch.channels_last)
        if self.hparams.get("compile") and stage == "fit":
            self.network.compile(mode=self.hparams.get("compile_mode"))  # in place: state_dict keys unchanged

    def on_fit_start(self) -> None:
        if self.device.type == "cpu" and "bf16" in str(self.trainer.precision) and not cpu_has_native_bf16():
            rank_zero_warn(
                "lightclf: precision bf16 on a CPU where oneDNN has no bf16 kernels: "
                "convs fall back to reference kernels, several times slower than precision 32 here"
            )

    def _format(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.network(self._format(x))
        return out.logits if hasattr(out, "logits") else out

    def _loss(self, out: Any, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy on hard labels or on mixup's soft targets (class probabilities)."""
        smoothing = self.hparams.label_smoothing if target.dim() == 1 else 0.0  # soft targets carry it already

        def criterion(logits: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(logits, target, label_smoothing=smoothing)

        if hasattr(out, "aux_logits1"):  # torchvision GoogLeNet in train mode
            loss = criterion(out.logits)
            for aux in (out.aux_logits1, out.aux_logits2):
                if aux is not None:
                    loss = loss + self.hparams.aux_loss_weight * criterion(aux)
            return loss, out.logits
        return criterion(out), out

    def _mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """timm's Mixup/CutMix with its numpy draws seeded by the global step and rank (exact resume)."""
        if self.mixup is None or len(x) % 2:
            return x, y
        seed = rank_seed(int(torch.initial_seed() % 2**31) + self.global_step, self.global_rank)  # ranks mix apart
        with _numpy_seed(seed):
            return self.mixup(x.clone(), y)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        x, target = self._mix(x, y)
        loss, logits = self._loss(self.network(self._format(x)), target)
        self._check_finite(loss, batch_idx)
        self.train_metrics.update(logits.detach(), y)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def _check_finite(self, loss: torch.Tensor, batch_idx: int) -> None:
        """Stop on a NaN/inf training loss, before a checkpoint can hold the damaged weights.

        Reading the loss on the host is free for one CPU process (checked every step) but blocks an
        accelerator's queue, and under several processes each rank would stop alone while the others
        wait in the next collective forever. So elsewhere the flag accumulates on the device and is
        read every ``host_read_every`` steps and on the epoch's last batch (before validation and the
        epoch's checkpoints), summed over the ranks first, so that every rank stops at the same step;
        earlier checkpoints are kept either way.
        """
        bad = ~torch.isfinite(loss.detach())
        world = self.trainer.world_size if self._trainer is not None else 1
        every = host_read_every(loss.device.type, world)
        if every == 1:
            if bad:
                raise FloatingPointError(
                    f"training loss is {loss.item()} at step {self.global_step}: lower the learning rate; "
                    "the last checkpoint is kept"
                )
            return
        self._nonfinite = bad if self._nonfinite is None else self._nonfinite | bad
        last_batch = batch_idx + 1 >= self.trainer.num_training_batches
        if (self.global_step + 1) % every and not last_batch:
            return
        self._raise_if_nonfinite(f"within the {every} steps before step {self.global_step}")

    def _raise_if_nonfinite(self, when: str) -> None:
        """Read the accumulated flag once (the window's one host sync), summed over the ranks so every
        rank decides alike, and stop if any saw a non-finite loss."""
        flag, self._nonfinite = self._nonfinite, None
        if flag is None:
            return
        ranks = self.trainer.world_size if self._trainer is not None else 1
        if ranks > 1:
            flag = self.trainer.strategy.reduce(flag.to(torch.float32), reduce_op="sum")  # one collective
        bad = int(flag.item())
        if bad:
            where = f" on {bad} of {ranks} ranks" if ranks > 1 else ""
            raise FloatingPointError(
                f"training loss became NaN/inf {when}{where}: lower the learning rate; the last checkpoint is kept"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A checkpoint written between two host reads of the finite-loss flag (every N steps, a
        # mid-epoch validation) must not keep damaged weights: read the flag first. Every rank builds
        # the checkpoint at the same step, so the read may be a collective.
        self._raise_if_nonfinite(f"before step {self.global_step}")

    def eval_logits(self, x: torch.Tensor, stage: str) -> torch.Tensor:
        """Logits for evaluation; at test with ``tta_flip``, averaged with the mirrored image's.

        The images and their mirrors go through the network in one call: a compiled network with CUDA
        graphs (``compile_mode: reduce-overhead``) returns a buffer the next call overwrites, so two
        calls would average the mirror's logits with themselves."""
        if stage == "test" and self.hparams.get("tta_flip"):
            plain, mirrored = self(torch.cat([x, x.flip(-1)])).chunk(2)
            return (plain + mirrored) / 2
        return self(x)

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], metrics: MetricCollection, stage: str) -> None:
        x, y = batch
        logits = self.eval_logits(x, stage)
        loss = F.cross_entropy(logits, y)
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", batch_size=len(y), sync_dist=True)
        metrics.update(logits, y)
        self.log_dict(metrics, prog_bar=stage == "val", batch_size=len(y))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).softmax(dim=-1)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.lr_schedule is not None:
            total = int(self.trainer.estimated_stepping_batches)
            epochs = max(int(self.trainer.max_epochs or 1), 1)
            scheduler = self.lr_schedule.build(optimizer, total, max(total // epochs, 1))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"},
        }

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        if hasattr(scheduler, "step_update"):  # timm: per-step updates take the number of steps done
            scheduler.step_update(num_updates=self.global_step)
        elif metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)


@contextlib.contextmanager
def _numpy_seed(seed: int):
    """Seed numpy's global RNG (which timm's Mixup draws from) for a block, then restore it."""
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)
