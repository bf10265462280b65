"""The switch rule: numbers in, decisions out (no models, no I/O).

Why its own module: who serves each turn (warm, gate, switched, rollback ...) is decided here
once for SOMA, History-Prefix and History-FT, so their gate records are identical; the method
layer (``switching/method.py``) only feeds it scores and texts. The protocol is described in
the package docstring (``somabench/switching/__init__.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from somabench.switching.acceptance import AcceptanceConfig, AcceptanceState
from somabench.switching.drift import DriftConfig, DriftMonitor, DriftState
from somabench.switching.gate import AUTO, GateConfig, calibrate_threshold

GATE_KEYS = ("phase", "score", "threshold", "hits", "consecutive_required", "switched",
             "switch_turn", "rollback", "drift_similarity", "reason", "gap_old", "gap_new",
             "Delta", "batch_n", "batch_required", "accepted")
ORACLE = "oracle"


@dataclass(frozen=True)
class SwitchConfig:
    warm_window: int
    expected_turns: int | str | None  # None (no hint) | "oracle" | a number (a prior)
    require_payoff: bool
    gate: GateConfig
    acceptance: AcceptanceConfig
    drift: DriftConfig

    @classmethod
    def from_cfg(cls, cfg: Any, warm_window: int | None = None) -> SwitchConfig:
        """Build from the ``method.switch`` node; ``warm_window`` overrides an ``auto`` W."""
        w = cfg["warm_window"]
        if w == AUTO:
            if warm_window is None:
                raise ValueError("switch.warm_window=auto needs the method to compute W "
                                 "(SOMA does, from soma.theory); set a number instead")
            w = warm_window
        if int(w) < 1:
            raise ValueError(f"switch.warm_window must be >= 1, got {w}")
        hint = cfg["expected_turns"]
        if hint is not None and hint != ORACLE:
            hint = int(hint)
            if hint < 1:
                raise ValueError(f"switch.expected_turns must be null, oracle or >= 1, got {hint}")
        return cls(warm_window=int(w), expected_turns=hint,
                   require_payoff=bool(cfg["require_payoff"]),
                   gate=GateConfig.from_cfg(cfg["gate"]),
                   acceptance=AcceptanceConfig.from_cfg(cfg["acceptance"]),
                   drift=DriftConfig.from_cfg(cfg["drift"]))


@dataclass
class SwitchState:
    """One dialogue's switch state (kept in ``session.state``)."""

    expected_turns: int | None = None
    """The ``expected_turns`` hint (None: no hint, the default)."""
    expected_source: str | None = None
    """None | "config" (a deployment's prior) | "oracle" (the dialogue's true length)."""
    phase: str = "warm"
    warm_done: bool = False
    threshold: float | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    hits: int = 0
    scores: list[float] = field(default_factory=list)
    accepted: bool | None = None
    switch_turn: int | None = None
    rollbacks: list[int] = field(default_factory=list)
    acceptance: AcceptanceState = field(default_factory=AcceptanceState)
    drift: DriftState = field(default_factory=DriftState)
    reason: str | None = None

    @property
    def switched(self) -> bool:
        return self.switch_turn is not None


@dataclass
class Route:
    """Who serves a turn: ``phase`` is warm | too_short | gate | gate_closed | no_payoff |
    switched | rollback."""

    phase: str
    reason: str | None = None

    @property
    def role(self) -> str:
        return "G" if self.phase == "switched" else "F"


