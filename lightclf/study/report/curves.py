"""How far a study's runs still climbed when they stopped: validation top-1 after each epoch, per
configuration (mean ± std over seeds), as a table of the last epochs' gains and a plot. Torch-free,
like the rest of the report; a section only when the records hold per-epoch validation."""

from __future__ import annotations

import statistics
from pathlib import Path

from lightclf.study.report.collect import ConfigurationRow
from lightclf.study.report.fields import mean_std

__all__ = ["curves_section"]


def _gains(curves: list[tuple[float, ...]], back: int) -> list[float]:
    """Each run's validation top-1 at its last epoch minus ``back`` epochs earlier."""
    return [curve[-1] - curve[-1 - back] for curve in curves if len(curve) > back]


def curves_section(rows: list[ConfigurationRow], out_dir: Path) -> list[str]:
    """The per-epoch validation table and plot (``val_curves.png`` in ``out_dir``); empty when no run
    recorded its validation per epoch."""
    measured = [(row, [r.val_curve for r in row.runs if r.val_curve]) for row in rows]
    measured = [(row, curves) for row, curves in measured if curves]
    if not measured:
        return []
    lines = [
        "| configuration | runs | epochs | val top-1 % at the last epoch | gain in its last epoch (points) "
        "| gain in its last quarter (points) |",
        "|---|---|---|---|---|---|",
    ]
    for row, curves in measured:
        epochs = min(len(c) for c in curves)
        quarter = max(1, round(epochs / 4))
        lines.append(
            f"| {row.label} | {len(curves)} | {epochs} | {mean_std([c[-1] for c in curves], 100)} "
            f"| {mean_std(_gains(curves, 1), 100)} | {mean_std(_gains(curves, quarter), 100)} ({quarter} epochs) |"
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for row, curves in measured:
        epochs = min(len(c) for c in curves)
        means = [100 * statistics.fmean(c[e] for c in curves) for e in range(epochs)]
        spread = [100 * statistics.stdev([c[e] for c in curves]) if len(curves) > 1 else 0.0 for e in range(epochs)]
        ax.errorbar(range(1, epochs + 1), means, yerr=spread, marker="o", ms=3, capsize=2,
                    label=f"{row.label} (n={len(curves)})")  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title("Validation top-1 per epoch (mean ± std over seeds)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "val_curves.png", dpi=110)
    plt.close(fig)
    return [
        "## How far the runs still climbed",
        "",
        "Validation top-1 (held-out training images, never test) after each epoch, mean ± std over seeds,",
        "and each run's gain in its last epoch and its last quarter of epochs. A small gain says the run",
        "settled under its schedule; a schedule that anneals the learning rate to zero by the last step",
        "(one-cycle, cosine) settles whether or not more epochs would help, so only a longer run (a plateau",
        "check) says how far the plateau is.",
        "",
        "\n".join(lines),
        "",
        "![validation top-1 per epoch](val_curves.png)",
        "",
    ]
