"""`python -m lightclf report`: turn a study's runs into tables and plots under reports/<study>/.

Reads the local run records (always) and, with ``--wandb ENTITY/PROJECT`` when online, the
W&B API. Writes ``report.md`` (headline, per-hyperparameter tables, the paper's questions
answered from the numbers), ``runs.csv`` and PNG plots (accuracy vs params / MACs /
throughput, with the Pareto front).
"""

from __future__ import annotations

import csv
import itertools
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from lightclf.cli_args import ToolArgumentParser
from lightclf.errors import ConfigError
from lightclf.runs import RunRecord
from lightclf.study.stats import Effect, paired_effect, summarize, unpaired_effect

__all__ = ["collect_runs", "aggregate", "bench_study", "write_report", "pareto_front", "main"]

# "budget" (training images x epochs) is a factor too: runs trained on different budgets are
# different configurations, never paired, never in one row of a factor table.
KEY_FACTORS = ("network", "width_multiplier", "resolution", "dilation", "small_input", "budget")
BASELINE_PREFIXES = ("googlenet", "mobilenet")


def collect_runs(
    save_dir: str | Path, project: str, study: str | None = None, records: str | Path | None = None
) -> list[dict[str, Any]]:
    """One dict per finished run: factors, test metrics, complexity; from the run folders and
    from the study's archived ``records`` (for runs whose folders this machine does not have)."""
    runs = []
    candidates: dict[str, list[Path]] = defaultdict(list)  # run id -> its folder here, then its archived copy
    for folder in sorted((Path(save_dir) / project).glob("*")):
        candidates[folder.name].append(folder)
    if records:
        for folder in sorted(p for p in Path(records).glob("*") if p.is_dir()):
            candidates[folder.name].append(folder)
    for run_id, folders in sorted(candidates.items()):
        # A folder left "running" by a killed process must not hide the archived finished run.
        record = next((r for r in map(RunRecord.read, folders) if r.finished), None)
        if record is None or (study is not None and record.factors.get("study") != study):
            continue
        runs.append(
            {
                **{k: record.factors.get(k) for k in (*KEY_FACTORS, "seed")},
                "budget": _budget(record),
                "run_id": run_id,
                "top1": record.test_metrics.get("test/acc1"),
                "top5": record.test_metrics.get("test/acc5"),
                **{k: record.complexity.get(k) for k in ("params", "macs", "size_mb", "receptive_field")},
                "fit_seconds": record.fit_seconds,
                "epochs": (record.epoch or 0) + 1,
                "export": record.export or None,
            }
        )
    return runs


def _budget(record: RunRecord) -> str:
    """The training budget a run's study overrides set ("full" = the base config's)."""
    overrides = record.factors.get("overrides") or {}
    parts = []
    if overrides.get("data.init_args.train_subset"):
        parts.append(f"{overrides['data.init_args.train_subset'] // 1000}k img")
    if overrides.get("trainer.max_epochs"):
        parts.append(f"{overrides['trainer.max_epochs']} ep")
    return " x ".join(parts) if parts else "full"


def collect_wandb_runs(path: str, study: str) -> list[dict[str, Any]]:
    """The same rows from the W&B API (group = study name); needs network and a key."""
    import wandb

    runs = []
    for run in wandb.Api(timeout=30).runs(path, filters={"group": study}):
        if run.state != "finished":
            continue
        cfg, summary = run.config, run.summary
        runs.append(
            {
                "network": cfg.get("network"),
                "width_multiplier": (cfg.get("network_kwargs") or {}).get("width_multiplier"),
                "resolution": cfg.get("img_size"),
                "dilation": (cfg.get("network_kwargs") or {}).get("dilation"),
                "small_input": (cfg.get("network_kwargs") or {}).get("small_input"),
                "seed": (cfg.get("lightclf_config") or {}).get("seed_everything"),
                "run_id": run.id,
                "top1": summary.get("test/acc1"),
                "top5": summary.get("test/acc5"),
                **{k: summary.get(k) for k in ("params", "macs", "size_mb", "receptive_field")},
                "fit_seconds": summary.get("_runtime"),
                "epochs": (summary.get("epoch") or 0) + 1,
            }
        )
    return runs


