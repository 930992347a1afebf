"""The configuration report's markdown: tables, verdict sentences and report.md with its CSVs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightclf.errors import ConfigError
from lightclf.factors import MOVES_WITH, canonical
from lightclf.study.report.collect import ConfigurationRow, RunRow, aggregate
from lightclf.study.report.comparisons import ConfigurationComparisons, compare_configurations, factor_values
from lightclf.study.report.plan import Knob, ReportPlan
from lightclf.study.report.plots import plot_accuracy_vs_cost
from lightclf.study.report.throughput import attach_throughput
from lightclf.study.stats import Effect, effect_call
from lightclf.tables import write_csv

__all__ = ["write_report", "answers"]


def _pct(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def _millions(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value / 1e6:.{digits}f}M"


def _plain(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


Column = tuple[str, Callable[[Any], str]]  # title, cell of a row


def _table(rows: list[Any], columns: list[Column]) -> str:
    out = ["| " + " | ".join(title for title, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        out.append("| " + " | ".join(cell(row) for _, cell in columns) + " |")
    return "\n".join(out)


def _ci_cell(row: ConfigurationRow) -> str:
    s = row.top1
    return "-" if s.ci_low is None else f"{100 * s.ci_low:.2f}-{100 * s.ci_high:.2f}"


HEADLINE: list[Column] = [
    ("network", lambda r: r.label),
    ("role", lambda r: r.role),
    ("px", lambda r: _plain(r.factors.resolution)),
    ("budget", lambda r: r.factors.budget),
    ("top-1 %", lambda r: _pct(r.mean(), r.std())),
    ("n", lambda r: str(r.n)),
    ("95% CI", _ci_cell),
    ("top-5 %", lambda r: _pct(r.mean("top5"), r.std("top5"))),
    ("params", lambda r: _millions(r.first.params, 3)),
    ("MACs", lambda r: _millions(r.first.macs, 1)),
    ("size MB", lambda r: _plain(r.first.size_mb)),
    ("img/s", lambda r: "-" if r.images_per_s is None else f"{r.images_per_s:.0f}"),
    ("RF px", lambda r: _plain(r.first.receptive_field)),
    ("seeds", lambda r: ",".join(str(s) for s in r.seeds)),
]

EVERY_RUN: list[Column] = [
    ("network", lambda r: r.factors.configuration.label),
    ("px", lambda r: _plain(r.factors.resolution)),
    ("budget", lambda r: r.factors.budget),
    ("seed", lambda r: _plain(r.seed)),
    ("top-1 %", lambda r: _pct(r.top1)),
    ("top-5 %", lambda r: _pct(r.top5)),
    ("fit s", lambda r: _plain(r.fit_seconds)),
    ("epochs", lambda r: _plain(r.epochs)),
]


def _factor_table(rows: list[ConfigurationRow], knob: Knob) -> tuple[str, list[float]]:
    """One row per setting of the knob's held factors; columns per value of its factor among the runs it
    is read in; deltas vs the first value."""
    factor, held = knob.factor, knob.table
    among = [r for r in rows if r.factors.matches(knob.where)]
    values = factor_values(among, factor)
    if len(values) < 2:
        return "", []
    groups: dict[tuple, dict] = defaultdict(dict)
    for r in among:
        groups[tuple(r.factors.value(h) for h in held)][r.factors.value(factor)] = r
    head = [*held, *[f"top-1 @ {factor.rsplit('.', 1)[-1]}={v}" for v in values], "Δ top-1 (highest vs lowest value in the row)",
            *[f"MACs @ {v}" for v in values], *[f"params @ {v}" for v in values]]  # fmt: skip
    if knob.receptive_field:
        head += [f"RF @ {v}" for v in values]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    deltas = []
    for held_values, by_value in sorted(groups.items(), key=lambda kv: str(kv[0])):
        present = [v for v in values if v in by_value and by_value[v].mean() is not None]  # tested runs only
        if len(present) < 2:
            continue
        delta = by_value[present[-1]].mean() - by_value[present[0]].mean()
        deltas.append(delta)
        cells = [str(v) for v in held_values]
        cells += [_pct(by_value[v].mean()) if v in by_value else "-" for v in values]
        cells.append(f"{100 * delta:+.2f}")
        cells += [_millions(by_value[v].first.macs, 1) if v in by_value else "-" for v in values]
        cells += [_millions(by_value[v].first.params, 3) if v in by_value else "-" for v in values]
        if knob.receptive_field:
            cells += [str(by_value[v].first.receptive_field) if v in by_value else "-" for v in values]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), deltas


def _ci(effect: Effect) -> str:
    if effect.ci_low is None:
        return "-"
    return f"[{100 * effect.ci_low:+.2f}, {100 * effect.ci_high:+.2f}]"


def _effect_words(effect: Effect, progress: tuple[int, int] | None = None) -> str:
    pairing = "pairs" if effect.paired else "runs per group (Welch)"
    call = effect_call(effect, progress)
    return f"{100 * effect.mean:+.2f} points (95% CI {_ci(effect)}, n = {effect.n} {pairing}): **{call}**"


def answers(
    rows: list[ConfigurationRow],
    found: ConfigurationComparisons,
    plan: ReportPlan,
    progress: tuple[int, int] | None = None,
) -> list[str]:
    """Verdicts on the study's declared knobs, their costs, its claim and its other baselines, from the
    runs; ``progress`` (runs finished, planned): short of the plan, interim looks without a call."""
    out = []
    for knob in found.knobs:
        out.append(f"**{knob.name.capitalize()}** ({knob.compared}): {_effect_words(knob.effect, progress)}.")
    for knob in plan.knobs:
        if knob.cost and knob.a is not None:
            out += _cost_sentence(rows, knob)
    versus = plan.versus
    claim = found.claim
    if claim and versus and versus.claim:
        p, g, effect, said = claim.proposed, claim.baseline, claim.effect, versus.claim
        name = said.baseline_name or g.factors.network
        note = f" ({said.note})" if said.note else ""
        out.append(
            f"**{said.title}** ({versus.label} at {p.factors.resolution} px vs {name} at "
            f"{g.factors.resolution} px, same recipe{_budget_words(p, g)}): top-1 {_pct(p.mean(), p.std())}% "
            f"(n={p.n}) vs {_pct(g.mean(), g.std())}% (n={g.n}), difference {_effect_words(effect, progress)}; "
            f"{_cost_words(versus.name, p, g)}{note}." + (f" {said.says}" if said.says else "")
        )
    for other in found.others:
        p, b, effect = other.proposed, other.baseline, other.effect
        out.append(
            f"**Against {b.factors.network}** at {b.factors.resolution} px (same recipe{_budget_words(p, b)}): "
            f"{versus.label} {_pct(p.mean(), p.std())}% (n={p.n}) vs {_pct(b.mean(), b.std())}% (n={b.n}), "
            f"difference {_effect_words(effect, progress)}; {_cost_words(versus.name, p, b)}."
        )
    return out


def _cost_sentence(rows: list[ConfigurationRow], knob: Knob) -> list[str]:
    """The knob's declared cost sentence: ``a``'s parameters and MACs over those of its twin at ``b``
    (the first configuration at ``a`` that has one)."""
    for row in rows:
        if not row.factors.matches({knob.factor: knob.a}):
            continue
        linked = (knob.factor, *MOVES_WITH.get(canonical(knob.factor), ()))
        twin = next((r for r in rows if r.factors.matches({knob.factor: knob.b})
                     and r.factors.differs_only_in(row.factors, *linked)), None)  # fmt: skip
        if twin and twin.first.params and row.first.params and twin.first.macs and row.first.macs:
            ratios = {"params": row.first.params / twin.first.params, "macs": row.first.macs / twin.first.macs}
            return [knob.cost.format(**row.factors.as_dict(), **ratios)]
    return []


def _cost_words(name: str, proposed: ConfigurationRow, baseline: ConfigurationRow) -> str:
    """The proposed net's parameters and MACs against a baseline's, in words."""
    p, b = proposed.first.params, baseline.first.params
    if not p or not b:
        return "parameter counts unknown"
    if round(p / 1e4) == round(b / 1e4):
        words = f"{name} has the same parameter count ({p / 1e6:.2f}M)"
    else:
        words = f"{name} has {abs(b - p) / 1e6:.2f}M {'fewer' if b > p else 'more'} parameters ({p / 1e6:.2f}M vs {b / 1e6:.2f}M)"
    pm, bm = proposed.first.macs, baseline.first.macs
    if pm and bm:
        words += f" and {pm / bm:.2f}x the MACs ({pm / 1e6:.1f}M vs {bm / 1e6:.1f}M)"
    return words


def _budget_words(*rows: ConfigurationRow) -> str:
    budgets = {r.factors.budget for r in rows}
    return f" and training budget, {budgets.pop()}" if len(budgets) == 1 and None not in budgets else ""


def _effects_table(found: ConfigurationComparisons, plan: ReportPlan, progress: tuple[int, int] | None = None) -> str:
    table = [(k.name, k.compared, k.effect) for k in found.knobs]
    for c in found.baselines:
        b = c.baseline
        compared = f"unpaired (Welch), {b.factors.resolution} px, budget {b.factors.budget}"
        table.append((f"{plan.versus.label} vs {b.factors.network}", compared, c.effect))
    if not table:
        return ""
    lines = ["| effect | comparison | n | Δ top-1 (points) | 95% CI | verdict |", "|---|---|---|---|---|---|"]
    for name, compared, e in table:
        lines.append(f"| {name} | {compared} | {e.n} | {100 * e.mean:+.2f} | {_ci(e)} | {effect_call(e, progress)} |")
    return "\n".join(lines)


def _deployment_table(rows: list[ConfigurationRow]) -> str:
    """int8 post-training quantization and ONNX figures of the runs (any seed) `lightclf export` processed."""
    lines = []
    for row in rows:
        for run in row.runs:
            export = run.export
            fp32, int8, onnx = (export.fp32, export.int8, export.onnx) if export else (None, None, None)
            if not (fp32 and int8):
                continue
            onnx_diff = f"{onnx.max_abs_diff:.1e}" if onnx else "-"
            loss, speedup = 100 * (fp32.top1 - int8.top1), fp32.ms_per_image / int8.ms_per_image
            target = "met" if speedup >= INT8_TARGET[0] and loss <= INT8_TARGET[1] else "not met"
            lines.append(
                f"| {row.label} | {row.factors.resolution} | {run.seed} | {_pct(fp32.top1)} | "
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


def write_report(
    name: str,
    runs: list[RunRow],
    out_dir: str | Path,
    notes: str = "",
    protocol: str = "",
    after_protocol: list[str] = (),
    superseded_by: str | None = None,
    plan: ReportPlan | None = None,
    planned: int | None = None,
) -> Path:
    """Write report.md, runs.csv (one row per configuration), runs_per_seed.csv and plots;
    ``after_protocol``: markdown lines that follow the protocol (the tuning section); ``plan``: the
    roles, knobs and baseline comparisons the study declares (none: the tables and plots only);
    ``planned``: the study's run count (short of it, every effect is an interim look, no call)."""
    plan = plan or ReportPlan()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = aggregate(runs, plan)
    if not rows:
        raise ConfigError(f"report: no finished runs for study {name!r}")
    attach_throughput(rows, out / "bench.csv")
    rows.sort(key=lambda r: -(r.mean() or 0))
    runs = sorted(runs, key=lambda r: (r.factors.configuration.label, str(r.factors.resolution), r.seed or 0))
    write_csv(out / "runs.csv", [r.csv_row() for r in rows])
    write_csv(out / "runs_per_seed.csv", [r.csv_row() for r in runs])
    sections = [f"# Study: {name}\n"]
    if superseded_by:
        sections.append(f"> Superseded by {superseded_by}; this report stays as it was run.\n")
    if protocol:
        sections.append("## Protocol\n\n" + protocol.strip() + "\n")
    if after_protocol:
        sections.append("\n".join(after_protocol))
    compared = compare_configurations(rows, plan)  # every comparison once; the sections below render it
    progress = (len(runs), planned) if planned else None
    found = answers(rows, compared, plan, progress)
    if found:
        sections.append("## Verdicts\n\n" + "\n".join(f"- {a}" for a in found) + "\n")
    if notes:
        sections.append(notes.strip() + "\n")
    sections.append(
        "## Every configuration (test top-1: mean ± std over seeds, n runs)\n\n"
        + _table(rows, HEADLINE if plan.roles else [c for c in HEADLINE if c[0] != "role"])
        + "\n"
    )
    table = _effects_table(compared, plan, progress)
    if table:
        sections.append(
            "## Effects (paired by seed and the other factors; 95% t intervals from scipy.stats)\n\n" + table + "\n"
        )
    for knob in plan.knobs:
        table, _ = _factor_table(rows, knob) if knob.table else ("", [])
        if table:
            among = f"{knob.among}, " if knob.among else ""
            sections.append(f"## Effect of {knob.title} ({among}means over seeds)\n\n{table}\n")
    deploy = _deployment_table(rows)
    if deploy:
        sections.append(deploy)
    plots = plot_accuracy_vs_cost(rows, out)
    if plots:
        sections.append(
            "## Plots (error bars: ± 1 std over seeds)\n\n" + "\n".join(f"![{p}]({p})" for p in plots) + "\n"
        )
    sections.append("## Every run\n\n" + _table(runs, EVERY_RUN) + "\n")
    path = out / "report.md"
    path.write_text("\n".join(s for s in sections if s))
    return path
