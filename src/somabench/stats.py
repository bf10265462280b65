"""Uncertainty over dialogues: bootstrap confidence intervals and paired comparisons.

Why: a bare mean ± std does not say whether two methods differ. The unit of resampling is the
dialogue (turns of one dialogue are not independent), and a comparison of two methods pairs
them on the *same* dialogues, which removes the between-dialogue variance that dominates
multi-turn benchmarks (Dror et al. 2018, "The Hitchhiker's Guide to Testing Statistical
Significance in NLP"; Efron & Tibshirani 1993, ch. 13 and 15).

* :func:`bootstrap_ci` -- percentile bootstrap CI of the mean over dialogues.
* :func:`paired_comparison` -- mean difference ``a - b`` over the dialogues both have, its
  paired percentile bootstrap CI, and a two-sided sign-flip permutation p-value (exact
  enumeration of all 2^n sign patterns when 2^n <= ``n_perm``, else ``n_perm`` random
  patterns with the add-one estimate (k + 1) / (n_perm + 1) of Phipson & Smyth 2010).

Every function takes its knobs explicitly (``n_boot``, ``n_perm``, ``seed``, ``confidence``);
callers read them from ``conf/report/default.yaml`` (``report.stats``). Results are plain
dataclasses with ``n`` so a table can always say how many dialogues a number rests on.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

EXACT_MAX_N = 20  # exact sign-flip enumeration never goes beyond 2^20 patterns (memory bound)


@dataclass(frozen=True)
class CI:
    """Mean of ``n`` per-dialogue values with its bootstrap confidence interval."""

    mean: float | None
    lo: float | None
    hi: float | None
    n: int
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Paired:
    """``a - b`` over the ``n`` dialogues both methods served."""

    diff: float | None
    """Mean of the per-dialogue differences a - b."""
    lo: float | None
    hi: float | None
    p: float | None
    """Two-sided sign-flip permutation p-value (None with no paired dialogue)."""
    n: int
    confidence: float
    exact: bool
    """True when p enumerates every sign pattern (no Monte Carlo error)."""
    mean_a: float | None = None
    mean_b: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _values(values: Sequence[float] | pd.Series | np.ndarray) -> np.ndarray:
    arr = np.asarray(pd.Series(values, dtype=float).dropna(), dtype=float)
    return arr


def _check(n_boot: int, confidence: float) -> None:
    if int(n_boot) < 1:
        raise ValueError(f"report.stats.n_boot={n_boot}; must be >= 1")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"report.stats.confidence={confidence}; must be in (0, 1)")


def _percentiles(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(samples, [tail, 1.0 - tail])
    return float(lo), float(hi)


def bootstrap_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` means of resamples (with replacement, same size) of ``values``."""
    idx = rng.integers(0, len(values), size=(int(n_boot), len(values)))
    return values[idx].mean(axis=1)


def bootstrap_ci(values: Sequence[float] | pd.Series | np.ndarray, *, n_boot: int, seed: int,
                 confidence: float) -> CI:
    """Percentile bootstrap CI of the mean of per-dialogue ``values`` (NaN dropped).

    One value: the CI is that value (no spread can be estimated; ``lo == hi``). No value: all
    ``None`` with ``n = 0``.
    """
    _check(n_boot, confidence)
    arr = _values(values)
    if arr.size == 0:
        return CI(None, None, None, 0, confidence)
    mean = float(arr.mean())
    if arr.size == 1:
        return CI(mean, mean, mean, 1, confidence)
    lo, hi = _percentiles(bootstrap_means(arr, n_boot, np.random.default_rng(seed)), confidence)
    return CI(mean, lo, hi, int(arr.size), confidence)