def _key(run: dict[str, Any]) -> tuple:
    return tuple(run.get(k) for k in KEY_FACTORS)


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge seeds: per configuration the mean, std, n and 95% t interval of top-1 and top-5."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[_key(run)].append(run)
    rows = []
    for members in groups.values():
        row = dict(members[0])
        for metric in ("top1", "top5", "fit_seconds"):
            summary = summarize([m[metric] for m in members if m.get(metric) is not None])
            row[metric] = summary.mean if summary.n else None
            row[f"{metric}_std"] = summary.std if summary.n else None
            if metric == "top1":
                row["n"], row["top1_ci_low"], row["top1_ci_high"] = summary.n, summary.ci_low, summary.ci_high
        row["seeds"] = sorted(m.get("seed") for m in members)
        row["runs"] = members
        rows.append(row)
    return rows


def _spec(row: dict[str, Any]) -> str:
    kwargs = {k: row[k] for k in ("width_multiplier", "dilation", "small_input") if row.get(k) is not None}
    body = ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in kwargs.items())
    return f"{row['network']}:{body}" if body else row["network"]


def bench_study(
    study, out_dir: str | Path = "reports", repeats: int = 3, batch_size: int = 32, device: str = "cpu"
) -> Path | None:
    """Inference img/s of every configuration of a study on ``device``, interleaved, into
    reports/<study>/bench.csv (each row names its device)."""
    from lightclf.measure.bench import run_bench, write_csv

    runs = aggregate(collect_runs(study.save_dir, study.project, study.name, study.records))
    pairs = sorted({(_spec(r), r["resolution"]) for r in runs if r.get("resolution")})
    if not pairs:
        return None
    rows = []
    for resolution in sorted({res for _, res in pairs}):
        specs = [spec for spec, res in pairs if res == resolution]
        rows += run_bench(
            specs,
            [resolution],
            ["contiguous", "channels_last"],
            ["eager"],
            batch_size,
            repeats,
            warmup=2,
            iters=5,
            device=device,
            log=lambda m: print(m, file=sys.stderr),
        )
    return write_csv(rows, Path(out_dir) / study.name / "bench.csv")


def _attach_throughput(rows: list[dict[str, Any]], bench_csv: Path) -> None:
    from lightclf.measure.bench import read_csv

    if not bench_csv.exists():
        return
    best: dict[tuple, dict] = {}
    for b in read_csv(bench_csv):
        key = (b["network"], b["resolution"])
        if key not in best or b["images_per_s"] > best[key]["images_per_s"]:
            best[key] = b
    for row in rows:
        b = best.get((_spec(row), row["resolution"]))
        row["images_per_s"] = b["images_per_s"] if b else None
        row["memory_format"] = b["memory_format"] if b else None


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated when maximising both coordinates, sorted by x."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
    front, best_y = [], float("-inf")
    for i in order:
        if points[i][1] > best_y:
            front.append(i)
            best_y = points[i][1]
    return sorted(front, key=lambda i: points[i][0])


