"""Statistics of a study: per-configuration summaries and effects with 95% confidence intervals.

Intervals come from scipy.stats (Student's t): a one-sample t interval of the paired
differences for an effect measured under the same seed and other factors, Welch's interval
for two unpaired groups. An effect whose interval excludes zero is called "significant";
otherwise "within noise". With fewer than two pairs no interval exists and the verdict says so.

:func:`judge` gives the verdicts a reviewer asks for, from statsmodels: "better" / "worse" only
when the Holm-adjusted p (over the report's family of effects) is below 5%, "equivalent" when a
TOST against a declared margin says so, else "inconclusive"; with the minimum effect each n could
have detected at 80% power (``TTestPower`` / ``TTestIndPower``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

__all__ = [
    "Summary",
    "Effect",
    "Verdict",
    "summarize",
    "paired_effect",
    "unpaired_effect",
    "paired_tests",
    "unpaired_tests",
    "judge",
    "Improvement",
    "probability_of_improvement",
]

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    """Mean, sample std, n and the 95% t interval of a metric over seeds."""

    mean: float
    std: float  # sample standard deviation (n - 1); 0 for n = 1
    n: int
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class Effect:
    """``b - a`` (e.g. dilated minus undilated), in the units of the metric."""

    mean: float
    ci_low: float | None
    ci_high: float | None
    n: int  # pairs (paired) or the smaller group (unpaired)
    paired: bool

    @property
    def verdict(self) -> str:
        if self.ci_low is None or self.ci_high is None:
            return f"no interval (n={self.n})"
        return "significant" if self.ci_low > 0 or self.ci_high < 0 else "within noise"


def effect_call(effect: Effect, progress: tuple[int, int] | None = None) -> str:
    """``effect.verdict``, unless ``progress`` (runs finished, runs planned) says the study is not done:
    then an interim look, with no call of either kind (the rule ``Verdict.planned`` applies to questions)."""
    if progress is not None and progress[0] < progress[1]:
        return f"interim ({progress[0]} of {progress[1]} runs): no verdict"
    return effect.verdict


def _t_interval(values: list[float]) -> tuple[float | None, float | None]:
    if len(values) < 2:
        return None, None
    from scipy import stats

    if statistics.pstdev(values) == 0.0:  # identical values: a zero-width interval
        return values[0], values[0]
    low, high = stats.ttest_1samp(values, 0.0).confidence_interval(CONFIDENCE)
    return float(low), float(high)


def summarize(values: list[float]) -> Summary:
    """Mean, sample std, n and the 95% t interval of the mean."""
    if not values:
        return Summary(math.nan, math.nan, 0, None, None)
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    low, high = _t_interval(values)
    return Summary(mean, std, len(values), low, high)


def paired_effect(pairs: list[tuple[float, float]]) -> Effect:
    """Mean of ``b - a`` over pairs (same seed, same other factors) with its 95% t interval."""
    diffs = [b - a for a, b in pairs]
    if not diffs:
        return Effect(math.nan, None, None, 0, True)
    low, high = _t_interval(diffs)
    return Effect(statistics.fmean(diffs), low, high, len(diffs), True)


def unpaired_effect(a: list[float], b: list[float]) -> Effect:
    """``mean(b) - mean(a)`` with Welch's 95% interval (unequal variances)."""
    if not a or not b:
        return Effect(math.nan, None, None, 0, False)
    mean = statistics.fmean(b) - statistics.fmean(a)
    if len(a) < 2 or len(b) < 2:
        return Effect(mean, None, None, min(len(a), len(b)), False)
    from scipy import stats

    if statistics.pstdev(a) == 0.0 and statistics.pstdev(b) == 0.0:
        return Effect(mean, mean, mean, min(len(a), len(b)), False)
    low, high = stats.ttest_ind(b, a, equal_var=False).confidence_interval(CONFIDENCE)
    return Effect(mean, float(low), float(high), min(len(a), len(b)), False)


# -- verdicts a reviewer trusts: power, equivalence, multiple tests (statsmodels) ------------------
POWER = 0.8
ALPHA = 0.05


