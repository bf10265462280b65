"""The one-time F -> G switch with a calibrated cosine gate and a drift rollback (shared).

Why one module: SOMA, History-Prefix and History-FT all switch the same way (paper Sec. 3.3,
Sec. 4.1, App. B.3 "The switching is the same as SOMA"); only *what* G answers with differs.
The decision logic lives here once, so the baselines and SOMA produce identical gate records.

The protocol (per dialogue)
---------------------------
1. **Warm window**: F serves turns ``0 .. W-1`` with the full history. A dialogue with fewer
   than ``W + consecutive_hits + 1`` turns cannot pay off a switch (no turn would be left for
   G), so F serves all of it and the reason is recorded (``switch.require_payoff``).
2. **Calibration** (once, when the warm window is complete): the gate threshold is the
   conservative empirical ``(1 - alpha_hit)`` quantile of *null* scores, i.e. cosines
   ``cos(phi(x), phi(y))`` between texts answering *different* warm turns (a permutation-style
   null: how close an answer that does not answer this query gets to F's answer). With
   ``n`` null scores sorted ascending, ``k = ceil((n + 1)(1 - alpha_hit))``; the threshold is
   the k-th score, so an exchangeable null score exceeds it with probability
   ``<= (n + 1 - k)/(n + 1) <= alpha_hit``. A hit needs ``score > threshold``. Requiring
   ``m`` consecutive hits, the per-hit rate is ``alpha_hit = rate ** (1/m)`` so that a run of
   ``m`` null hits (a false switch) has probability ``<= rate`` (independence assumption);
   ``gate.per_hit_rate`` can set it directly. Too few null scores for the requested rate
   (``k > n``) fall back (``gate.fallback``) to the largest null score (``max_null``: per-hit
   rate ``<= 1/(n+1)``, recorded) or to ``gate.max_threshold`` (``insufficient_null``). The
   result is clipped to ``[min_threshold, max_threshold]``. ``gate.threshold`` may instead
   be a fixed number.
3. **Gate turns**: F keeps serving (so early quality is F's); the method's candidate answer
   (G's answer with the context G would serve with) is scored against F's served answer:
   ``score = cos(phi(candidate), phi(a^F))``. ``m`` consecutive hits switch, once.
   Optionally (``gate.locality``) a hit also needs the query to stay near the warm centroid
   (the drift similarity below is >= the drift threshold), the reference implementation's
   "locality gate".
4. **After the switch** G serves. The **drift monitor** compares the mean embedding of the
   last ``drift.window`` queries (current one included) with the anchor centroid (the warm
   queries, later the refreshed window). If the cosine falls below ``drift.threshold``, or
   the similarity fell over the last ``drift.recheck_turns`` checks by at least
   ``drift.recheck_drop`` in total ("a quick recheck indicates growing divergence"), F
   serves *this one turn* (rollback); the anchor is then refreshed on the new window and G
   continues. ``drift.max_rollbacks`` caps rollbacks per dialogue (null: no cap).

Config (``method.switch``; shared file ``conf/method/switch/default.yaml``, pulled in by a
method yaml with ``defaults: [{switch: default}, _self_]``; override per method below it)::

    switch:
      warm_window: 2            # W (turns F serves before any gate)
      require_payoff: true      # skip gating when no turn could be left for G
      gate:
        threshold: auto         # auto (calibrated) | a number
        false_switch_rate: 0.05 # paper Sec. 5 / Cor. 2: <= 5 % false switches
        per_hit_rate: auto      # auto: false_switch_rate ** (1/consecutive_hits)
        consecutive_hits: 2     # m (paper: 2-3)
        fallback: max_null      # too few null scores: max_null | max_threshold
        min_threshold: ...      # clip of the calibrated threshold
        max_threshold: ...
        locality: false
      drift:
        enabled: true
        window: 2
        threshold: ...
        recheck_turns: 2
        recheck_drop: ...
        max_rollbacks: null

Usage: subclass ``SwitchingMethod`` and supply the two G hooks (a baseline needs ~20 lines)::

    from somabench.soma.switching import SwitchingMethod

    class HistoryPrefix(SwitchingMethod):
        name = "history_prefix"
        needs_reference = True

        def g_messages(self, session, turn):
            # what G sees when it answers turn `turn` (gate candidate and served turns alike)
            return session.full_messages(turn, session.reference_history(turn))

        # optional hooks: adapt(session) (train at the end of the warm window; History-FT),
        # candidate(session, turn) -> Completion (default: G on g_messages, no cache bypass),
        # serve_label(session) -> "G" / "G+lora", null_texts(session) -> extra warm texts,
        # on_rollback(session, turn), g_context(session, turn) -> record context dict.
        # g_messages may be called for an earlier turn (warm candidates for calibration):
        # use only the history before `turn` (session.history[:turn]).
        # warm_candidates() -> bool (default True: W extra G calls make the null larger).

    Costs: time adaptation work with ``with self.timed(session, "lora"): ...`` (adds
    ``lora_s``, ``lora_cpu_s`` and ``seconds_total`` to ``session.adaptation``); the gate's own
    work is timed as ``gate_s``; G tokens of gate candidates (warm and gate turns) go to
    ``session.adaptation_tokens["G"]`` and each gate turn's candidate text/tokens to
    ``plan.extra``.

The pure decision logic is also usable without a Method: ``SwitchController`` (calibrate,
route, score) with a ``SwitchState`` per dialogue; see ``tests/soma/test_switching.py``.

Records: every turn's ``gate`` dict has the same keys (``GATE_KEYS``): phase (warm |
too_short | gate | no_payoff | switched | rollback), score, threshold, hits, consecutive_required,
switched (state after this turn), switch_turn, rollback, drift_similarity, reason. The
calibration details go to ``session.adaptation["switch"]``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from somabench.backends.base import Completion
from somabench.methods import Method, Session, TurnPlan, usage_of

log = logging.getLogger(__name__)

GATE_KEYS = ("phase", "score", "threshold", "hits", "consecutive_required", "switched",
             "switch_turn", "rollback", "drift_similarity", "reason")
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


@dataclass(frozen=True)
class DriftConfig:
    enabled: bool
    window: int
    threshold: float
    recheck_turns: int
    recheck_drop: float
    max_rollbacks: int | None


@dataclass(frozen=True)
class SwitchConfig:
    warm_window: int
    require_payoff: bool
    gate: GateConfig
    drift: DriftConfig

    @classmethod
    def from_cfg(cls, cfg: Any, warm_window: int | None = None) -> SwitchConfig:
        """Build from the ``method.switch`` node; ``warm_window`` overrides an ``auto`` W."""
        g, d = cfg["gate"], cfg["drift"]
        w = cfg["warm_window"]
        if w == AUTO:
            if warm_window is None:
                raise ValueError("switch.warm_window=auto needs the method to compute W "
                                 "(SOMA does, from soma.theory); set a number instead")
            w = warm_window
        gate = GateConfig(
            threshold=_auto_or_float(g["threshold"]),
            false_switch_rate=float(g["false_switch_rate"]),
            per_hit_rate=_auto_or_float(g["per_hit_rate"]),
            consecutive_hits=int(g["consecutive_hits"]),
            fallback=str(g["fallback"]),
            min_threshold=float(g["min_threshold"]),
            max_threshold=float(g["max_threshold"]),
            locality=bool(g["locality"]),
        )
        drift = DriftConfig(
            enabled=bool(d["enabled"]), window=int(d["window"]), threshold=float(d["threshold"]),
            recheck_turns=int(d["recheck_turns"]), recheck_drop=float(d["recheck_drop"]),
            max_rollbacks=None if d["max_rollbacks"] is None else int(d["max_rollbacks"]),
        )
        if gate.fallback not in FALLBACKS:
            raise ValueError(f"switch.gate.fallback={gate.fallback!r}; one of {FALLBACKS}")
        if int(w) < 1:
            raise ValueError(f"switch.warm_window must be >= 1, got {w}")
        if gate.consecutive_hits < 1:
            raise ValueError("switch.gate.consecutive_hits must be >= 1")
        return cls(warm_window=int(w), require_payoff=bool(cfg["require_payoff"]), gate=gate,
                   drift=drift)


@dataclass
class SwitchState:
    """One dialogue's switch state (kept in ``session.state``)."""

    n_turns: int
    phase: str = "warm"
    threshold: float | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    hits: int = 0
    scores: list[float] = field(default_factory=list)
    switch_turn: int | None = None
    rollbacks: list[int] = field(default_factory=list)
    anchor: np.ndarray | None = None
    queries: list[np.ndarray] = field(default_factory=list)
    """Query embeddings since the last anchor refresh (drift window source)."""
    drift_history: list[float] = field(default_factory=list)
    reason: str | None = None

    @property
    def switched(self) -> bool:
        return self.switch_turn is not None


