"""What Lightning's loop costs: `lightclf fit`'s training img/s against a bare PyTorch loop."""

from __future__ import annotations

import statistics
import time
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from lightclf.data import FashionMNIST
from lightclf.measure.bench import parse_model_spec
from lightclf.measure.bench_train import bench_optimizer
from lightclf.measure.device import DeviceTimer, precision_context, resolve_device
from lightclf.training.module import ImageClassifier
from lightclf.training.throughput import TrainThroughput

__all__ = ["fit_overhead"]


def fit_overhead(
    spec: str = "ddsnet:width_multiplier=0.25,small_input=true",
    resolution: int = 28,
    batch_size: int = 128,
    rounds: int = 5,
    steps: int = 30,
    warmup: int = 5,
    log=print,
    device: str = "cpu",
    precision: str = "32",
) -> dict[str, Any]:
    """img/s of ``Trainer.fit`` on ImageClassifier vs a bare loop, same net, data, device,
    precision and optimizer.

    Both train on the same real Fashion-MNIST batches, resident on ``device`` (augmentation on,
    the memory format ``fit`` picks for the device, AdamW); the fit has lightclf's module (metrics,
    logging calls) and its throughput callback but no logger. Each round times ``steps`` steps
    after ``warmup`` untimed ones, the device synchronised at both ends.
    """
    name, kwargs = parse_model_spec(spec)
    timer = DeviceTimer(resolve_device(device))
    data = FashionMNIST(resolution=resolution, batch_size=batch_size, augment=True, train_subset=batch_size * 64)
    data.setup("fit")
    data.train_set = data.train_set.to(timer.device)  # as a fit on this device holds it

    def new_module() -> ImageClassifier:
        module = ImageClassifier(name, kwargs, num_classes=10, img_size=resolution, optimizer=bench_optimizer)
        module.to(timer.device)
        module.setup("fit")  # picks the memory format for the device
        return module

    class _Timer(L.Callback):
        def __init__(self) -> None:
            self.start = self.end = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx == warmup:
                timer.sync()
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if batch_idx == warmup + steps - 1:
                timer.sync()
                self.end = time.perf_counter()

    def lightning_round() -> float:
        clock = _Timer()
        trainer = L.Trainer(
            max_epochs=1,
            limit_train_batches=warmup + steps,
            limit_val_batches=0,
            accelerator=timer.device.type,
            devices=[timer.device.index] if timer.device.type == "cuda" else 1,
            precision=precision,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[clock, TrainThroughput(window_size=10)],
        )
        trainer.fit(new_module(), datamodule=data)
        return batch_size * steps / (clock.end - clock.start)

    def bare_round() -> float:
        module = new_module()
        optimizer = module.configure_optimizers()
        start = 0.0
        for idx, batch in enumerate(data.train_dataloader()):
            if idx == warmup:
                timer.sync()
                start = time.perf_counter()
            if idx == warmup + steps:
                break
            x, y = data.augment_batch(data.normalize(batch[0]), idx), batch[1]
            if module.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with precision_context(timer.device, precision):
                loss = F.cross_entropy(module.network(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        timer.sync()
        return batch_size * steps / (time.perf_counter() - start)

    fit_rates, bare_rates = [], []
    for idx in range(rounds):
        order = [(lightning_round, fit_rates), (bare_round, bare_rates)]
        for run, rates in order if idx % 2 == 0 else order[::-1]:
            rates.append(run())
        log(f"fit-overhead round {idx + 1}/{rounds}: fit {fit_rates[-1]:.0f} img/s, bare {bare_rates[-1]:.0f} img/s")
    ratios = [f / b for f, b in zip(fit_rates, bare_rates)]
    return {
        "network": spec,
        "device": str(timer.device),
        "precision": precision,
        "resolution": resolution,
        "batch_size": batch_size,
        "fit_images_per_s": round(statistics.median(fit_rates), 1),
        "bare_images_per_s": round(statistics.median(bare_rates), 1),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
        "rounds": rounds,
        "steps_per_round": steps,
    }
