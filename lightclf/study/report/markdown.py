"""The configuration report's markdown: tables, verdict sentences and report.md with its CSVs."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from lightclf.errors import ConfigError
from lightclf.study.report.collect import KEY_FACTORS, aggregate, label, role
from lightclf.study.report.comparisons import effects, googlenet_claim, other_comparisons
from lightclf.study.report.plots import plot_accuracy_vs_cost
from lightclf.study.report.throughput import attach_throughput
from lightclf.study.stats import Effect
from lightclf.tables import write_csv

__all__ = ["write_report", "RUN_FIELDS", "CONFIG_FIELDS"]


def _pct(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    out = ["| " + " | ".join(title for title, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        out.append("| " + " | ".join(_cell(row, key) for _, key in columns) + " |")
    return "\n".join(out)


def _cell(row: dict[str, Any], key: str) -> str:
    if key == "label":
        return label(row)
    if key == "role":
        return role(row)
    value = row.get(key)
    if key == "top1":
        return _pct(value, row.get("top1_std"))
    if key == "top1_ci":
        low, high = row.get("top1_ci_low"), row.get("top1_ci_high")
        return "-" if low is None else f"{100 * low:.2f}-{100 * high:.2f}"
    if key == "top5":
        return _pct(value, row.get("top5_std"))
    if value is None:
        return "-"
    if key == "params":
        return f"{value / 1e6:.3f}M"
    if key == "macs":
        return f"{value / 1e6:.1f}M"
    if key == "images_per_s":
        return f"{value:.0f}"
    if key == "seeds":
        return ",".join(str(s) for s in value)
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


HEADLINE = [("network", "label"), ("role", "role"), ("px", "resolution"), ("budget", "budget"), ("top-1 %", "top1"), ("n", "n"),
            ("95% CI", "top1_ci"), ("top-5 %", "top5"), ("params", "params"), ("MACs", "macs"), ("size MB", "size_mb"),
            ("img/s", "images_per_s"), ("RF px", "receptive_field"), ("seeds", "seeds")]  # fmt: skip


def _factor_table(rows: list[dict[str, Any]], factor: str, held: tuple[str, ...]) -> tuple[str, list[float]]:
    """One row per setting of the held factors; columns per value of ``factor``; deltas vs the first value."""
    proposed = [r for r in rows if r["network"] == "ddsnet"]
    values = sorted({r[factor] for r in proposed if r.get(factor) is not None})
    if len(values) < 2:
        return "", []
    groups: dict[tuple, dict] = defaultdict(dict)
    for r in proposed:
        groups[tuple(r.get(h) for h in held)][r[factor]] = r
    head = [*held, *[f"top-1 @ {factor}={v}" for v in values], "Δ top-1 (highest vs lowest value in the row)",
            *[f"MACs @ {v}" for v in values], *[f"params @ {v}" for v in values]]  # fmt: skip
    if factor == "dilation":
        head += [f"RF @ {v}" for v in values]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    deltas = []
    for held_values, by_value in sorted(groups.items(), key=lambda kv: str(kv[0])):
        present = [v for v in values if v in by_value]
        if len(present) < 2:
            continue
        delta = by_value[present[-1]]["top1"] - by_value[present[0]]["top1"]
        deltas.append(delta)
        cells = [str(v) for v in held_values]
        cells += [_pct(by_value[v]["top1"]) if v in by_value else "-" for v in values]
        cells.append(f"{100 * delta:+.2f}")
        cells += [_cell(by_value[v], "macs") if v in by_value else "-" for v in values]
        cells += [_cell(by_value[v], "params") if v in by_value else "-" for v in values]
        if factor == "dilation":
            cells += [str(by_value[v].get("receptive_field")) if v in by_value else "-" for v in values]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), deltas


def _find(rows, **match) -> dict[str, Any] | None:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def _ci(effect: Effect) -> str:
    if effect.ci_low is None:
        return "-"
    return f"[{100 * effect.ci_low:+.2f}, {100 * effect.ci_high:+.2f}]"


def _effect_sentence(effect: Effect) -> str:
    pairing = "pairs" if effect.paired else "runs per group (Welch)"
    return f"{100 * effect.mean:+.2f} points (95% CI {_ci(effect)}, n = {effect.n} {pairing}): **{effect.verdict}**"


def answers(rows: list[dict[str, Any]]) -> list[str]:
    """Verdicts on the paper's three knobs, separability and its GoogLeNet claim, from the runs."""
    out = []
    for name, compared, effect in effects(rows):
        out.append(f"**{name.capitalize()}** ({compared}): {_effect_sentence(effect)}.")
    sep = _find(rows, network="ddsnet_plainconv")
    if sep:
        twin = _find(rows, network="ddsnet", width_multiplier=sep.get("width_multiplier"), resolution=sep["resolution"],
                     dilation=sep.get("dilation"))  # fmt: skip
        if twin and twin.get("params") and sep.get("params"):
            out.append(
                f"Separability's cost: the plain-conv net has {sep['params'] / twin['params']:.1f}x the parameters "
                f"and {sep['macs'] / twin['macs']:.1f}x the MACs of the separable one (α={sep.get('width_multiplier')}, "
                f"{sep['resolution']} px)."
            )
    claim = googlenet_claim(rows)
    if claim:
        p, g, effect = claim
        out.append(
            f"**The paper's GoogLeNet claim** (DDSNet α=1.0 at {p['resolution']} px vs GoogLeNet at {g['resolution']} px, "
            f"same recipe{_budget_words(p, g)}): top-1 {_pct(p['top1'], p.get('top1_std'))}% (n={p['n']}) vs "
            f"{_pct(g['top1'], g.get('top1_std'))}% (n={g['n']}), difference {_effect_sentence(effect)}; "
            f"{_cost_words(p, g)} (GoogLeNet counted as deployed, without its aux heads). The paper claims about "
            "+1 point and 3.7M fewer parameters."
        )
    for p, b, effect in other_comparisons(rows, claim):
        out.append(
            f"**Against {b['network']}** at {b['resolution']} px (same recipe{_budget_words(p, b)}): DDSNet α=1.0 "
            f"{_pct(p['top1'], p.get('top1_std'))}% (n={p['n']}) vs {_pct(b['top1'], b.get('top1_std'))}% "
            f"(n={b['n']}), difference {_effect_sentence(effect)}; {_cost_words(p, b)}."
        )
    return out


