"""Uncertainty over dialogues: confidence intervals of means and paired comparisons.

Why: a bare mean ± std does not say whether two methods differ. The unit of resampling is the
dialogue (turns of one dialogue are not independent), and a comparison of two methods pairs
them on the *same* dialogues, which removes the between-dialogue variance that dominates
multi-turn benchmarks (Dror et al. 2018, "The Hitchhiker's Guide to Testing Statistical
Significance in NLP"; Efron & Tibshirani 1993, ch. 12-15).

* :func:`mean_ci` (alias :func:`bootstrap_ci`) -- CI of the mean over dialogues.
* :func:`average_ci` -- CI of the mean of several datasets' means (a table's Avg column, a
  figure's pooled whisker): each dataset's dialogues are resampled *independently*.
* :func:`paired_comparison` -- mean difference ``a - b`` over the dialogues both have, its CI
  and the p-value dual to that CI (the CI excludes 0 exactly when ``p <= 1 - confidence``),
  plus an exact sign-flip permutation p that needs no interval (Phipson & Smyth 2010).

Interval methods are a registry (:data:`INTERVALS`, knob ``report.stats.method``). The default,
``studentized`` (bootstrap-t), was chosen by simulated coverage (tests/report/test_coverage.py,
docs/reports.md "Intervals"): the percentile bootstrap, BCa and the Student t interval all fall
short of 95 % on skewed data at n = 10-30; bootstrap-t does not. No interval is computed below
``min_n`` values (or when every value is equal): the result says why (``reason``) and keeps the
values, so a table prints them instead of a fake interval. Every random draw comes from a
stream seeded by the caller; :func:`cell_seed` derives one per table cell from its identity, so
cells never share resampling indices.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

EXACT_MAX_N = 20  # exact sign-flip enumeration never goes beyond 2^20 patterns (memory bound)
DEFAULT_METHOD = "studentized"  # conf/report/default.yaml report.stats.method
DEFAULT_MIN_N = 5               # conf/report/default.yaml report.stats.min_n
MAX_DRAW_CELLS = 4_000_000      # resample at most this many values at once (memory bound)

# Why a cell has no interval (CI.reason / Paired.reason).
SMALL_N = "small_n"
EQUAL = "equal"


@dataclass(frozen=True)
class CI:
    """Mean of ``n`` values with its confidence interval (``lo``/``hi`` None: no interval,
    ``reason`` says why and ``values`` holds the values when there are fewer than ``min_n``)."""

    mean: float | None
    lo: float | None
    hi: float | None
    n: int
    confidence: float
    method: str = ""
    reason: str | None = None
    values: tuple[float, ...] = ()

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
    """Two-sided p dual to [lo, hi] (None when there is no interval)."""
    n: int
    confidence: float
    exact: bool
    """True when ``p_sign_flip`` enumerates every sign pattern (no Monte Carlo error)."""
    mean_a: float | None = None
    mean_b: float | None = None
    p_sign_flip: float | None = None
    """Two-sided sign-flip permutation p (valid at any n; shown when there is no interval)."""
    method: str = ""
    reason: str | None = None
    values: tuple[float, ...] = ()
    """The differences, when fewer than ``min_n`` (printed instead of an interval)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- seeds -----------------------------------------------------------------------------------------
def cell_seed(seed: int, *identity: Any) -> int:
    """A seed for one cell: ``seed`` mixed with the cell's identity (e.g. table, method,
    dataset). Stable across processes (not Python's salted ``hash``), so tables reproduce, and
    different cells get independent streams (a shared seed ties dialogue i of one dataset to
    dialogue i of another)."""
    text = "\x1f".join([str(int(seed)), *(str(part) for part in identity)])
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


# -- interval methods ------------------------------------------------------------------------------
IntervalFn = Callable[[list[np.ndarray], int, np.random.Generator, float], tuple[Any, Any, Any]]
"""(groups, n_boot, rng, confidence) -> (lo, hi, p of H0 "statistic = 0" dual to [lo, hi]).
The statistic is the mean of the group means (one group: the mean). A group may carry leading
batch axes (shape (..., n)); the results then have those axes (the coverage test batches
thousands of simulated samples this way)."""


def _average(groups: list[np.ndarray]) -> np.ndarray:
    return np.asarray(np.mean([g.mean(axis=-1) for g in groups], axis=0), dtype=float)


