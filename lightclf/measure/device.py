"""Timing on any device: the device a benchmark names, how it synchronises, how it is timed, its
precision context, peak memory and model FLOPs utilisation.

On the CPU a wall clock around the work is the time. On CUDA, kernels run asynchronously: the
timer records CUDA events around the work and synchronises once at the end (a host clock without
a sync would time the launches, not the kernels); peak memory comes from the caching allocator.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lightclf.errors import ConfigError

__all__ = [
    "DeviceTimer",
    "PRECISIONS",
    "PEAK_TFLOPS",
    "resolve_device",
    "precision_context",
    "available_flops",
    "table_flops",
    "cpu_has_native_bf16",
    "device_label",
]

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


def device_label(device: torch.device) -> str:
    """What trained a run, for its record: the GPU's name, or the CPU's model, the instruction set
    PyTorch's kernels use on it and the thread count (``AMD EPYC (AVX2), 1 thread``): a model name
    alone does not tell a 4x slower AVX2 machine from an AVX-512 one."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "xpu":
        return torch.xpu.get_device_name(device)
    if device.type == "mps":
        return f"Apple {platform.machine()} GPU (MPS)"
    if device.type != "cpu":
        return device.type
    model = ""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as cpuinfo:  # Linux; platform.processor() is empty there
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    model = model or platform.processor() or platform.machine() or "CPU"
    threads = torch.get_num_threads()
    return f"{model} ({torch.backends.cpu.get_cpu_capability()}), {threads} thread{'s' if threads != 1 else ''}"


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has bf16 kernels on this CPU (it needs AVX-512 at least). Without them, bf16 convs
    fall back to PyTorch's reference kernels: on an AVX2-only AMD EPYC a width-0.25 DDSNet step ran
    about 7x slower in bf16-mixed than in float32. PyTorch has no public query; its own tests use
    this operator, so an unknown answer (the operator gone) counts as native, to warn only when sure."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def precision_context(device: torch.device, precision: str):
    """Autocast for ``bf16-mixed`` on the device's type; nothing for ``32``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


# Peak dense FLOP/s (no structured sparsity) of chips a user will rent, from NVIDIA's data sheets
# (H100 / H200: "NVIDIA H100 Tensor Core GPU" and "NVIDIA H200 Tensor Core GPU" data sheets; A100: "NVIDIA
# A100 Tensor Core GPU" data sheet; L4 and L40S: their product data sheets). The sheets print sparse
# tensor figures; the dense figure is half. Used where Lightning's own table lacks the chip (H200, L40S).
# name pattern -> (bf16, tf32, fp32) in TFLOP/s
PEAK_TFLOPS: dict[str, tuple[float, float, float]] = {
    "h200": (989.4, 494.7, 66.9),  # H200 SXM: the H100 SXM's compute, more and faster memory
    "h100 pcie": (756.5, 378.0, 51.2),
    "h100": (989.4, 494.7, 66.9),  # H100 SXM5 (names like "NVIDIA H100 80GB HBM3")
    "a100": (312.0, 156.0, 19.5),
    "l40s": (362.05, 183.0, 91.6),
    "l4": (121.0, 60.0, 30.3),
}


def _names(token: str, word: str) -> bool:
    """``word`` names the chip in ``token``: equal, or followed by letters only ("pcie" in "pcie");
    never "a100" in "a1000", nor "l4" in "l40s"."""
    return token == word or (token.startswith(word) and not token[len(word)].isdigit() and word != "l4")


def table_flops(device_name: str, precision: str, tf32: bool) -> int | None:
    """Peak FLOP/s from ``PEAK_TFLOPS`` for a CUDA device name (``torch.cuda.get_device_name``): bf16
    for ``bf16-mixed``, else TF32 where float32 matmuls may use it, else plain FP32."""
    name = " ".join(device_name.lower().replace("-", " ").split())
    if "nvl" in name.split():  # NVL boards run at other clocks than the figures above: no guess
        return None
    for pattern in sorted(PEAK_TFLOPS, key=len, reverse=True):  # "h100 pcie" before "h100", "l40s" before "l4"
        words = pattern.split()
        if all(any(_names(token, word) for token in name.split()) for word in words):
            bf16, tf32_flops, fp32 = PEAK_TFLOPS[pattern]
            teraflops = bf16 if precision == "bf16-mixed" else tf32_flops if tf32 else fp32
            return int(teraflops * 1e12)
    return None


def available_flops(device: torch.device, precision: str, device_name: str | None = None) -> int | None:
    """The device's peak FLOP/s at this precision: Lightning's table where it knows the chip, else
    ``PEAK_TFLOPS`` (H200, L40S...), else None (no MFU, never a failed benchmark)."""
    from lightning.fabric.utilities.throughput import get_available_flops

    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float32
    with contextlib.suppress(Exception):
        flops = get_available_flops(device, dtype)
        if flops:
            return flops
    if device.type != "cuda":
        return None
    with contextlib.suppress(Exception):
        name = device_name or torch.cuda.get_device_name(device)
        tf32 = torch.get_float32_matmul_precision() != "highest" or torch.backends.cuda.matmul.allow_tf32
        return table_flops(name, precision, tf32)
    return None


@dataclass(frozen=True)
class DeviceTimer:
    """Times work on one device: CUDA events and one sync per measurement on GPUs, a wall clock on CPUs.

    ``backend`` is ``torch.cuda`` unless a test passes a stand-in that records which device each event,
    stream and sync was asked for (the GPU branch then runs on a CPU machine)."""

    device: torch.device
    backend: Any = None

    @property
    def cuda(self):
        return self.backend if self.backend is not None else torch.cuda

    @property
    def uses_events(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.uses_events:
            self.cuda.synchronize(self.device)

    def seconds(self, work: Callable[[], object], iters: int) -> float:
        """Seconds per call of ``work``, mean over ``iters`` calls (the device's queue drained first).

        The events are recorded on the measured device's current stream, not the current device's:
        timing ``cuda:1`` from a process whose current device is ``cuda:0`` must not time cuda:0's queue."""
        self.sync()
        if self.uses_events:
            stream = self.cuda.current_stream(self.device)
            start, end = self.cuda.Event(enable_timing=True), self.cuda.Event(enable_timing=True)
            start.record(stream)
            for _ in range(iters):
                work()
            end.record(stream)
            end.synchronize()
            return start.elapsed_time(end) / 1000.0 / iters
        begin = time.perf_counter()
        for _ in range(iters):
            work()
        self.sync()
        return (time.perf_counter() - begin) / iters

    def reset_peak_memory(self) -> None:
        if self.uses_events:
            self.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_mb(self) -> float | None:
        """This process's own peak allocation on the device since the last reset (MB = 10^6 bytes):
        the caching allocator's ``max_memory_allocated``, which sibling fits sharing the GPU do not
        add to (a device-wide reading such as ``mem_get_info`` would count them). None on the CPU."""
        if not self.uses_events:
            return None
        return round(self.cuda.max_memory_allocated(self.device) / 1e6, 1)