def _cost_words(proposed: dict[str, Any], baseline: dict[str, Any]) -> str:
    """DDSNet's parameters and MACs against a baseline's, in words."""
    p, b = proposed.get("params"), baseline.get("params")
    if not p or not b:
        return "parameter counts unknown"
    if round(p / 1e4) == round(b / 1e4):
        words = f"DDSNet has the same parameter count ({p / 1e6:.2f}M)"
    else:
        words = f"DDSNet has {abs(b - p) / 1e6:.2f}M {'fewer' if b > p else 'more'} parameters ({p / 1e6:.2f}M vs {b / 1e6:.2f}M)"
    if proposed.get("macs") and baseline.get("macs"):
        words += f" and {proposed['macs'] / baseline['macs']:.2f}x the MACs ({proposed['macs'] / 1e6:.1f}M vs {baseline['macs'] / 1e6:.1f}M)"
    return words


def _budget_words(*rows: dict[str, Any]) -> str:
    budgets = {r.get("budget") for r in rows}
    return f" and training budget, {budgets.pop()}" if len(budgets) == 1 and None not in budgets else ""


def _effects_table(rows: list[dict[str, Any]]) -> str:
    found = effects(rows)
    claim = googlenet_claim(rows)
    for _, b, effect in ([claim] if claim else []) + other_comparisons(rows, claim):
        compared = f"unpaired (Welch), {b['resolution']} px, budget {b.get('budget') or '-'}"
        found.append((f"DDSNet α=1.0 vs {b['network']}", compared, effect))
    if not found:
        return ""
    lines = ["| effect | comparison | n | Δ top-1 (points) | 95% CI | verdict |", "|---|---|---|---|---|---|"]
    for name, compared, e in found:
        lines.append(f"| {name} | {compared} | {e.n} | {100 * e.mean:+.2f} | {_ci(e)} | {e.verdict} |")
    return "\n".join(lines)


