"""`python -m lightclf bench-train`: training throughput (fwd + loss + bwd + optimizer step).

Every case is timed once per round and rounds alternate their order, all in one process: CPU
timings drift 2-3x over minutes, so only ratios taken within a round are compared. Reports:

* img/s per network, resolution, memory format and precision (median, min, max over rounds);
* the dilated / undilated ratio per round (``ddsnet`` vs the same spec as ``ddsnet_nodilation``),
  each net in its faster memory format, and in each format;
* ``--fit-overhead``: ``lightclf fit``'s own training loop (Trainer + ImageClassifier on real
  Fashion-MNIST batches, augmentation on) against a bare PyTorch loop over the same batches.
"""

from __future__ import annotations

import itertools
import statistics
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lightclf.cli_args import ToolArgumentParser
from lightclf.errors import ConfigError
from lightclf.measure.bench import alternating_rounds, check_model_specs, parse_model_spec
from lightclf.measure.complexity import count_macs
from lightclf.measure.device import PRECISIONS, DeviceTimer, available_flops, precision_context, resolve_device
from lightclf.models import create_network
from lightclf.tables import write_csv

__all__ = [
    "TrainCase",
    "TrainRow",
    "run_train_bench",
    "rows_of",
    "write_rows",
    "dilation_ratios",
    "speedups",
    "bench_optimizer",
    "main",
]

DEFAULT_SPECS = [
    f"{net}:width_multiplier={w},small_input=true" for w in (0.25, 0.5) for net in ("ddsnet", "ddsnet_nodilation")
]


@dataclass
class TrainRow:
    """One training-throughput result: network, resolution, format, precision, img/s (median, min, max) and cost."""

    network: str
    resolution: int
    memory_format: str
    precision: str
    batch_size: int
    threads: int
    images_per_s: float  # median over rounds
    images_per_s_min: float
    images_per_s_max: float
    rounds: int
    device: str = "cpu"
    process_peak_mb: float | None = None  # CUDA only: this process's own peak allocation (siblings not counted)
    mfu: float | None = None  # model FLOPs utilisation, where Lightning knows the device's peak
    # or "compile": the network compiled in place, as `model.compile: true` does; or "deterministic":
    # eager under what Lightning's `trainer.deterministic: warn` sets (deterministic algorithms, warn
    # only; fresh memory filled with NaN), to price that setting
    backend: str = "eager"


TRAIN_BACKENDS = ("eager", "compile", "deterministic")


@contextmanager
def _deterministic(on: bool):
    """torch.use_deterministic_algorithms(True, warn_only=True) for the block when ``on``, as
    Lightning's ``deterministic="warn"`` sets it for a whole fit; the previous mode restored."""
    if not on:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


