"""SOMA's theory knobs (paper Sec. 4, App. E): M (Cor. 3), W_eff (Lemma 1 / Cor. 4), |B|_eff (Thm. 2).

``python -m somabench theory --delta 0.05 --theta 0.785 --r-act 2 --eta 0.8 --epsilon 0.12
--sigma-delta 0.1`` prints the three values.

Note on Corollary 3: as printed in the main text, M >= log(1/delta) / log(1 - (sin theta)^(r-1))
has a sign slip: log(1 - x) < 0 for x in (0, 1], so the bound would be negative. The proof in
App. E ends with the correct form, M >= log(1/delta) / log(1 / (1 - (sin theta)^(r-1))), i.e.
M >= log(delta) / log(1 - (sin theta)^(r_act - 1)), which is what ``n_candidates`` computes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from somabench.switching.acceptance import b_eff_bound

__all__ = ["b_eff_bound", "coverage_probability", "directional_suboptimality", "effective_size",
           "knobs", "n_candidates", "n_candidates_bound", "w_eff_bound",
           "warm_start_error"]


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")


def coverage_probability(m: int, theta: float, r_act: int) -> float:
    """Thm. 3 lower bound: P(min angle <= theta) >= 1 - (1 - (sin theta)^(r_act-1))^M."""
    return 1.0 - (1.0 - math.sin(theta) ** (r_act - 1)) ** m


def n_candidates_bound(delta: float, theta: float, r_act: int) -> float:
    """Cor. 3 (sign-corrected): the real-valued lower bound log(delta)/log(1 - sin^(r-1) theta)."""
    _check_delta(delta)
    if not 0 < theta <= math.pi / 2:
        raise ValueError(f"theta must be in (0, pi/2], got {theta}")
    if r_act < 1:
        raise ValueError(f"r_act must be >= 1, got {r_act}")
    p = math.sin(theta) ** (r_act - 1)
    if p >= 1.0:  # theta = pi/2 or r_act = 1: every candidate lies in the cap
        return 1.0
    return math.log(delta) / math.log(1.0 - p)


def n_candidates(delta: float, theta: float, r_act: int) -> int:
    """Cor. 3: the smallest integer M with coverage >= 1 - delta."""
    return max(1, math.ceil(n_candidates_bound(delta, theta, r_act) - 1e-12))


def directional_suboptimality(lambda_1: float, theta: float) -> float:
    """Lemma 2: lambda_1 - u^T H u <= lambda_1 sin^2 theta for a candidate within theta."""
    return lambda_1 * math.sin(theta) ** 2


def warm_start_error(delta: float, w_eff: float) -> float:
    """Lemma 1: |F_W - F*| <= sqrt(2 log(2/delta) / W_eff) with probability >= 1 - delta."""
    _check_delta(delta)
    return math.sqrt(2.0 * math.log(2.0 / delta) / w_eff)


def w_eff_bound(delta: float, eta: float) -> float:
    """Cor. 4: W_eff >= 2 log(2/delta) / eta^2 makes the warm-start error <= eta."""
    _check_delta(delta)
    if eta <= 0:
        raise ValueError(f"eta must be > 0, got {eta}")
    return 2.0 * math.log(2.0 / delta) / eta**2


def effective_size(n: int, autocorrelations: Sequence[float]) -> float:
    """n / (1 + 2 sum_k rho_k): the effective size of a weakly dependent stream (Sec. 4.1)."""
    return n / (1.0 + 2.0 * sum(autocorrelations))


def knobs(delta: float, theta: float, r_act: int, eta: float, epsilon: float,
          sigma_delta: float, b: float = 1.0) -> dict[str, float | int]:
    """All three knobs, as integers, with the real-valued bounds for the record."""
    m_real = n_candidates_bound(delta, theta, r_act)
    w_real = w_eff_bound(delta, eta)
    b_real = b_eff_bound(delta, epsilon, sigma_delta, b)
    return {
        "M": n_candidates(delta, theta, r_act), "M_bound": m_real,
        "W_eff": math.ceil(w_real - 1e-12), "W_eff_bound": w_real,
        "B_eff": math.ceil(b_real - 1e-12), "B_eff_bound": b_real,
        "decision_error": eta + epsilon, "confidence": 1.0 - 2.0 * delta,
    }