def _deployment_table(rows: list[dict[str, Any]]) -> str:
    """int8 post-training quantization and ONNX figures of the runs (any seed) `lightclf export` processed."""
    lines = []
    for row in rows:
        for run in sorted(row.get("runs") or [row], key=lambda r: r.get("seed") or 0):
            export = run.get("export")
            fp32, int8, onnx = (export.fp32, export.int8, export.onnx) if export else (None, None, None)
            if not (fp32 and int8):
                continue
            onnx_diff = f"{onnx.max_abs_diff:.1e}" if onnx else "-"
            loss, speedup = 100 * (fp32.top1 - int8.top1), fp32.ms_per_image / int8.ms_per_image
            target = "met" if speedup >= INT8_TARGET[0] and loss <= INT8_TARGET[1] else "not met"
            lines.append(
                f"| {label(row)} | {row['resolution']} | {run.get('seed')} | {_pct(fp32.top1)} | "
                f"{_pct(int8.top1)} | {-loss:+.2f} | {fp32.file_mb:.3f} | {int8.file_mb:.3f} | "
                f"{fp32.file_mb / int8.file_mb:.2f}x | {fp32.ms_per_image:.3f} | {int8.ms_per_image:.3f} | "
                f"{speedup:.2f}x | {target} | {onnx_diff} |"
            )
    if not lines:
        return ""
    head = (
        "## Deployment: int8 post-training quantization (not studied by the paper)\n\n"
        "onnxruntime static int8 (QDQ, per-channel int8 weights, uint8 activations) against fp32 onnxruntime, "
        "same CPU, timed interleaved (median of 7 rounds, batch of the data module); top-1 on the full test set "
        f"through onnxruntime. Target: >= {INT8_TARGET[0]}x faster at <= {INT8_TARGET[1]} point top-1 loss.\n\n"
        "| network | px | seed | fp32 top-1 % | int8 top-1 % | Δ | fp32 MB | int8 MB | smaller | fp32 ms/img "
        "| int8 ms/img | int8 speed-up | target | ONNX max abs diff |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    return head + "\n".join(lines) + "\n"


INT8_TARGET = (1.5, 0.5)  # speed-up over fp32 onnxruntime, top-1 points lost


RUN_FIELDS = [*KEY_FACTORS, "seed", "run_id", "top1", "top5", "params", "macs", "size_mb", "receptive_field",
              "fit_seconds", "epochs"]  # fmt: skip


CONFIG_FIELDS = [*KEY_FACTORS, "n", "seeds", "top1", "top1_std", "top1_ci_low", "top1_ci_high", "top5", "top5_std",
                 "params", "macs", "size_mb", "receptive_field", "images_per_s", "fit_seconds", "epochs"]  # fmt: skip


def write_report(
    name: str, runs: list[dict[str, Any]], out_dir: str | Path, notes: str = "", protocol: str = ""
) -> Path:
    """Write report.md, runs.csv (one row per configuration), runs_per_seed.csv and plots."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = aggregate(runs)
    if not rows:
        raise ConfigError(f"report: no finished runs for study {name!r}")
    attach_throughput(rows, out / "bench.csv")
    rows.sort(key=lambda r: -(r["top1"] or 0))
    write_csv(out / "runs.csv", rows, CONFIG_FIELDS)
    write_csv(out / "runs_per_seed.csv", sorted(runs, key=lambda r: (label(r), str(r.get("resolution")),
                                                                     r.get("seed") or 0)), RUN_FIELDS)  # fmt: skip
    sections = [f"# Study: {name}\n"]
    if protocol:
        sections.append("## Protocol\n\n" + protocol.strip() + "\n")
    found = answers(rows)
    if found:
        sections.append("## Verdicts\n\n" + "\n".join(f"- {a}" for a in found) + "\n")
    if notes:
        sections.append(notes.strip() + "\n")
    sections.append(
        "## Every configuration (test top-1: mean ± std over seeds, n runs)\n\n" + _table(rows, HEADLINE) + "\n"
    )
    table = _effects_table(rows)
    if table:
        sections.append(
            "## Effects (paired by seed and the other factors; 95% t intervals from scipy.stats)\n\n" + table + "\n"
        )
    for factor, held in (("dilation", ("width_multiplier", "resolution", "budget")),
                         ("width_multiplier", ("resolution", "dilation", "budget")),
                         ("resolution", ("width_multiplier", "dilation", "budget"))):  # fmt: skip
        table, _ = _factor_table(rows, factor, held)
        if table:
            sections.append(f"## Effect of {factor.replace('_', ' ')} (proposed net, means over seeds)\n\n{table}\n")
    deploy = _deployment_table(rows)
    if deploy:
        sections.append(deploy)
    plots = plot_accuracy_vs_cost(rows, out)
    if plots:
        sections.append(
            "## Plots (error bars: ± 1 std over seeds)\n\n" + "\n".join(f"![{p}]({p})" for p in plots) + "\n"
        )
    sections.append(
        "## Every run\n\n"
        + _table(
            sorted(runs, key=lambda r: (label(r), str(r.get("resolution")), r.get("seed") or 0)),
            [
                ("network", "label"),
                ("px", "resolution"),
                ("budget", "budget"),
                ("seed", "seed"),
                ("top-1 %", "top1"),
                ("top-5 %", "top5"),
                ("fit s", "fit_seconds"),
                ("epochs", "epochs"),
            ],
        )  # fmt: skip
        + "\n"
    )
    path = out / "report.md"
    path.write_text("\n".join(s for s in sections if s))
    return path
