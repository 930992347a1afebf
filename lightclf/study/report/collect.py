"""The configuration report's rows: finished runs from run folders, archived records or the W&B
API, and the seeds of each configuration merged (mean, std, n, 95% t interval)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from lightclf.factors import PROPOSED_FAMILY, Factors
from lightclf.runs import RunRecord
from lightclf.study.stats import summarize

__all__ = ["KEY_FACTORS", "collect_runs", "collect_wandb_runs", "aggregate", "is_baseline", "label", "role"]

# The configuration's factors, as in ``Factors`` (the seed aside). "budget" (training images x
# epochs) and "other" (other kwargs and recipe overrides) are factors too: runs trained on different
# budgets or recipes are different configurations, never paired, never in one row of a factor table.
KEY_FACTORS = tuple(f for f in Factors.__dataclass_fields__ if f != "seed")


def factors_of(row: dict[str, Any]) -> Factors:
    """A row's configuration as the one ``Factors`` record (its label is the label everywhere)."""
    return Factors(**{k: row.get(k) for k in KEY_FACTORS if row.get(k) is not None}).configuration


def label(row: dict[str, Any]) -> str:
    return factors_of(row).label


def role(row: dict[str, Any]) -> str:
    name = row["network"]
    if name == "ddsnet":
        return "proposed" if (row.get("dilation") or 2) > 1 else "ablation: no dilation"
    if name.startswith("ddsnet"):
        return "ablation: " + name.removeprefix("ddsnet_").replace("_", ", ")
    return "baseline"


def collect_runs(
    save_dir: str | Path, project: str, study: str | None = None, records: str | Path | None = None
) -> list[dict[str, Any]]:
    """One dict per finished run: factors, test metrics, complexity; from the run folders and
    from the study's archived ``records`` (for runs whose folders this machine does not have)."""
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
        factors = Factors.from_study(record.factors)
        runs.append(
            {
                **{k: getattr(factors, k) for k in (*KEY_FACTORS, "seed")},
                "run_id": run_id,
                "top1": record.test_metrics.get("test/acc1"),
                "top5": record.test_metrics.get("test/acc5"),
                **{k: record.complexity.get(k) for k in ("params", "macs", "size_mb", "receptive_field")},
                "fit_seconds": record.fit_seconds,
                "epochs": (record.epoch or 0) + 1,
                "export": record.export_figures,
            }
        )
    return runs


def collect_wandb_runs(path: str, study: str) -> list[dict[str, Any]]:
    """The same rows from the W&B API (group = study name); needs network and a key."""
    import wandb

    runs = []
    for run in wandb.Api(timeout=30).runs(path, filters={"group": study}):
        if run.state != "finished":
            continue
        cfg, summary = run.config, run.summary
        runs.append(
            {
                "network": cfg.get("network"),
                "width_multiplier": (cfg.get("network_kwargs") or {}).get("width_multiplier"),
                "resolution": cfg.get("img_size"),
                "dilation": (cfg.get("network_kwargs") or {}).get("dilation"),
                "small_input": (cfg.get("network_kwargs") or {}).get("small_input"),
                "seed": (cfg.get("lightclf_config") or {}).get("seed_everything"),
                "run_id": run.id,
                "top1": summary.get("test/acc1"),
                "top5": summary.get("test/acc5"),
                **{k: summary.get(k) for k in ("params", "macs", "size_mb", "receptive_field")},
                "fit_seconds": summary.get("_runtime"),
                "epochs": (summary.get("epoch") or 0) + 1,
            }
        )
    return runs


def _key(run: dict[str, Any]) -> tuple:
    return tuple(run.get(k) for k in KEY_FACTORS)


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge seeds: per configuration the mean, std, n and 95% t interval of top-1 and top-5."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[_key(run)].append(run)
    rows = []
    for members in groups.values():
        row = dict(members[0])
        for metric in ("top1", "top5", "fit_seconds"):
            summary = summarize([m[metric] for m in members if m.get(metric) is not None])
            row[metric] = summary.mean if summary.n else None
            row[f"{metric}_std"] = summary.std if summary.n else None
            if metric == "top1":
                row["n"], row["top1_ci_low"], row["top1_ci_high"] = summary.n, summary.ci_low, summary.ci_high
        row["seeds"] = sorted(m.get("seed") for m in members)
        row["runs"] = members
        rows.append(row)
    return rows


def is_baseline(row: dict[str, Any]) -> bool:
    """Any network outside the DDSNet family is a baseline (and gets its comparison)."""
    return row["network"] not in PROPOSED_FAMILY
