"""The configuration report's statistics: paired effects of the knobs and the proposed net against
each baseline (the maths is lightclf.study.stats)."""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

from lightclf.factors import MOVES_WITH
from lightclf.study.report.collect import KEY_FACTORS, ConfigurationRow
from lightclf.study.stats import Effect, paired_effect, unpaired_effect

__all__ = [
    "Comparison",
    "factor_effect",
    "factor_values",
    "effects",
    "baseline_comparison",
    "googlenet_claim",
    "other_comparisons",
]

# The proposed width-1.0 net, one baseline configuration, and the difference (baseline first).
Comparison = tuple[ConfigurationRow, ConfigurationRow, Effect]


def factor_effect(rows: list[ConfigurationRow], factor: str, a: Any, b: Any, **match: Any) -> Effect:
    """top-1(b) - top-1(a), paired by seed and every other key factor (runs matching ``match``)."""
    free = (factor, *MOVES_WITH.get(factor, ()))  # e.g. the schedule moves with the dilation rate
    cells: dict[tuple, dict[Any, float]] = defaultdict(dict)
    for run in (run for row in rows for run in row.runs):
        if run.top1 is None or not run.factors.matches(match):
            continue
        key = tuple(getattr(run.factors, k) for k in (*KEY_FACTORS, "seed") if k not in free)
        cells[key][getattr(run.factors, factor)] = run.top1
    return paired_effect([(c[a], c[b]) for c in cells.values() if a in c and b in c])


def factor_values(rows: list[ConfigurationRow], factor: str) -> list[Any]:
    """The values ``factor`` takes among ``rows``, sorted (None left out)."""
    return sorted({getattr(r.factors, factor) for r in rows if getattr(r.factors, factor) is not None})


def effects(rows: list[ConfigurationRow]) -> list[tuple[str, str, Effect]]:
    """The paper's knobs as paired effects on top-1, each (name, what is compared, effect)."""
    out = []
    proposed = [r for r in rows if r.factors.network == "ddsnet"]
    dilations = factor_values(proposed, "dilation")
    if len(dilations) > 1:
        e = factor_effect(rows, "dilation", dilations[0], dilations[-1], network="ddsnet")
        if e.n:
            out.append(("dilation", f"d={dilations[-1]} vs d={dilations[0]}, same width/resolution/budget/seed", e))
    if any(r.factors.network == "ddsnet_plainconv" for r in rows):
        e = factor_effect(rows, "network", "ddsnet_plainconv", "ddsnet")
        if e.n:
            out.append(
                ("separability", "depthwise-separable vs plain 3x3 convs, same width/resolution/d/budget/seed", e)
            )
    for factor in ("width_multiplier", "resolution"):
        for low, high in itertools.combinations(factor_values(proposed, factor), 2):  # only one budget's runs pair up
            e = factor_effect(rows, factor, low, high, network="ddsnet")
            if e.n:
                out.append((factor.replace("_", " "), f"{high} vs {low}, other factors, budget and seed equal", e))
    return out


def _baseline_rows(rows: list[ConfigurationRow]) -> list[ConfigurationRow]:
    return sorted((r for r in rows if r.is_baseline),
                  key=lambda r: (r.factors.network != "googlenet", r.factors.network, r.factors.resolution or 0))  # fmt: skip


def baseline_comparison(rows: list[ConfigurationRow], baseline: ConfigurationRow) -> Comparison | None:
    """The paper's kind of comparison: the proposed (dilated) width-1.0 net vs one baseline
    configuration trained on the same budget, unpaired (Welch: different networks share no
    initialisation); None when no such proposed run shares the baseline's budget."""
    proposed = [r for r in rows if r.factors.network == "ddsnet" and r.factors.width_multiplier == 1.0
                and r.role == "proposed" and r.factors.budget == baseline.factors.budget and r.n]  # fmt: skip
    if not proposed or not baseline.n:
        return None
    p = max(proposed, key=lambda r: r.mean())
    tested = (
        [run.top1 for run in baseline.runs if run.top1 is not None],
        [run.top1 for run in p.runs if run.top1 is not None],
    )
    effect = unpaired_effect(*tested)
    return p, baseline, effect


def googlenet_claim(rows: list[ConfigurationRow]) -> Comparison | None:
    """The paper's comparison: the proposed width-1.0 net vs GoogLeNet at its largest input (where
    its stride-32 stem collapses least), same recipe and budget (Welch)."""
    google = [r for r in rows if r.factors.network == "googlenet"]
    if not google:
        return None
    return baseline_comparison(rows, max(google, key=lambda r: (r.factors.resolution or 0, r.n)))


def other_comparisons(rows: list[ConfigurationRow], claim: Comparison | None) -> list[Comparison]:
    """The proposed width-1.0 net against every baseline configuration but the GoogLeNet claim's."""
    found = [baseline_comparison(rows, b) for b in _baseline_rows(rows) if not claim or b is not claim[1]]
    return [f for f in found if f]
