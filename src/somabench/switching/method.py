"""The switch as a method: SOMA, History-Prefix and History-FT subclass ``SwitchingMethod``.

Why one base class: the three switch the same way (paper App. B.3 "The switching is the same as
SOMA"); only *what* G answers with differs. This module runs the protocol of the package
docstring turn by turn: it builds G's candidates, embeds texts, feeds the numbers to the
``SwitchController`` and owns the dialogue's LoRA adapter for the session (one owner, one
lifecycle: ``new_adapter`` -> ``session_adapter`` -> released in ``finish``).

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
        # g_context(session, turn).

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
import time
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from somabench.backends.base import Completion
from somabench.methods import Method, Session, TurnPlan, usage_of
from somabench.records import ENCODER_ROLE, RESTORED_SECONDS, Usage
from somabench.switching.acceptance import gaps as gap_rows
from somabench.switching.adapter import SessionAdapter
from somabench.switching.controller import (
    ORACLE,
    Route,
    SwitchConfig,
    SwitchController,
    SwitchState,
)
from somabench.switching.gate import cross_turn_scores
from somabench.switching.lora import LoraConfig
from somabench.switching.vllm_serving import release_session, serve_switched_turn

log = logging.getLogger(__name__)
STAGE_LOG_MIN_SECONDS = 1.0  # display only: quicker stage timings are logged at DEBUG


RESTORED_STATE = "restored_s"
"""``session.state`` key: seconds of adaptation restored from a cache while planning this turn
(an adapter-cache hit); :meth:`SwitchingMethod.plan` moves them to the turn's
``seconds[records.RESTORED_SECONDS]``."""


class SwitchingMethod(Method):
    """A method that serves with F, gates a G candidate, switches once, rolls back on drift.

    Subclasses implement ``g_messages`` (what G sees) and optionally the hooks documented in
    the module docstring. Stateful per dialogue, so never batched across dialogues.
    """

    batchable = False
    needs_reference = False
    STATE_KEY = "switch"
    ADAPTER_KEY = "adapter"
    """Where the session keeps its ``SessionAdapter`` (``session.state``)."""

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
        """``served_by`` of a G turn: ``G+lora`` while the session holds an adapter."""
        return "G+lora" if self.session_adapter(session) is not None else "G"

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

    # -- the session's adapter: one owner (the session), one lifecycle ---------------------------
    def new_adapter(self, session: Session, lora_cfg: LoraConfig, seed: int | None
                    ) -> SessionAdapter:
        """Attach a fresh LoRA on G for this dialogue; the session owns it from here on (it
        is served, switched off for the old G and released in ``finish``)."""
        self.release_adapter(session)  # never two dialogues' adapters on G
        adapter = SessionAdapter(self.ctx.raw("G"), lora_cfg)
        adapter.attach(seed=seed)
        self.hold_adapter(session, adapter)
        return adapter

    def hold_adapter(self, session: Session, adapter: SessionAdapter) -> None:
        """Hand an attached adapter to the session (``new_adapter`` does; test doubles too)."""
        session.state[self.ADAPTER_KEY] = adapter

    def session_adapter(self, session: Session) -> SessionAdapter | None:
        """This dialogue's adapter or None; ``model.G_serve`` serves post-switch turns with it
        (backends/vllm_backend.py)."""
        return session.state.get(self.ADAPTER_KEY)

    def release_adapter(self, session: Session) -> None:
        """Take the adapter off G: base weights back, adapter id cleared (idempotent)."""
        adapter: SessionAdapter | None = session.state.pop(self.ADAPTER_KEY, None)
        if adapter is not None:
            adapter.release()

    def has_adaptation(self, session: Session) -> bool:
        """Whether G currently carries this dialogue's adaptation (so old != new)."""
        return self.session_adapter(session) is not None

    @contextlib.contextmanager
    def base_g(self, session: Session) -> Iterator[bool]:
        """G without this dialogue's adaptation (the "old" G of Cor. 1).

        Yields True when the session's adapter was switched off (``SessionAdapter.disabled``:
        the backend's ``adapter_id`` is None inside, so the request cache files these answers
        under the base model), False when the session holds none (then old == new).
        """
        adapter = self.session_adapter(session)
        if adapter is None:
            yield False
            return
        with adapter.disabled():
            yield True

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
            plan = self._plan(session, turn)
        restored = session.state.pop(RESTORED_STATE, 0.0)
        if restored:  # cached adaptation: latency counts its measured seconds (records.py)
            plan.seconds[RESTORED_SECONDS] = round(float(restored), 6)
        return plan

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
        self.release_adapter(session)