def sign_flip_p(diffs: np.ndarray, *, n_perm: int, seed: int) -> tuple[float, bool]:
    """Two-sided p of H0 "a and b are exchangeable within each dialogue": the share of sign
    patterns whose |mean| is >= the observed |mean|. Returns (p, exact)."""
    n = len(diffs)
    observed = abs(float(diffs.mean()))
    tol = 1e-12 * max(1.0, observed)  # ties count as "at least as extreme" despite rounding
    if n <= EXACT_MAX_N and 2 ** n <= int(n_perm):
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        stats = np.abs((signs * diffs).mean(axis=1))
        return float(np.mean(stats >= observed - tol)), True
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(int(n_perm), n))
    stats = np.abs((signs * diffs).mean(axis=1))
    return float((np.sum(stats >= observed - tol) + 1) / (int(n_perm) + 1)), False


def paired_comparison(a: Mapping[Any, float] | pd.Series, b: Mapping[Any, float] | pd.Series, *,
                      n_boot: int, n_perm: int, seed: int, confidence: float) -> Paired:
    """Compare method ``a`` with baseline ``b`` on the dialogues both have.

    ``a`` and ``b`` map a dialogue key (id, or (dataset, id)) to that dialogue's value. The
    difference is ``a - b`` (positive: ``a`` is higher). Dialogues present in only one of the
    two, or NaN in either, are left out (``n`` counts the pairs).
    """
    _check(n_boot, confidence)
    if int(n_perm) < 1:
        raise ValueError(f"report.stats.n_perm={n_perm}; must be >= 1")
    sa, sb = pd.Series(a, dtype=float), pd.Series(b, dtype=float)
    joined = pd.concat([sa.rename("a"), sb.rename("b")], axis=1, join="inner").dropna()
    n = len(joined)
    if n == 0:
        return Paired(None, None, None, None, 0, confidence, True)
    diffs = (joined["a"] - joined["b"]).to_numpy(dtype=float)
    mean = float(diffs.mean())
    mean_a, mean_b = float(joined["a"].mean()), float(joined["b"].mean())
    if n == 1:
        return Paired(mean, mean, mean, 1.0, 1, confidence, True, mean_a, mean_b)
    lo, hi = _percentiles(bootstrap_means(diffs, n_boot, np.random.default_rng(seed)), confidence)
    p, exact = sign_flip_p(diffs, n_perm=n_perm, seed=seed)
    return Paired(mean, lo, hi, p, n, confidence, exact, mean_a, mean_b)


def compare_to_baseline(frame: pd.DataFrame, *, value: str, group: str, unit: Sequence[str],
                        baseline: str, n_boot: int, n_perm: int, seed: int,
                        confidence: float) -> pd.DataFrame:
    """Every ``group`` (e.g. method label) against ``baseline`` on the same units.

    ``frame`` has one row per (group, unit) with ``value``; ``unit`` names the columns that
    identify a dialogue across methods (e.g. ``["dataset", "dialogue_id"]``). Returns one row
    per non-baseline group: diff, lo, hi, p, n, exact, mean_a (group), mean_b (baseline).
    """
    columns = [group, "baseline", "diff", "lo", "hi", "p", "n", "exact", "mean_a", "mean_b"]
    if frame.empty or baseline not in set(frame[group]):
        return pd.DataFrame(columns=columns)
    keyed = frame.set_index(list(unit))
    base = keyed[keyed[group] == baseline][value]
    base = base.groupby(level=list(range(len(unit)))).mean()
    rows = []
    for name, part in keyed[keyed[group] != baseline].groupby(group, sort=False):
        values = part[value].groupby(level=list(range(len(unit)))).mean()
        result = paired_comparison(values, base, n_boot=n_boot, n_perm=n_perm, seed=seed,
                                   confidence=confidence)
        rows.append({group: name, "baseline": baseline, **{k: v for k, v in result.as_dict().items()
                                                            if k != "confidence"}})
    return pd.DataFrame(rows, columns=columns)


def fmt_p(p: float | None, digits: int = 3) -> str:
    """p-values as tables print them: ``0.031``, ``< 0.001``, ``–`` when undefined."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "–"
    floor = 10.0 ** -digits
    return f"< {floor:.{digits}f}" if p < floor else f"{p:.{digits}f}"


__all__ = ["CI", "Paired", "bootstrap_ci", "bootstrap_means", "compare_to_baseline", "fmt_p",
           "paired_comparison", "sign_flip_p"]
