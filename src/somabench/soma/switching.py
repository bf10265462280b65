"""The one-time F -> G switch: cosine gate + acceptance test, drift rollback (shared).

Why one module: SOMA, History-Prefix and History-FT all switch the same way (paper Sec. 3.3,
Sec. 4.1, App. B.3 "The switching is the same as SOMA"); only *what* G answers with differs.
The decision logic lives here once, so the baselines and SOMA produce identical gate records.

The protocol (per dialogue)
---------------------------
1. **Warm window**: F serves turns ``0 .. W-1`` with the full history. No decision reads the
   dialogue's length: a deployment never knows how many turns remain. Only an explicit
   ``switch.expected_turns`` hint (off by default; ``oracle`` = the true length, recorded as an
   oracle) lets ``require_payoff`` skip adaptation/gating that could not leave a turn for G.
2. **End of the warm window** (right after turn W-1, i.e. at the start of turn W, or in
   ``finish`` when the dialogue ended exactly there: the deployment had already paid for it):
   the method adapts G (``adapt``), then
   * the **cosine gate** is calibrated: its threshold is the conservative empirical
     ``(1 - alpha_hit)`` quantile of *null* scores, cosines between texts answering
     *different* warm turns (F's answers, SOMA's mined F answers, the adapted and the
     un-adapted G's warm answers). With ``n`` null scores sorted ascending,
     ``k = ceil((n + 1)(1 - alpha_hit))``; the threshold is the k-th score, so an exchangeable
     null score exceeds it with probability ``<= alpha_hit``; ``alpha_hit = rate ** (1/m)`` so a
     run of ``m`` null hits (a false switch) has probability ``<= rate`` (Cor. 2 / Sec. 5,
     independence assumed). Too few null scores (``k > n``) fall back (``gate.fallback``) to
     the largest null score (``max_null``; per-hit bound ``1/(n+1)`` and the false-switch bound
     ``(1/(n+1))**m`` are recorded) or to ``gate.max_threshold``. With W = 2 every null score
     comes from the one pair of warm turns; the record says so (``null_turn_pairs``).
   * the **acceptance test** (Cor. 1 / Thm. 2, ``soma/acceptance.py``) is sized: sigma_Delta is
     estimated from Gap_old - Gap_new of the un-adapted vs adapted G on the warm contexts and
     |B| follows Thm. 2 (or ``acceptance.batch``). A method that did not adapt G has
     old == new: the test is not applicable (recorded) and the cosine gate alone decides.
3. **Gate turns**: F keeps serving (so early quality is F's); the adapted G's candidate (with
   the context G would serve with) and, for the acceptance test, the un-adapted G's candidate
   on the same messages are scored against F's answer: ``score = cos(phi(cand), phi(a^F))``.
   G serves from the next turn once **both** hold: ``m`` consecutive cosine hits
   (``score > threshold``) and ``Delta = mean Gap_old - mean Gap_new >= epsilon`` over >= |B|
   gate contexts. One switch per dialogue.
4. **After the switch** G serves; the **drift monitor** (``soma/drift.py``: sliding query
   average vs running content centroid, checked after every turn) hands the *next* turn to F
   when it fires (rollback), then refreshes its window (SOMA refreshes its summary too).

Config: ``method.switch`` (shared file ``conf/method/switch/default.yaml``; family budgets in
``conf/method/family/switch/<model>.yaml``).

Usage: subclass ``SwitchingMethod`` and supply the G hooks (a baseline needs ~20 lines)::

    class HistoryPrefix(SwitchingMethod):
        name = "history_prefix"

        def g_messages(self, session, turn):
            # what G sees for turn `turn` (gate candidates and served turns alike); may be
            # called for an earlier (warm) turn: use only session.history[:turn]
            return session.full_messages(turn, session.history[:turn])

        # optional hooks: adapt(session) (train G at the end of the warm window),
        # candidates(session, turns) -> [Completion] (default: one batched G call on
        # g_messages), serve_label(session), null_texts(session), on_rollback(session, turn),
        # g_context(session, turn), release(session).

Costs: ``with self.timed(session, "lora"): ...`` adds ``lora_s``/``lora_cpu_s`` and
``seconds_total`` to ``session.adaptation``; the gate's own work is ``gate_s``, the drift
monitor's encoder work ``drift_s``. G tokens of every gate candidate (warm calibration, warm
old-G answers, gate turns: adapted and un-adapted) go to ``session.adaptation_tokens["G"]``.

Records: every turn's ``gate`` dict has the same keys (``GATE_KEYS``); calibration, acceptance
(Delta, |B|, sigma estimate, batch turns), drift refreshes and the expected-turns hint go to
``session.adaptation["switch"]``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from somabench.backends.base import Completion
from somabench.backends.vllm_backend import release_session, serve_switched_turn
from somabench.methods import Method, Session, TurnPlan, usage_of
from somabench.records import ENCODER_ROLE, Usage
from somabench.soma.acceptance import AcceptanceConfig, AcceptanceState
from somabench.soma.acceptance import gaps as gap_rows
from somabench.soma.drift import DriftConfig, DriftMonitor, DriftState

log = logging.getLogger(__name__)
STAGE_LOG_MIN_SECONDS = 1.0  # display only: quicker stage timings are logged at DEBUG

GATE_KEYS = ("phase", "score", "threshold", "hits", "consecutive_required", "switched",
             "switch_turn", "rollback", "drift_similarity", "reason", "gap_old", "gap_new",
             "Delta", "batch_n", "batch_required", "accepted")
AUTO = "auto"
ORACLE = "oracle"
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
        """Set the gate threshold from warm-window null scores (see module docstring)."""
        gate = self.cfg.gate
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
        state.threshold = float(threshold)
        state.calibration = info
        return float(threshold)

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


def lora_layers(model: Any) -> list[Any]:
    """peft's tuner layers injected into ``model`` (empty when none or no torch model)."""
    if model is None or not hasattr(model, "modules"):
        return []
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # pragma: no cover - peft is a core dependency
        return []
    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


