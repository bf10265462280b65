"""somabench.stats against hand-computed values.

Bootstrap of two values {a, b}: a resample mean is a (p 1/4), (a+b)/2 (p 1/2) or b (p 1/4), so
the 2.5 % / 97.5 % percentiles are a and b (with 4000 resamples the chance that fewer than
2.5 % of them are a is < 1e-100). Sign-flip p-values are exact enumerations, counted by hand
in the comments.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from somabench.stats import bootstrap_ci, compare_to_baseline, fmt_p, paired_comparison, sign_flip_p

KNOBS = {"n_boot": 4000, "seed": 0, "confidence": 0.95}


def test_bootstrap_ci_two_values_hand_computed():
    ci = bootstrap_ci([2.0, 4.0], **KNOBS)
    assert (ci.mean, ci.lo, ci.hi, ci.n) == (3.0, 2.0, 4.0, 2)


def test_bootstrap_ci_degenerate_and_empty():
    same = bootstrap_ci([5.0, 5.0, 5.0], **KNOBS)
    assert (same.mean, same.lo, same.hi, same.n) == (5.0, 5.0, 5.0, 3)
    one = bootstrap_ci([7.0, float("nan")], **KNOBS)  # NaN is not a dialogue
    assert (one.mean, one.lo, one.hi, one.n) == (7.0, 7.0, 7.0, 1)
    none = bootstrap_ci([], **KNOBS)
    assert none.n == 0 and none.mean is None and none.lo is None


def test_bootstrap_ci_is_seeded_and_contains_the_mean():
    values = [0.1, 0.9, 0.4, 0.7, 0.3, 0.8, 0.2]
    a, b = bootstrap_ci(values, **KNOBS), bootstrap_ci(values, **KNOBS)
    assert a == b
    assert a.lo < a.mean < a.hi and 0.1 <= a.lo and a.hi <= 0.9
    assert bootstrap_ci(values, n_boot=4000, seed=1, confidence=0.95) != a


def test_paired_comparison_hand_computed():
    # diffs a - b = 0.4, 0.2, -0.1 (sum 0.5). The 8 sign patterns give |sum| 0.7, 0.5, 0.3, 0.1
    # twice each; |sum| >= 0.5 in 4 of 8 -> p = 0.5 (exact).
    a = {"d1": 0.9, "d2": 0.8, "d3": 0.7}
    b = {"d1": 0.5, "d2": 0.6, "d3": 0.8}
    res = paired_comparison(a, b, n_perm=10_000, **KNOBS)
    assert res.n == 3 and res.exact
    assert math.isclose(res.diff, 0.5 / 3)
    assert math.isclose(res.p, 0.5)
    assert math.isclose(res.mean_a, 0.8) and math.isclose(res.mean_b, 19 / 30)
    assert -0.1 - 1e-9 <= res.lo <= res.diff <= res.hi <= 0.4 + 1e-9


def test_paired_comparison_all_positive_and_unpaired_units():
    # five positive diffs: only the all-plus and all-minus patterns reach |mean| 3 -> p = 2/32
    a = {f"d{i}": float(i) for i in range(1, 6)}
    b = {f"d{i}": 0.0 for i in range(1, 6)}
    res = paired_comparison(a, b, n_perm=10_000, **KNOBS)
    assert res.p == pytest.approx(2 / 32) and res.exact and res.diff == 3.0
    # b lacks d1..d3 -> only d4, d5 are paired: diffs 4, 5 -> bootstrap CI [4, 5]
    res = paired_comparison(a, {"d4": 0.0, "d5": 0.0, "x": 1.0}, n_perm=10_000, **KNOBS)
    assert (res.n, res.diff, res.lo, res.hi) == (2, 4.5, 4.0, 5.0)
    assert res.p == pytest.approx(2 / 4)  # (+,+), (-,-) of 4 patterns
    assert paired_comparison(a, {"z": 1.0}, n_perm=10, **KNOBS).n == 0


def test_sign_flip_monte_carlo_when_too_many_patterns():
    import numpy as np

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
    assert (row["lo"], row["hi"]) == (-20.0, -10.0)
    assert row["p"] == pytest.approx(0.5)


def test_knob_validation_and_p_format():
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci([1.0], n_boot=0, seed=0, confidence=0.95)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0], n_boot=10, seed=0, confidence=95)
    assert fmt_p(0.0004) == "< 0.001" and fmt_p(0.25) == "0.250" and fmt_p(None) == "–"
