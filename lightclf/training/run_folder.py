"""The run folder's writers: ``complexity.json`` and ``results.json`` as a fit goes (RunRecorder), the
resolved config (RunConfigSaver), and the helpers naming a trainer's run folder."""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightclf.factors import Factors
from lightclf.measure.device import device_label
from lightclf.runs import RunRecord, SavedPosition, run_path
from lightclf.training.resume import AgreedStop

__all__ = [
    "run_dir",
    "run_record",
    "record_writer",
    "run_factors",
    "RESUME_FROM",
    "INTERRUPTED_BY",
    "RunRecorder",
    "epoch_line",
    "devices_so_far",
    "RunConfigSaver",
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
# Set when a fit of this process was stopped by Ctrl-C (Lightning exits 1 on it itself).
INTERRUPTED_BY: list[str] = []


def epoch_line(epoch: int, max_epochs: int | None, history: list[dict[str, float]], left_seconds: float | None,
               seconds: float) -> str:  # fmt: skip
    """One line for a finished epoch (0-based ``epoch``): its validation top-1 beside the best so far
    (or that it did not validate), the epoch's minutes and, when known, the time left."""
    total = max_epochs if max_epochs and max_epochs > 0 else None
    head = f"epoch {epoch + 1}/{total}" if total else f"epoch {epoch + 1}"
    now = next((e for e in history if e.get("epoch") == epoch and "val/acc1" in e), None)
    if now is None:
        text = f"{head}: no validation this epoch"
    else:
        best = max((e for e in history if "val/acc1" in e), key=lambda e: e["val/acc1"])
        text = f"{head}: val top-1 {100 * now['val/acc1']:.2f}% (best {100 * best['val/acc1']:.2f}% after epoch {best['epoch'] + 1})"
        if "val/loss" in now:
            text += f", val loss {now['val/loss']:.3f}"
    text += f"; {seconds / 60:.1f} min"
    if left_seconds and left_seconds > 0:
        text += f", about {int(left_seconds // 3600)}h{int(left_seconds % 3600 // 60):02d}m left at this pace"
    return text


def devices_so_far(before: str | None, here: str) -> str:
    """A run's device record when a fit of it starts on ``here``: a run resumed on another device
    keeps the earlier ones ("A, then B"), so a report never credits one device with another's epochs."""
    if not before or before == here or before.endswith(f", then {here}"):
        return before or here
    return f"{before}, then {here}"


class RunRecorder(L.Callback):
    """Writes ``complexity.json`` at fit start and ``results.json`` as stages end; logs both to W&B.

    Cost figures go to the W&B run's summary and config, so every run carries the same
    params / MACs / size / receptive field.
    """

    def __init__(self) -> None:
        self.started = time.time()
        self.epoch_started: float | None = None
        self.epoch_batches = 0  # batches this process ran in the current epoch (a resume starts mid-epoch)
        self.validated_epoch: int | None = None  # the epoch of the last real validation (not the sanity check)
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
                device=self._device(trainer, pl_module),
            )
            self._log_to_wandb(trainer, complexity)

    @staticmethod
    def _device(trainer: L.Trainer, pl_module: L.LightningModule) -> str:
        """This fit's device (x the process count under DDP), after any the run trained on before."""
        here = device_label(pl_module.device) + (f" x {trainer.world_size}" if trainer.world_size > 1 else "")
        return devices_so_far(run_record(trainer).device, here)

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
        if trainer.is_global_zero and trainer.state.fn == TrainerFn.FITTING:
            # Where this checkpoint lies, for the line a study prints when it resumes the run ("8 of 10
            # epochs and 412/1687 batches of epoch 9 done"): a timed save lies inside an epoch. Written
            # before the file (Lightning calls this hook first): the time lets a reader tell whether
            # the file it resumes from is this save's (SavedPosition.describes).
            epoch_batches = trainer.num_training_batches
            position = SavedPosition(
                epoch=trainer.current_epoch,
                batches_done=trainer.fit_loop.epoch_loop.batch_progress.current.processed,
                epoch_batches=int(epoch_batches) if math.isfinite(epoch_batches) else None,
                global_step=trainer.global_step,
                saved_at=time.time(),
            )
            with contextlib.suppress(OSError):  # a note about the checkpoint must not stop its save
                self._record(trainer, saved_position=asdict(position))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_started, self.epoch_batches = time.time(), 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.epoch_batches += 1

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validated_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            metrics = _scalar_metrics(trainer)
            # Validation ran before this hook: the per-epoch validation curve is what a tuner's pruner
            # reads. A resumed fit keeps the epochs recorded before (and replaces a re-run epoch's).
            # Lightning keeps the last validation's metrics until the next one: an epoch that did not
            # validate (check_val_every_n_epoch > 1) must not be credited with them.
            history = [e for e in run_record(trainer).val_per_epoch if e.get("epoch") != trainer.current_epoch]
            val = {k: v for k, v in metrics.items() if k.startswith("val/")}
            if val and self.validated_epoch == trainer.current_epoch:
                history.append({"epoch": trainer.current_epoch, **val})
            self._record(
                trainer,
                epoch=trainer.current_epoch,
                global_step=trainer.global_step,
                last=metrics,
                val_per_epoch=history,
            )
            if trainer.progress_bar_callback is None:  # no bar (studies, batch jobs): a line says where it stands
                seconds = time.time() - (self.epoch_started or self.started)
                per_batch = seconds / max(1, self.epoch_batches)
                if trainer.max_steps and trainer.max_steps > 0:  # a step limit ends the fit first
                    left = per_batch * (trainer.max_steps - trainer.global_step)
                elif trainer.max_epochs and trainer.max_epochs > 0:
                    left = per_batch * trainer.num_training_batches * (trainer.max_epochs - trainer.current_epoch - 1)
                else:
                    left = None
                left = left if left is not None and math.isfinite(left) else None  # an iterable set: no length
                max_epochs = None if trainer.max_steps and trainer.max_steps > 0 else trainer.max_epochs
                rank_zero_info(epoch_line(trainer.current_epoch, max_epochs, history, left, seconds))

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
        # Keep the partial epoch too: resuming from it is exact (the trainer's loop state tells the
        # ResumableLoader where the epoch stopped; RandomStates keeps the generators). Saving is a
        # collective under DDP (rank 0 writes, then a barrier): every rank saves after an AgreedStop, which
        # GracefulStop raises on all ranks at the same step; a forced Ctrl-C (or Lightning's own SIGTERM
        # stop) reaches ranks at arbitrary points, so there a multi-process fit keeps its last.ckpt only.
        lockstep = isinstance(exception, AgreedStop) or trainer.world_size == 1
        if isinstance(exception, KeyboardInterrupt) or (isinstance(exception, AgreedStop) and exception.by == "Ctrl-C"):
            INTERRUPTED_BY[:] = ["Ctrl-C"]  # the CLI exits 130 with its line
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
            except FloatingPointError:  # the weights went bad since the last check: keep last.ckpt only
                pass
        if trainer.is_global_zero:
            error = f"{type(exception).__name__}: {exception}"[:500]
            self._record(trainer, status="interrupted" if interrupted else "failed", error=error)


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
        # One dump for the file and W&B, not validated again: the CLI validated this config when it
        # parsed it, and each validation walks every class signature again (0.12 s of a smoke fit).
        text = self.parser.dump(self.config, skip_none=False, skip_check=True)
        (folder / name).write_text(text)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                resolved = yaml.safe_load(text)
                logger.experiment.config.update({"lightclf_config": resolved}, allow_val_change=True)