@dataclass(frozen=True)
class Verdict:
    """An effect judged within its family: ``better`` / ``worse`` when the Holm-adjusted two-sided p is
    below ``ALPHA``; ``equivalent`` when the TOST against ``+-margin`` says so (p < ALPHA); else
    ``inconclusive``. ``mde`` is the smallest true effect the n could detect with 80% power at
    ``ALPHA`` (two-sided), given the observed spread. ``planned``, when given, is (runs finished,
    runs planned) over both arms: short of the plan the figures are an interim look and carry no
    verdict, since testing as seeds arrive and stopping at the first significant look inflates the
    false-positive rate."""

    name: str
    effect: Effect
    p_value: float | None
    p_holm: float | None
    tost_p: float | None
    mde: float | None
    margin: float
    planned: tuple[int, int] | None = None

    @property
    def interim(self) -> bool:
        """Fewer runs than planned: figures to look at, no call of any kind."""
        return self.planned is not None and self.planned[0] < self.planned[1]

    @property
    def word(self) -> str:
        if 0 < self.effect.n < 2:
            return "one seed: no verdict"
        if self.interim:
            return f"interim ({self.planned[0]} of {self.planned[1]} runs): no verdict"
        if self.p_holm is not None and self.p_holm < ALPHA:
            return "better" if self.effect.mean > 0 else "worse"
        if self.tost_p is not None and self.tost_p < ALPHA:
            return f"equivalent within ±{100 * self.margin:.2g} points"
        return "inconclusive"


def paired_tests(pairs: list[tuple[float, float]], margin: float) -> tuple[float | None, float | None, float | None]:
    """Two-sided paired t-test p of ``b - a``, TOST p for ``|b - a| < margin``, and the minimum
    detectable effect (80% power, two-sided 5%) from the spread of the differences."""
    diffs = [b - a for a, b in pairs]
    if len(diffs) < 2 or statistics.pstdev(diffs) == 0.0:
        return None, None, None
    from scipy import stats
    from statsmodels.stats.power import TTestPower
    from statsmodels.stats.weightstats import ttost_paired

    p = float(stats.ttest_1samp(diffs, 0.0).pvalue)
    a, b = [x for x, _ in pairs], [y for _, y in pairs]
    tost = float(ttost_paired(_array(b), _array(a), -margin, margin)[0])
    d = TTestPower().solve_power(nobs=len(diffs), alpha=ALPHA, power=POWER, alternative="two-sided")
    return p, tost, float(d * statistics.stdev(diffs))


def unpaired_tests(a: list[float], b: list[float], margin: float) -> tuple[float | None, float | None, float | None]:
    """Welch's two-sided p of ``mean(b) - mean(a)``, TOST p against ``+-margin`` (Welch) and the minimum
    detectable effect (80% power, two-sided 5%) at these group sizes and the pooled spread."""
    if len(a) < 2 or len(b) < 2 or (statistics.pstdev(a) == 0.0 and statistics.pstdev(b) == 0.0):
        return None, None, None
    from scipy import stats
    from statsmodels.stats.power import TTestIndPower
    from statsmodels.stats.weightstats import ttost_ind

    p = float(stats.ttest_ind(b, a, equal_var=False).pvalue)
    tost = float(ttost_ind(_array(b), _array(a), -margin, margin, usevar="unequal")[0])
    pooled = math.sqrt(
        ((len(a) - 1) * statistics.variance(a) + (len(b) - 1) * statistics.variance(b)) / (len(a) + len(b) - 2)
    )
    d = TTestIndPower().solve_power(
        nobs1=len(a), ratio=len(b) / len(a), alpha=ALPHA, power=POWER, alternative="two-sided"
    )
    return p, tost, float(d * pooled)


