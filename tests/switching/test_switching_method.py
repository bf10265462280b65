"""SwitchingMethod control flow: who serves each turn, gate records, one F turn per drift.

The models here are test doubles answering with the topic of the query; the thing under test
is the switch protocol (plan/observe), not a model. Real models: tests/soma/test_soma_e2e.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from somabench.backends.base import Completion, GenerationConfig
from somabench.config import compose
from somabench.data.schema import Dialogue, Turn
from somabench.methods import Session
from somabench.switching.controller import GATE_KEYS
from somabench.switching.method import SwitchingMethod

TOPICS = ["apple", "boat", "train"]


def topic(text: str) -> str:
    return next((t for t in TOPICS if t in text), "none")


class TopicEncoder:
    def encode(self, texts: list[str]) -> np.ndarray:
        rows = np.zeros((len(texts), len(TOPICS) + 1))
        for i, text in enumerate(texts):
            name = topic(text)
            rows[i, TOPICS.index(name) if name in TOPICS else len(TOPICS)] = 1.0
        return rows


class TopicBackend:
    """Answers with the query's topic. ``base_off_topic``: un-adapted (adapter_id None) G
    answers off topic, so adaptation measurably helps (Delta > 0)."""

    def __init__(self, role: str, base_off_topic: bool = False) -> None:
        self.role = role
        self.calls = 0
        self.base_off_topic = base_off_topic
        self.adapter_id: str | None = None

    def chat(self, messages: list[dict[str, str]], gen: GenerationConfig) -> Completion:
        self.calls += 1
        about = topic(messages[-1]["content"])
        if self.base_off_topic and self.adapter_id is None:
            about = "nothing"
        text = f"{self.role} talks about {about}"
        return Completion(text=text, prompt_tokens=3, completion_tokens=4, seconds=0.0,
                          rendered_prompt=str(messages), model_id=self.role)

    def chat_batch(self, batch: list[list[dict[str, str]]], gen: GenerationConfig
                   ) -> list[Completion]:
        return [self.chat(m, gen) for m in batch]


class Ctx:
    def __init__(self, cfg: Any, base_off_topic: bool = False) -> None:
        self.cfg = cfg
        self.gen = GenerationConfig(max_new_tokens=4)
        self.backends = {"F": TopicBackend("F"), "G": TopicBackend("G", base_off_topic)}
        self._encoder = TopicEncoder()

    def backend(self, role: str) -> TopicBackend:
        return self.backends[role]

    def raw(self, role: str) -> TopicBackend:
        return self.backends[role]

    def encoder(self) -> TopicEncoder:
        return self._encoder

    def shared(self, key: str, build: Any = None) -> Any:
        return None  # no run-scoped engines (G_serve) in these tests


class FakeAdapter:
    """Stands in for ``SessionAdapter`` on the topic doubles: while it is on, G's ``adapter_id``
    is set (the double answers on topic); ``disabled()`` switches it off as peft would."""

    def __init__(self, raw: TopicBackend) -> None:
        self.raw = raw
        self.adapter_id: str | None = "lora-test"
        self.released = False
        raw.adapter_id = self.adapter_id

    @contextlib.contextmanager
    def disabled(self) -> Iterator[TopicBackend]:
        previous, self.raw.adapter_id = self.raw.adapter_id, None
        try:
            yield self.raw
        finally:
            self.raw.adapter_id = previous

    def release(self) -> None:
        self.released = True
        self.adapter_id = self.raw.adapter_id = None


class Plain(SwitchingMethod):
    name = "plain_switch"

    def __init__(self, cfg: Any, ctx: Any) -> None:
        super().__init__(cfg, ctx)
        self.adapted: list[str] = []
        self.rollbacks: list[int] = []

    def g_messages(self, session: Session, turn: int) -> list[dict[str, str]]:
        return session.full_messages(turn, session.history[:turn])

    def adapt(self, session: Session) -> None:
        self.adapted.append(session.id)
        self.hold_adapter(session, FakeAdapter(self.ctx.raw("G")))  # G now carries an adaptation

    def on_rollback(self, session: Session, turn: int) -> None:
        self.rollbacks.append(turn)


def run(queries: list[str], method_cls: type = None, base_off_topic: bool = True,
        **switch: Any) -> tuple[Plain, Ctx, Session, list[Any]]:
    """Serve ``queries`` like the runner does (plan -> generate -> observe -> history)."""
    cfg = compose(["method=soma"])  # tiny family: W = 2, m = 2, |B| = 2
    method_cfg = OmegaConf.create({"switch": OmegaConf.to_container(cfg.method.switch)})
    for key, value in switch.items():
        OmegaConf.update(method_cfg, "switch." + key.replace("__", "."), value)
    ctx = Ctx(cfg, base_off_topic)
    method = (method_cls or Plain)(method_cfg, ctx)
    dialogue = Dialogue(id="d1", dataset="toy", turns=tuple(Turn(q, None) for q in queries))
    session = Session(dialogue=dialogue, history_mode="own")
    method.start(session)
    plans = []
    for t in range(len(queries)):
        plan = method.plan(session, t)
        completion = plan.completion or ctx.backend(plan.role).chat(plan.messages, ctx.gen)
        method.observe(session, t, plan, completion)
        plans.append(plan)
        session.own_answers.append(completion.text)
        session.history.append((queries[t], completion.text))
    method.finish(session)
    return method, ctx, session, plans


class NoAdapt(SwitchingMethod):
    """Like History-Prefix: G is never updated, so Cor. 1's old vs new is vacuous."""

    name = "no_adapt"

    def g_messages(self, session: Session, turn: int) -> list[dict[str, str]]:
        return session.full_messages(turn, session.history[:turn])


