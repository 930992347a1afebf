"""`lightclf bench-tune`: the tuner (its sampler and pruner) against a full grid of the same space, on
one arm: how many trials and fit-minutes each needs to reach a pick within 0.2 points of validation
top-1 of the grid's best. Both run through the same ``Tuner`` (the grid as enqueued trials, no
pruning), one after the other, so their fit-minutes are measured alike."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path

from lightclf.cli_args import ToolArgumentParser
from lightclf.errors import ConfigError
from lightclf.study.execution import plan_slots
from lightclf.study.spec import Study, load_study
from lightclf.study.tuning.records import TrialRow, read_trials
from lightclf.study.tuning.space import Param
from lightclf.tables import write_csv

__all__ = ["grid_points", "time_to_target", "main"]

WITHIN = 0.002  # 0.2 points of validation top-1


def grid_points(space: tuple[Param, ...], points: int) -> list[dict]:
    """Every combination of ``points`` values per range (log-spaced on log ranges) and every choice."""
    axes = []
    for p in space:
        if p.choices is not None:
            axes.append(list(p.choices))
        elif p.log:
            lo, hi = math.log(p.low), math.log(p.high)
            axes.append([math.exp(lo + (hi - lo) * i / (points - 1)) for i in range(points)])
        else:
            axes.append([p.low + (p.high - p.low) * i / (points - 1) for i in range(points)])
        if p.integer:
            axes[-1] = sorted({round(v) for v in axes[-1]})
        elif p.choices is None:  # exp(log(high)) may land a rounding error past the bound
            axes[-1] = [min(max(v, p.low), p.high) for v in axes[-1]]
    return [dict(zip((p.key for p in space), values)) for values in itertools.product(*axes)]


def time_to_target(rows: list[TrialRow], target: float) -> tuple[int | None, float]:
    """Trials (in trial order) and summed fit-minutes until a complete trial reaches ``target``; the
    trial count is None when none does (the minutes are then the whole run's)."""
    trials, minutes, _ = cost_to_target(rows, target)
    return trials, minutes


def cost_to_target(rows: list[TrialRow], target: float) -> tuple[int | None, float, int]:
    """As ``time_to_target``, with the seed-epochs trained on the way as well: a count no other load
    on the machine can inflate (a pruned trial counts the epochs it ran)."""
    minutes, epochs = 0.0, 0
    for count, row in enumerate(sorted(rows, key=lambda r: r.trial), 1):
        minutes += (row.fit_seconds or 0.0) / 60
        epochs += row.epochs * max(1, len(row.seed_values))
        if row.state == "COMPLETE" and row.value is not None and row.value >= target:
            return count, minutes, epochs
    return None, minutes, epochs


def _run(study: Study, jobs: int, enqueue: list[dict] | None = None) -> list[TrialRow]:
    import optuna

    from lightclf.study.tuning.tuner import Tuner

    tuner = Tuner(study, plan_slots(jobs * len(study.tuning.seeds), None))
    if enqueue:
        (arm,) = tuner.arms
        ostudy = optuna.create_study(storage=tuner.storage, study_name=arm.optuna_name, direction="maximize",
                                     load_if_exists=True)  # fmt: skip
        if not ostudy.get_trials(deepcopy=False):
            for params in enqueue:
                ostudy.enqueue_trial(params)
    tuner.run()
    return read_trials(study.report_folder, study.tuning)


def main(argv: list[str] | None = None) -> None:
    """The command's entry point: parse ``argv`` and run it (one-line errors for bad input)."""
    parser = ToolArgumentParser(prog="lightclf bench-tune", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a study YAML with one tuned arm and a tune: block")
    parser.add_argument("--points", type=int, default=5, help="grid values per range (default 5)")
    parser.add_argument("--jobs", type=int, default=1, help="trials at once (default 1)")
    parser.add_argument("--out", default="reports/bench/tune_vs_grid.csv", help="the figures, one row per search")
    args = parser.parse_args(argv)
    if args.points < 2:
        raise ConfigError(f"bench-tune --points must be >= 2, got {args.points}")
    study = load_study(args.config)
    tune = study.tuning
    if tune is None or len([1 for _, tuned in study.arms() if tuned]) != 1:
        raise ConfigError("bench-tune: the study needs a tune: block and exactly one tuned arm")
    grid = grid_points(tune.space, args.points)
    grid_tune = {**study.tune, "n_trials": len(grid), "sampler": {"name": "random"}, "pruner": {"name": "none"}}
    grid_study = replace(study, name=f"{study.name}-grid", tune=grid_tune, report_dir=str(study.report_folder / "grid"))
    grid_rows = _run(grid_study, args.jobs, enqueue=grid)
    best = max(r.value for r in grid_rows if r.state == "COMPLETE" and r.value is not None)
    tuned_rows = _run(study, args.jobs)
    figures = []
    for name, rows, kind in (("grid", grid_rows, f"{len(grid)}-point grid"),
                             (tune.sampler, tuned_rows, f"{tune.sampler} + {tune.pruner} pruner")):  # fmt: skip
        trials, minutes, epochs = cost_to_target(rows, best - WITHIN)
        complete = [r for r in rows if r.state == "COMPLETE" and r.value is not None]
        figures.append(
            {
                "search": name,
                "what": kind,
                "trials_run": len(rows),
                "pruned": sum(r.state == "PRUNED" for r in rows),
                "best_val_top1": round(max(r.value for r in complete), 5) if complete else "",
                "trials_to_within_0.2pt_of_grid_best": trials if trials is not None else "not reached",
                "fit_minutes_to_it": round(minutes, 1),
                "fit_minutes_total": round(sum((r.fit_seconds or 0) for r in rows) / 60, 1),
                "seed_epochs_to_it": epochs,
                "seed_epochs_total": cost_to_target(rows, math.inf)[2],
            }
        )
    # A grid knows its best only once it has run every point: its cost to a pick is all of it.
    figures[0]["fit_minutes_to_it"] = figures[0]["fit_minutes_total"]
    figures[0]["seed_epochs_to_it"] = figures[0]["seed_epochs_total"]
    figures[0]["trials_to_within_0.2pt_of_grid_best"] = len(grid_rows)
    write_csv(Path(args.out), figures)
    for row in figures:
        print(", ".join(f"{k}={v}" for k, v in row.items()))
    ratio = figures[1]["fit_minutes_to_it"] / figures[0]["fit_minutes_to_it"]
    epochs = figures[1]["seed_epochs_to_it"] / figures[0]["seed_epochs_to_it"]
    print(
        f"tuner / grid to a pick within 0.2 points of the grid's best: fit-minutes {ratio:.2f}, "
        f"seed-epochs {epochs:.2f}; wrote {args.out}"
    )
