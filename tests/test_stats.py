"""The study's verdicts: power, equivalence and Holm's correction, checked against statsmodels and
against what constructed data must give."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower
from statsmodels.stats.weightstats import ttost_paired

from lightclf.study.stats import judge, paired_effect, paired_tests, unpaired_effect, unpaired_tests

MARGIN = 0.003  # 0.3 points of top-1


def _pairs(shift: float, spread: float, n: int, seed: int = 0) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    a = 0.91 + rng.normal(0, 0.004, n)
    return [(float(x), float(x + shift + e)) for x, e in zip(a, rng.normal(0, spread, n))]


def test_paired_tests_match_statsmodels_and_scipy():
    pairs = _pairs(0.002, 0.003, 12)
    p, tost, mde = paired_tests(pairs, MARGIN)
    a, b = np.array([x for x, _ in pairs]), np.array([y for _, y in pairs])
    diffs = b - a
    from scipy import stats

    assert p == pytest.approx(stats.ttest_1samp(diffs, 0).pvalue)
    assert tost == pytest.approx(ttost_paired(b, a, -MARGIN, MARGIN)[0])
    d = TTestPower().solve_power(nobs=12, alpha=0.05, power=0.8)
    assert mde == pytest.approx(d * diffs.std(ddof=1))
    # The figure: paired std 0.385 points, 12 pairs -> about 0.35 points at 80% power.
    assert TTestPower().solve_power(nobs=12, alpha=0.05, power=0.8) * 0.385 == pytest.approx(0.35, abs=0.02)


def test_unpaired_tests_match_statsmodels():
    rng = np.random.default_rng(1)
    a, b = list(0.87 + rng.normal(0, 0.006, 3)), list(0.88 + rng.normal(0, 0.008, 4))
    p, tost, mde = unpaired_tests(a, b, MARGIN)
    pooled = np.sqrt((2 * np.var(a, ddof=1) + 3 * np.var(b, ddof=1)) / 5)
    assert mde == pytest.approx(TTestIndPower().solve_power(nobs1=3, ratio=4 / 3, alpha=0.05, power=0.8) * pooled)
    from scipy import stats

    assert p == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue)
    assert 0 < tost <= 1


def test_verdicts_better_worse_equivalent_inconclusive_with_holm():
    clear_gain = _pairs(0.01, 0.002, 12, seed=2)  # +1 point, tight: better
    clear_loss = _pairs(-0.01, 0.002, 12, seed=3)  # worse
    nothing = _pairs(0.0, 0.0008, 30, seed=4)  # a tight null: equivalent within 0.3 points
    noisy = _pairs(0.002, 0.01, 4, seed=5)  # 4 noisy pairs: inconclusive
    named = [(name, paired_effect(p), paired_tests(p, MARGIN)) for name, p in
             (("gain", clear_gain), ("loss", clear_loss), ("null", nothing), ("noisy", noisy))]  # fmt: skip
    verdicts = judge(named, MARGIN)
    words = {v.name: v.word for v in verdicts}
    assert words == {
        "gain": "better",
        "loss": "worse",
        "null": "equivalent within ±0.3 points",
        "noisy": "inconclusive",
    }
    raw = [v.p_value for v in verdicts]
    assert [v.p_holm for v in verdicts] == pytest.approx(list(multipletests(raw, method="holm")[1]))
    # Holm can turn a nominal p < 0.05 into a non-significant one (the 0.024 -> 0.096 case).
    borderline = judge([("x", paired_effect(clear_gain), (0.024, None, None))] * 4, MARGIN)
    assert borderline[0].p_holm == pytest.approx(0.096) and borderline[0].word == "inconclusive"
    # The MDE shrinks with n: 30 tight pairs detect far less than 4 noisy ones.
    assert verdicts[2].mde < verdicts[3].mde


def test_too_few_runs_give_no_test():
    assert paired_tests([(0.9, 0.91)], MARGIN) == (None, None, None)
    assert unpaired_tests([0.9], [0.91, 0.92], MARGIN) == (None, None, None)
    (only,) = judge([("one pair", paired_effect([(0.9, 0.91)]), (None, None, None))], MARGIN)
    assert only.word == "one seed: no verdict" and only.p_holm is None  # never "inconclusive": nothing was tested
    assert unpaired_effect([0.9], [0.91]).ci_low is None


def test_short_of_the_planned_seeds_is_an_interim_look_with_no_verdict():
    pairs = [(0.90, 0.95), (0.91, 0.955), (0.90, 0.96), (0.92, 0.97)]  # a clear +5 points
    named = [("late vs none", paired_effect(pairs), paired_tests(pairs, MARGIN))]
    (interim,) = judge(named, MARGIN, planned=[(8, 16)])  # 4 of 8 pairs: 8 of 16 runs
    assert interim.word == "interim (8 of 16 runs): no verdict" and interim.p_holm < 0.05  # figures kept
    (done,) = judge(named, MARGIN, planned=[(8, 8)])
    assert done.word == "better"
    assert judge(named, MARGIN)[0].word == "better"  # no plan given: judged as it stands


def test_probability_of_improvement_paired_exact_interval_and_the_rule():
    from lightclf.study.stats import probability_of_improvement

    # b wins 3 of 3 seeds: P = 1, but the exact interval [0.29, 1] keeps the rule from calling it.
    three = probability_of_improvement(pairs=[(0.90, 0.91), (0.90, 0.92), (0.89, 0.90)])
    assert three.p == 1.0 and three.ci_low == pytest.approx(0.2924, abs=1e-3) and three.call == "no call"
    # 14 of 15 seeds: 0.93 with a low end above 0.5: better. Mirrored: worse.
    pairs = [(0.9, 0.91)] * 14 + [(0.91, 0.9)]
    better = probability_of_improvement(pairs=pairs)
    assert better.p == pytest.approx(14 / 15) and better.ci_low > 0.5 and better.call == "better"
    assert probability_of_improvement(pairs=[(b, a) for a, b in pairs]).call == "worse"
    # A tie counts half.
    assert probability_of_improvement(pairs=[(0.9, 0.9), (0.9, 0.91)]).p == 0.75
    assert probability_of_improvement(pairs=[(0.9, 0.91)]) is None


def test_probability_of_improvement_unpaired_is_the_auc_with_a_seeded_bootstrap():
    from lightclf.study.stats import probability_of_improvement

    a, b = [0.1, 0.2, 0.3, 0.4], [0.25, 0.35, 0.45, 0.5]
    first = probability_of_improvement(a=a, b=b, resamples=2000)
    wins = sum((y > x) + 0.5 * (y == x) for x in a for y in b) / 16
    assert first.p == pytest.approx(wins) and first.ci_low <= first.p <= first.ci_high
    assert first == probability_of_improvement(a=a, b=b, resamples=2000)  # seeded: the same interval