def test_warm_gate_switch_then_g_serves() -> None:
    queries = [f"apple question {i}" for i in range(7)]
    method, ctx, session, plans = run(queries, gate__threshold=0.5)
    assert [p.role for p in plans] == ["F", "F", "F", "F", "G", "G", "G"]
    assert [p.gate["phase"] for p in plans] == ["warm", "warm", "gate", "gate", "switched",
                                                "switched", "switched"]
    assert all(set(p.gate) == set(GATE_KEYS) for p in plans)
    assert plans[3].gate["switched"] and plans[3].gate["switch_turn"] == 3
    assert plans[2].gate["score"] == 1.0 and plans[2].gate["hits"] == 1
    assert plans[2].extra["candidate"].startswith("G talks about apple")
    assert plans[2].extra["candidate_old"] == "G talks about nothing"  # adapter off
    # Cor. 1: Gap_old = 1, Gap_new = 0 on both gate turns -> Delta = 1 >= 0.12 over |B| = 2
    assert (plans[2].gate["gap_old"], plans[2].gate["gap_new"]) == (1.0, 0.0)
    assert plans[2].gate["accepted"] is None and plans[3].gate["accepted"] is True
    assert plans[3].gate["Delta"] == 1.0 and plans[3].gate["batch_n"] == 2
    acc = session.adaptation["switch"]["acceptance"]
    assert acc["applicable"] and acc["batch"] == 2 and acc["batch_turns"] == [2, 3]
    assert acc["Delta"] == 1.0 and acc["sigma_source"] == "warm" and acc["n_sigma"] == 2
    assert method.adapted == ["d1"]
    assert session.adaptation["switch"]["switch_turn"] == 3
    # G calls: 2 warm adapted + 2 warm un-adapted (calibration, sigma) + 2 x 2 gate candidates
    assert session.adaptation_tokens["G"].prompt == 8 * 3
    assert "gate_s" in session.adaptation and "drift_s" in session.adaptation


def test_adaptation_that_does_not_help_blocks_the_switch() -> None:
    queries = [f"apple question {i}" for i in range(7)]
    _, _, session, plans = run(queries, base_off_topic=False, gate__threshold=0.5)
    assert all(p.role == "F" for p in plans)  # every cosine hits, but Delta = 0 < epsilon
    assert [p.gate["accepted"] for p in plans[2:]] == [None] + [False] * 4
    assert session.adaptation["switch"]["acceptance"]["Delta"] == 0.0


def test_no_adaptation_gate_alone_decides() -> None:
    queries = [f"apple question {i}" for i in range(5)]
    _, ctx, session, plans = run(queries, method_cls=NoAdapt, base_off_topic=False,
                                 gate__threshold=0.5)
    assert [p.role for p in plans] == ["F", "F", "F", "F", "G"]
    assert session.adaptation["switch"]["acceptance"]["applicable"] is False
    assert "candidate_old" not in plans[2].extra and plans[2].gate["Delta"] is None
    assert ctx.backends["G"].calls == 2 + 2 + 1  # warm candidates, gate candidates, served


def test_drift_hands_the_next_turn_to_f() -> None:
    queries = ["apple a", "apple b", "apple c", "apple d", "apple e",
               "boat a", "boat b", "boat c", "boat d"]
    method, _, session, plans = run(queries, gate__threshold=0.5, drift__window=1,
                                    drift__recheck_turns=0)
    served = [p.role for p in plans]
    # G answers the first boat turn (5); the monitor fires after it, F serves turn 6
    assert served == ["F", "F", "F", "F", "G", "G", "F", "G", "G"]
    assert [p.gate["rollback"] for p in plans].count(True) == 1
    assert plans[5].gate["drift_similarity"] == 0.0 and plans[6].gate["phase"] == "rollback"
    assert "drift" in plans[6].gate["reason"]
    assert method.rollbacks == [6]
    assert session.adaptation["switch"]["rollbacks"] == [6]
    assert session.adaptation["switch"]["drift_refreshes"] == [{"turn": 6, "window_from": 5}]