# -- formatting ----------------------------------------------------------------------------------
def _pct(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def _label(row: dict[str, Any]) -> str:
    parts = [row["network"]]
    if row.get("width_multiplier") is not None:
        parts.append(f"α={row['width_multiplier']}")
    if row.get("dilation") is not None:
        parts.append(f"d={row['dilation']}")
    return " ".join(parts)


def _role(row: dict[str, Any]) -> str:
    name = row["network"]
    if name == "ddsnet":
        return "proposed" if (row.get("dilation") or 2) > 1 else "ablation: no dilation"
    if name.startswith("ddsnet"):
        return "ablation: " + name.removeprefix("ddsnet_").replace("_", ", ")
    return "baseline"


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    out = ["| " + " | ".join(title for title, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        out.append("| " + " | ".join(_cell(row, key) for _, key in columns) + " |")
    return "\n".join(out)


def _cell(row: dict[str, Any], key: str) -> str:
    if key == "label":
        return _label(row)
    if key == "role":
        return _role(row)
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


def _runs_of(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [run for row in rows for run in row.get("runs", [row])]


def factor_effect(rows: list[dict[str, Any]], factor: str, a: Any, b: Any, **match: Any) -> Effect:
    """top-1(b) - top-1(a), paired by seed and every other key factor (runs matching ``match``)."""
    cells: dict[tuple, dict[Any, float]] = defaultdict(dict)
    for run in _runs_of(rows):
        if run.get("top1") is None or any(run.get(k) != v for k, v in match.items()):
            continue
        key = tuple(run.get(k) for k in (*KEY_FACTORS, "seed") if k != factor)
        cells[key][run.get(factor)] = run["top1"]
    return paired_effect([(c[a], c[b]) for c in cells.values() if a in c and b in c])


def _ci(effect: Effect) -> str:
    if effect.ci_low is None:
        return "-"
    return f"[{100 * effect.ci_low:+.2f}, {100 * effect.ci_high:+.2f}]"


def _effect_sentence(effect: Effect) -> str:
    pairing = "pairs" if effect.paired else "runs per group (Welch)"
    return f"{100 * effect.mean:+.2f} points (95% CI {_ci(effect)}, n = {effect.n} {pairing}): **{effect.verdict}**"


def effects(rows: list[dict[str, Any]]) -> list[tuple[str, str, Effect]]:
    """The paper's knobs as paired effects on top-1, each (name, what is compared, effect)."""
    out = []
    proposed = [r for r in rows if r["network"] == "ddsnet"]
    dilations = sorted({r.get("dilation") for r in proposed if r.get("dilation") is not None})
    if len(dilations) > 1:
        e = factor_effect(rows, "dilation", dilations[0], dilations[-1], network="ddsnet")
        if e.n:
            out.append(("dilation", f"d={dilations[-1]} vs d={dilations[0]}, same width/resolution/budget/seed", e))
    plain = [r for r in rows if r["network"] == "ddsnet_plainconv"]
    if plain:
        e = factor_effect(rows, "network", "ddsnet_plainconv", "ddsnet")
        if e.n:
            out.append(
                ("separability", "depthwise-separable vs plain 3x3 convs, same width/resolution/d/budget/seed", e)
            )
    for factor in ("width_multiplier", "resolution"):
        values = sorted({r.get(factor) for r in proposed if r.get(factor) is not None})
        for low, high in itertools.combinations(values, 2):  # only pairs trained on one budget pair up
            e = factor_effect(rows, factor, low, high, network="ddsnet")
            if e.n:
                out.append((factor.replace("_", " "), f"{high} vs {low}, other factors, budget and seed equal", e))
    return out


def _baseline_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((r for r in rows if r["network"].startswith(BASELINE_PREFIXES)),
                  key=lambda r: (r["network"] != "googlenet", r["network"], r.get("resolution") or 0))  # fmt: skip


def baseline_comparison(rows: list[dict[str, Any]], baseline: dict[str, Any]) -> tuple[dict, dict, Effect] | None:
    """The paper's kind of comparison: the proposed (dilated) width-1.0 net vs one baseline
    configuration trained on the same budget, unpaired (Welch: different networks share no
    initialisation); None when no such proposed run shares the baseline's budget."""
    proposed = [r for r in rows if r["network"] == "ddsnet" and r.get("width_multiplier") == 1.0
                and _role(r) == "proposed" and r.get("budget") == baseline.get("budget")]  # fmt: skip
    if not proposed or not baseline.get("runs"):
        return None
    p = max(proposed, key=lambda r: r["top1"] or 0)
    effect = unpaired_effect([run["top1"] for run in baseline["runs"]], [run["top1"] for run in p["runs"]])
    return p, baseline, effect


def googlenet_claim(rows: list[dict[str, Any]]) -> tuple[dict, dict, Effect] | None:
    """The paper's comparison: the proposed width-1.0 net vs GoogLeNet at its largest input (where
    its stride-32 stem collapses least), same recipe and budget (Welch)."""
    google = [r for r in rows if r["network"] == "googlenet"]
    if not google:
        return None
    return baseline_comparison(rows, max(google, key=lambda r: (r.get("resolution") or 0, r.get("n") or 0)))


def _other_comparisons(rows: list[dict[str, Any]], claim: tuple | None) -> list[tuple[dict, dict, Effect]]:
    """The proposed width-1.0 net against every baseline configuration but the GoogLeNet claim's."""
    found = [baseline_comparison(rows, b) for b in _baseline_rows(rows) if not claim or b is not claim[1]]
    return [f for f in found if f]


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
    for p, b, effect in _other_comparisons(rows, claim):
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
    for _, b, effect in ([claim] if claim else []) + _other_comparisons(rows, claim):
        compared = f"unpaired (Welch), {b['resolution']} px, budget {b.get('budget') or '-'}"
        found.append((f"DDSNet α=1.0 vs {b['network']}", compared, effect))
    if not found:
        return ""
    lines = ["| effect | comparison | n | Δ top-1 (points) | 95% CI | verdict |", "|---|---|---|---|---|---|"]
    for name, compared, e in found:
        lines.append(f"| {name} | {compared} | {e.n} | {100 * e.mean:+.2f} | {_ci(e)} | {e.verdict} |")
    return "\n".join(lines)


def _plot_panel(ax, pts: list[dict[str, Any]], key: str, xlabel: str, log: bool) -> None:
    """Accuracy against one cost on one axis: error bars (± 1 std over seeds), labels, Pareto front."""
    for role, marker, color in (("proposed", "o", "C0"), ("ablation", "s", "C1"), ("baseline", "^", "C2")):
        sel = [r for r in pts if _role(r).startswith(role)]
        if not sel:
            continue
        ax.errorbar(
            [r[key] for r in sel],
            [100 * r["top1"] for r in sel],
            yerr=[100 * (r.get("top1_std") or 0.0) for r in sel],
            fmt=marker,
            color=color,  # one colour per role in every panel
            capsize=3,
            markersize=6,
            label=role,
        )
        for r in sel:
            ax.annotate(_label(r) + f" {r['resolution']}px", (r[key], 100 * r["top1"]), fontsize=6, alpha=0.8)
    # Pareto front: fewer params/MACs is better, more img/s is better.
    sign = 1 if key == "images_per_s" else -1
    front = [pts[i] for i in pareto_front([(sign * r[key], r["top1"]) for r in pts])]
    front.sort(key=lambda r: r[key])
    ax.plot([r[key] for r in front], [100 * r["top1"] for r in front], "k--", lw=1, label="Pareto front")
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test top-1 (%), mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _plots(rows: list[dict[str, Any]], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for key, xlabel, log in (("params", "parameters", True), ("macs", "forward MACs / image", True),
                             ("images_per_s", "inference images/s (CPU)", True)):  # fmt: skip
        pts = [r for r in rows if r.get(key) and r.get("top1") is not None]
        if not pts:
            continue
        # One panel per training budget: runs on different budgets are not comparable, so they
        # never share axes or a Pareto front.
        budgets = sorted({r.get("budget") or "full" for r in pts}, key=lambda b: (b != "full", b))
        fig, axes = plt.subplots(1, len(budgets), figsize=(7 if len(budgets) == 1 else 5.5 * len(budgets), 4.5),
                                 squeeze=False)  # fmt: skip
        for ax, budget in zip(axes[0], budgets):
            panel = [r for r in pts if (r.get("budget") or "full") == budget]
            _plot_panel(ax, panel, key, xlabel, log)
            if len(budgets) > 1:
                ax.set_title(f"training budget: {budget}", fontsize=9)
        fig.tight_layout()
        name = f"accuracy_vs_{key}.png"
        fig.savefig(out_dir / name, dpi=120)
        plt.close(fig)
        written.append(name)
    return written


def _deployment_table(rows: list[dict[str, Any]]) -> str:
    """int8 post-training quantization and ONNX figures of the runs (any seed) `lightclf export` processed."""
    lines = []
    for row in rows:
        for run in sorted(row.get("runs") or [row], key=lambda r: r.get("seed") or 0):
            export = run.get("export") or {}
            fp32, int8, onnx = export.get("fp32"), export.get("int8"), export.get("onnx")
            if not (fp32 and int8):
                continue
            onnx_diff = f"{onnx['max_abs_diff']:.1e}" if onnx else "-"
            loss, speedup = 100 * (fp32["top1"] - int8["top1"]), fp32["ms_per_image"] / int8["ms_per_image"]
            target = "met" if speedup >= INT8_TARGET[0] and loss <= INT8_TARGET[1] else "not met"
            lines.append(
                f"| {_label(row)} | {row['resolution']} | {run.get('seed')} | {_pct(fp32['top1'])} | "
                f"{_pct(int8['top1'])} | {-loss:+.2f} | {fp32['file_mb']:.3f} | {int8['file_mb']:.3f} | "
                f"{fp32['file_mb'] / int8['file_mb']:.2f}x | {fp32['ms_per_image']:.3f} | {int8['ms_per_image']:.3f} | "
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


def _write_csv(path: Path, rows: list[dict[str, Any]], fields: list[str]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: " ".join(map(str, v)) if isinstance(v, list) else v for k, v in row.items()})


def write_report(
    name: str, runs: list[dict[str, Any]], out_dir: str | Path, notes: str = "", protocol: str = ""
) -> Path:
    """Write report.md, runs.csv (one row per configuration), runs_per_seed.csv and plots."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = aggregate(runs)
    if not rows:
        raise ConfigError(f"report: no finished runs for study {name!r}")
    _attach_throughput(rows, out / "bench.csv")
    rows.sort(key=lambda r: -(r["top1"] or 0))
    _write_csv(out / "runs.csv", rows, CONFIG_FIELDS)
    _write_csv(out / "runs_per_seed.csv", sorted(runs, key=lambda r: (_label(r), str(r.get("resolution")),
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
    plots = _plots(rows, out)
    if plots:
        sections.append(
            "## Plots (error bars: ± 1 std over seeds)\n\n" + "\n".join(f"![{p}]({p})" for p in plots) + "\n"
        )
    sections.append(
        "## Every run\n\n"
        + _table(
            sorted(runs, key=lambda r: (_label(r), str(r.get("resolution")), r.get("seed") or 0)),
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


def log_summary_run(study, runs: list[dict[str, Any]], out: Path) -> str:
    """One W&B run in the study's group holding the per-run and per-configuration tables, the
    effects and the plots, so a reviewer in W&B needs no local files. Works offline (`wandb sync`)."""
    import wandb

    rows = aggregate(runs)
    _attach_throughput(rows, out / "bench.csv")
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


def main(argv: list[str] | None = None) -> None:
    parser = ToolArgumentParser(prog="lightclf report", description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="study YAML (its name, save_dir and project are used)")
    parser.add_argument("--out", default="reports", help="reports root; the report goes to <out>/<study name>/")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also read finished runs from the W&B API")
    parser.add_argument("--notes", metavar="FILE", help="markdown to put under the title (setup, caveats)")
    parser.add_argument("--bench", action="store_true", help="(re)measure inference img/s before writing")
    parser.add_argument(
        "--wandb-report",
        metavar="ENTITY/PROJECT",
        help="build a W&B Report of the study: saved online (URL printed), else its spec to <out>/<study>/wandb_report.json",
    )
    parser.add_argument(
        "--wandb-summary", action="store_true", help="log a summary run (tables + plots) into the study's W&B group"
    )
    args = parser.parse_args(argv)
    from lightclf.study.spec import load_study

    study = load_study(args.study)
    runs = collect_runs(study.save_dir, study.project, study.name, study.records)
    if args.wandb:
        local = {r["run_id"] for r in runs}
        runs += [r for r in collect_wandb_runs(args.wandb, study.name) if r["run_id"] not in local]
    if args.bench:
        bench_study(study, args.out)
    notes = Path(args.notes).read_text() if args.notes else ""
    out = Path(args.out) / study.name
    if study.questions:  # a study that asks its questions: verdicts, geometry and ERF (lightclf.study.questions)
        from lightclf.study.questions import write_question_report

        path = write_question_report(study, args.out, notes)
    else:
        path = write_report(study.name, runs, out, notes, study.protocol)
    print(f"wrote {path} ({len(runs)} runs)")
    if args.wandb_report or args.wandb_summary:
        from lightclf.training.wandb_env import configure_wandb

        online = configure_wandb() == "online"
    if args.wandb_report:
        from lightclf.study.wandb_report import publish

        where = publish(study, args.wandb_report, out, online)
        if online:
            print(f"W&B report: {where}")
        else:
            print(
                f"W&B is offline: wrote the report spec to {where}; once logged in (`wandb login`), run "
                f"`lightclf report --study {args.study} --wandb-report {args.wandb_report}` again to publish it"
            )
    if args.wandb_summary:
        run_dir = log_summary_run(study, runs, out)
        print(f"W&B summary run: {run_dir}" + ("" if online else " (offline: upload with `wandb sync` on it)"))
