"""The report's rows, typed: one ``RunRow`` per finished run (from run folders, archived records or
the W&B API) and one ``ConfigurationRow`` per configuration, its seeds merged (mean, std, n, 95% t
interval). Both are keyed by the one ``Factors`` record."""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lightclf.factors import Factors
from lightclf.runs import ExportFigures, RunRecord
from lightclf.study.report.plan import ReportPlan
from lightclf.study.stats import Summary, summarize

__all__ = ["KEY_FACTORS", "RunRow", "ConfigurationRow", "collect_runs", "collect_wandb_runs", "aggregate"]

# The configuration's factors, as in ``Factors`` (the seed aside). "budget" (training images x
# epochs) and "other" (other kwargs and recipe overrides) are factors too: runs trained on different
# budgets or recipes are different configurations, never paired, never in one row of a factor table.
KEY_FACTORS = tuple(f.name for f in fields(Factors) if f.name not in ("seed", "settings"))


@dataclass(frozen=True)
class RunRow:
    """One finished run: its factors (seed included), test metrics, cost and deployment figures."""

    factors: Factors
    run_id: str
    top1: float | None = None
    top5: float | None = None
    val_top1: float | None = None
    params: int | None = None
    macs: float | None = None
    size_mb: float | None = None
    receptive_field: int | None = None
    fit_seconds: float | None = None
    epochs: int | None = None
    erf_r50: float | None = None  # effective receptive field radii (px), when measured
    erf_r95: float | None = None
    heatmap: list[list[float]] | None = field(default=None, repr=False)
    erf_blocks: list[dict] = field(default_factory=list, repr=False)  # per-block fields, when measured
    val_curve: tuple[float, ...] = field(default=(), repr=False)  # validation top-1 after each epoch
    device: str | None = None  # what trained it, when recorded (runs before 2026-12-07 did not)
    export: ExportFigures | None = None

    @classmethod
    def from_record(cls, record: RunRecord, factors: Factors, run_id: str) -> RunRow:
        return cls(
            factors=factors,
            run_id=run_id,
            top1=record.test_metrics.get("test/acc1"),
            top5=record.test_metrics.get("test/acc5"),
            val_top1=record.fit_metrics.get("val/acc1"),
            params=record.complexity.get("params"),
            macs=record.complexity.get("macs"),
            size_mb=record.complexity.get("size_mb"),
            receptive_field=record.complexity.get("receptive_field"),
            fit_seconds=record.fit_seconds,
            epochs=(record.epoch or 0) + 1,
            erf_r50=record.erf.get("r50"),
            erf_r95=record.erf.get("r95"),
            heatmap=record.erf.get("heatmap"),
            erf_blocks=list(record.erf.get("blocks") or []),
            device=record.device,
            val_curve=tuple(
                e["val/acc1"] for e in sorted(record.val_per_epoch, key=lambda e: e.get("epoch", 0)) if "val/acc1" in e
            ),
            export=record.export_figures,
        )

    @property
    def seed(self) -> int | None:
        return self.factors.seed

    def csv_row(self) -> dict[str, Any]:
        """A runs_per_seed.csv line: the factors, then the figures (no heat map, no export; the device
        only when recorded, so tables of runs from before it was keep their columns)."""
        figures = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("factors", "heatmap", "export", "erf_blocks", "val_curve")
            and not (f.name == "device" and self.device is None)
        }
        return {**self.factors.as_dict(), **figures}


