"""Statistics of a study: per-configuration summaries and effects with 95% confidence intervals.

Intervals come from scipy.stats (Student's t): a one-sample t interval of the paired
differences for an effect measured under the same seed and other factors, Welch's interval
for two unpaired groups. An effect whose interval excludes zero is called "significant";
otherwise "within noise". With fewer than two pairs no interval exists and the verdict says so.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

__all__ = ["Summary", "Effect", "summarize", "paired_effect", "unpaired_effect"]

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
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
