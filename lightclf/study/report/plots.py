"""The reports' plots: accuracy against parameters, MACs and throughput, one panel per training budget,
with the Pareto front; and one figure type the question report draws twice (a quantity per epoch or
per block, mean ± std over seeds, a line per configuration)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from lightclf.study.report.collect import ConfigurationRow

__all__ = ["pareto_front", "plot_accuracy_vs_cost", "plot_mean_std"]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated when maximising both coordinates, sorted by x."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
    front, best_y = [], float("-inf")
    for i in order:
        if points[i][1] > best_y:
            front.append(i)
            best_y = points[i][1]
    return sorted(front, key=lambda i: points[i][0])


def _cost(row: ConfigurationRow, key: str) -> float | None:
    return row.images_per_s if key == "images_per_s" else getattr(row.first, key)


def _plot_panel(ax, pts: list[ConfigurationRow], key: str, xlabel: str, log: bool) -> None:
    """Accuracy against one cost on one axis: error bars (± 1 std over seeds), labels, Pareto front."""
    roles = (("proposed", "o", "C0"), ("ablation", "s", "C1"), ("baseline", "^", "C2"))
    for kind, marker, color in (*roles, ("configuration", "D", "C3")):
        if kind == "configuration":  # no declared role (or one outside the three): one style for the rest
            sel = [r for r in pts if not r.role.startswith(tuple(k for k, _, _ in roles))]
        else:
            sel = [r for r in pts if r.role.startswith(kind)]
        if not sel:
            continue
        ax.errorbar(
            [_cost(r, key) for r in sel],
            [100 * r.mean() for r in sel],
            yerr=[100 * (r.std() or 0.0) for r in sel],
            fmt=marker,
            color=color,  # one colour per role in every panel
            capsize=3,
            markersize=6,
            label=kind,
        )
        for r in sel:
            ax.annotate(r.label, (_cost(r, key), 100 * r.mean()), fontsize=6, alpha=0.8)
    # Pareto front: fewer params/MACs is better, more img/s is better.
    sign = 1 if key == "images_per_s" else -1
    front = [pts[i] for i in pareto_front([(sign * _cost(r, key), r.mean()) for r in pts])]
    front.sort(key=lambda r: _cost(r, key))
    ax.plot([_cost(r, key) for r in front], [100 * r.mean() for r in front], "k--", lw=1, label="Pareto front")
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test top-1 (%), mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_accuracy_vs_cost(rows: list[ConfigurationRow], out_dir: Path) -> list[str]:
    """Plots of test top-1 against params, MACs and img/s, with the Pareto front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for key, xlabel, log in (("params", "parameters", True), ("macs", "forward MACs / image", True),
                             ("images_per_s", "inference images/s (CPU)", True)):  # fmt: skip
        pts = [r for r in rows if _cost(r, key) and r.mean() is not None]
        if not pts:
            continue
        # One panel per training budget: runs on different budgets are not comparable, so they
        # never share axes or a Pareto front.
        budgets = sorted({r.factors.budget for r in pts}, key=lambda b: (b != "full", b))
        fig, axes = plt.subplots(1, len(budgets), figsize=(7 if len(budgets) == 1 else 5.5 * len(budgets), 4.5),
                                 squeeze=False)  # fmt: skip
        for ax, budget in zip(axes[0], budgets):
            panel = [r for r in pts if r.factors.budget == budget]
            _plot_panel(ax, panel, key, xlabel, log)
            if len(budgets) > 1:
                ax.set_title(f"training budget: {budget}", fontsize=9)
        fig.tight_layout()
        name = f"accuracy_vs_{key}.png"
        fig.savefig(out_dir / name, dpi=120)
        plt.close(fig)
        written.append(name)
    return written


def plot_mean_std(
    series: list[tuple[str, list[Sequence[float]]]], first_x: int, axes: tuple[str, str], title: str, path: Path
) -> None:
    """One line per ``(label, runs)``: at each position of the first run's sequence, the mean and
    (error bar) standard deviation over the runs that reach it; x counts from ``first_x``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for label, runs in series:
        at = [[run[i] for run in runs if len(run) > i] for i in range(len(runs[0]))]
        spread = [statistics.stdev(values) if len(values) > 1 else 0.0 for values in at]
        ax.errorbar(range(first_x, first_x + len(at)), [statistics.fmean(values) for values in at], yerr=spread,
                    marker="o", ms=3, capsize=2, label=f"{label} (n={len(runs)})")  # fmt: skip
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