def _se(groups: list[np.ndarray]) -> np.ndarray:
    """Standard error of the mean of group means (groups independent)."""
    var = sum(g.var(axis=-1, ddof=1) / g.shape[-1] for g in groups)
    return np.asarray(np.sqrt(var) / len(groups), dtype=float)


def _chunks(n_boot: int, cells: int) -> list[int]:
    step = max(1, MAX_DRAW_CELLS // max(cells, 1))
    return [min(step, n_boot - i) for i in range(0, n_boot, step)]


def _draws(groups: list[np.ndarray], n_boot: int, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray]:
    """``n_boot`` resamples of every group, each group independently: per draw (last axis)
    the mean of the group means and its standard error (NaN when a resample has no spread)."""
    batch = groups[0].shape[:-1]
    avg = np.zeros((*batch, int(n_boot)))
    var = np.zeros((*batch, int(n_boot)))
    for g in groups:
        n = g.shape[-1]
        means, variances = [], []
        for size in _chunks(int(n_boot), g.size):
            sample = g[..., rng.integers(0, n, size=(size, n))]
            means.append(sample.mean(axis=-1))
            variances.append(sample.var(axis=-1, ddof=1) if n > 1 else np.zeros(sample.shape[:-1]))
        avg += np.concatenate(means, axis=-1)
        var += np.concatenate(variances, axis=-1) / n
    k = len(groups)
    se = np.sqrt(var) / k
    return avg / k, np.where(se > 0, se, np.nan)


def _two_sided(below: np.ndarray, above: np.ndarray) -> np.ndarray:
    return np.asarray(np.minimum(1.0, 2.0 * np.minimum(below, above)), dtype=float)


def _share(mask: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return np.asarray((mask & valid).sum(axis=-1) / np.maximum(valid.sum(axis=-1), 1), dtype=float)


def studentized(groups: list[np.ndarray], n_boot: int, rng: np.random.Generator,
                confidence: float) -> tuple[Any, Any, Any]:
    """Bootstrap-t (Efron & Tibshirani 1993, ch. 12.5): t* = (avg* - avg) / se* over
    resamples, CI = [avg - q(1-a) se, avg - q(a) se]. Second-order accurate, so it keeps its
    coverage on skewed data where percentile, BCa and t fall short. Resamples without spread
    (se* = 0) have no t* and are dropped (all dropped: NaN, no interval)."""
    avg, se = _average(groups), _se(groups)
    boot, boot_se = _draws(groups, n_boot, rng)
    t = (boot - avg[..., None]) / boot_se
    valid = np.isfinite(t)
    tail = (1.0 - confidence) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a sample whose every t* is undefined
        q_lo, q_hi = np.nanquantile(np.where(valid, t, np.nan), [tail, 1.0 - tail], axis=-1,
                                    method="inverted_cdf")
    t0 = (avg / se)[..., None]
    p = _two_sided(_share(t <= t0, valid), _share(t >= t0, valid))
    return avg - q_hi * se, avg - q_lo * se, np.where(valid.any(axis=-1), p, np.nan)


def student_t(groups: list[np.ndarray], n_boot: int, rng: np.random.Generator,
              confidence: float) -> tuple[Any, Any, Any]:
    """Student t (Welch-Satterthwaite degrees of freedom for several groups); no resampling."""
    avg, se = _average(groups), _se(groups)
    v = np.array([g.var(axis=-1, ddof=1) / g.shape[-1] for g in groups])
    dof = v.sum(axis=0) ** 2 / sum(v[i] ** 2 / (g.shape[-1] - 1) for i, g in enumerate(groups))
    q = sps.t.ppf(1.0 - (1.0 - confidence) / 2.0, dof)
    return avg - q * se, avg + q * se, 2.0 * sps.t.sf(np.abs(avg / se), dof)


def percentile(groups: list[np.ndarray], n_boot: int, rng: np.random.Generator,
               confidence: float) -> tuple[Any, Any, Any]:
    """Percentile bootstrap (kept for comparison: it covers 79 % at n = 4, 90 % at n = 10)."""
    boot, _ = _draws(groups, n_boot, rng)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(boot, [tail, 1.0 - tail], axis=-1, method="inverted_cdf")
    return lo, hi, _two_sided((boot <= 0.0).mean(axis=-1), (boot >= 0.0).mean(axis=-1))


INTERVALS: dict[str, IntervalFn] = {"studentized": studentized, "t": student_t, "percentile": percentile}
DESCRIPTIONS = {"studentized": "studentized bootstrap (bootstrap-t)", "t": "Student t",
                "percentile": "percentile bootstrap"}


def describe(method: str, n_boot: int | None = None) -> str:
    """How a table footnote names the interval method."""
    text = DESCRIPTIONS[method]
    return f"{text}, {n_boot} resamples" if n_boot and method != "t" else text


# -- public API ------------------------------------------------------------------------------------
def _values(values: Sequence[float] | pd.Series | np.ndarray) -> np.ndarray:
    return np.asarray(pd.Series(values, dtype=float).dropna(), dtype=float)


def _check(n_boot: int, confidence: float, method: str = DEFAULT_METHOD, min_n: int = 2) -> None:
    if int(n_boot) < 1:
        raise ValueError(f"report.stats.n_boot={n_boot}; must be >= 1")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"report.stats.confidence={confidence}; must be in (0, 1)")
    if method not in INTERVALS:
        raise ValueError(f"report.stats.method={method!r}; one of {sorted(INTERVALS)}")
    if int(min_n) < 2:
        raise ValueError(f"report.stats.min_n={min_n}; must be >= 2 (one value has no spread)")


def bootstrap_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` means of resamples (with replacement, same size) of ``values``."""
    idx = rng.integers(0, len(values), size=(int(n_boot), len(values)))
    return np.asarray(values[idx].mean(axis=1), dtype=float)


def _no_interval(groups: list[np.ndarray], min_n: int) -> str | None:
    if min(len(g) for g in groups) < int(min_n):
        return SMALL_N
    if all(np.ptp(g) == 0 for g in groups):
        return EQUAL
    return None


def average_ci(groups: Sequence[Sequence[float] | pd.Series | np.ndarray], *, n_boot: int, seed: int,
               confidence: float, method: str = DEFAULT_METHOD, min_n: int = DEFAULT_MIN_N) -> CI:
    """CI of the mean of the groups' means (e.g. datasets): each group is resampled on its
    own, independently of the others. No interval when a group has fewer than ``min_n``
    values or every group has no spread; ``n`` is the total number of values."""
    _check(n_boot, confidence, method, min_n)
    arrays = [_values(g) for g in groups]
    if not arrays or any(a.size == 0 for a in arrays):
        return CI(None, None, None, sum(a.size for a in arrays), confidence, method)
    mean, n = float(_average(arrays)), int(sum(a.size for a in arrays))
    reason = _no_interval(arrays, min_n)
    if reason is not None:
        values = tuple(float(v) for v in arrays[0]) if len(arrays) == 1 and reason == SMALL_N else ()
        return CI(mean, None, None, n, confidence, method, reason, values)
    lo, hi, _ = (float(v) for v in INTERVALS[method](arrays, int(n_boot), np.random.default_rng(seed),
                                                      confidence))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return CI(mean, None, None, n, confidence, method, EQUAL)
    return CI(mean, lo, hi, n, confidence, method)


def mean_ci(values: Sequence[float] | pd.Series | np.ndarray, *, n_boot: int, seed: int,
            confidence: float, method: str = DEFAULT_METHOD, min_n: int = DEFAULT_MIN_N) -> CI:
    """CI of the mean of ``values`` (NaN dropped). Fewer than ``min_n`` values or all equal:
    no interval (``reason``; the values are kept when there are few). None: ``n = 0``."""
    return average_ci([values], n_boot=n_boot, seed=seed, confidence=confidence, method=method,
                      min_n=min_n)


bootstrap_ci = mean_ci  # the name callers used before the interval methods became a registry


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
                      n_boot: int, n_perm: int, seed: int, confidence: float,
                      method: str = DEFAULT_METHOD, min_n: int = DEFAULT_MIN_N) -> Paired:
    """Compare method ``a`` with baseline ``b`` on the dialogues both have.

    ``a`` and ``b`` map a dialogue key (id, or (dataset, id)) to that dialogue's value. The
    difference is ``a - b`` (positive: ``a`` is higher). Dialogues present in only one of the
    two, or NaN in either, are left out (``n`` counts the pairs). The CI of the mean difference
    uses ``method`` and ``p`` is its dual (the CI excludes 0 iff ``p <= 1 - confidence``); below
    ``min_n`` pairs, or with equal differences, there is neither, and ``p_sign_flip`` (exact
    when 2^n <= ``n_perm``) is the test to show.
    """
    _check(n_boot, confidence, method, min_n)
    if int(n_perm) < 1:
        raise ValueError(f"report.stats.n_perm={n_perm}; must be >= 1")
    sa, sb = pd.Series(a, dtype=float), pd.Series(b, dtype=float)
    joined = pd.concat([sa.rename("a"), sb.rename("b")], axis=1, join="inner").dropna()
    n = len(joined)
    if n == 0:
        return Paired(None, None, None, None, 0, confidence, True, method=method)
    diffs = (joined["a"] - joined["b"]).to_numpy(dtype=float)
    mean = float(diffs.mean())
    mean_a, mean_b = float(joined["a"].mean()), float(joined["b"].mean())
    p_flip, exact = sign_flip_p(diffs, n_perm=n_perm, seed=seed)
    reason = _no_interval([diffs], min_n)
    if reason is not None:
        values = tuple(float(v) for v in diffs) if reason == SMALL_N else ()
        return Paired(mean, None, None, None, n, confidence, exact, mean_a, mean_b, p_flip, method,
                      reason, values)
    lo, hi, p = (float(v) for v in INTERVALS[method]([diffs], int(n_boot), np.random.default_rng(seed),
                                                      confidence))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return Paired(mean, None, None, None, n, confidence, exact, mean_a, mean_b, p_flip, method, EQUAL)
    return Paired(mean, lo, hi, p, n, confidence, exact, mean_a, mean_b, p_flip, method)


def compare_to_baseline(frame: pd.DataFrame, *, value: str, group: str, unit: Sequence[str],
                        baseline: str, n_boot: int, n_perm: int, seed: int, confidence: float,
                        method: str = DEFAULT_METHOD, min_n: int = DEFAULT_MIN_N,
                        identity: Sequence[Any] = ()) -> pd.DataFrame:
    """Every ``group`` (e.g. method label) against ``baseline`` on the same units.

    ``frame`` has one row per (group, unit) with ``value``; ``unit`` names the columns that
    identify a dialogue across methods (e.g. ``["dataset", "dialogue_id"]``). Returns one row
    per non-baseline group with the :class:`Paired` fields (``group`` first, then ``baseline``).
    Each group resamples with its own stream, :func:`cell_seed` of ``seed``, ``identity`` (e.g.
    the table and column) and the group.
    """
    fields = [f for f in Paired.__dataclass_fields__ if f != "confidence"]
    columns = [group, "baseline", *fields]
    if frame.empty or baseline not in set(frame[group]):
        return pd.DataFrame(columns=columns)
    keyed = frame.set_index(list(unit))
    base = keyed[keyed[group] == baseline][value]
    base = base.groupby(level=list(range(len(unit)))).mean()
    rows = []
    for name, part in keyed[keyed[group] != baseline].groupby(group, sort=False):
        values = part[value].groupby(level=list(range(len(unit)))).mean()
        result = paired_comparison(values, base, n_boot=n_boot, n_perm=n_perm,
                                   seed=cell_seed(seed, *identity, name, baseline),
                                   confidence=confidence, method=method, min_n=min_n)
        rows.append({group: name, "baseline": baseline,
                     **{k: v for k, v in result.as_dict().items() if k != "confidence"}})
    return pd.DataFrame(rows, columns=columns)


def fmt_p(p: float | None, digits: int = 3) -> str:
    """p-values as tables print them: ``0.031``, ``< 0.001``, ``–`` when undefined."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "–"
    floor = 10.0 ** -digits
    return f"< {floor:.{digits}f}" if p < floor else f"{p:.{digits}f}"


__all__ = ["CI", "DESCRIPTIONS", "INTERVALS", "Paired", "average_ci", "bootstrap_ci", "bootstrap_means",
           "cell_seed", "compare_to_baseline", "describe", "fmt_p", "mean_ci", "paired_comparison",
           "sign_flip_p"]