class SwitchingMethod(Method):
    """A method that serves with F, gates a G candidate, switches once, rolls back on drift.

    Subclasses implement ``g_messages`` (what G sees) and optionally the hooks documented in
    the module docstring. Stateful per dialogue, so never batched across dialogues.
    """

    batchable = False
    needs_reference = False
    STATE_KEY = "switch"

    def __init__(self, cfg: Any, ctx: Any) -> None:
        super().__init__(cfg, ctx)
        self.switch_cfg = SwitchConfig.from_cfg(cfg.switch, warm_window=self.auto_warm_window())
        self.controller = SwitchController(self.switch_cfg)

    # -- hooks for subclasses -------------------------------------------------------------------
    def auto_warm_window(self) -> int | None:
        """W when ``switch.warm_window: auto`` (SOMA derives it from theory)."""
        return None

    @abstractmethod
    def g_messages(self, session: Session, turn: int) -> list[dict[str, str]]:
        """What G sees when answering ``turn`` (gate candidate and served turns)."""

    def g_context(self, session: Session, turn: int) -> dict[str, Any] | None:
        """The ``context`` record of a G answer (summary tokens, verbatim turns ...)."""
        return None

    def f_messages(self, session: Session, turn: int) -> list[dict[str, str]]:
        return session.full_messages(turn)

    def serve_label(self, session: Session) -> str:
        return "G"

    def adapt(self, session: Session) -> None:
        """Called once when the warm window is complete, before calibration."""

    def adapts(self) -> bool:
        """Whether this method updates G (it overrides ``adapt``): then the Cor. 1 test applies."""
        return type(self).adapt is not SwitchingMethod.adapt

    def candidates(self, session: Session, turns: Sequence[int]) -> list[Completion]:
        """G's candidate answers for ``turns``, one batched call (default: G on ``g_messages``)."""
        batch = [self.g_messages(session, t) for t in turns]
        if not batch:
            return []
        return self.ctx.backend("G").chat_batch(batch, self.gen)

    def candidate(self, session: Session, turn: int) -> Completion:
        return self.candidates(session, [turn])[0]

    def candidates_with_base(self, session: Session, turns: Sequence[int]
                             ) -> tuple[list[Completion], list[Completion]]:
        """Cor. 1's new and old: the adapted and the un-adapted G's candidates on ``turns``.

        One mixed-adapter batch (peft ``adapter_names``) where G supports it: hf G carrying this
        dialogue's session adapter, with the default ``candidates``. Both rows of a turn share
        the prompt, so the decode loop runs once instead of twice (bench: gate 17.0 -> 13.8 s per
        dialogue at the tiny budget, results/bench/soma.json).
        Elsewhere two calls, the second inside ``base_g``.
        """
        backend = self.ctx.backend("G")
        if (turns and type(self).candidates is SwitchingMethod.candidates
                and self.session_adapter(session) is not None
                and getattr(backend, "supports_base_rows", False)):
            batch = [self.g_messages(session, t) for t in turns]
            n = len(batch)
            out = backend.chat_batch(batch + batch, self.gen, base_rows=[False] * n + [True] * n)
            return out[:n], out[n:]
        new = self.candidates(session, turns)
        with self.base_g(session):
            old = self.candidates(session, turns)
        return new, old

    def answers_with_base(self, session: Session, batch: list[list[dict[str, str]]]
                          ) -> tuple[list[Completion], list[Completion]]:
        """The adapted and the un-adapted G on arbitrary messages (the mined acceptance batch)."""
        backend = self.ctx.backend("G")
        if not batch:
            return [], []
        if self.session_adapter(session) is not None and getattr(backend, "supports_base_rows",
                                                                 False):
            n = len(batch)
            out = backend.chat_batch(batch + batch, self.gen, base_rows=[False] * n + [True] * n)
            return out[:n], out[n:]
        new = backend.chat_batch(batch, self.gen)
        with self.base_g(session):
            old = backend.chat_batch(batch, self.gen)
        return new, old

    def acceptance_holdout(self, session: Session) -> list[tuple[str, list[dict[str, str]], str]]:
        """``acceptance.batch_source: mined_holdout``: the held-out mined contexts, as
        (label, messages F answered, F's answer). Only a method that mines has them (SOMA)."""
        return []

    def null_texts(self, session: Session) -> list[dict[str, list[str]]]:
        """Texts answering each warm turn, ``{"reference": [...], "candidate": [...]}``.

        The calibration null is built from cross-turn pairs (``cross_turn_scores``). Default:
        F's warm answers, plus the adapted and the un-adapted G's answers on the warm turns.
        SOMA adds F's answers on the mined prompts.
        """
        return [{k: list(v) for k, v in texts.items()} for texts in self._warm(session)]

    def warm_candidates(self) -> bool:
        """Also generate G's candidate on each warm turn for calibration (costs W G calls)."""
        return True

    def on_rollback(self, session: Session, turn: int) -> None:
        """After a rollback turn (SOMA refreshes its summary)."""

    def release(self, session: Session) -> None:
        """Free per-dialogue resources (adapters) in ``finish``."""

    def session_adapter(self, session: Session) -> Any:
        """This dialogue's trained adapter (``SessionAdapter``) or None; ``model.G_serve``
        serves post-switch turns with it (backends/vllm_backend.py)."""
        return session.state.get("adapter")

    def has_adaptation(self, session: Session) -> bool:
        """Whether G currently carries this dialogue's adaptation (so old != new)."""
        raw = self.ctx.raw("G")
        return (self.session_adapter(session) is not None
                or getattr(raw, "adapter_id", None) is not None
                or bool(lora_layers(getattr(raw, "model", None))))

    @contextlib.contextmanager
    def base_g(self, session: Session) -> Iterator[bool]:
        """G without this dialogue's adaptation (the "old" G of Cor. 1).

        Yields True when an adaptation was switched off, False when G carries none (then old ==
        new). Uses the adapter's ``disabled()`` (contract 4) when the session holds one, else
        switches peft's injected LoRA layers off in place; the backend's ``adapter_id`` is None
        inside, so the request cache files these answers under the base model.
        """
        raw = self.ctx.raw("G")
        saved = getattr(raw, "adapter_id", None)
        adapter = self.session_adapter(session)
        disabled = getattr(adapter, "disabled", None)
        if callable(disabled):
            with disabled():
                raw.adapter_id = None
                try:
                    yield True
                finally:
                    raw.adapter_id = saved
            return
        layers = lora_layers(getattr(raw, "model", None))
        if not layers and saved is None:
            yield False
            return
        for layer in layers:
            layer.enable_adapters(False)
        raw.adapter_id = None
        try:
            yield True
        finally:
            for layer in layers:
                layer.enable_adapters(True)
            raw.adapter_id = saved

    # -- the Method protocol --------------------------------------------------------------------
    def _expected_turns(self, session: Session) -> tuple[int | None, str | None]:
        hint = self.switch_cfg.expected_turns
        if hint is None:
            return None, None
        if hint == ORACLE:
            return len(session.dialogue.turns), "oracle"
        return int(hint), "config"

    def start(self, session: Session) -> None:
        expected, source = self._expected_turns(session)
        state = self.controller.new_state(expected, source, adapts=self.adapts())
        session.state[self.STATE_KEY] = state
        session.state[self.STATE_KEY + "_warm"] = []
        info = session.adaptation.setdefault("switch", {})
        info.update(warm_window=self.switch_cfg.warm_window,
                    consecutive_hits=self.switch_cfg.gate.consecutive_hits,
                    expected_turns={"value": expected, "source": source,
                                    "oracle": source == ORACLE})
        if state.reason:
            info["skipped"] = state.reason

    def _embed(self, texts: list[str]) -> np.ndarray:
        return self.ctx.encoder().encode(texts)

    def _state(self, session: Session) -> SwitchState:
        return session.state[self.STATE_KEY]

    def _warm(self, session: Session) -> list[dict[str, list[str]]]:
        return session.state[self.STATE_KEY + "_warm"]

    @contextlib.contextmanager
    def timed(self, session: Session, stage: str) -> Iterator[dict[str, float]]:
        """Add wall seconds (``<stage>_s``) and process CPU seconds, all threads
        (``<stage>_cpu_s``), to ``session.adaptation``; ``seconds_total`` sums the walls."""
        box: dict[str, float] = {}
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield box
        finally:
            box["seconds"] = time.perf_counter() - wall
            spent = {f"{stage}_s": box["seconds"], f"{stage}_cpu_s": time.process_time() - cpu,
                     "seconds_total": box["seconds"]}
            for key, value in spent.items():
                session.adaptation[key] = round(session.adaptation.get(key, 0.0) + value, 6)
            level = logging.INFO if box["seconds"] >= STAGE_LOG_MIN_SECONDS else logging.DEBUG
            log.log(level, "dialogue %s: %s %.1fs", session.id, stage, box["seconds"])

    @contextlib.contextmanager
    def encoder_tokens(self, session: Session) -> Iterator[None]:
        """Charge the phi encoder's tokens (gate, drift, summary, Eq. 4 gaps) spent inside the
        block to the dialogue's adaptation tokens, role ``encoder`` (a switching method's own
        overhead, like the gate candidates; RouteLLM's embedding call is its ``router``)."""
        encoder = self.ctx.encoder()
        before = getattr(encoder, "tokens", None)  # None: an encoder that cannot count (a double)
        try:
            yield
        finally:
            spent = encoder.tokens - before if before is not None else 0
            if spent:
                session.add_adaptation_tokens(ENCODER_ROLE, Usage(spent, 0, 0))

    def plan(self, session: Session, turn: int) -> TurnPlan:
        with self.encoder_tokens(session):
            return self._plan(session, turn)

    def _plan(self, session: Session, turn: int) -> TurnPlan:
        state = self._state(session)
        if turn >= self.switch_cfg.warm_window and not state.warm_done \
                and state.phase != "too_short":
            self._end_warm(session)
        route = self.controller.route(state, turn)
        session.state["route"] = route
        if route.phase == "switched":
            plan = TurnPlan(role="G", messages=self.g_messages(session, turn),
                            served_by=self.serve_label(session),
                            context=self.g_context(session, turn))
            # model.G_serve (vLLM, one LoRARequest per dialogue) answers it; None: the runner's G
            plan.completion = serve_switched_turn(self.ctx, session, plan, self.gen,
                                                  self.session_adapter(session))
        else:
            plan = TurnPlan(role="F", messages=self.f_messages(session, turn))
            plan.context = {"history_turns": len(session.history)}
        if route.phase == "gate":
            self._gate_candidates(session, turn, plan)
        plan.gate = self.controller.record(state, route)
        return plan

    def _gate_candidates(self, session: Session, turn: int, plan: TurnPlan) -> None:
        """The adapted G's candidate and, for the acceptance test, the un-adapted G's."""
        state = self._state(session)
        with self.timed(session, "gate") as box:
            old = None
            # The un-adapted G's candidate (same decode loop: one mixed-adapter batch) feeds a
            # batch of future turns; with a mined batch it is kept as a diagnostic (Delta on
            # the session's future turns beside Delta on the mined contexts).
            grows_batch = state.acceptance.applicable
            if grows_batch and self.has_adaptation(session):
                new, olds = self.candidates_with_base(session, [turn])
                cand, old = new[0], olds[0]
                session.add_adaptation_tokens("G", usage_of(old))
            else:
                cand = self.candidate(session, turn)
                if grows_batch:
                    old = cand  # the adaptation failed: the un-adapted G is G (Delta = 0, no call)
        session.add_adaptation_tokens("G", usage_of(cand))
        session.state["candidates"] = (cand, old)
        plan.seconds["gate_candidate"] = round(box["seconds"], 6)
        plan.extra.update(candidate=cand.text, candidate_status=cand.status,
                          candidate_tokens={"prompt": cand.prompt_tokens,
                                            "completion": cand.completion_tokens},
                          candidate_context=self.g_context(session, turn))
        if old is not None:
            plan.extra.update(candidate_old=old.text, candidate_old_status=old.status,
                              candidate_old_tokens={"prompt": old.prompt_tokens,
                                                    "completion": old.completion_tokens})

    def _end_warm(self, session: Session) -> None:
        """Warm window complete: adapt G, calibrate the gate, size the acceptance batch."""
        self._state(session).warm_done = True
        self.adapt(session)
        with self.timed(session, "gate"):
            self._calibrate(session)

    def _calibrate(self, session: Session) -> None:
        state = self._state(session)
        warm = self._warm(session)
        turns = list(range(min(self.switch_cfg.warm_window, len(warm))))
        # Cor. 1 applies to every method that updates G; if its adaptation failed (nothing
        # attached), old == new and Delta = 0 < epsilon: G is never served un-adapted.
        applicable = self.adapts() and self.switch_cfg.acceptance.enabled
        adapted = self.has_adaptation(session)
        old: list[Completion] = []
        if applicable and adapted:
            new, old = self.candidates_with_base(session, turns)
        else:
            new = self.candidates(session, turns) if (self.warm_candidates() or applicable) else []
        for c in (*new, *old):
            session.add_adaptation_tokens("G", usage_of(c))
        deltas = []
        for i, t in enumerate(turns):
            got = [c.text for c in (new[i] if new else None, old[i] if old else None)
                   if c is not None and c.status == "ok"]
            warm[t]["candidate"].extend(got)
            if old and new and len(got) == 2 and warm[t]["reference"]:
                va, vb, vf = self._embed([new[i].text, old[i].text, warm[t]["reference"][0]])
                gap_new, gap_old = gap_rows(np.stack([va, vb]), np.stack([vf, vf]))
                deltas.append(float(gap_old - gap_new))
            elif applicable and not adapted and got and warm[t]["reference"]:
                deltas.append(0.0)
        texts = self.null_texts(session)
        null = cross_turn_scores([self._embed(t["reference"]) for t in texts],
                                 [self._embed(t.get("candidate", [])) for t in texts])
        w = len(turns)
        threshold = self.controller.calibrate(state, null, null_turn_pairs=w * (w - 1) // 2)
        self.controller.size_acceptance(state, applicable, deltas)
        if applicable and not self.switch_cfg.acceptance.uses_future_turns:
            self._mined_acceptance(session, adapted)
        info = session.adaptation["switch"]
        info["calibration"] = state.calibration
        info["acceptance"] = state.acceptance.record(self.switch_cfg.acceptance)
        info["adapted"] = adapted
        log.info("dialogue %s: gate threshold %.3f (%s, %d null scores); acceptance %s",
                 session.id, threshold, state.calibration["method"], len(null),
                 f"|B|={state.acceptance.batch} sigma={state.acceptance.sigma:.3f} "
                 f"({state.acceptance.sigma_source})" if applicable else "not applicable")

    def _mined_acceptance(self, session: Session, adapted: bool) -> None:
        """mined_holdout: the whole batch B now (old vs new G on held-out mined contexts)."""
        state = self._state(session)
        held = self.acceptance_holdout(session)
        labels, gaps_old, gaps_new = [], [], []
        if held and adapted:
            new, old = self.answers_with_base(session, [msgs for _, msgs, _ in held])
            for c in (*new, *old):
                session.add_adaptation_tokens("G", usage_of(c))
            for (label, _, ref), a_new, a_old in zip(held, new, old, strict=True):
                if a_new.status != "ok" or a_old.status != "ok":
                    continue
                va, vb, vf = self._embed([a_new.text, a_old.text, ref])
                g_new, g_old = gap_rows(np.stack([va, vb]), np.stack([vf, vf]))
                labels.append(label)
                gaps_old.append(float(g_old))
                gaps_new.append(float(g_new))
        capped = bool(session.state.get("acceptance_holdout_capped", False))
        state.acceptance.set_fixed_batch(labels, gaps_old, gaps_new, capped=capped)
        if not labels:
            # No held-out context (nothing mined, or adaptation failed): Delta is undefined,
            # the test cannot pass; recorded, and the bounded gate closes when it blocks.
            state.acceptance.batch = 1
        state.accepted = state.acceptance.look(self.switch_cfg.acceptance)

    def observe(self, session: Session, turn: int, plan: TurnPlan, completion: Completion) -> None:
        with self.encoder_tokens(session):
            self._observe(session, turn, plan, completion)

    def _observe(self, session: Session, turn: int, plan: TurnPlan, completion: Completion) -> None:
        state = self._state(session)
        route: Route = session.state.pop("route")
        if turn < self.switch_cfg.warm_window:
            self._warm(session).append(
                {"reference": [completion.text] if completion.status == "ok" else [],
                 "candidate": []})
        if state.phase == "too_short":
            plan.gate = self.controller.record(state, route)
            return
        if route.phase == "rollback":
            start = self.controller.rolled_back(state, turn)
            session.adaptation["switch"]["rollbacks"] = list(state.rollbacks)
            session.adaptation["switch"].setdefault("drift_refreshes", []).append(
                {"turn": turn, "window_from": start})
            self.on_rollback(session, turn)
        with self.timed(session, "drift"):
            answer = completion.text if completion.status == "ok" and completion.text else None
            vecs = self._embed([session.user(turn)] + ([answer] if answer else []))
            q_vec, a_vec = vecs[0], (vecs[1] if answer else None)
            sim = self.controller.drift_similarity(state, turn, q_vec)
        score = gap_old = gap_new = None
        if route.phase == "gate":
            score, gap_old, gap_new = self._score(session, completion)
            with self.timed(session, "gate"):
                switched = self.controller.score_gate(state, turn, score, sim, gap_old, gap_new)
            session.adaptation["switch"]["acceptance"] = state.acceptance.record(
                self.switch_cfg.acceptance)
            if switched:
                session.adaptation["switch"].update(switch_turn=turn)
                log.info("dialogue %s: switched to G after turn %d", session.id, turn)
        fired = self.controller.observe_drift(state, turn, q_vec, a_vec, sim)
        if fired and state.drift.pending:
            log.info("dialogue %s: %s after turn %d; F serves turn %d", session.id, fired,
                     turn, turn + 1)
        plan.gate = self.controller.record(state, route, score, sim, gap_old, gap_new)

    def _score(self, session: Session, completion: Completion
               ) -> tuple[float | None, float | None, float | None]:
        """(cosine score of the adapted candidate, Gap_old, Gap_new) against F's answer."""
        cand, old = session.state.pop("candidates")
        if completion.status != "ok" or cand.status != "ok":
            return None, None, None
        with self.timed(session, "gate"):
            texts = [cand.text, completion.text]
            has_old = old is not None and old.status == "ok"
            if has_old:
                texts.append(old.text)
            vecs = self._embed(texts)
        score = float(vecs[0] @ vecs[1])
        if not has_old:
            return score, None, None
        return score, 1.0 - float(vecs[2] @ vecs[1]), 1.0 - score

    def finish(self, session: Session) -> None:
        state = session.state.get(self.STATE_KEY)
        if state is not None:
            info = session.adaptation.setdefault("switch", {})
            if (not state.warm_done and state.phase != "too_short"
                    and len(session.own_answers) >= self.switch_cfg.warm_window):
                # The dialogue ended right after its warm window. A deployment cannot know
                # that: it adapts as soon as the window is complete, so the cost is paid.
                self._end_warm(session)
                info["adapted_after_last_turn"] = True
            info.update(switch_turn=state.switch_turn, rollbacks=list(state.rollbacks),
                        gate_scores=[round(s, 6) for s in state.scores],
                        threshold=state.threshold)
            if state.acceptance.applicable is not None:
                info["acceptance"] = state.acceptance.record(self.switch_cfg.acceptance)
        release_session(self.ctx, session)  # the G_serve engine's copy of the adapter, if any
        self.release(session)
