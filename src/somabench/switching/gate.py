"""The cosine gate (paper Cor. 2, Sec. 5): is G's candidate close enough to F's answer?

Why its own module: the gate's numbers (its config, the null scores, the calibrated threshold)
are the same for every switching method and testable without a model.

``score = cos(phi(candidate), phi(a^F))``; a hit is ``score > threshold``. At the end of the
warm window the threshold is calibrated as the conservative empirical ``(1 - alpha_hit)``
quantile of *null* scores, cosines between texts answering *different* warm turns (F's answers,
SOMA's mined F answers, the adapted and the un-adapted G's warm answers). With ``n`` null scores
sorted ascending, ``k = ceil((n + 1)(1 - alpha_hit))``; the threshold is the k-th score, so an
exchangeable null score exceeds it with probability ``<= alpha_hit``; ``alpha_hit = rate **
(1/m)`` so a run of ``m`` null hits (a false switch) has probability ``<= rate`` (independence
assumed). Too few null scores (``k > n``) fall back (``gate.fallback``) to the largest null
score (``max_null``; per-hit bound ``1/(n+1)`` and the false-switch bound ``(1/(n+1))**m`` are
recorded) or to ``gate.max_threshold``. With W = 2 every null score comes from the one pair of
warm turns; the record says so (``null_turn_pairs``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

AUTO = "auto"
FALLBACKS = ("max_null", "max_threshold")


def _auto_or_float(value: Any) -> float | None:
    return None if value is None or value == AUTO else float(value)


@dataclass(frozen=True)
class GateConfig:
    threshold: float | None  # None = calibrate ("auto")
    false_switch_rate: float
    per_hit_rate: float | None  # None = false_switch_rate ** (1/consecutive_hits)
    consecutive_hits: int
    fallback: str  # "max_null" | "max_threshold" when too few null scores
    min_threshold: float
    max_threshold: float
    locality: bool

    @property
    def alpha_hit(self) -> float:
        if self.per_hit_rate is not None:
            return self.per_hit_rate
        return self.false_switch_rate ** (1.0 / self.consecutive_hits)

    @classmethod
    def from_cfg(cls, g: Any) -> GateConfig:
        gate = cls(threshold=_auto_or_float(g["threshold"]),
                   false_switch_rate=float(g["false_switch_rate"]),
                   per_hit_rate=_auto_or_float(g["per_hit_rate"]),
                   consecutive_hits=int(g["consecutive_hits"]), fallback=str(g["fallback"]),
                   min_threshold=float(g["min_threshold"]),
                   max_threshold=float(g["max_threshold"]), locality=bool(g["locality"]))
        if gate.fallback not in FALLBACKS:
            raise ValueError(f"switch.gate.fallback={gate.fallback!r}; one of {FALLBACKS}")
        if gate.consecutive_hits < 1:
            raise ValueError("switch.gate.consecutive_hits must be >= 1")
        return gate


def conservative_quantile(scores: list[float], alpha: float) -> float | None:
    """The k-th smallest score, k = ceil((n+1)(1-alpha)); None when k > n (too few scores).

    For exchangeable scores, a new null score exceeds it with probability <= alpha.
    """
    n = len(scores)
    if n == 0 or not 0 < alpha < 1:
        return None
    k = math.ceil((n + 1) * (1 - alpha))
    if k > n:
        return None
    return float(sorted(scores)[k - 1])


def cross_turn_scores(reference: list[np.ndarray],
                      candidate: list[np.ndarray] | None = None) -> list[float]:
    """Null scores: cosines between texts answering *different* turns.

    ``reference[t]`` / ``candidate[t]`` are (n, dim) arrays of unit rows for F-side texts
    (F's answers, also on mined prompts) and candidate (G) texts answering turn t. A gate score
    always involves F's answer, so the pairs are reference x reference (each unordered pair
    once) and candidate x reference (ordered across turns); candidate x candidate pairs are
    not a null for that statistic and are left out.
    """
    scores: list[float] = []
    n = len(reference)
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            if i < j and len(reference[i]) and len(reference[j]):
                scores.extend(float(x) for x in (reference[i] @ reference[j].T).ravel())
            if candidate is not None and len(candidate[i]) and len(reference[j]):
                scores.extend(float(x) for x in (candidate[i] @ reference[j].T).ravel())
    return scores


def calibrate_threshold(gate: GateConfig, null_scores: list[float],
                        null_turn_pairs: int | None = None) -> tuple[float, dict[str, Any]]:
    """The gate threshold from warm-window null scores, and its calibration record."""
    info: dict[str, Any] = {"n_null": len(null_scores), "alpha_hit": gate.alpha_hit,
                            "false_switch_rate": gate.false_switch_rate,
                            "consecutive_hits": gate.consecutive_hits,
                            "null_turn_pairs": null_turn_pairs}
    if gate.threshold is not None:
        threshold, info["method"] = gate.threshold, "fixed"
    else:
        q = conservative_quantile(null_scores, gate.alpha_hit)
        if q is None and gate.fallback == "max_null" and null_scores:
            # The largest of n exchangeable null scores is exceeded w.p. <= 1/(n+1).
            threshold, info["method"] = max(null_scores), "max_null"
            info["per_hit_bound"] = 1.0 / (len(null_scores) + 1)
            info["false_switch_bound"] = info["per_hit_bound"] ** gate.consecutive_hits
        elif q is None:
            threshold, info["method"] = gate.max_threshold, "insufficient_null"
        else:
            threshold, info["method"] = q, "null_quantile"
            info["null_quantile"] = q
        threshold = min(max(threshold, gate.min_threshold), gate.max_threshold)
    if null_scores:
        info.update(null_mean=float(np.mean(null_scores)), null_max=float(np.max(null_scores)))
    info["threshold"] = float(threshold)
    return float(threshold), info
