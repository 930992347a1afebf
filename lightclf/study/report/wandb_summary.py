"""The study's summary run in W&B: the report's tables and plots, for reviewers without local files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightclf.study.report.collect import RunRow, aggregate
from lightclf.study.report.comparisons import compare_configurations
from lightclf.study.report.throughput import attach_throughput
from lightclf.study.stats import effect_call

__all__ = ["log_summary_run"]


def log_summary_run(study, runs: list[RunRow], out: Path) -> str:
    """One W&B run in the study's group holding the per-run and per-configuration tables, the
    effects and the plots, so a reviewer in W&B needs no local files. Works offline (`wandb sync`)."""
    import wandb

    plan = study.report_plan
    rows = aggregate(runs, plan)
    attach_throughput(rows, out / "bench.csv")
    run = wandb.init(
        project=study.project,
        group=study.name,
        name=f"{study.name}-summary",
        job_type="study-summary",
        dir=str(Path(study.save_dir)),
        config={"study": study.name, "seeds": study.seeds, "protocol": study.protocol},
        tags=[study.name, "summary"],
    )
    progress = (len(runs), len(study.specs()))  # short of the plan: interim looks, no call
    try:

        def table(records: list[dict[str, Any]]):
            fields = list(dict.fromkeys(key for record in records for key in record))  # as write_csv's header
            return wandb.Table(columns=fields, data=[[r.get(f) for f in fields] for r in records])

        effect_rows = [
            {"effect": name, "comparison": compared, "n": e.n, "delta_top1": e.mean, "ci_low": e.ci_low,
             "ci_high": e.ci_high, "verdict": effect_call(e, progress)}
            for name, compared, e in ((k.name, k.compared, k.effect) for k in compare_configurations(rows, plan).knobs)
        ]  # fmt: skip
        payload = {
            "runs": table([r.csv_row() for r in runs]),
            "configurations": table([r.csv_row() for r in rows]),
            "effects": table(effect_rows),
        }
        for png in sorted(out.glob("accuracy_vs_*.png")):
            payload[f"plots/{png.stem}"] = wandb.Image(str(png))
        run.log(payload)
        run.summary.update({"n_configurations": len(rows), "n_runs": len(runs)})
        return run.dir
    finally:
        run.finish()
