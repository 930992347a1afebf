"""Evaluation during and after a fit: the test curve per epoch and the effective receptive field of
the tested weights."""

from __future__ import annotations

import warnings
from dataclasses import asdict

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger

from lightclf.measure.accuracy import count_correct
from lightclf.measure.receptive_field import effective_receptive_field, receptive_field_per_block
from lightclf.runs import RunRecord
from lightclf.training.run_folder import record_writer, run_record

__all__ = ["TestEveryEpoch", "probe_images", "ReceptiveFieldProbe"]


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
            images = probe_images(trainer.datamodule, self.images, pl_module.device)
            field = effective_receptive_field(network, images)
            # Per block too (timm's ``blocks``): the last layer of a small-image net may be saturated.
            # 64 images a block: the radii average over images, and 14 probes must stay cheap for every fit.
            blocks = receptive_field_per_block(network, images[:64]) if hasattr(network, "blocks") else []
        except (ValueError, RuntimeError) as err:  # a probe that cannot run never fails a finished run
            warnings.warn(f"lightclf: effective receptive field not measured: {str(err).splitlines()[0]}", stacklevel=2)
            return
        record_writer(trainer).write(RunRecord.ERF, {**field.as_dict(), "blocks": [asdict(b) for b in blocks]})
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.summary.update(field.summary)