@dataclass
class ConfigurationRow:
    """The seeds of one configuration merged: top-1/top-5/fit time summaries, the shared cost, and
    (from the study's benchmark, when there is one) inference img/s."""

    factors: Factors  # seed None
    runs: list[RunRow]
    top1: Summary
    top5: Summary
    fit_seconds: Summary
    images_per_s: float | None = None
    memory_format: str | None = None  # the benchmark's faster format for images_per_s
    role: str = ""  # as the study's report plan declares it (lightclf.study.report.plan); "" when none

    @classmethod
    def of(cls, runs: list[RunRow]) -> ConfigurationRow:
        def summary(name: str) -> Summary:
            return summarize([getattr(r, name) for r in runs if getattr(r, name) is not None])

        runs = sorted(runs, key=lambda r: r.seed or 0)
        return cls(runs[0].factors.configuration, runs, summary("top1"), summary("top5"), summary("fit_seconds"))

    @property
    def label(self) -> str:
        return self.factors.label

    @property
    def is_baseline(self) -> bool:
        """A baseline (role declared by the study) gets its comparison with the proposed configuration."""
        return self.role == "baseline"

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.runs]

    @property
    def n(self) -> int:
        return self.top1.n

    @property
    def first(self) -> RunRow:
        """The configuration's cost (params, MACs, size, RF, epochs) is the same in every seed."""
        return self.runs[0]

    def mean(self, metric: str = "top1") -> float | None:
        summary = getattr(self, metric)
        return summary.mean if summary.n else None

    def std(self, metric: str = "top1") -> float | None:
        summary = getattr(self, metric)
        return summary.std if summary.n else None

    def csv_row(self) -> dict[str, Any]:
        """A runs.csv line: the configuration's factors, n and seeds, the summaries and the cost."""
        first = self.first
        return {
            **{k: getattr(self.factors, k) for k in KEY_FACTORS},
            "n": self.n, "seeds": " ".join(str(s) for s in self.seeds),
            "top1": self.mean(), "top1_std": self.std(), "top1_ci_low": self.top1.ci_low,
            "top1_ci_high": self.top1.ci_high, "top5": self.mean("top5"), "top5_std": self.std("top5"),
            "params": first.params, "macs": first.macs, "size_mb": first.size_mb,
            "receptive_field": first.receptive_field, "images_per_s": self.images_per_s,
            "fit_seconds": self.mean("fit_seconds"), "epochs": first.epochs,
        }  # fmt: skip


def collect_runs(
    save_dir: str | Path, project: str, study: str | None = None, records: str | Path | None = None
) -> list[RunRow]:
    """Every finished run: from the run folders and from the study's archived ``records`` (for
    runs whose folders this machine does not have)."""
    runs = []
    candidates: dict[str, list[Path]] = defaultdict(list)  # run id -> its folder here, then its archived copy
    for folder in sorted((Path(save_dir) / project).glob("*")):
        candidates[folder.name].append(folder)
    if records:
        for folder in sorted(p for p in Path(records).glob("*") if p.is_dir()):
            candidates[folder.name].append(folder)
    for run_id, folders in sorted(candidates.items()):
        # A folder left "running" by a killed process must not hide the archived finished run.
        record = next((r for r in map(RunRecord.read, folders) if r.finished), None)
        if record is None or (study is not None and record.factors.get("study") != study):
            continue
        runs.append(RunRow.from_record(record, Factors.from_study(record.factors), run_id))
    return runs


def collect_wandb_runs(path: str, study: str) -> list[RunRow]:
    """The same rows from the W&B API (group = study name; the run's ``factors`` config, which the
    fit logs from the study's spec, budget and overrides included); needs network and a key."""
    import wandb

    known = {f.name for f in fields(Factors)}
    runs, unlabelled = [], 0
    for run in wandb.Api(timeout=30).runs(path, filters={"group": study}):
        logged = run.config.get("factors") or {}
        if run.state != "finished":
            continue
        if not logged.get("network"):  # logged before lightclf wrote factors: its configuration is unknown
            unlabelled += 1
            continue
        summary = run.summary
        runs.append(
            RunRow(
                factors=Factors(**{k: v for k, v in logged.items() if k in known}),
                run_id=run.id,
                top1=summary.get("test/acc1"),
                top5=summary.get("test/acc5"),
                val_top1=summary.get("val/acc1"),
                **{k: summary.get(k) for k in ("params", "macs", "size_mb", "receptive_field")},
                fit_seconds=summary.get("_runtime"),
                epochs=(summary.get("epoch") or 0) + 1,
            )
        )
    if unlabelled:
        print(f"report: {unlabelled} finished W&B runs of {study!r} carry no factors config; left out", file=sys.stderr)
    return runs


def aggregate(runs: list[RunRow], plan: ReportPlan | None = None) -> list[ConfigurationRow]:
    """Merge seeds: one row per configuration (``Factors`` up to the seed), in first-seen order, each
    with the role the study's plan gives it."""
    groups: dict[Factors, list[RunRow]] = defaultdict(list)
    for run in runs:
        groups[run.factors.configuration].append(run)
    rows = [ConfigurationRow.of(members) for members in groups.values()]
    for row in rows:
        row.role = plan.role(row.factors) if plan else ""
    return rows
