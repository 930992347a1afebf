"""Every comparison a report makes, computed once, with one pairing rule (``compare``) and one typed
result (``Comparison``): the question report's verdicts, and the configuration report's knob effects
and baselines (``compare_configurations``). The maths is lightclf.study.stats; rendering is markdown.py,
questions.py and the W&B modules."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Any

from lightclf.factors import MOVES_WITH, Question, canonical
from lightclf.study.report.collect import ConfigurationRow, RunRow
from lightclf.study.report.plan import Knob, ReportPlan, Versus
from lightclf.study.stats import (
    Effect,
    Improvement,
    paired_effect,
    paired_tests,
    probability_of_improvement,
    unpaired_effect,
    unpaired_tests,
)

__all__ = [
    "LINKED",
    "Comparison",
    "compare",
    "KnobEffect",
    "BaselineComparison",
    "ConfigurationComparisons",
    "compare_configurations",
    "factor_effect",
    "factor_values",
    "knob_pairs",
]


# Factors that move together (lightclf.factors.MOVES_WITH); across networks also the factors only
# the DDSNet family has (None for baselines).
LINKED = {
    **MOVES_WITH,
    "network": ("separable", "small_input", "dilation", "dilation_schedule", "width_multiplier"),
}


@dataclass(frozen=True)
class Comparison:
    """The runs a question compares: each arm's runs and, where runs pair, the pairs (a, b)."""

    a: list[RunRow]
    b: list[RunRow]
    pairs: list[tuple[RunRow, RunRow]]

    @property
    def unpaired(self) -> int:
        """Runs of either arm left out of the pairs (0 when compared unpaired: Welch uses all)."""
        return len(self.a) + len(self.b) - 2 * len(self.pairs) if self.pairs else 0

    @staticmethod
    def configurations(arm: list[RunRow]) -> dict[str, int]:
        """Each configuration an arm's runs belong to, with its number of runs."""
        return dict(Counter(r.factors.configuration.label for r in arm))

    def improvement(self) -> Improvement | None:
        """P(b > a) with its bootstrap interval, over the pairs, else over the arms (unpaired)."""
        if self.pairs:
            return probability_of_improvement(pairs=[(a.top1, b.top1) for a, b in self.pairs])
        return probability_of_improvement(a=[r.top1 for r in self.a], b=[r.top1 for r in self.b])

    def paired_effect(self) -> Effect:
        """``b - a`` on top-1 over the pairs only (n = 0 when none pair)."""
        return paired_effect([(a.top1, b.top1) for a, b in self.pairs])

    def effect(self, margin: float) -> tuple[Effect, tuple]:
        """``b - a`` on top-1 over the pairs, else over the arms unpaired (Welch)."""
        if self.pairs:
            pairs = [(a.top1, b.top1) for a, b in self.pairs]
            return paired_effect(pairs), paired_tests(pairs, margin)
        a, b = [r.top1 for r in self.a], [r.top1 for r in self.b]
        return unpaired_effect(a, b), unpaired_tests(a, b, margin)


def compare(question: Question, runs: list[RunRow], linked: dict[str, tuple[str, ...]] = LINKED) -> Comparison:
    """The runs of each arm among those matching ``where``, paired one to one by seed and every
    factor the question does not vary (nor those ``linked`` to what it varies): the one pairing rule
    of every report."""
    pool = [r for r in runs if r.factors.matches(question.where)]
    group_a = [r for r in pool if r.factors.matches(question.a)]
    group_b = [r for r in pool if r.factors.matches(question.b)]
    varied = {canonical(name) for name in (*question.a, *question.b)}  # short names and config keys alike
    varied |= {other for name in varied for other in linked.get(name, ())}
    pairs, used = [], set()
    for b in group_b:  # one-to-one: a run of arm a is never counted in two pairs
        partners = [a for a in group_a if a.run_id not in used and a.factors.differs_only_in(b.factors, *varied)]
        if len(partners) == 1:
            used.add(partners[0].run_id)
            pairs.append((partners[0], b))
    return Comparison(group_a, group_b, pairs)


# -- the configuration report: the declared knobs and baselines, computed once ----------------------
@dataclass(frozen=True)
class KnobEffect:
    """One knob's paired effect on top-1: its name, what was held equal, and the effect."""

    name: str
    compared: str
    effect: Effect


