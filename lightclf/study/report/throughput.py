"""A study's inference benchmark (run by lightclf.measure.bench.bench_configurations) and its img/s
in the report's rows."""

from __future__ import annotations

import sys
from pathlib import Path

from lightclf.study.report.collect import ConfigurationRow, aggregate, collect_runs

__all__ = ["bench_study", "attach_throughput"]


def bench_study(
    study, out_dir: str | Path = "reports", repeats: int = 3, batch_size: int = 32, device: str = "cpu"
) -> Path | None:
    """Inference img/s of every configuration of a study on ``device`` (the benchmark is
    lightclf.measure.bench's), into reports/<study>/bench.csv."""
    from lightclf.measure.bench import bench_configurations

    rows = aggregate(collect_runs(study.save_dir, study.project, study.name, study.records))
    pairs = [(r.factors.model_spec, r.factors.resolution) for r in rows if r.factors.resolution]
    return bench_configurations(pairs, Path(out_dir) / study.name / "bench.csv", repeats, batch_size, device,
                                log=lambda m: print(m, file=sys.stderr))  # fmt: skip


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
