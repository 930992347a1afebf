"""`lightclf bench` and `lightclf bench-compare`: the inference benchmark's command lines, its console
table and the throughput comparisons it writes (the benchmark itself: lightclf.measure.bench)."""

from __future__ import annotations

import statistics
import sys

import torch

from lightclf.cli_args import ToolArgumentParser
from lightclf.measure.bench import BACKENDS, BenchCase, BenchRow, run_bench, time_rounds, write_csv
from lightclf.measure.device import PRECISIONS, resolve_device
from lightclf.tables import write_csv as write_table

__all__ = ["format_table", "main", "run_compare", "compare_main", "COMPARISONS"]


def format_table(rows: list[BenchRow]) -> str:
    """The benchmark rows as an aligned console table."""
    head = "| network | px | format | backend | batch | img/s | ms/img | spread | MMACs |\n|---|---|---|---|---|---|---|---|---|\n"
    return head + "\n".join(
        f"| {r.network} | {r.resolution} | {r.memory_format} | {r.backend} | {r.batch_size} | {r.images_per_s:.0f} | "
        f"{r.latency_ms:.3f} | {r.spread:.2f} | {r.macs / 1e6:.1f} |"
        for r in rows
    )


def main(argv: list[str] | None = None) -> None:
    """The command's entry point: parse ``argv`` and run it (one-line errors for bad input)."""
    parser = ToolArgumentParser(prog="lightclf bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["ddsnet", "ddsnet_nodilation", "mobilenetv1_100"],
        help="name[:key=value,...], e.g. ddsnet:width_multiplier=0.5,small_input=true",
    )
    parser.add_argument("--resolutions", nargs="+", type=int, default=[96])
    parser.add_argument(
        "--formats", nargs="+", default=["contiguous", "channels_last"], choices=["contiguous", "channels_last"]
    )
    parser.add_argument("--backends", nargs="+", default=["eager"], choices=list(BACKENDS))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iters", type=int, default=10, help="batches timed per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="32", choices=list(PRECISIONS))
    parser.add_argument("--out", default="reports/bench/bench.csv")
    parser.add_argument("--append", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run_bench(
        args.models,
        args.resolutions,
        args.formats,
        args.backends,
        args.batch_size,
        args.repeats,
        args.warmup,
        args.iters,
        args.device,
        log=lambda m: print(m, file=sys.stderr),
        precision=args.precision,
    )
    path = write_csv(rows, args.out, append=args.append)
    print(format_table(rows))
    print(f"\nwrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()


# -- item: how our nets compare with timm's, and what dilation costs ---------------------------
COMPARISONS = {
    # name: (candidate spec, reference spec, resolutions it makes sense at)
    "ddsnet_nodilation / timm mobilenetv1_100": ("ddsnet_nodilation", "mobilenetv1_100", (32, 96, 160, 224)),
    "ddsnet / ddsnet_nodilation": ("ddsnet", "ddsnet_nodilation", (96, 160, 224)),
    "ddsnet / ddsnet_nodilation (small_input)": (
        "ddsnet:small_input=true",
        "ddsnet_nodilation:small_input=true",
        (32, 64),
    ),
    # The investigation: dilation 2 on all 13 depthwise convs, incl. the large early maps.
    "ddsnet all blocks dilated / ddsnet_nodilation (small_input)": (
        "ddsnet:small_input=true,dilation_schedule=" + "/".join(["2"] * 13),
        "ddsnet_nodilation:small_input=true",
        (32, 64),
    ),
    "ddsnet all blocks dilated / ddsnet_nodilation": (
        "ddsnet:dilation_schedule=" + "/".join(["2"] * 13),
        "ddsnet_nodilation",
        (96, 160, 224),
    ),
}


def run_compare(
    resolutions: list[int],
    memory_formats: list[str],
    batch_size: int,
    repeats: int,
    iters: int,
    log=print,
    device: str = "cpu",
    precision: str = "32",
):
    """Throughput ratios candidate/reference, computed within each round (interleaved), median over rounds."""
    out = []
    for label, (candidate, reference, valid) in COMPARISONS.items():
        for resolution in [r for r in resolutions if r in valid]:
            for memory_format in memory_formats:
                cases = [
                    BenchCase(spec, resolution, memory_format, "eager", batch_size, device, precision)
                    for spec in (candidate, reference)
                ]
                for case in cases:
                    for _ in range(3):
                        case(case.x)
                time_rounds(cases, repeats, iters)
                ratios = [ref / cand for cand, ref in zip(cases[0].times, cases[1].times)]
                row = {
                    "comparison": label,
                    "resolution": resolution,
                    "memory_format": memory_format,
                    "batch_size": batch_size,
                    "candidate_images_per_s": round(batch_size / statistics.median(cases[0].times), 1),
                    "reference_images_per_s": round(batch_size / statistics.median(cases[1].times), 1),
                    "speed_ratio": round(statistics.median(ratios), 3),
                    "ratio_min": round(min(ratios), 3),
                    "ratio_max": round(max(ratios), 3),
                    "repeats": repeats,
                    "threads": torch.get_num_threads(),
                    "device": str(cases[0].timer.device),
                    "precision": precision,
                }
                log(f"{label} @ {resolution}px {memory_format}: {row['speed_ratio']:.3f}")
                out.append(row)
    return out


def compare_main(argv: list[str] | None = None) -> None:
    """`lightclf bench-compare`: parse ``argv``, run the comparisons and write their CSV."""
    parser = ToolArgumentParser(prog="lightclf bench-compare", description=run_compare.__doc__)
    parser.add_argument("--resolutions", nargs="+", type=int, default=[32, 64, 96, 160, 224])
    parser.add_argument("--formats", nargs="+", default=["contiguous", "channels_last"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="32", choices=list(PRECISIONS))
    parser.add_argument("--out", default="reports/bench/compare.csv")
    args = parser.parse_args(argv)
    resolve_device(args.device)
    rows = run_compare(
        args.resolutions,
        args.formats,
        args.batch_size,
        args.repeats,
        args.iters,
        log=lambda m: print(m, file=sys.stderr),
        device=args.device,
        precision=args.precision,
    )
    path = write_table(args.out, rows)
    print(
        "| comparison | px | format | candidate img/s | reference img/s | speed ratio (min-max) |\n|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['comparison']} | {r['resolution']} | {r['memory_format']} | {r['candidate_images_per_s']:.0f} | "
            f"{r['reference_images_per_s']:.0f} | {r['speed_ratio']:.3f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) |"
        )
    print(f"\nwrote {len(rows)} rows to {path}")
