"""`python -m lightclf bench`: inference throughput and latency, interleaved and repeated.

CPU timings drift over minutes, so every configuration is timed once per round, rounds are
repeated, and medians (and ratios between configurations of the same round) are reported.
Rows go to a CSV that `lightclf report` reads.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from lightclf.errors import ConfigError
from lightclf.measure.complexity import count_macs, count_params, inference_copy
from lightclf.measure.device import DeviceTimer, precision_context, resolve_device
from lightclf.measure.onnx import onnx_session
from lightclf.models import create_network
from lightclf.tables import write_csv as write_table

__all__ = [
    "BenchRow",
    "BenchCase",
    "bench_configurations",
    "parse_model_spec",
    "run_bench",
    "time_rounds",
    "CSV_FIELDS",
]


@dataclass
class BenchRow:
    """One inference result: network, resolution, backend, format, precision, img/s and latency."""

    network: str  # the spec as given, e.g. ddsnet:width_multiplier=0.5
    resolution: int
    memory_format: str  # contiguous | channels_last
    backend: str  # eager | compile | onnxruntime
    batch_size: int
    threads: int
    images_per_s: float  # median over repeats
    latency_ms: float  # median per-image latency = 1000 / images_per_s ... of a batch of batch_size
    batch_latency_ms: float  # median wall time of one batch
    spread: float  # (max - min) / median images_per_s over repeats: how much the machine drifted
    repeats: int
    params: int
    macs: int
    device: str
    precision: str = "32"
    provider: str = ""  # onnxruntime's execution provider that ran it ("" for PyTorch backends)
    process_peak_mb: float | None = None  # CUDA only: this process's own peak allocation (siblings not counted)


CSV_FIELDS = [f.name for f in fields(BenchRow)]


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if "/" in text:
        return [int(v) for v in text.split("/")]
    return text


def parse_model_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``name[:key=value,key=value]`` -> (name, kwargs); ``a/b/c`` values become int lists."""
    name, _, rest = spec.partition(":")
    kwargs = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"bench --models: expected key=value in {spec!r}, got {item!r}")
        kwargs[key.strip()] = _value(value.strip())
    return name, kwargs


def check_model_specs(specs: list[str]) -> None:
    """Refuse a misspelt network or a malformed ``key=value`` before anything is timed or written
    (a benchmark that silently skipped every model would overwrite its CSV with nothing)."""
    from lightclf.models import is_known_network

    for spec in specs:
        name, _ = parse_model_spec(spec)
        if not is_known_network(name):
            raise ConfigError(f"--models: unknown network {name!r} in {spec!r}")


def time_batches(fn, x: torch.Tensor, iters: int) -> float:
    """Seconds per batch, mean over ``iters`` calls, on ``x``'s device (CUDA events and a sync on GPUs)."""
    return DeviceTimer(x.device).seconds(lambda: fn(x), iters)


def alternating_rounds(cases: list, rounds: int, run, log=None) -> None:
    """``run(case)`` for every case once per round; the order alternates between rounds, since a
    machine that speeds up or slows down within a round would otherwise bias comparisons."""
    for round_idx in range(rounds):
        for case in cases if round_idx % 2 == 0 else cases[::-1]:
            run(case)
        if log:
            log(f"round {round_idx + 1}/{rounds} done")


def time_rounds(cases: list, repeats: int, iters: int, log=None) -> None:
    """Time every case ``repeats`` times, the cases alternating within each round."""

    def run(case) -> None:
        timer = getattr(case, "timer", None)
        if timer is not None:
            timer.reset_peak_memory()
        case.times.append(time_batches(case, case.x, iters))
        if timer is not None:
            case.process_peak_mb = timer.peak_memory_mb()

    alternating_rounds(cases, repeats, run, log)


BACKENDS = ("eager", "compile", "compile-reduce-overhead", "onnxruntime")


