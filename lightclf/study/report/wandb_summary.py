"""The study's summary run in W&B: the report's tables and plots, for reviewers without local files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightclf.study.report.collect import aggregate
from lightclf.study.report.comparisons import effects
from lightclf.study.report.markdown import CONFIG_FIELDS, RUN_FIELDS
from lightclf.study.report.throughput import attach_throughput

__all__ = ["log_summary_run"]


def log_summary_run(study, runs: list[dict[str, Any]], out: Path) -> str:
    """One W&B run in the study's group holding the per-run and per-configuration tables, the
    effects and the plots, so a reviewer in W&B needs no local files. Works offline (`wandb sync`)."""
    import wandb

    rows = aggregate(runs)
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
    try:

        def table(records: list[dict[str, Any]], fields: list[str]):
            data = [[(" ".join(map(str, r.get(f))) if isinstance(r.get(f), list) else r.get(f)) for f in fields]
                    for r in records]  # fmt: skip
            return wandb.Table(columns=fields, data=data)

        effect_rows = [
            {"effect": name, "comparison": compared, "n": e.n, "delta_top1": e.mean, "ci_low": e.ci_low,
             "ci_high": e.ci_high, "verdict": e.verdict}
            for name, compared, e in effects(rows)
        ]  # fmt: skip
        payload = {
            "runs": table(runs, RUN_FIELDS),
            "configurations": table(rows, CONFIG_FIELDS),
            "effects": table(effect_rows, ["effect", "comparison", "n", "delta_top1", "ci_low", "ci_high", "verdict"]),
        }
        for png in sorted(out.glob("accuracy_vs_*.png")):
            payload[f"plots/{png.stem}"] = wandb.Image(str(png))
        run.log(payload)
        run.summary.update({"n_configurations": len(rows), "n_runs": len(runs)})
        return run.dir
    finally:
        run.finish()