def test_short_dialogue_pays_what_a_deployment_pays() -> None:
    """No oracle: a 3-turn dialogue adapts and gates (nobody knows it ends at turn 2)."""
    method, ctx, session, plans = run(["apple a", "apple b", "apple c"])
    assert [p.role for p in plans] == ["F", "F", "F"]
    assert [p.gate["phase"] for p in plans] == ["warm", "warm", "gate"]
    assert method.adapted == ["d1"] and ctx.backends["G"].calls == 4 + 2
    assert session.adaptation["switch"]["expected_turns"] == {"value": None, "source": None,
                                                              "oracle": False}


def test_dialogue_ending_with_its_warm_window_still_pays_adaptation() -> None:
    method, ctx, session, _ = run(["apple a", "apple b"])
    assert method.adapted == ["d1"] and ctx.backends["G"].calls == 4
    assert session.adaptation["switch"]["adapted_after_last_turn"] is True


def test_expected_turns_oracle_is_explicit_and_recorded() -> None:
    method, ctx, session, plans = run(["apple a", "apple b", "apple c"],
                                      expected_turns="oracle")
    assert {p.gate["phase"] for p in plans} == {"too_short"}
    info = session.adaptation["switch"]
    assert info["expected_turns"] == {"value": 3, "source": "oracle", "oracle": True}
    assert "oracle" in info["skipped"]
    assert method.adapted == [] and ctx.backends["G"].calls == 0


def test_calibrated_threshold_rejects_unrelated_candidates() -> None:
    # warm turns on different topics -> null cosines 0; candidates answer the right topic
    queries = ["apple a", "boat b", "train c", "apple d", "boat e", "train f"]
    _, _, session, plans = run(queries, drift__enabled=False)
    calib = session.adaptation["switch"]["calibration"]
    assert calib["method"] == "null_quantile" and calib["null_turn_pairs"] == 1
    assert calib["n_null"] == 1 + 2 * 2  # F x F, (adapted + un-adapted G) x other turn's F
    assert plans[2].gate["threshold"] == 0.3  # null max 0 -> clipped to min_threshold
    assert plans[3].gate["switched"]


def test_history_prefix_short_dialogue_pays_like_a_deployment() -> None:
    """History-Prefix (and History-FT) use the same code: no oracle for them either."""
    from somabench.baselines.history_prefix import HistoryPrefix

    _, ctx, session, plans = run(["apple a", "apple b", "apple c"], method_cls=HistoryPrefix,
                                 base_off_topic=False)
    assert [p.gate["phase"] for p in plans] == ["warm", "warm", "gate"]
    assert ctx.backends["G"].calls == 2 + 1  # warm candidates (calibration) + a gate candidate
    assert session.adaptation["switch"]["acceptance"]["applicable"] is False  # G not updated
    assert session.adaptation_tokens["G"].prompt == 3 * 3


class FailedAdapt(Plain):
    """A method that adapts G, but this dialogue's adaptation attached nothing."""

    def adapt(self, session: Session) -> None:
        self.adapted.append(session.id)


def test_failed_adaptation_is_never_served() -> None:
    queries = [f"apple question {i}" for i in range(6)]
    _, ctx, session, plans = run(queries, method_cls=FailedAdapt, base_off_topic=False,
                                 gate__threshold=0.5)
    assert all(p.role == "F" for p in plans)  # cosine hits, but old == new: Delta = 0 < eps
    acc = session.adaptation["switch"]["acceptance"]
    assert acc["applicable"] and acc["Delta"] == 0.0 and acc["warm_deltas"] == [0.0, 0.0]
    assert session.adaptation["switch"]["adapted"] is False
    assert ctx.backends["G"].calls == 2 + 4  # no un-adapted calls: it is the same G


def test_the_session_owns_the_adapter_and_finish_releases_it() -> None:
    """One owner, one lifecycle: the adapter lives in the session, serves G's turns
    (``G+lora``), is the only way to the old G, and ``finish`` releases it."""
    queries = [f"apple question {i}" for i in range(5)]
    method, ctx, session, plans = run(queries, gate__threshold=0.5)
    assert plans[4].served_by == "G+lora"
    assert method.session_adapter(session) is None  # released in finish
    assert ctx.raw("G").adapter_id is None


def test_without_a_session_adapter_g_is_its_own_base() -> None:
    """No second disable path: a G that merely carries an adapter id is not switched off."""
    _, ctx, session, _ = run(["apple a"], method_cls=NoAdapt)
    method = NoAdapt(OmegaConf.create({"switch": OmegaConf.to_container(
        compose(["method=soma"]).method.switch)}), ctx)
    ctx.raw("G").adapter_id = "lora-elsewhere"
    with method.base_g(session) as switched_off:
        assert switched_off is False and ctx.raw("G").adapter_id == "lora-elsewhere"
    assert not method.has_adaptation(session)
