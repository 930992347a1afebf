"""The report's "Tuning" section: how each arm was tuned, from the committed ``tuning.csv`` and
``picks.yaml`` (``lightclf tune``), never from the Optuna storage: trials run, pruned and failed, the
best validation top-1, the pick, how flat the optimum is, picks on the edge of the space, and one plot
per tuned key. Torch-free, like the rest of the report."""

from __future__ import annotations

from pathlib import Path

from lightclf.study.spec import Study
from lightclf.study.tuning.records import TrialRow, read_picks, read_trials
from lightclf.study.tuning.space import EDGE_SHARE, TuneSpec

__all__ = ["tuning_section", "FLAT_WITHIN"]

FLAT_WITHIN = 0.002  # trials within 0.2 points of the best: how flat the optimum is


def tuning_section(study: Study, out_dir: Path) -> list[str]:
    """Markdown lines of the section (none for a study without a ``tune:`` block)."""
    tune = study.tuning
    if tune is None:
        return []
    rows = read_trials(study.report_folder, tune)
    picks = read_picks(study.report_folder)
    fixed = [spec for spec, tuned in study.arms() if not tuned]
    lines = ["## Tuning (validation only, the same budget for every tuned arm)", "", tune.describe(), ""]
    if fixed:
        from lightclf.factors import Factors

        labels = ", ".join(Factors.from_study(spec.configuration).configuration.label for spec in fixed)
        lines += [f"Arms that keep the recipe (tune: false), untuned by design: {labels}.", ""]
    if not rows:
        return lines + ["No trial has run yet (`lightclf tune --config ...`).", ""]
    lines += [_arm_table(rows, picks, tune), ""]
    edges = [
        f"{key.rsplit('.', 1)[-1]} of {entry.get('arm', arm)}"
        for arm, entry in picks.items()
        for key, value in (entry.get("params") or {}).items()
        if (param := tune.param(key)) is not None and param.on_edge(value)
    ]
    if edges:
        lines += [
            f"**Warning: picks on the edge of the space** (within {100 * EDGE_SHARE:.0f}% of a bound): "
            + "; ".join(edges)
            + ". The optimum may lie outside the range: widen it and tune those arms again.",
            "",
        ]
    plots = _plots(rows, tune, out_dir)
    lines += [f"![{p}]({p})" for p in plots] + ([""] if plots else [])
    return lines


def _arm_table(rows: list[TrialRow], picks: dict, tune: TuneSpec) -> str:
    head = "| arm | trials: complete / pruned / failed | best val top-1 % | pick | within 0.2 pts of best | status |"
    lines = [head, "|---|---|---|---|---|---|"]
    for key in dict.fromkeys(r.arm_key for r in rows):
        mine = [r for r in rows if r.arm_key == key]
        complete = [r for r in mine if r.state == "COMPLETE" and r.value is not None]
        failed = [r for r in mine if r.state == "FAIL" and r.note != "stopped, re-queued"]  # re-queued: retried later
        counts = [len(complete), sum(r.state == "PRUNED" for r in mine), len(failed)]
        best = max((r.value for r in complete), default=None)
        flat = sum(r.value >= best - FLAT_WITHIN for r in complete) if best is not None else 0
        pick = picks.get(key)
        shown = (
            ", ".join(f"{k.rsplit('.', 1)[-1]}={_fmt(v)}" for k, v in pick["params"].items())
            + f" (trial {pick['trial']})"
            if pick
            else "-"
        )
        status = "picked" if pick else f"{counts[0] + counts[1]} of {tune.n_trials} trials done"
        best_cell = f"{100 * best:.2f}" if best is not None else "-"
        lines.append(
            f"| {mine[0].arm} | {' / '.join(map(str, counts))} | {best_cell} | {shown} | {flat} of {counts[0]} | {status} |"
        )
    return "\n".join(lines)


def _plots(rows: list[TrialRow], tune: TuneSpec, out_dir: Path) -> list[str]:
    """One figure per tuned key: each complete trial's validation top-1 against the key's value, per
    arm (pruned trials as crosses at their key's value, on the floor of the axis)."""
    complete = [r for r in rows if r.state == "COMPLETE" and r.value is not None]
    if not complete:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    arms = list(dict.fromkeys(r.arm for r in rows))
    floor = min(r.value for r in complete)
    names = []
    for param in tune.space:
        fig, ax = plt.subplots(figsize=(5.2, 3.4))
        for i, arm in enumerate(arms):
            color = f"C{i}"
            done = [r for r in complete if r.arm == arm and param.key in r.params]
            ax.plot([r.params[param.key] for r in done], [100 * r.value for r in done], "o", color=color, label=arm)
            pruned = [r for r in rows if r.arm == arm and r.state == "PRUNED" and param.key in r.params]
            if pruned:
                ax.plot([r.params[param.key] for r in pruned], [100 * floor] * len(pruned), "x", color=color)
        if param.log:
            ax.set_xscale("log")
        if param.choices is None:
            ax.axvline(param.low, color="grey", lw=0.8, ls=":")
            ax.axvline(param.high, color="grey", lw=0.8, ls=":")
        ax.set_xlabel(param.key)
        ax.set_ylabel("mean val top-1 % (tuning budget)")
        ax.set_title(f"Tuning: {param.key.rsplit('.', 1)[-1]} (x: pruned; dotted: the space's bounds)", fontsize=8)
        ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"tuning_{param.key.replace('.', '_')}.png"
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        names.append(name)
    return names


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
