"""The study's inference benchmark (lightclf.measure.bench) and its img/s in the report's rows."""

from __future__ import annotations

import sys
from pathlib import Path

from lightclf.study.report.collect import ConfigurationRow, aggregate, collect_runs

__all__ = ["bench_study", "attach_throughput"]


def bench_study(
    study, out_dir: str | Path = "reports", repeats: int = 3, batch_size: int = 32, device: str = "cpu"
) -> Path | None:
    """Inference img/s of every configuration of a study on ``device``, interleaved, into
    reports/<study>/bench.csv (each row names its device)."""
    from lightclf.measure.bench import run_bench, write_csv

    runs = aggregate(collect_runs(study.save_dir, study.project, study.name, study.records))
    pairs = sorted({(r.factors.model_spec, r.factors.resolution) for r in runs if r.factors.resolution})
    if not pairs:
        return None
    rows = []
    for resolution in sorted({res for _, res in pairs}):
        specs = [spec for spec, res in pairs if res == resolution]
        rows += run_bench(
            specs,
            [resolution],
            ["contiguous", "channels_last"],
            ["eager"],
            batch_size,
            repeats,
            warmup=2,
            iters=5,
            device=device,
            log=lambda m: print(m, file=sys.stderr),
        )
    return write_csv(rows, Path(out_dir) / study.name / "bench.csv")


def attach_throughput(rows: list[ConfigurationRow], bench_csv: Path) -> None:
    """Each row's best inference img/s (and its memory format) from the study's bench.csv."""
    from lightclf.measure.bench import read_csv

    if not bench_csv.exists():
        return
    best: dict[tuple, dict] = {}
    for b in read_csv(bench_csv):
        key = (b["network"], b["resolution"])
        if key not in best or b["images_per_s"] > best[key]["images_per_s"]:
            best[key] = b
    for row in rows:
        b = best.get((row.factors.model_spec, row.factors.resolution))
        row.images_per_s = b["images_per_s"] if b else None
        row.memory_format = b["memory_format"] if b else None