def judge(
    named: list[tuple[str, Effect, tuple[float | None, float | None, float | None]]],
    margin: float,
    planned: list[tuple[int, int] | None] | None = None,
) -> list[Verdict]:
    """Verdicts for a family of effects, each with its (p, TOST p, MDE): Holm's correction over the
    family's two-sided p values (statsmodels ``multipletests``). ``planned``: each effect's runs finished
    and planned (see ``Verdict.planned``)."""
    from statsmodels.stats.multitest import multipletests

    tested = [i for i, (_, _, (p, _, _)) in enumerate(named) if p is not None]
    holm: dict[int, float] = {}
    if tested:
        adjusted = multipletests([named[i][2][0] for i in tested], alpha=ALPHA, method="holm")[1]
        holm = {i: float(q) for i, q in zip(tested, adjusted)}
    return [
        Verdict(name, effect, p, holm.get(i), tost, mde, margin, planned[i] if planned else None)
        for i, (name, effect, (p, tost, mde)) in enumerate(named)
    ]


def _array(values: list[float]):
    import numpy as np

    return np.asarray(values, dtype=float)


# -- the probability of improvement (Bouthillier et al. 2021) --------------------------------------
RESAMPLES = 10_000
IMPROVEMENT_THRESHOLD = 0.75  # their rule: call B better when P(B > A) > 0.75 and its interval's low end > 0.5


@dataclass(frozen=True)
class Improvement:
    """P(b > a): the chance that a run of arm b beats a run of arm a (ties count half), over the paired
    seeds (or every cross pair of two unpaired groups), with its 95% interval."""

    p: float
    ci_low: float
    ci_high: float
    n: int

    @property
    def call(self) -> str:
        """Bouthillier et al.'s decision: better / worse only when the estimate passes 0.75 (0.25) and
        the interval excludes 0.5."""
        if self.p > IMPROVEMENT_THRESHOLD and self.ci_low > 0.5:
            return "better"
        if self.p < 1 - IMPROVEMENT_THRESHOLD and self.ci_high < 0.5:
            return "worse"
        return "no call"


def probability_of_improvement(
    pairs: list[tuple[float, float]] | None = None,
    a: list[float] | None = None,
    b: list[float] | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Improvement | None:
    """P(b > a) over ``pairs`` (paired seeds: the share of pairs b wins), else over the groups ``a`` and
    ``b`` (the share of cross pairs b wins, i.e. the Mann-Whitney AUC). None below 2 per arm.

    Paired: the exact (Clopper-Pearson) interval of that share. A percentile bootstrap of it, which
    Bouthillier et al. use with tens of seeds, collapses to [1, 1] as soon as b wins every pair of a
    handful of seeds (3 of 3 would then pass their rule); the exact interval keeps such a record
    honest ([0.29, 1] for 3 of 3). Unpaired: a seeded bootstrap of the AUC, each group resampled on
    its own."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if pairs is not None:
        if len(pairs) < 2:
            return None
        from scipy.stats import beta

        d = np.asarray([b_ - a_ for a_, b_ in pairs], dtype=float)
        n = len(pairs)
        wins = float(((d > 0) + 0.5 * (d == 0)).sum())  # a tie counts half
        alpha = 1 - CONFIDENCE
        low = float(beta.ppf(alpha / 2, wins, n - wins + 1)) if wins > 0 else 0.0
        high = float(beta.ppf(1 - alpha / 2, wins + 1, n - wins)) if wins < n else 1.0
        return Improvement(wins / n, low, high, n)
    else:
        if not a or not b or len(a) < 2 or len(b) < 2:
            return None
        xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)

        def auc(ya, yb):  # rows: resamples; the share of (a, b) cross pairs with b ahead
            diff = yb[..., :, None] - ya[..., None, :]
            return ((diff > 0) + 0.5 * (diff == 0)).mean(axis=(-2, -1))

        estimate = float(auc(xa, xb))
        boot = auc(xa[rng.integers(0, len(xa), size=(resamples, len(xa)))],
                   xb[rng.integers(0, len(xb), size=(resamples, len(xb)))])  # fmt: skip
        n = min(len(a), len(b))
    low, high = np.percentile(boot, [100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2])
    return Improvement(estimate, float(low), float(high), n)