@dataclass(frozen=True)
class BaselineComparison:
    """The proposed configuration against one baseline configuration on the same budget (Welch:
    different networks share no initialisation)."""

    proposed: ConfigurationRow
    baseline: ConfigurationRow
    comparison: Comparison
    effect: Effect


@dataclass(frozen=True)
class ConfigurationComparisons:
    """Everything the configuration report compares, once: knob effects, the declared claim and the
    other baselines."""

    knobs: list[KnobEffect]
    claim: BaselineComparison | None
    others: list[BaselineComparison]

    @property
    def baselines(self) -> list[BaselineComparison]:
        return ([self.claim] if self.claim else []) + self.others


def _runs(rows: list[ConfigurationRow]) -> list[RunRow]:
    return [run for row in rows for run in row.runs if run.top1 is not None]


def factor_effect(rows: list[ConfigurationRow], factor: str, a: Any, b: Any, **match: Any) -> Effect:
    """top-1(b) - top-1(a), paired by seed and every other factor (runs matching ``match``); only the
    factors that move with ``factor`` (MOVES_WITH) are left free."""
    question = Question(factor, {factor: a}, {factor: b}, dict(match))
    return compare(question, _runs(rows), linked=MOVES_WITH).paired_effect()


def factor_values(rows: list[ConfigurationRow], factor: str) -> list[Any]:
    """The values ``factor`` takes among ``rows``, sorted (None left out)."""
    return sorted({r.factors.value(factor) for r in rows if r.factors.value(factor) is not None})


def knob_pairs(rows: list[ConfigurationRow], knob: Knob) -> list[tuple[Any, Any]]:
    """The (a, b) value pairs a declared knob compares among the rows it is read in."""
    if knob.a is not None:
        return [(knob.a, knob.b)]
    values = factor_values([r for r in rows if r.factors.matches(knob.where)], knob.factor)
    if len(values) < 2:
        return []
    return list(itertools.combinations(values, 2)) if knob.pairs == "all" else [(values[0], values[-1])]


def _knob_effects(rows: list[ConfigurationRow], knobs: tuple[Knob, ...]) -> list[KnobEffect]:
    """The declared knobs as paired effects on top-1 (those with no pair left out)."""
    out = []
    for knob in knobs:
        for a, b in knob_pairs(rows, knob):
            effect = factor_effect(rows, knob.factor, a, b, **knob.where)
            if effect.n:
                out.append(KnobEffect(knob.title, knob.compared.format(a=a, b=b), effect))
    return out


def _against(rows: list[ConfigurationRow], versus: Versus, baseline: ConfigurationRow) -> BaselineComparison | None:
    """The best proposed configuration on the baseline's budget against it, unpaired; None when no
    such proposed run shares the baseline's budget."""
    proposed = [r for r in rows if r.role == "proposed" and r.factors.matches(versus.where)
                and r.factors.budget == baseline.factors.budget and r.n]  # fmt: skip
    if not proposed or not baseline.n:
        return None
    p = max(proposed, key=lambda r: r.mean())
    comparison = Comparison(_runs([baseline]), _runs([p]), [])
    return BaselineComparison(p, baseline, comparison, unpaired_effect(*(
        [run.top1 for run in arm] for arm in (comparison.a, comparison.b))))  # fmt: skip


def compare_configurations(rows: list[ConfigurationRow], plan: ReportPlan) -> ConfigurationComparisons:
    """The configuration report's comparisons as the study declares them: the knobs, the claim (its
    baseline at its largest input: for a stride-32 net, where its stem collapses least) and every
    other baseline."""
    versus = plan.versus
    if versus is None:
        return ConfigurationComparisons(_knob_effects(rows, plan.knobs), None, [])
    in_claim = [r for r in rows if versus.claim and r.factors.matches(versus.claim.baseline)]
    target = max(in_claim, key=lambda r: (r.factors.resolution or 0, r.n)) if in_claim else None
    claim = _against(rows, versus, target) if target is not None else None
    claimed = {id(r) for r in in_claim}
    baselines = sorted((r for r in rows if r.is_baseline),
                       key=lambda r: (id(r) not in claimed, r.factors.network, r.factors.resolution or 0))  # fmt: skip
    others = [_against(rows, versus, b) for b in baselines if not claim or b is not claim.baseline]
    return ConfigurationComparisons(_knob_effects(rows, plan.knobs), claim, [o for o in others if o])
