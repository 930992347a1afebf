"""How far a study's runs still climbed when they stopped: validation top-1 after each epoch, per
configuration (mean ± std over seeds), as a table of the last epochs' gains and a plot. Torch-free,
like the rest of the report; a section only when the records hold per-epoch validation."""

from __future__ import annotations

import math
from pathlib import Path

from lightclf.study.report.cells import mean_std
from lightclf.study.report.collect import ConfigurationRow
from lightclf.study.report.plots import plot_mean_std

__all__ = ["curves_section"]


def _gains(curves: list[tuple[float, ...]], back: int) -> list[float]:
    """Each run's validation top-1 at the end minus ``back`` validations earlier (one per epoch as
    lightclf's fits validate)."""
    return [curve[-1] - curve[-1 - back] for curve in curves if len(curve) > back]


def curves_section(rows: list[ConfigurationRow], out_dir: Path) -> list[str]:
    """The per-epoch validation table and plot (``val_curves.png`` in ``out_dir``); empty when no run
    recorded its validation per epoch. Runs of one configuration that validated a different number of
    times are cut to the shortest, so the table and the plot end on the same epoch (the row says so)."""
    measured = []
    for row in rows:
        curves = [r.val_curve for r in row.runs if r.val_curve]
        if curves:
            epochs = min(map(len, curves))
            measured.append((row, [c[:epochs] for c in curves], max(map(len, curves)) > epochs))
    if not measured:
        return []
    lines = [
        "| configuration | runs | epochs | val top-1 % at the last epoch | gain in its last epoch (points) "
        "| gain in its last quarter (points) |",
        "|---|---|---|---|---|---|",
    ]
    for row, curves, cut in measured:
        epochs = len(curves[0])
        quarter = max(1, math.ceil(epochs / 4))
        lines.append(
            f"| {row.label} | {len(curves)} | {epochs}{' (longer runs cut to it)' if cut else ''} "
            f"| {mean_std([c[-1] for c in curves], 100)} | {mean_std(_gains(curves, 1), 100, signed=True)} "
            f"| {mean_std(_gains(curves, quarter), 100, signed=True)} ({quarter} epochs) |"
        )
    plot_mean_std(
        [(row.label, [[100 * v for v in curve] for curve in curves]) for row, curves, _ in measured],
        1, ("epoch", "validation top-1 (%)"), "Validation top-1 per epoch (mean ± std over seeds)",
        out_dir / "val_curves.png",
    )  # fmt: skip
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
