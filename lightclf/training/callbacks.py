"""Callbacks that make every run carry its config, cost figures and results on disk and in W&B."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, WeightAveraging
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightclf.factors import Factors
from lightclf.library_hooks import averaged_model, last_update_step, set_last_update_step
from lightclf.measure.accuracy import count_correct
from lightclf.measure.receptive_field import effective_receptive_field
from lightclf.runs import RunRecord, run_path

__all__ = [
    "run_factors",
    "RunRecorder",
    "RunConfigSaver",
    "LastCheckpoint",
    "EMA",
    "TestEveryEpoch",
    "GracefulStop",
    "AgreedStop",
    "ReceptiveFieldProbe",
    "probe_images",
    "run_dir",
    "record_writer",
    "run_record",
]


def run_dir(trainer: L.Trainer) -> Path:
    """The run's own folder: ``<save_dir>/<project>/<run id>`` for W&B (where checkpoints go too)."""
    logger = trainer.logger
    if isinstance(logger, WandbLogger):
        return run_path(logger.save_dir, str(logger.name), str(logger.version))
    if logger is not None and logger.log_dir:
        return Path(logger.log_dir)
    return Path(trainer.default_root_dir)


def run_record(trainer: L.Trainer) -> RunRecord:
    """The run folder's record as it is on disk now."""
    return RunRecord.read(run_dir(trainer))


def record_writer(trainer: L.Trainer) -> RunRecord:
    """The run folder's record, unread, to write through (``update`` merges into results.json itself)."""
    return RunRecord(folder=run_dir(trainer))


def run_factors(pl_module: L.LightningModule) -> dict[str, Any]:
    """The run's factors as W&B config ``factors.*`` (panels group and plot by them): the one
    ``Factors`` record every study, report and sweep uses, plus its label as ``config``. A study
    run's come from the study's spec for it (``study.json``: its budget and recipe overrides
    included, which the module never sees); a plain fit's from the module's hyperparameters."""
    spec = run_record(pl_module.trainer).factors
    hp = pl_module.hparams
    factors = Factors.from_study(
        spec
        if spec.get("network")
        else {
            "network": getattr(pl_module, "network_name", None) or hp.get("network"),
            "network_kwargs": dict(hp.get("network_kwargs") or {}),
            "resolution": hp.get("img_size"),
            "seed": int(os.environ.get("PL_GLOBAL_SEED", -1)),
        }
    )
    return {**factors.as_dict(), "config": factors.configuration.label}


def _scalar_metrics(trainer: L.Trainer) -> dict[str, float]:
    out = {}
    for key, value in trainer.callback_metrics.items():
        value = value.item() if isinstance(value, torch.Tensor) else value
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[key] = float(value)
    return out


# The checkpoint an interrupted fit of this process can resume from (set when it stops), for the CLI's message.
RESUME_FROM: list[str] = []


class RunRecorder(L.Callback):
    """Writes ``complexity.json`` at fit start and ``results.json`` as stages end; logs both to W&B.

    Cost figures go to the W&B run's summary and config, so every run carries the same
    params / MACs / size / receptive field.
    """

    def __init__(self) -> None:
        self.started = time.time()
        self.complexity: dict[str, Any] | None = None

    def _record(self, trainer: L.Trainer, **updates: Any) -> None:
        record_writer(trainer).update(**updates)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        complexity = pl_module.complexity().as_dict()  # measured once, shared with flops_per_batch
        complexity["network"] = getattr(pl_module, "network_name", type(pl_module).__name__)
        self.complexity = complexity
        if trainer.is_global_zero:
            record_writer(trainer).write(RunRecord.COMPLEXITY, complexity)
            self._record(
                trainer,
                status="running",
                network=complexity["network"],
                started=self.started,
                max_epochs=trainer.max_epochs,
            )
            self._log_to_wandb(trainer, complexity)

    @rank_zero_only
    def _log_to_wandb(self, trainer: L.Trainer, complexity: dict[str, Any]) -> None:
        factors = run_factors(trainer.lightning_module)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.summary.update({k: v for k, v in complexity.items() if v is not None})
                logger.experiment.config.update({"complexity": complexity, "factors": factors}, allow_val_change=True)
            else:
                logger.log_hyperparams({"complexity": complexity})

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        logger = trainer.logger
        datamodule = trainer.datamodule
        checkpoint["lightclf"] = {
            "network": getattr(pl_module, "network_name", None),
            "wandb_id": logger.version if isinstance(logger, WandbLogger) else None,
            "run_dir": str(run_dir(trainer)),
            # What `lightclf predict` / `export` need to preprocess images exactly as the test set was.
            "class_names": list(getattr(datamodule, "class_names", ()) or ()),
            "preprocessing": datamodule.preprocessing.as_dict() if hasattr(datamodule, "preprocessing") else None,
            "data_class": type(datamodule).__name__ if datamodule is not None else None,
        }

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            metrics = _scalar_metrics(trainer)
            # Validation ran before this hook: the per-epoch validation curve is what a tuner's pruner
            # reads. A resumed fit keeps the epochs recorded before (and replaces a re-run epoch's).
            history = [e for e in run_record(trainer).val_per_epoch if e.get("epoch") != trainer.current_epoch]
            val = {k: v for k, v in metrics.items() if k.startswith("val/")}
            if val:
                history.append({"epoch": trainer.current_epoch, **val})
            self._record(
                trainer,
                epoch=trainer.current_epoch,
                global_step=trainer.global_step,
                last=metrics,
                val_per_epoch=history,
            )

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            ckpt = trainer.checkpoint_callback
            best = getattr(ckpt, "best_model_path", "") if ckpt else ""
            status = "interrupted" if trainer.interrupted else "fit_done"
            self._record(
                trainer,
                status=status,
                fit_metrics=_scalar_metrics(trainer),
                best_ckpt=best,
                fit_seconds=round(time.time() - self.started, 1),
                global_step=trainer.global_step,
            )

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            test = {k: v for k, v in _scalar_metrics(trainer).items() if k.startswith("test/")}
            self._record(trainer, status="finished", test_metrics=test)
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.experiment.summary.update(test)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        interrupted = isinstance(exception, (KeyboardInterrupt, SIGTERMException))
        # Keep the partial epoch too; resuming from last.ckpt (epoch end) stays exact. Saving is a
        # collective under DDP (rank 0 writes, then a barrier): every rank saves after an AgreedStop, which
        # GracefulStop raises on all ranks at the same step; a Ctrl-C (or Lightning's own SIGTERM stop)
        # reaches ranks at arbitrary points, so there a multi-process fit keeps its last.ckpt only.
        lockstep = isinstance(exception, AgreedStop) or trainer.world_size == 1
        if interrupted:
            # What the CLI's one line names to resume from: the file this stop leaves (no last.ckpt exists
            # before the first epoch ends; a stop that could not save keeps the last epoch's).
            checkpoints = record_writer(trainer).checkpoints
            RESUME_FROM[:] = [str(checkpoints / "last.ckpt")] if (checkpoints / "last.ckpt").exists() else []
        if interrupted and lockstep:
            path = record_writer(trainer).checkpoints / "interrupted.ckpt"
            try:
                trainer.save_checkpoint(path)
                RESUME_FROM[:] = [str(path)]
            except OSError:  # rank 0 could not write: still meet the other ranks at the barrier
                trainer.strategy.barrier("interrupted.ckpt")
        if trainer.is_global_zero:
            error = f"{type(exception).__name__}: {exception}"[:500]
            self._record(trainer, status="interrupted" if interrupted else "failed", error=error)


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