@dataclass
class Route:
    """Who serves a turn: ``phase`` is warm | too_short | gate | switched | rollback."""

    phase: str
    drift_similarity: float | None = None
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


def _unit(vec: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 else vec


class SwitchController:
    """The decision logic only: numbers in, decisions out (no models, no I/O)."""

    def __init__(self, cfg: SwitchConfig) -> None:
        self.cfg = cfg

    def new_state(self, n_turns: int) -> SwitchState:
        state = SwitchState(n_turns=n_turns)
        needed = self.cfg.warm_window + (self.cfg.gate.consecutive_hits + 1
                                         if self.cfg.require_payoff else 1)
        if n_turns < needed:
            state.phase = "too_short"
            state.reason = (f"dialogue has {n_turns} turns < W + m + 1 = {needed}: F serves all"
                            if self.cfg.require_payoff else
                            f"dialogue has {n_turns} turns < W + 1 = {needed}: F serves all")
        return state

    # -- calibration --------------------------------------------------------------------------
    def calibrate(self, state: SwitchState, null_scores: list[float]) -> float:
        """Set the gate threshold from warm-window null scores (see module docstring)."""
        gate = self.cfg.gate
        info: dict[str, Any] = {"n_null": len(null_scores), "alpha_hit": gate.alpha_hit,
                                "false_switch_rate": gate.false_switch_rate,
                                "consecutive_hits": gate.consecutive_hits}
        if gate.threshold is not None:
            threshold, info["method"] = gate.threshold, "fixed"
        else:
            q = conservative_quantile(null_scores, gate.alpha_hit)
            if q is None and gate.fallback == "max_null" and null_scores:
                # The largest of n exchangeable null scores is exceeded w.p. <= 1/(n+1).
                threshold, info["method"] = max(null_scores), "max_null"
                info["per_hit_bound"] = 1.0 / (len(null_scores) + 1)
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

    def set_anchor(self, state: SwitchState, query_vectors: list[np.ndarray]) -> None:
        """Anchor centroid of the drift monitor (the warm queries, or a refreshed window)."""
        if query_vectors:
            state.anchor = _unit(np.mean(np.stack(query_vectors), axis=0))
        state.queries = []
        state.drift_history = []

    # -- routing ------------------------------------------------------------------------------
    def drift_similarity(self, state: SwitchState, query_vec: np.ndarray | None) -> float | None:
        """cos(mean of the last `window` queries incl. this one, anchor); None without data."""
        if state.anchor is None or query_vec is None:
            return None
        recent = [*state.queries[-(self.cfg.drift.window - 1):], query_vec] \
            if self.cfg.drift.window > 1 else [query_vec]
        return float(_unit(np.mean(np.stack(recent), axis=0)) @ state.anchor)

    def route(self, state: SwitchState, turn: int, query_vec: np.ndarray | None = None) -> Route:
        """Decide who serves ``turn``. Call once per turn, before answering it."""
        sim = self.drift_similarity(state, query_vec)
        if state.phase == "too_short":
            route = Route("too_short", sim, state.reason)
        elif turn < self.cfg.warm_window:
            route = Route("warm", sim)
        elif not state.switched:
            # This turn and the next ones would need (m - hits) more hits, and G would serve
            # from turn + m - hits on: without such a turn the gate cannot pay off.
            first_g_turn = turn + self.cfg.gate.consecutive_hits - state.hits
            if self.cfg.require_payoff and first_g_turn >= state.n_turns:
                route = Route("no_payoff", sim, "no turn would be left for G even if every "
                                                "remaining gate hits: F serves")
            else:
                route = Route("gate", sim)
        else:
            route = Route("switched", sim)
            if self._drifted(state, sim):
                route = Route("rollback", sim, "drift")
        if query_vec is not None:
            state.queries.append(query_vec)
        if sim is not None and route.phase in ("switched", "rollback"):
            state.drift_history.append(sim)
        return route

    def _drifted(self, state: SwitchState, sim: float | None) -> bool:
        drift = self.cfg.drift
        if not drift.enabled or sim is None:
            return False
        if drift.max_rollbacks is not None and len(state.rollbacks) >= drift.max_rollbacks:
            return False
        if sim < drift.threshold:
            return True
        history = [*state.drift_history, sim]
        r = drift.recheck_turns
        if r >= 1 and len(history) > r:
            tail = history[-(r + 1):]
            falling = all(b < a for a, b in zip(tail, tail[1:], strict=False))
            if falling and tail[0] - tail[-1] >= drift.recheck_drop:
                return True
        return False

    # -- gate -----------------------------------------------------------------------------------
    def score_gate(self, state: SwitchState, turn: int, score: float | None,
                   drift_similarity: float | None = None) -> bool:
        """Register a gate score for ``turn``; returns True when this turn completes the switch.

        ``score=None`` (a failed candidate or F call) resets the run of hits.
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
        if state.hits >= gate.consecutive_hits:
            state.switch_turn = turn
            state.phase = "switched"
            return True
        return False

    def rolled_back(self, state: SwitchState, turn: int, window_vectors: list[np.ndarray]) -> None:
        """After F served a rollback turn: record it and refresh the anchor on the new window."""
        state.rollbacks.append(turn)
        self.set_anchor(state, window_vectors)

    def record(self, state: SwitchState, route: Route, score: float | None = None) -> dict[str, Any]:
        """The per-turn ``gate`` record (same keys on every turn)."""
        return {
            "phase": route.phase,
            "score": None if score is None else round(float(score), 6),
            "threshold": None if state.threshold is None else round(state.threshold, 6),
            "hits": state.hits,
            "consecutive_required": self.cfg.gate.consecutive_hits,
            "switched": state.switched,
            "switch_turn": state.switch_turn,
            "rollback": route.phase == "rollback",
            "drift_similarity": None if route.drift_similarity is None
            else round(route.drift_similarity, 6),
            "reason": route.reason,
        }


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
        """Called once when the warm window is complete, before the first gate turn."""

    def candidate(self, session: Session, turn: int) -> Completion:
        """G's candidate answer for a gate turn (default: G on ``g_messages``)."""
        return self.ctx.backend("G").chat(self.g_messages(session, turn), self.gen)

    def null_texts(self, session: Session) -> list[dict[str, list[str]]]:
        """Texts answering each warm turn, ``{"reference": [...], "candidate": [...]}``.

        The calibration null is built from cross-turn pairs (``cross_turn_scores``). Default:
        F's warm answers, plus G's candidate answers on the warm turns when
        ``warm_candidates()`` is true. SOMA adds F's answers on the mined prompts.
        """
        return [{k: list(v) for k, v in texts.items()} for texts in self._warm(session)]

    def warm_candidates(self) -> bool:
        """Also generate G's candidate on each warm turn for calibration (costs W G calls)."""
        return True

    def on_rollback(self, session: Session, turn: int) -> None:
        """After a rollback turn (SOMA refreshes its summary)."""

    def release(self, session: Session) -> None:
        """Free per-dialogue resources (adapters) in ``finish``."""

    # -- the Method protocol --------------------------------------------------------------------
    def start(self, session: Session) -> None:
        state = self.controller.new_state(len(session.dialogue.turns))
        session.state[self.STATE_KEY] = state
        session.state[self.STATE_KEY + "_warm"] = []
        session.adaptation.setdefault("switch", {}).update(
            warm_window=self.switch_cfg.warm_window,
            consecutive_hits=self.switch_cfg.gate.consecutive_hits)
        if state.reason:
            session.adaptation["switch"]["skipped"] = state.reason

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

    def plan(self, session: Session, turn: int) -> TurnPlan:
        state = self._state(session)
        if turn == self.switch_cfg.warm_window and state.phase != "too_short":
            self._end_warm(session)
        needs_query = state.anchor is not None
        query_vec = self._embed([session.user(turn)])[0] if needs_query else None
        route = self.controller.route(state, turn, query_vec)
        session.state["route"] = route
        if route.phase == "switched":
            plan = TurnPlan(role="G", messages=self.g_messages(session, turn),
                            served_by=self.serve_label(session),
                            context=self.g_context(session, turn))
        else:
            plan = TurnPlan(role="F", messages=self.f_messages(session, turn))
            plan.context = {"history_turns": len(session.history)}
        if route.phase == "gate":
            with self.timed(session, "gate") as box:
                cand = self.candidate(session, turn)
            session.add_adaptation_tokens("G", usage_of(cand))
            session.state["candidate"] = cand
            plan.seconds["gate_candidate"] = round(box["seconds"], 6)
            plan.extra.update(candidate=cand.text, candidate_status=cand.status,
                              candidate_tokens={"prompt": cand.prompt_tokens,
                                                "completion": cand.completion_tokens},
                              candidate_context=self.g_context(session, turn))
        plan.gate = self.controller.record(state, route)
        return plan

    def _end_warm(self, session: Session) -> None:
        """Warm window complete: adapt G, calibrate the gate, anchor the drift monitor."""
        self.adapt(session)
        with self.timed(session, "gate"):
            self._calibrate(session)

    def _calibrate(self, session: Session) -> None:
        state = self._state(session)
        warm = self._warm(session)
        if self.warm_candidates():
            for t in range(self.switch_cfg.warm_window):
                cand = self.candidate(session, t)
                session.add_adaptation_tokens("G", usage_of(cand))
                if cand.status == "ok":
                    warm[t]["candidate"].append(cand.text)
        texts = self.null_texts(session)
        null = cross_turn_scores([self._embed(t["reference"]) for t in texts],
                                 [self._embed(t.get("candidate", [])) for t in texts])
        threshold = self.controller.calibrate(state, null)
        queries = self._embed([session.user(t) for t in range(self.switch_cfg.warm_window)])
        self.controller.set_anchor(state, list(queries))
        session.adaptation["switch"]["calibration"] = state.calibration
        log.info("dialogue %s: gate threshold %.3f (%s, %d null scores)", session.id, threshold,
                 state.calibration["method"], len(null))

    def observe(self, session: Session, turn: int, plan: TurnPlan, completion: Completion) -> None:
        state = self._state(session)
        route: Route = session.state.pop("route")
        if turn < self.switch_cfg.warm_window and state.phase != "too_short":
            self._warm(session).append(
                {"reference": [completion.text] if completion.status == "ok" else [],
                 "candidate": []})
        score = None
        if route.phase == "gate":
            cand: Completion = session.state.pop("candidate")
            with self.timed(session, "gate"):
                if cand.status == "ok" and completion.status == "ok":
                    va, vb = self._embed([cand.text, completion.text])
                    score = float(va @ vb)
                switched = self.controller.score_gate(state, turn, score, route.drift_similarity)
            if switched:
                session.adaptation["switch"].update(switch_turn=turn)
                log.info("dialogue %s: switched to G after turn %d", session.id, turn)
        elif route.phase == "rollback":
            window = state.queries[-self.switch_cfg.drift.window:]
            self.controller.rolled_back(state, turn, window)
            session.adaptation["switch"]["rollbacks"] = list(state.rollbacks)
            self.on_rollback(session, turn)
        plan.gate = self.controller.record(state, route, score)

    def finish(self, session: Session) -> None:
        state = session.state.get(self.STATE_KEY)
        if state is not None:
            info = session.adaptation.setdefault("switch", {})
            info.update(switch_turn=state.switch_turn, rollbacks=list(state.rollbacks),
                        gate_scores=[round(s, 6) for s in state.scores],
                        threshold=state.threshold)
        self.release(session)
