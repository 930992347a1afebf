"""ImageClassifier: the one LightningModule that trains every network of the study."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lightclf.models import ConfigError, DDSNet, create_network

__all__ = ["ImageClassifier"]


class ImageClassifier(L.LightningModule):
    """Cross-entropy image classifier around any network of the factory.

    Args:
        network: registered name (``ddsnet``, ``googlenet``, any timm model) or an nn.Module.
        network_kwargs: passed to the network builder (width_multiplier, dilation, ...).
        num_classes / in_chans / img_size: linked from the data module by the CLI.
        optimizer / scheduler: LightningCLI callables; default is the paper's Adam.
        label_smoothing: cross-entropy label smoothing.
        aux_loss_weight: weight of auxiliary logits (GoogLeNet) in the training loss.
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
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler"] + ([] if isinstance(network, str) else ["network"]))
        if num_classes < 2:
            raise ConfigError(f"model.num_classes must be >= 2, got {num_classes}")
        if isinstance(network, str):
            self.network_name = network
            self.network = create_network(network, num_classes, in_chans, **(network_kwargs or {}))
        else:
            self.network_name = type(network).__name__
            self.network = network
        self.check_resolution(img_size, in_chans)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
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

    @property
    def flops_per_batch(self) -> int | None:
        """FLOPs of one batch for Lightning's ThroughputMonitor: forward x3 when training."""
        macs, batch = getattr(self, "forward_macs", None), getattr(self, "batch_size", None)
        if not macs or not batch:
            return None
        return 2 * macs * batch * (3 if self.training else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.network(x)
        return out.logits if hasattr(out, "logits") else out

    def _loss(self, out: Any, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ls = self.hparams.label_smoothing
        if hasattr(out, "aux_logits1"):  # torchvision GoogLeNet in train mode
            logits = out.logits
            loss = F.cross_entropy(logits, y, label_smoothing=ls)
            for aux in (out.aux_logits1, out.aux_logits2):
                if aux is not None:
                    loss = loss + self.hparams.aux_loss_weight * F.cross_entropy(aux, y, label_smoothing=ls)
            return loss, logits
        return F.cross_entropy(out, y, label_smoothing=ls), out

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss, logits = self._loss(self.network(x), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at step {self.global_step}: lower the learning rate; "
                "the last checkpoint is kept"
            )
        self.train_metrics.update(logits.detach(), y)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], metrics: MetricCollection, stage: str) -> None:
        x, y = batch
        logits = self(x)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), prog_bar=stage == "val", batch_size=len(y))
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
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"},
        }