class SwitchController:
    """The decision logic only: numbers in, decisions out (no models, no I/O)."""

    def __init__(self, cfg: SwitchConfig) -> None:
        self.cfg = cfg
        self.monitor = DriftMonitor(cfg.drift)

    def turns_needed(self, adapts: bool) -> int:
        """The fewest turns in which a switch can leave G a turn: W + max(m, |B|) + 1."""
        acc = self.cfg.acceptance
        batch = acc.batch_lower_bound if adapts and acc.enabled and acc.required else 0
        return self.cfg.warm_window + max(self.cfg.gate.consecutive_hits, batch) + 1

    def new_state(self, expected_turns: int | None = None, source: str | None = None,
                  adapts: bool = False) -> SwitchState:
        """A dialogue's state. ``expected_turns`` is the hint (None: decide on seen turns only)."""
        state = SwitchState(expected_turns=expected_turns, expected_source=source)
        needed = self.turns_needed(adapts)
        if expected_turns is not None and self.cfg.require_payoff and expected_turns < needed:
            state.phase = "too_short"
            state.reason = (f"expected_turns ({source}) = {expected_turns} < W + max(m, |B|) + 1"
                            f" = {needed}: F serves all")
        return state

    # -- end of the warm window -----------------------------------------------------------------
    def calibrate(self, state: SwitchState, null_scores: list[float],
                  null_turn_pairs: int | None = None) -> float:
        """Set the gate threshold from warm-window null scores (``gate.calibrate_threshold``)."""
        threshold, state.calibration = calibrate_threshold(self.cfg.gate, null_scores,
                                                           null_turn_pairs)
        state.threshold = threshold
        return threshold

    def size_acceptance(self, state: SwitchState, applicable: bool,
                        warm_deltas: Sequence[float]) -> None:
        """Fix |B| (Thm. 2) from the warm-window sigma_Delta estimate."""
        state.acceptance.size(self.cfg.acceptance, applicable, list(warm_deltas))

    # -- routing --------------------------------------------------------------------------------
    def route(self, state: SwitchState, turn: int) -> Route:
        """Decide who serves ``turn``. Call once per turn, before answering it."""
        if state.phase == "too_short":
            return Route("too_short", state.reason)
        if turn < self.cfg.warm_window:
            return Route("warm")
        if not state.switched and state.acceptance.closed(self.cfg.acceptance):
            return Route("gate_closed", "the acceptance test blocks and cannot pass any more "
                                        f"(failed {state.acceptance.failed_tests} time(s)): F "
                                        "serves, no more G candidates (bounded gate)")
        if not state.switched:
            # This turn and the next ones would need max(m - hits, |B| - n) more gate turns;
            # G would serve from turn + that on.
            need = max(self.cfg.gate.consecutive_hits - state.hits,
                       state.acceptance.remaining_required(self.cfg.acceptance), 1)
            if (state.expected_turns is not None and self.cfg.require_payoff
                    and turn + need >= state.expected_turns):
                return Route("no_payoff", f"expected_turns ({state.expected_source}) = "
                                          f"{state.expected_turns}: no turn would be left for G "
                                          "even if every remaining gate passes: F serves")
            return Route("gate")
        if state.drift.pending:
            return Route("rollback", state.drift.pending)
        return Route("switched")

    # -- gate -----------------------------------------------------------------------------------
    def score_gate(self, state: SwitchState, turn: int, score: float | None,
                   drift_similarity: float | None = None, gap_old: float | None = None,
                   gap_new: float | None = None) -> bool:
        """Register a gate turn; returns True when this turn completes the switch.

        ``score=None`` (a failed candidate or F call) resets the run of hits. ``gap_old`` and
        ``gap_new`` (un-adapted / adapted G vs F) add the context to the acceptance batch.
        """
        gate = self.cfg.gate
        if state.switched:
            return False
        if state.threshold is None:
            raise RuntimeError("calibrate() must run before the first gate score")
        hit = score is not None and score > state.threshold
        if hit and gate.locality and drift_similarity is not None:
            hit = drift_similarity >= self.cfg.drift.threshold
        if score is not None:
            state.scores.append(float(score))
        state.hits = state.hits + 1 if hit else 0
        if gap_old is not None and gap_new is not None and state.acceptance.applicable:
            if self.cfg.acceptance.uses_future_turns:
                state.acceptance.add(turn, gap_old, gap_new)
            else:
                state.acceptance.add_future_diagnostic(turn, gap_old, gap_new)
        state.accepted = state.acceptance.look(self.cfg.acceptance)
        if state.hits >= gate.consecutive_hits and state.acceptance.allows_switch(
                self.cfg.acceptance):
            state.switch_turn = turn
            state.phase = "switched"
            return True
        return False

    # -- drift ----------------------------------------------------------------------------------
    def drift_similarity(self, state: SwitchState, turn: int,
                         query_vec: np.ndarray | None) -> float | None:
        if query_vec is None:
            return None
        return self.monitor.similarity(state.drift, turn, query_vec)

    def observe_drift(self, state: SwitchState, turn: int, query_vec: np.ndarray,
                      answer_vec: np.ndarray | None, sim: float | None) -> str | None:
        """Record the check of ``turn`` and its content; a fire while G serves next hands the
        next turn to F (``route`` -> rollback)."""
        cap = self.cfg.drift.max_rollbacks
        may = cap is None or len(state.rollbacks) < cap
        return self.monitor.observe(state.drift, turn, query_vec, answer_vec, sim,
                                    serving_g=state.switched, may_roll_back=may)

    def rolled_back(self, state: SwitchState, turn: int) -> int:
        """F served rollback turn ``turn``: record it, refresh the window; returns its start."""
        state.rollbacks.append(turn)
        return self.monitor.refresh(state.drift, turn)

    def record(self, state: SwitchState, route: Route, score: float | None = None,
               drift_similarity: float | None = None, gap_old: float | None = None,
               gap_new: float | None = None) -> dict[str, Any]:
        """The per-turn ``gate`` record (same keys on every turn)."""
        def r(x: float | None) -> float | None:
            return None if x is None else round(float(x), 6)

        acc = state.acceptance
        return {
            "phase": route.phase, "score": r(score), "threshold": r(state.threshold),
            "hits": state.hits, "consecutive_required": self.cfg.gate.consecutive_hits,
            "switched": state.switched, "switch_turn": state.switch_turn,
            "rollback": route.phase == "rollback", "drift_similarity": r(drift_similarity),
            "reason": route.reason, "gap_old": r(gap_old), "gap_new": r(gap_new),
            "Delta": r(acc.delta) if acc.applicable else None,
            "batch_n": acc.n if acc.applicable else None,
            "batch_required": acc.batch if acc.applicable else None,
            "accepted": state.accepted if route.phase == "gate" else None,
        }
