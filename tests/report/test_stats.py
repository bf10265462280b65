"""somabench.stats against hand-computed values.

Interval methods are checked where they can be computed by hand: the Student t interval of
(1, 2, 3, 4, 5) is 3 ± t(0.975, 4) * sqrt(2.5 / 5); the percentile bootstrap of two values
{a, b} has resample means a (p 1/4), (a+b)/2 (p 1/2), b (p 1/4), so its 2.5 % / 97.5 %
quantiles are a and b. Sign-flip p-values are exact enumerations, counted by hand in the
comments. Coverage (does a 95 % interval cover 95 %?) is simulated in test_coverage.py.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from somabench.stats import (
    EQUAL,
    SMALL_N,
    average_ci,
    bootstrap_ci,
    cell_seed,
    compare_to_baseline,
    fmt_p,
    mean_ci,
    paired_comparison,
    sign_flip_p,
)

KNOBS = {"n_boot": 4000, "seed": 0, "confidence": 0.95}


def test_t_interval_hand_computed():
    ci = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0], method="t", **KNOBS)
    half = 2.7764451051977987 * math.sqrt(2.5 / 5)  # t(0.975, df 4) x s / sqrt(n)
    assert (ci.mean, ci.n, ci.reason) == (3.0, 5, None)
    assert (ci.lo, ci.hi) == pytest.approx((3.0 - half, 3.0 + half))


def test_percentile_two_values_when_min_n_allows_it():
    ci = mean_ci([2.0, 4.0], method="percentile", min_n=2, **KNOBS)
    assert (ci.mean, ci.lo, ci.hi, ci.n) == (3.0, 2.0, 4.0, 2)


def test_no_interval_below_min_n_or_without_spread():
    few = mean_ci([55.0, 60.0, float("nan")], **KNOBS)  # NaN is not a dialogue
    assert (few.mean, few.lo, few.hi, few.n, few.reason) == (57.5, None, None, 2, SMALL_N)
    assert few.values == (55.0, 60.0)  # printed instead of an interval
    same = mean_ci([5.0] * 8, **KNOBS)
    assert (same.mean, same.lo, same.hi, same.n, same.reason) == (5.0, None, None, 8, EQUAL)
    none = mean_ci([], **KNOBS)
    assert none.n == 0 and none.mean is None and none.lo is None
    assert bootstrap_ci is mean_ci  # the old name keeps working for other report modules


def test_studentized_interval_is_seeded_and_asymmetric_for_skewed_data():
    values = [0.1, 0.2, 0.2, 0.3, 0.4, 0.5, 3.0]  # one large value: the upper arm must be longer
    a, b = mean_ci(values, **KNOBS), mean_ci(values, **KNOBS)
    assert a == b and a.method == "studentized"
    assert a.lo < a.mean < a.hi and a.hi - a.mean > a.mean - a.lo
    assert mean_ci(values, n_boot=4000, seed=1, confidence=0.95) != a


def test_cell_seed_is_stable_and_differs_by_identity():
    assert cell_seed(0, "T", "SOMA", "MATH") == cell_seed(0, "T", "SOMA", "MATH")
    seeds = {cell_seed(0, "T", "SOMA", d) for d in ("MATH", "MT-Bench", "ReMeDi")}
    assert len(seeds) == 3 and cell_seed(1, "T", "SOMA", "MATH") not in seeds


def test_average_ci_resamples_each_group_independently():
    """Two groups whose values mirror each other: resampling both with the SAME indices makes
    every draw's average exactly 0 (a zero-width interval, the old Avg bug); independent
    resamples give the spread of two independent means."""
    x = np.linspace(-1.0, 1.0, 30)
    tied = average_ci([x, -x], method="percentile", **KNOBS)
    assert tied.mean == pytest.approx(0.0) and tied.hi - tied.lo > 0.3
    t = average_ci([x, -x], method="t", **KNOBS)
    se = math.sqrt(2 * x.var(ddof=1) / 30) / 2  # Welch: df = 58 for equal variances and sizes
    assert t.hi == pytest.approx(2.0017174841452352 * se)
    few = average_ci([x, x[:3]], **KNOBS)
    assert few.lo is None and few.reason == SMALL_N and few.n == 33


def test_paired_comparison_below_min_n_keeps_sign_flip_p():
    # diffs a - b = 0.4, 0.2, -0.1 (sum 0.5). The 8 sign patterns give |sum| 0.7, 0.5, 0.3, 0.1
    # twice each; |sum| >= 0.5 in 4 of 8 -> p = 0.5 (exact). Three pairs: no interval.
    a = {"d1": 0.9, "d2": 0.8, "d3": 0.7}
    b = {"d1": 0.5, "d2": 0.6, "d3": 0.8}
    res = paired_comparison(a, b, n_perm=10_000, **KNOBS)
    assert res.n == 3 and res.exact and res.reason == SMALL_N
    assert math.isclose(res.diff, 0.5 / 3)
    assert res.lo is None and res.p is None and math.isclose(res.p_sign_flip, 0.5)
    assert res.values == pytest.approx((0.4, 0.2, -0.1))
    assert math.isclose(res.mean_a, 0.8) and math.isclose(res.mean_b, 19 / 30)


def test_paired_comparison_interval_and_p_agree():
    # five positive diffs 1..5: only the all-plus and all-minus patterns reach |mean| 3 -> p = 2/32
    a = {f"d{i}": float(i) for i in range(1, 6)}
    b = {f"d{i}": 0.0 for i in range(1, 6)}
    res = paired_comparison(a, b, n_perm=10_000, **KNOBS)
    assert res.p_sign_flip == pytest.approx(2 / 32) and res.exact and res.diff == 3.0
    assert res.lo is not None and (res.lo > 0) == (res.p <= 0.05)
    t = paired_comparison(a, b, n_perm=10_000, method="t", **KNOBS)
    half = 2.7764451051977987 * math.sqrt(2.5 / 5)
    assert (t.lo, t.hi) == pytest.approx((3.0 - half, 3.0 + half))
    # paired t = 3 / sqrt(0.5) = 4.243 with df 4 lies between the tabulated t(0.99, 4) = 3.747
    # and t(0.995, 4) = 4.604, so the two-sided p is between 0.01 and 0.02
    assert 0.01 < t.p < 0.02
    assert paired_comparison(a, {"z": 1.0}, n_perm=10, **KNOBS).n == 0


@pytest.mark.parametrize("method", ["studentized", "t", "percentile"])
def test_interval_excludes_zero_exactly_when_p_is_below_alpha(method):
    rng = np.random.default_rng(7)
    for i in range(60):
        n = int(rng.integers(5, 40))
        diffs = rng.normal(rng.uniform(-1.0, 1.0), 1.0, n) * rng.choice([1.0, 10.0])
        res = paired_comparison(dict(enumerate(diffs)), dict.fromkeys(range(n), 0.0), n_boot=1000,
                                n_perm=1000, seed=i, confidence=0.95, method=method)
        assert (res.lo > 0 or res.hi < 0) == (res.p <= 0.05), (method, i, res)


def test_sign_flip_monte_carlo_when_too_many_patterns():
    diffs = np.ones(12)
    p, exact = sign_flip_p(diffs, n_perm=999, seed=0)  # 2^12 > 999 -> Monte Carlo, add-one
    assert not exact and 1 / 1000 <= p < 0.01


def test_compare_to_baseline_pairs_on_dataset_and_dialogue():
    frame = pd.DataFrame({
        "label": ["SOMA", "SOMA", "Surrogate", "Surrogate", "Surrogate"],
        "dataset": ["m", "m", "m", "m", "t"],
        "dialogue_id": ["d1", "d2", "d1", "d2", "d1"],
        "value": [90.0, 80.0, 70.0, 70.0, 10.0],
    })
    out = compare_to_baseline(frame, value="value", group="label", unit=["dataset", "dialogue_id"],
                              baseline="SOMA", n_perm=1000, **KNOBS)
    row = out.set_index("label").loc["Surrogate"]
    assert row["n"] == 2 and row["diff"] == pytest.approx(-15.0)  # (70-90 + 70-80) / 2
    assert row["values"] == pytest.approx((-20.0, -10.0)) and row["lo"] is None
    assert row["p_sign_flip"] == pytest.approx(0.5)


def test_knob_validation_and_p_format():
    with pytest.raises(ValueError, match="n_boot"):
        mean_ci([1.0], n_boot=0, seed=0, confidence=0.95)
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0], n_boot=10, seed=0, confidence=95)
    with pytest.raises(ValueError, match="method"):
        mean_ci([1.0], n_boot=10, seed=0, confidence=0.95, method="bca?")
    with pytest.raises(ValueError, match="min_n"):
        mean_ci([1.0], n_boot=10, seed=0, confidence=0.95, min_n=1)
    assert fmt_p(0.0004) == "< 0.001" and fmt_p(0.25) == "0.250" and fmt_p(None) == "–"
