"""Where a study's networks look, for the question report: each block's theoretical receptive field
and dilated-tap coverage per dilation schedule (from ``lightclf.geometry``), and the effective
receptive fields the fits measured (``lightclf.measure.receptive_field``): radii, image share, heat
maps and the per-block table and plot. Torch-free, like the rest of the report.
"""

from __future__ import annotations

from pathlib import Path

from lightclf.factors import Factors
from lightclf.geometry import block_geometry, mass_area, mass_radius
from lightclf.study.report.cells import mean_std
from lightclf.study.report.collect import ConfigurationRow
from lightclf.study.report.plots import plot_mean_std

__all__ = ["geometry_table", "geometry_section", "erf_section"]


def geometry_table(resolution: int, small_input: bool, schedules: list[str]) -> str:
    """Per block: its map, and for each schedule the rate, the theoretical receptive field after it and
    the share of its depthwise taps that read the map rather than zero padding."""
    tables = {s: block_geometry(resolution, small_input, None if s == "none" else s, 1 if s == "none" else 2)
              for s in schedules}  # fmt: skip
    head = ["block", "channels (x width)", "stride", "map in"]
    for s in schedules:
        head += [f"{s}: rate", f"{s}: RF px", f"{s}: taps on map"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, first in enumerate(tables[schedules[0]]):
        cells = [str(i), str(first.channels), str(first.stride), f"{first.map_size}x{first.map_size}"]
        for s in schedules:
            g = tables[s][i]
            taps = f"{100 * g.taps_inside:.0f}%" if g.taps_inside is not None else "-"
            cells += [str(g.dilation), str(g.receptive_field), taps]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def geometry_section(planned: list[Factors]) -> list[str]:
    """Where dilation reaches, for the DDSNet arms among ``planned``: a table per input resolution and
    stem, with a column group per dilation schedule; nothing for a study without DDSNet arms."""
    arms: dict[tuple[int, bool], list[str]] = {}
    for f in planned:
        if f.proposed and f.resolution:
            schedules = arms.setdefault((f.resolution, bool(f.small_input)), [])
            if f.dilation_schedule and f.dilation_schedule not in schedules:
                schedules.append(f.dilation_schedule)
    parts = []
    for (resolution, small_input), schedules in arms.items():
        ordered = [s for s in ("none", "late", "early", "all") if s in schedules] or ["none", "late", "early"]
        parts += [
            f"## Where dilation reaches ({resolution} px, {'small-input stem' if small_input else 'standard stem'})",
            "",
            "Per block: the map it works on, and for each schedule the rate, the theoretical receptive field",
            "after the block and the share of its depthwise taps that read the map rather than zero padding.",
            "",
            geometry_table(resolution, small_input, ordered),
            "",
        ]
    return parts


def _erf_table(rows: list[ConfigurationRow]) -> str | None:
    """Measured ERF radii beside those of an even spread over the same input, and the share of the
    image's pixels (heaviest first) that holds 50% / 95% of the gradient: 50% / 95% when the whole
    image is used evenly, small when the field is concentrated."""
    lines = []
    for row in rows:
        maps = [m.heatmap for m in row.runs if m.heatmap]
        if not maps:
            continue
        h, w = len(maps[0]), len(maps[0][0])
        (even50, even95), _ = mass_radius([[1.0] * w for _ in range(h)])
        r50 = [m.erf_r50 for m in row.runs if m.erf_r50 is not None]
        r95 = [m.erf_r95 for m in row.runs if m.erf_r95 is not None]
        areas = [mass_area(heatmap) for heatmap in maps]
        lines.append(
            f"| {row.label} | {len(maps)} | {h}x{w} | {mean_std(r50, digits=1)} / {mean_std(r95, digits=1)} | "
            f"{even50:.1f} / {even95:.1f} | {mean_std([a[0] for a in areas], 100, digits=0)}% / "
            f"{mean_std([a[1] for a in areas], 100, digits=0)}% |"
        )
    if not lines:
        return None
    head = [
        "| configuration | runs | input | ERF r50 / r95 px (mean ± std) | even spread: r50 / r95 px "
        "| image share holding 50% / 95% (even: 50% / 95%) |",
        "|---|---|---|---|---|---|",
    ]
    return "\n".join(head + lines)


def _erf_blocks(rows: list[ConfigurationRow], out_dir: Path) -> list[str]:
    """The effective receptive field at each block's output, per configuration (mean ± std over seeds):
    r50 in px and the share of the image holding half the gradient; a table and a plot."""
    measured = [(row, [m.erf_blocks for m in row.runs if m.erf_blocks]) for row in rows]
    measured = [(row, runs) for row, runs in measured if runs]
    if not measured:
        return []
    blocks = max(len(runs[0]) for _, runs in measured)
    head = ["block", "map"] + [f"{row.label}: r50 px / 50% share" for row, _ in measured]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b in range(blocks):
        first = next(runs[0][b] for _, runs in measured if len(runs[0]) > b)
        cells = [str(b), "x".join(map(str, first["feature_map"]))]
        for _, runs in measured:
            r50 = [r[b]["r50"] for r in runs if len(r) > b]
            share = [r[b]["share50"] for r in runs if len(r) > b]
            cells.append(f"{mean_std(r50, digits=1)} / {mean_std(share, 100, digits=0)}%")
        lines.append("| " + " | ".join(cells) + " |")
    plot_mean_std(
        [(row.label, [[block["r50"] for block in run] for run in runs]) for row, runs in measured],
        0, ("block (its output)", "ERF r50 (px)"), "Effective receptive field per block (mean ± std over seeds)",
        out_dir / "erf_per_block.png",
    )  # fmt: skip
    return [
        "### Per block",
        "",
        "The same measurement at the output of each block (its centre unit), where the arms can differ:",
        "at the last layer every arm may already cover most of a small image.",
        "",
        "\n".join(lines),
        "",
        "![ERF per block](erf_per_block.png)",
        "",
    ]


def _heatmaps(rows: list[ConfigurationRow], out_dir: Path) -> str | None:
    """One figure: the mean effective-receptive-field heat map of each DDSNet configuration."""
    panels = [(r.factors, [m.heatmap for m in r.runs if m.heatmap]) for r in rows if r.factors.proposed]
    panels = [(c, maps) for c, maps in panels if maps and c.budget == "full"]
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (config, maps) in zip(axes[0], panels):
        mean = np.mean(np.asarray(maps, dtype=float), axis=0)
        ax.imshow(mean / mean.max(), cmap="magma")
        ax.set_title(f"{config.label}\n(n = {len(maps)})", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Effective receptive field: |d centre unit / d input|, mean over test images and seeds", fontsize=9)
    fig.tight_layout()
    path = out_dir / "erf_heatmaps.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def erf_section(rows: list[ConfigurationRow], out_dir: Path) -> list[str]:
    """The measured effective receptive fields: the radii table, the heat maps and the per-block table
    and plot (written into ``out_dir``); empty when no run measured one."""
    heatmap, erf_table = _heatmaps(rows, out_dir), _erf_table(rows)
    if not (heatmap or erf_table):
        return []
    parts = [
        "## Effective receptive fields (measured)",
        "",
        "Gradient of the centre unit of the last feature map with respect to the input, averaged over",
        "test images (256 by default) for the tested weights: after a fit, the best-validation checkpoint",
        "with its EMA (Luo et al. 2016).",
        "r50 / r95 are the radii of the smallest discs around its centre of mass that hold 50% / 95% of",
        "it, shown beside those of an even spread over the same input for scale (a ring or the corners",
        "would give more). The image share is the fraction of pixels, heaviest first, that holds 50% /",
        "95% of the gradient: 50% / 95% means the whole image is used about evenly.",
        "",
    ]
    parts += [erf_table, ""] if erf_table else []
    parts += [f"![ERF heat maps]({heatmap})", ""] if heatmap else []
    return parts + _erf_blocks(rows, out_dir)