class BenchCase:
    """One network at one resolution, memory format, backend and precision, ready to time."""

    def __init__(
        self,
        spec: str,
        resolution: int,
        memory_format: str,
        backend: str,
        batch: int,
        device: str,
        precision: str = "32",
    ):
        name, kwargs = parse_model_spec(spec)
        model = inference_copy(create_network(name, num_classes=10, **kwargs))
        if hasattr(model, "check_input_size"):
            model.check_input_size(resolution)
        self.params = count_params(model)
        self.macs = count_macs(model, resolution)
        self.timer = DeviceTimer(resolve_device(device))
        self.precision = precision
        fmt = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
        model = model.to(device=self.timer.device, memory_format=fmt)
        x = torch.randn(batch, 3, resolution, resolution)
        self.x = x.to(self.timer.device).contiguous(memory_format=fmt)
        self.key = (spec, resolution, memory_format, backend, batch)
        self.provider = ""
        if backend == "compile":
            model = torch.compile(model, dynamic=False)
        elif backend == "compile-reduce-overhead":  # CUDA graphs: launch overhead gone for small nets
            model = torch.compile(model, mode="reduce-overhead", dynamic=False)
        elif backend == "onnxruntime":
            model, self.provider = onnx_session(model, x, device=self.timer.device, with_provider=True)
        self.fn = model
        self.times: list[float] = []
        self.process_peak_mb: float | None = None

    def __call__(self, x: torch.Tensor):
        with (
            torch.inference_mode(),
            precision_context(self.timer.device, self.precision if not self.provider else "32"),
        ):
            return self.fn(x)


def bench_configurations(
    configurations: list[tuple[str, int]],
    out_csv: str | Path,
    repeats: int = 3,
    batch_size: int = 32,
    device: str = "cpu",
    log=print,
) -> Path | None:
    """Inference img/s of (model spec, resolution) pairs, both memory formats, eager, interleaved
    per resolution, into ``out_csv`` (each row names its device): a study's closing benchmark."""
    pairs = sorted(set(configurations))
    if not pairs:
        return None
    rows = []
    for resolution in sorted({res for _, res in pairs}):
        specs = [spec for spec, res in pairs if res == resolution]
        rows += run_bench(specs, [resolution], ["contiguous", "channels_last"], ["eager"], batch_size, repeats,
                          warmup=2, iters=5, device=device, log=log)  # fmt: skip
    return write_csv(rows, Path(out_csv))


def run_bench(
    models: list[str],
    resolutions: list[int],
    memory_formats: list[str] = ("contiguous", "channels_last"),
    backends: list[str] = ("eager",),
    batch_size: int = 32,
    repeats: int = 5,
    warmup: int = 3,
    iters: int = 10,
    device: str = "cpu",
    log=print,
    precision: str = "32",
) -> list[BenchRow]:
    """Time every (model, resolution, format, backend) once per round, ``repeats`` rounds."""
    check_model_specs(models)
    cases = []
    for spec in models:
        for resolution in resolutions:
            for memory_format in memory_formats:
                for backend in backends:
                    if backend == "onnxruntime" and memory_format != "contiguous":
                        continue  # ORT picks its own layout
                    try:
                        case = BenchCase(spec, resolution, memory_format, backend, batch_size, device, precision)
                    except ConfigError as err:
                        log(f"skip {spec} @ {resolution}px: {err}")
                        continue
                    try:
                        for _ in range(warmup):
                            case(case.x)
                        case.timer.sync()
                    except Exception as err:  # e.g. torch.compile unavailable for this model
                        log(
                            f"skip {spec} @ {resolution}px {memory_format} {backend}: {type(err).__name__}: {err}"[:300]
                        )
                        continue
                    cases.append(case)
    if not cases:
        raise ConfigError("bench: no model could be built at the given resolutions (see the skip lines above)")
    time_rounds(cases, repeats, iters, log)
    rows = []
    for case in cases:
        spec, resolution, memory_format, backend, batch = case.key
        rates = [batch / t for t in case.times]
        median_rate = statistics.median(rates)
        batch_ms = statistics.median(case.times) * 1000
        rows.append(
            BenchRow(
                network=spec,
                resolution=resolution,
                memory_format=memory_format,
                backend=backend,
                batch_size=batch,
                threads=torch.get_num_threads(),
                images_per_s=round(median_rate, 1),
                latency_ms=round(1000 / median_rate, 4),
                batch_latency_ms=round(batch_ms, 3),
                spread=round((max(rates) - min(rates)) / median_rate, 3),
                repeats=repeats,
                params=case.params,
                macs=case.macs,
                device=str(case.timer.device),
                precision=precision,
                provider=case.provider,
                process_peak_mb=case.process_peak_mb,
            )
        )
    return rows


def write_csv(rows: list[BenchRow], path: str | Path, append: bool = False) -> Path:
    """Write benchmark rows to ``path`` (appending keeps one header)."""
    return write_table(path, (asdict(r) for r in rows), CSV_FIELDS, append=append)


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Benchmark rows back from a CSV, numbers as numbers."""
    with Path(path).open() as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for key in ("resolution", "batch_size", "threads", "repeats", "params", "macs"):
            row[key] = int(row[key])
        for key in ("images_per_s", "latency_ms", "batch_latency_ms", "spread"):
            row[key] = float(row[key])
    return rows
