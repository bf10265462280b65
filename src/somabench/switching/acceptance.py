"""The Cor. 1 / Thm. 2 acceptance test: switch only if adaptation made G measurably closer to F.

Why: the cosine gate (Cor. 2) asks "is G's answer close to F's?"; the paper's switching rule
(Sec. 4.1) also asks "did the *update* help?": with Gap(S) = 1 - cos(phi(a^G), phi(a^F)) and
F_hat_B = mean Gap over a batch B of post-warm-start contexts,

    Delta = F_hat_B^old - F_hat_B^new >= epsilon        (Cor. 1)

where "old" is the un-adapted G and "new" the adapted G, both answering the same contexts
S_t = D_{t-1} (+) q_t that F answered. Thm. 2 sizes the batch:

    |B|_eff >= 2 sigma_Delta^2 / eps^2 log(1/delta) + 2 b / (3 eps) log(1/delta)

with sigma_Delta the per-context standard deviation of Delta_t = Gap_old(t) - Gap_new(t),
*estimated* (Sec. 5: "for the empirically estimated sigma_Delta").

Reading chosen (closest to the paper's equations, see docs/soma.md):

* **B = the gate turns.** Sec. 4.1 defines F_hat_B over "a batch B of post-warm-start
  contexts" S_t with F's answer a^F_t; after the warm start the only contexts F answers are the
  gate turns (F keeps serving until the switch). Each gate turn adds one context to B: the
  adapted and the un-adapted G answer the same messages. Warm and mined contexts are *not*
  in B: they trained the adapter (in-sample), which would overstate Delta.
* **sigma_Delta is estimated on the warm window** (old vs new G on the W warm contexts, before
  the gate) and |B| fixed from it once per dialogue (Cor. 4: "Then choose |B| via Thm. 2").
  With fewer than two warm samples the configured prior is used; the source is recorded.
  |B|_eff = |B| (independent contexts assumed: with a handful of turns an autocorrelation
  estimate would be noise); Delta is the mean over *every* gate context so far (>= |B|).
* A method that does not adapt G (History-Prefix) has old == new, Delta == 0 by construction:
  the test is recorded as not applicable and only the cosine gate decides.

The other reading (``batch_source: mined_holdout``; App. B.2 quotes |B| in 6-24 and the paper
reports SOMA on 2-turn MT-Bench, which the strict reading cannot switch on): B is a set of
*held-out mined contexts*, V(P_m) (+) D_{t-1} (+) q_t with F's answers, that the LoRA never
trained on (nor validated on). It costs no future F turn: the test is complete at the end of
the warm window, so a switch needs only the m cosine hits. Its contexts are mined neighbours
of the warm turns, not future turns: Delta there measures generalisation to unseen contexts
*near* the session, which is SOMA's premise, not to the session's future. The size is
``batch`` (a number) or Thm. 2 with the prior sigma (sigma is only estimated after training),
capped by the mined pairs available (``batch_capped`` recorded).

Bounded gate: ``max_failed_tests: k`` closes the gate after k failed tests (each look at a
complete batch that falls short of epsilon counts; a fixed mined batch fails once and for
all), so a session that will never switch stops paying for G's candidates. Only when the test
blocks (``required``); recorded as ``gate_closed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

AUTO = "auto"
BATCH_SOURCES = ("future_turns", "mined_holdout")


def _auto_or_float(value: Any) -> float | None:
    return None if value is None or value == AUTO else float(value)


@dataclass(frozen=True)
class AcceptanceConfig:
    enabled: bool
    required: bool  # False: Delta, |B|, sigma are measured and recorded but do not block
    epsilon: float  # target improvement (App. B.2: 0.05 - 0.12)
    delta: float  # failure probability (Sec. 5: confidence 0.95)
    sigma_delta: float | None  # None: estimate on the warm window
    sigma_prior: float  # used when fewer than two warm samples exist
    b: float  # Thm. 2 sub-exponential scale (main text: 1, Gap in [0, 1])
    batch: int | None  # None: Thm. 2 (clipped to [min_batch, max_batch]); else fixed |B|
    min_batch: int
    max_batch: int
    batch_source: str = "future_turns"  # future_turns (Sec. 4.1, strict) | mined_holdout (App. B.2)
    max_failed_tests: int | None = None  # bounded gate: close after k failed tests (None: never)
    positive_control: bool = False  # mined_holdout only: also train on B (a test that must pass)

    @property
    def uses_future_turns(self) -> bool:
        return self.batch_source == "future_turns"

    @classmethod
    def from_cfg(cls, cfg: Any) -> AcceptanceConfig:
        batch = cfg["batch"]
        out = cls(enabled=bool(cfg["enabled"]), required=bool(cfg["required"]),
                  epsilon=float(cfg["epsilon"]),
                  delta=float(cfg["delta"]), sigma_delta=_auto_or_float(cfg["sigma_delta"]),
                  sigma_prior=float(cfg["sigma_prior"]), b=float(cfg["b"]),
                  batch=None if batch == AUTO else int(batch),
                  min_batch=int(cfg["min_batch"]), max_batch=int(cfg["max_batch"]),
                  batch_source=str(cfg.get("batch_source", "future_turns")),
                  max_failed_tests=(None if cfg.get("max_failed_tests") is None
                                    else int(cfg["max_failed_tests"])),
                  positive_control=bool(cfg.get("positive_control", False)))
        if out.batch_source not in BATCH_SOURCES:
            raise ValueError(f"switch.acceptance.batch_source={out.batch_source!r}; one of "
                             f"{BATCH_SOURCES}")
        if out.max_failed_tests is not None and out.max_failed_tests < 1:
            raise ValueError("switch.acceptance.max_failed_tests must be null or >= 1, got "
                             f"{out.max_failed_tests}")
        if out.positive_control and out.batch_source != "mined_holdout":
            raise ValueError("switch.acceptance.positive_control=true needs "
                             "batch_source=mined_holdout (it trains on the held-out batch)")
        if out.epsilon <= 0 or not 0 < out.delta < 1:
            raise ValueError(f"switch.acceptance: epsilon must be > 0 and delta in (0, 1); got "
                             f"epsilon={out.epsilon}, delta={out.delta}")
        if out.batch is not None and out.batch < 1:
            raise ValueError(f"switch.acceptance.batch must be auto or >= 1, got {out.batch}")
        if not 1 <= out.min_batch <= out.max_batch:
            raise ValueError("switch.acceptance: need 1 <= min_batch <= max_batch, got "
                             f"{out.min_batch}, {out.max_batch}")
        return out

    @property
    def batch_lower_bound(self) -> int:
        """The least |B| of *future turns* any dialogue can need (the turns-needed count)."""
        if not self.uses_future_turns:
            return 0
        return self.batch if self.batch is not None else self.min_batch

    def holdout_size(self, available: int) -> tuple[int, float, bool]:
        """mined_holdout: (|B| held out, Thm. 2's bound at the prior sigma, capped?)."""
        wanted, bound = batch_size(self, self.sigma_delta if self.sigma_delta is not None
                                   else self.sigma_prior)
        return min(wanted, available), bound, wanted > available


def b_eff_bound(delta: float, epsilon: float, sigma_delta: float, b: float = 1.0) -> float:
    """Thm. 2: |B|_eff >= 2 sigma^2/eps^2 log(1/delta) + 2b/(3 eps) log(1/delta).

    The main-text statement has b = 1 (Gap in [0, 1]); App. E keeps the sub-exponential b.
    Here, not in ``soma.theory``, because every method that adapts G sizes its test with it.
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    log_term = math.log(1.0 / delta)
    return 2.0 * sigma_delta**2 / epsilon**2 * log_term + 2.0 * b / (3.0 * epsilon) * log_term


def gaps(candidates: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Gap = 1 - cos per row pair (rows are unit vectors)."""
    return 1.0 - np.sum(np.asarray(candidates) * np.asarray(references), axis=1)


def estimate_sigma(deltas: list[float], cfg: AcceptanceConfig) -> tuple[float, str]:
    """sigma_Delta and where it came from: config | warm (sample std, ddof=1) | prior."""
    if cfg.sigma_delta is not None:
        return cfg.sigma_delta, "config"
    if len(deltas) >= 2:
        return float(np.std(np.asarray(deltas, dtype=np.float64), ddof=1)), "warm"
    return cfg.sigma_prior, "prior"


def batch_size(cfg: AcceptanceConfig, sigma: float) -> tuple[int, float]:
    """(|B| used, Thm. 2's real-valued bound for this sigma)."""
    bound = b_eff_bound(cfg.delta, cfg.epsilon, sigma, cfg.b)
    if cfg.batch is not None:
        return cfg.batch, bound
    return min(max(math.ceil(bound - 1e-12), cfg.min_batch), cfg.max_batch), bound


@dataclass
class AcceptanceState:
    """One dialogue's batch B and its test (kept inside ``SwitchState``)."""

    applicable: bool | None = None
    """None until the warm window ends; False when G was not adapted (old == new)."""
    batch: int | None = None
    batch_theory: float | None = None
    sigma: float | None = None
    sigma_source: str | None = None
    n_sigma: int = 0
    warm_deltas: list[float] = field(default_factory=list)
    turns: list[int] = field(default_factory=list)
    gaps_old: list[float] = field(default_factory=list)
    gaps_new: list[float] = field(default_factory=list)
    source: str = "future_turns"
    fixed: bool = False
    """True when B is complete at sizing time (mined_holdout): the test can never change."""
    failed_tests: int = 0
    batch_capped: bool = False
    labels: list[str] = field(default_factory=list)
    future: list[tuple[int, float, float]] = field(default_factory=list)
    """mined_holdout: (turn, Gap_old, Gap_new) on gate turns, a diagnostic outside the test."""

    @property
    def n(self) -> int:
        return len(self.turns)

    @property
    def delta(self) -> float | None:
        """Delta = F_hat_B^old - F_hat_B^new over every gate context so far."""
        if not self.turns:
            return None
        return float(np.mean(self.gaps_old) - np.mean(self.gaps_new))

    def size(self, cfg: AcceptanceConfig, applicable: bool, warm_deltas: list[float]) -> None:
        """Fix |B| for this dialogue from the warm-window estimate of sigma_Delta."""
        self.applicable = bool(cfg.enabled and applicable)
        self.warm_deltas = [float(d) for d in warm_deltas]
        self.sigma, self.sigma_source = estimate_sigma(self.warm_deltas, cfg)
        self.n_sigma = len(self.warm_deltas)
        self.batch, self.batch_theory = batch_size(cfg, self.sigma)

    def add(self, turn: int, gap_old: float, gap_new: float) -> None:
        self.turns.append(turn)
        self.gaps_old.append(float(gap_old))
        self.gaps_new.append(float(gap_new))

    def add_future_diagnostic(self, turn: int, gap_old: float, gap_new: float) -> None:
        self.future.append((turn, float(gap_old), float(gap_new)))

    @property
    def future_delta(self) -> float | None:
        """Delta over the gate turns seen so far, whichever batch the test uses."""
        rows = self.future if self.fixed else list(zip(self.turns, self.gaps_old, self.gaps_new,
                                                       strict=True))
        if not rows:
            return None
        return float(np.mean([o for _, o, _ in rows]) - np.mean([n for _, _, n in rows]))

    def set_fixed_batch(self, labels: list[str], gaps_old: list[float], gaps_new: list[float],
                        capped: bool = False) -> None:
        """mined_holdout: the whole batch at once (labels name the mined context ``t:m``)."""
        self.source, self.fixed, self.batch_capped = "mined_holdout", True, capped
        self.labels = list(labels)
        self.turns = [-1] * len(labels)  # no dialogue turn: a mined context
        self.gaps_old = [float(g) for g in gaps_old]
        self.gaps_new = [float(g) for g in gaps_new]
        self.batch = len(labels)

    def look(self, cfg: AcceptanceConfig) -> bool | None:
        """One look at the test (a gate turn or the fixed batch); counts a failed look."""
        result = self.passed(cfg)
        if self.applicable and result is False:
            self.failed_tests += 1
        return result

    def closed(self, cfg: AcceptanceConfig) -> bool:
        """Bounded gate: the test blocks and can no longer pass, or failed k times."""
        if not (self.applicable and cfg.required):
            return False
        if self.fixed and self.passed(cfg) is False:
            return True
        return cfg.max_failed_tests is not None and self.failed_tests >= cfg.max_failed_tests

    def remaining(self) -> int:
        """Gate contexts still needed before the test can pass (0 when not applicable)."""
        if not self.applicable or self.batch is None:
            return 0
        return max(self.batch - self.n, 0)

    def passed(self, cfg: AcceptanceConfig) -> bool | None:
        """True/False once |B| contexts exist; None while the batch is incomplete."""
        if not self.applicable:
            return True
        if self.remaining() > 0:
            return None
        delta = self.delta
        return delta is not None and delta >= cfg.epsilon

    def allows_switch(self, cfg: AcceptanceConfig) -> bool:
        """Whether the acceptance test lets the switch happen (always, when not required)."""
        return bool(self.passed(cfg)) or not cfg.required

    def remaining_required(self, cfg: AcceptanceConfig) -> int:
        return self.remaining() if cfg.required else 0

    def record(self, cfg: AcceptanceConfig) -> dict[str, Any]:
        """Dialogue-level record (``adaptation.switch.acceptance``)."""
        def r(x: float | None) -> float | None:
            return None if x is None else round(float(x), 6)

        return {
            "enabled": cfg.enabled, "required": cfg.required, "applicable": self.applicable,
            "epsilon": cfg.epsilon, "passed": self.passed(cfg) if self.applicable else None,
            "delta_confidence": cfg.delta, "b": cfg.b,
            "sigma": r(self.sigma), "sigma_source": self.sigma_source, "n_sigma": self.n_sigma,
            "warm_deltas": [r(d) for d in self.warm_deltas],
            "batch": self.batch, "batch_theory": r(self.batch_theory),
            "batch_source": "config" if cfg.batch is not None else "thm2",
            "contexts": self.source, "batch_capped": self.batch_capped,
            "batch_labels": list(self.labels), "failed_tests": self.failed_tests,
            "max_failed_tests": cfg.max_failed_tests, "gate_closed": self.closed(cfg),
            "positive_control": cfg.positive_control,
            "future_turns_diagnostic": [[t, r(o), r(n)] for t, o, n in self.future],
            "Delta_future_turns": r(self.future_delta),
            "batch_turns": list(self.turns), "gaps_old": [r(g) for g in self.gaps_old],
            "gaps_new": [r(g) for g in self.gaps_new], "Delta": r(self.delta),
        }