@dataclass
class TrainCase:
    """One network in one memory format, precision and backend on one device, with a fixed random batch."""

    spec: str
    resolution: int
    memory_format: str
    precision: str
    batch_size: int
    device: str = "cpu"
    backend: str = "eager"
    rates: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.precision == "bf16":  # the earlier name of bf16-mixed
            self.precision = "bf16-mixed"
        name, kwargs = parse_model_spec(self.spec)
        net = create_network(name, num_classes=10, **kwargs)
        if hasattr(net, "check_input_size"):
            net.check_input_size(self.resolution)
        self.timer = DeviceTimer(resolve_device(self.device))
        self.macs = count_macs(net, self.resolution)
        fmt = torch.channels_last if self.memory_format == "channels_last" else torch.contiguous_format
        self.net = net.train().to(device=self.timer.device, memory_format=fmt)
        if (
            self.backend == "compile"
        ):  # as ImageClassifier(compile=True): in place, compiled on the first (warm-up) step
            self.net.compile()
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(self.batch_size, 3, self.resolution, self.resolution, generator=gen)
        self.x = x.to(self.timer.device).contiguous(memory_format=fmt)
        self.y = torch.randint(0, 10, (self.batch_size,), generator=gen).to(self.timer.device)
        self.process_peak_mb: float | None = None

    def step(self) -> None:
        with _deterministic(self.backend == "deterministic"):
            with precision_context(self.timer.device, self.precision):
                out = self.net(self.x)
                logits = out.logits if hasattr(out, "logits") else out
                loss = F.cross_entropy(logits.float(), self.y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()

    def time(self, steps: int) -> None:
        self.timer.reset_peak_memory()
        seconds = self.timer.seconds(self.step, steps)
        self.rates.append(self.batch_size / seconds)
        self.process_peak_mb = self.timer.peak_memory_mb()

    @property
    def mfu(self) -> float | None:
        """Training FLOPs (3 x forward: forward + backward) per second over the device's peak."""
        peak = available_flops(self.timer.device, self.precision)
        if not peak or not self.rates:
            return None
        return round(3 * 2 * self.macs * statistics.median(self.rates) / peak, 4)


def run_train_bench(
    specs: list[str],
    resolutions: list[int],
    memory_formats: list[str] = ("contiguous", "channels_last"),
    precisions: list[str] = ("32",),
    batch_size: int = 128,
    rounds: int = 7,
    steps: int = 5,
    warmup: int = 2,
    log=print,
    device: str = "cpu",
    backends: list[str] = ("eager",),
) -> list[TrainCase]:
    """Time training steps of every case, interleaved over rounds; one row per case (a compiled case
    compiles during its warm-up steps, which are not timed)."""
    check_model_specs(specs)
    cases = []
    for spec in specs:
        for resolution in resolutions:
            for memory_format in memory_formats:
                for precision, backend in itertools.product(precisions, backends):
                    try:
                        case = TrainCase(spec, resolution, memory_format, precision, batch_size, device, backend)
                    except ConfigError as err:
                        log(f"skip {spec} @ {resolution}px: {err}")
                        continue
                    for _ in range(warmup):
                        case.step()
                    case.timer.sync()
                    cases.append(case)
    if not cases:
        raise ConfigError("bench-train: no model could be built at the given resolutions (see the skip lines above)")
    alternating_rounds(cases, rounds, lambda c: c.time(steps), log)
    return cases


def rows_of(cases: list[TrainCase]) -> list[TrainRow]:
    """The rows of finished training cases."""
    return [
        TrainRow(
            network=c.spec,
            resolution=c.resolution,
            memory_format=c.memory_format,
            precision=c.precision,
            batch_size=c.batch_size,
            threads=torch.get_num_threads(),
            images_per_s=round(statistics.median(c.rates), 1),
            images_per_s_min=round(min(c.rates), 1),
            images_per_s_max=round(max(c.rates), 1),
            rounds=len(c.rates),
            device=str(c.timer.device),
            process_peak_mb=c.process_peak_mb,
            mfu=c.mfu,
            backend=c.backend,
        )
        for c in cases
    ]


def _undilated_spec(spec: str) -> str | None:
    name, _, rest = spec.partition(":")
    if name != "ddsnet":
        return None
    return "ddsnet_nodilation" + (":" + rest if rest else "")


def dilation_ratios(cases: list[TrainCase]) -> list[dict[str, Any]]:
    """Per-round img/s ratio ddsnet / ddsnet_nodilation (same kwargs, resolution, precision):
    in each memory format, and with each net in its own faster format ("best")."""
    by_key = {(c.spec, c.resolution, c.memory_format, c.precision, c.backend): c for c in cases}
    out = []
    for c in cases:
        ref_spec = _undilated_spec(c.spec)
        if ref_spec is None or c.memory_format != "contiguous":
            continue
        pairs = {}
        for fmt in ("contiguous", "channels_last"):
            dil, ref = (
                by_key.get((c.spec, c.resolution, fmt, c.precision, c.backend)),
                by_key.get((ref_spec, c.resolution, fmt, c.precision, c.backend)),
            )
            if dil and ref:
                pairs[fmt] = (dil, ref)
        if not pairs:
            continue

        pairs["best"] = tuple(
            max((pair[which] for pair in pairs.values()), key=lambda case: statistics.median(case.rates))
            for which in (0, 1)
        )
        for label, (dil, ref) in pairs.items():
            ratios = [d / r for d, r in zip(dil.rates, ref.rates)]
            out.append(
                {
                    "network": c.spec,
                    "reference": ref_spec,
                    "resolution": c.resolution,
                    "precision": c.precision,
                    "backend": c.backend,
                    "memory_format": label if label != "best" else f"best ({dil.memory_format} / {ref.memory_format})",
                    "dilated_images_per_s": round(statistics.median(dil.rates), 1),
                    "undilated_images_per_s": round(statistics.median(ref.rates), 1),
                    "ratio": round(statistics.median(ratios), 3),
                    "ratio_min": round(min(ratios), 3),
                    "ratio_max": round(max(ratios), 3),
                    "rounds": len(ratios),
                }
            )
    return out


def speedups(cases: list[TrainCase]) -> list[dict[str, Any]]:
    """Per-round img/s ratio of every bf16, compiled or deterministic case over the fp32 eager case of the same
    network, resolution and memory format (timed in the same rounds, so drift cancels)."""
    reference = {
        (c.spec, c.resolution, c.memory_format): c for c in cases if c.precision == "32" and c.backend == "eager"
    }
    out = []
    for c in cases:
        ref = reference.get((c.spec, c.resolution, c.memory_format))
        if ref is None or ref is c:
            continue
        ratios = [a / b for a, b in zip(c.rates, ref.rates)]
        out.append({
            "network": c.spec, "resolution": c.resolution, "memory_format": c.memory_format,
            "precision": c.precision, "backend": c.backend, "images_per_s": round(statistics.median(c.rates), 1),
            "fp32_eager_images_per_s": round(statistics.median(ref.rates), 1),
            "ratio": round(statistics.median(ratios), 3), "ratio_min": round(min(ratios), 3),
            "ratio_max": round(max(ratios), 3), "rounds": len(ratios),
        })  # fmt: skip
    return out


def bench_optimizer(params):
    """The optimizer the training benchmark steps (the fast recipe's SGD-Nesterov)."""
    return torch.optim.AdamW(params, lr=1e-3)


def write_rows(rows: list[TrainRow], path: Path) -> Path:
    """The img/s table as CSV (one row per network, resolution, format, precision and device)."""
    write_csv(path, [asdict(r) for r in rows])
    return path


BY_CASE = [("network", "network"), ("px", "resolution"), ("format", "memory_format"), ("precision", "precision")]


def _print_ratios(rows: list[dict[str, Any]], columns: list[tuple[str, str]], figure: str) -> None:
    """A markdown table of per-round ratios (median, min-max) on stdout, one row per comparison."""
    print("\n| " + " | ".join(title for title, _ in columns) + f" | {figure} (min-max) |")
    print("|" + "---|" * (len(columns) + 1))
    for r in rows:
        cells = " | ".join(str(r[key]) for _, key in columns)
        print(f"| {cells} | {r['ratio']:.3f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) |")


def main(argv: list[str] | None = None, fit_overhead: Callable[..., dict[str, Any]] | None = None) -> None:
    """``fit_overhead``: the training layer's timing of `lightclf fit` against this bare loop
    (lightclf.training.overhead, passed in by the CLI: measuring stays below training)."""
    parser = ToolArgumentParser(prog="lightclf bench-train", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_SPECS, help="name[:key=value,...] as in bench")
    parser.add_argument("--resolutions", nargs="+", type=int, default=[28, 32])
    parser.add_argument(
        "--formats", nargs="+", default=["contiguous", "channels_last"], choices=["contiguous", "channels_last"]
    )
    parser.add_argument("--precisions", nargs="+", default=["32"], choices=[*PRECISIONS, "fp32", "bf16"])
    parser.add_argument("--backends", nargs="+", default=["eager"], choices=list(TRAIN_BACKENDS))
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="training steps timed per case and round")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    if fit_overhead is not None:
        parser.add_argument("--fit-overhead", action="store_true", help="also time lightclf fit against a bare loop")
    parser.add_argument("--out", default="reports/bench/train.csv")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    precisions = [{"fp32": "32", "bf16": "bf16-mixed"}.get(p, p) for p in args.precisions]
    resolve_device(args.device)  # one line before anything is built when the device is missing
    cases = run_train_bench(
        args.models, args.resolutions, args.formats, precisions, args.batch_size, args.rounds, args.steps, log=log,
        device=args.device, backends=args.backends,
    )  # fmt: skip
    out = Path(args.out)
    rows = [asdict(r) for r in rows_of(cases)]
    write_csv(out, rows)
    print("| network | px | format | precision | backend | img/s (min-max) |\n|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['network']} | {r['resolution']} | {r['memory_format']} | {r['precision']} | {r['backend']} | "
            f"{r['images_per_s']:.0f} ({r['images_per_s_min']:.0f}-{r['images_per_s_max']:.0f}) |"
        )
    faster = speedups(cases)
    if faster:
        write_csv(out.with_name(out.stem + "_speedup.csv"), faster)
        _print_ratios(faster, BY_CASE + [("backend", "backend")], "/ fp32 eager img/s")
    ratios = dilation_ratios(cases)
    if ratios:
        write_csv(out.with_name(out.stem + "_dilation_ratio.csv"), ratios)
        _print_ratios(ratios, BY_CASE, "dilated / undilated img/s")
    if getattr(args, "fit_overhead", False):
        overhead = fit_overhead(log=log, device=args.device, precision=precisions[0])
        write_csv(out.with_name(out.stem + "_fit_overhead.csv"), [overhead])
        print(
            f"\nlightclf fit vs bare loop ({overhead['network']}, {overhead['resolution']} px): "
            f"{overhead['fit_images_per_s']:.0f} / {overhead['bare_images_per_s']:.0f} img/s = "
            f"{overhead['ratio']:.3f} ({overhead['ratio_min']:.2f}-{overhead['ratio_max']:.2f})"
        )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
