"""Timing on any device: the device a benchmark names, how it synchronises, how it is timed, its
precision context, peak memory and model FLOPs utilisation.

On the CPU a wall clock around the work is the time. On CUDA, kernels run asynchronously: the
timer records CUDA events around the work and synchronises once at the end (a host clock without
a sync would time the launches, not the kernels); peak memory comes from the caching allocator.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lightclf.errors import ConfigError

__all__ = ["DeviceTimer", "PRECISIONS", "resolve_device", "precision_context", "available_flops"]

PRECISIONS = ("32", "bf16-mixed")


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``, checked against what this machine has (one-line errors)."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device: expected cpu, cuda or cuda:N, got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device: expected cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA GPU is visible here (torch.cuda.is_available() is False)")
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible")
        device = torch.device("cuda", index)
    return device


def precision_context(device: torch.device, precision: str):
    """Autocast for ``bf16-mixed`` on the device's type; nothing for ``32``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def available_flops(device: torch.device, precision: str) -> int | None:
    """The device's peak FLOP/s at this precision where Lightning knows it (CUDA chips, TPUs), else None."""
    from lightning.fabric.utilities.throughput import get_available_flops

    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float32
    with contextlib.suppress(Exception):  # an unknown chip: no MFU, never a failed benchmark
        return get_available_flops(device, dtype)
    return None


@dataclass(frozen=True)
class DeviceTimer:
    """Times work on one device: CUDA events and one sync per measurement on GPUs, a wall clock on CPUs."""

    device: torch.device

    @property
    def uses_events(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def seconds(self, work: Callable[[], object], iters: int) -> float:
        """Seconds per call of ``work``, mean over ``iters`` calls (the device's queue drained first)."""
        self.sync()
        if self.uses_events:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                work()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000.0 / iters
        begin = time.perf_counter()
        for _ in range(iters):
            work()
        self.sync()
        return (time.perf_counter() - begin) / iters

    def reset_peak_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_mb(self) -> float | None:
        """Peak allocated memory since the last reset (MB = 10^6 bytes); None on the CPU."""
        if self.device.type != "cuda":
            return None
        return round(torch.cuda.max_memory_allocated(self.device) / 1e6, 1)
