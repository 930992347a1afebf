"""The configuration report's statistics: paired effects of the knobs and the proposed net against
each baseline (the maths is lightclf.study.stats)."""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

from lightclf.factors import MOVES_WITH
from lightclf.study.report.collect import KEY_FACTORS, is_baseline, role
from lightclf.study.stats import Effect, paired_effect, unpaired_effect

__all__ = ["factor_effect", "effects", "baseline_comparison", "googlenet_claim", "other_comparisons"]


def _runs_of(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [run for row in rows for run in row.get("runs", [row])]


def factor_effect(rows: list[dict[str, Any]], factor: str, a: Any, b: Any, **match: Any) -> Effect:
    """top-1(b) - top-1(a), paired by seed and every other key factor (runs matching ``match``)."""
    cells: dict[tuple, dict[Any, float]] = defaultdict(dict)
    for run in _runs_of(rows):
        if run.get("top1") is None or any(run.get(k) != v for k, v in match.items()):
            continue
        free = (factor, *MOVES_WITH.get(factor, ()))  # e.g. the schedule moves with the dilation rate
        key = tuple(run.get(k) for k in (*KEY_FACTORS, "seed") if k not in free)
        cells[key][run.get(factor)] = run["top1"]
    return paired_effect([(c[a], c[b]) for c in cells.values() if a in c and b in c])


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
    return sorted((r for r in rows if is_baseline(r)),
                  key=lambda r: (r["network"] != "googlenet", r["network"], r.get("resolution") or 0))  # fmt: skip


def baseline_comparison(rows: list[dict[str, Any]], baseline: dict[str, Any]) -> tuple[dict, dict, Effect] | None:
    """The paper's kind of comparison: the proposed (dilated) width-1.0 net vs one baseline
    configuration trained on the same budget, unpaired (Welch: different networks share no
    initialisation); None when no such proposed run shares the baseline's budget."""
    proposed = [r for r in rows if r["network"] == "ddsnet" and r.get("width_multiplier") == 1.0
                and role(r) == "proposed" and r.get("budget") == baseline.get("budget")]  # fmt: skip
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


def other_comparisons(rows: list[dict[str, Any]], claim: tuple | None) -> list[tuple[dict, dict, Effect]]:
    """The proposed width-1.0 net against every baseline configuration but the GoogLeNet claim's."""
    found = [baseline_comparison(rows, b) for b in _baseline_rows(rows) if not claim or b is not claim[1]]
    return [f for f in found if f]