class RunConfigSaver(SaveConfigCallback):
    """Saves the resolved config into the run's own folder and the W&B run config.

    Lightning's default writes ``config.yaml`` into the logger's shared save_dir and refuses
    the second run there (Lightning issue 17168); one folder per run avoids the collision.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        folder = run_dir(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        name = self.config_filename if stage == "fit" else f"config_{stage}.yaml"
        self.parser.save(self.config, str(folder / name), skip_none=False, overwrite=True, multifile=False)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                config = self.parser.dump(self.config, skip_none=False, format="json")
                logger.experiment.config.update({"lightclf_config": json.loads(config)}, allow_val_change=True)


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


class TestEveryEpoch(L.Callback):
    """Evaluates the test set after every validation (with the weights validation used, EMA
    included) and logs ``test_epoch/acc1`` / ``acc5``: the per-epoch test curve that compares
    recipes (``reports/bench/README.md``). Model selection still uses only the validation split;
    this costs one extra forward pass over the test set per epoch."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.history = list(run_record(trainer).test_per_epoch)  # a resumed fit keeps the epochs tested before

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.datamodule is None:
            return
        data = trainer.datamodule
        if data.test_set is None:
            data.setup("test")
        correct1 = correct5 = total = 0
        for batch in data.test_dataloader():
            batch = data.on_after_batch_transfer(pl_module.transfer_batch_to_device(batch, pl_module.device, 0), 0)
            x, y = batch
            hits1, hits5 = count_correct(pl_module.eval_logits(x, "test"), y, (1, 5))
            correct1, correct5, total = correct1 + hits1, correct5 + hits5, total + len(y)
        if trainer.world_size > 1:  # each rank scored its share of the test set: add them up
            counts = torch.tensor([correct1, correct5, total], dtype=torch.float64, device=pl_module.device)
            correct1, correct5, total = (int(v) for v in trainer.strategy.reduce(counts, reduce_op="sum").tolist())
        metrics = {"test_epoch/acc1": correct1 / total, "test_epoch/acc5": correct5 / total}
        self.history.append({"epoch": trainer.current_epoch, **metrics})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        if trainer.is_global_zero:
            record_writer(trainer).update(test_per_epoch=self.history)


def probe_images(datamodule, count: int, device: torch.device) -> torch.Tensor:
    """The first ``count`` test images (this rank's share), preprocessed as the test saw them."""
    if datamodule.test_set is None:
        datamodule.setup("test")
    images, seen = [], 0
    for images_uint8, labels in datamodule.test_dataloader():
        x, _ = datamodule.on_after_batch_transfer((images_uint8.to(device), labels.to(device)), 0)
        images.append(x)
        seen += len(x)
        if seen >= count:
            break
    return torch.cat(images)[:count]


class ReceptiveFieldProbe(L.Callback):
    """After each test, the effective receptive field of the tested weights (the best checkpoint,
    EMA included, after a fit) on ``images`` test images: ``erf.json`` in the run folder and
    ``erf/r50``, ``erf/r95`` in the W&B summary (``lightclf.measure.receptive_field``). Networks
    without timm's ``forward_features`` (torchvision GoogLeNet) are skipped."""

    def __init__(self, images: int = 256) -> None:
        self.images = images

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        network = getattr(pl_module, "network", None)
        if not trainer.is_global_zero or trainer.datamodule is None or not hasattr(network, "forward_features"):
            return
        try:
            field = effective_receptive_field(network, probe_images(trainer.datamodule, self.images, pl_module.device))
        except (ValueError, RuntimeError) as err:  # a probe that cannot run never fails a finished run
            warnings.warn(f"lightclf: effective receptive field not measured: {str(err).splitlines()[0]}", stacklevel=2)
            return
        record_writer(trainer).write(RunRecord.ERF, field.as_dict())
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.summary.update(field.summary)
