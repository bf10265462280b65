"""SwitchingMethod control flow: who serves each turn, gate records, one F turn per drift.

The models here are test doubles answering with the topic of the query; the thing under test
is the switch protocol (plan/observe), not a model. Real models: tests/soma/test_soma_e2e.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from omegaconf import OmegaConf

from somabench.backends.base import Completion, GenerationConfig
from somabench.config import compose
from somabench.data.schema import Dialogue, Turn
from somabench.methods import Session
from somabench.soma.switching import GATE_KEYS, SwitchingMethod

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
    def __init__(self, role: str) -> None:
        self.role = role
        self.calls = 0

    def chat(self, messages: list[dict[str, str]], gen: GenerationConfig) -> Completion:
        self.calls += 1
        text = f"{self.role} talks about {topic(messages[-1]['content'])}"
        return Completion(text=text, prompt_tokens=3, completion_tokens=4, seconds=0.0,
                          rendered_prompt=str(messages), model_id=self.role)


class Ctx:
    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.gen = GenerationConfig(max_new_tokens=4)
        self.backends = {"F": TopicBackend("F"), "G": TopicBackend("G")}
        self._encoder = TopicEncoder()

    def backend(self, role: str) -> TopicBackend:
        return self.backends[role]

    def encoder(self) -> TopicEncoder:
        return self._encoder


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

    def on_rollback(self, session: Session, turn: int) -> None:
        self.rollbacks.append(turn)


def run(queries: list[str], **switch: Any) -> tuple[Plain, Ctx, Session, list[Any]]:
    cfg = compose(["method=soma"])
    method_cfg = OmegaConf.create({"switch": OmegaConf.to_container(cfg.method.switch)})
    for key, value in switch.items():
        OmegaConf.update(method_cfg, "switch." + key.replace("__", "."), value)
    ctx = Ctx(cfg)
    method = Plain(method_cfg, ctx)
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
    assert method.adapted == ["d1"]
    assert session.adaptation["switch"]["switch_turn"] == 3
    # G spent tokens on 2 warm candidates (calibration) + 2 gate candidates
    assert session.adaptation_tokens["G"].prompt == 4 * 3
    assert "gate_s" in session.adaptation


def test_drift_triggers_exactly_one_f_turn() -> None:
    queries = ["apple a", "apple b", "apple c", "apple d", "apple e",
               "boat a", "boat b", "boat c", "boat d"]
    method, _, session, plans = run(queries, gate__threshold=0.5, drift__window=1,
                                    drift__recheck_turns=0)
    served = [p.role for p in plans]
    assert served == ["F", "F", "F", "F", "G", "F", "G", "G", "G"]
    assert [p.gate["rollback"] for p in plans].count(True) == 1
    assert plans[5].gate["phase"] == "rollback" and plans[5].gate["drift_similarity"] == 0.0
    assert method.rollbacks == [5]
    assert session.adaptation["switch"]["rollbacks"] == [5]


def test_short_dialogue_f_serves_everything_and_says_why() -> None:
    method, ctx, session, plans = run(["apple a", "apple b", "apple c"])
    assert [p.role for p in plans] == ["F", "F", "F"]
    assert {p.gate["phase"] for p in plans} == {"too_short"}
    assert "W + m + 1" in session.adaptation["switch"]["skipped"]
    assert method.adapted == [] and ctx.backends["G"].calls == 0


def test_calibrated_threshold_rejects_unrelated_candidates() -> None:
    # warm turns on different topics -> null cosines 0; candidates answer the right topic
    queries = ["apple a", "boat b", "train c", "apple d", "boat e", "train f"]
    _, _, session, plans = run(queries, drift__enabled=False)
    calib = session.adaptation["switch"]["calibration"]
    assert calib["method"] in ("null_quantile", "max_null")
    assert plans[2].gate["threshold"] == 0.3  # null max 0 -> clipped to min_threshold
    assert plans[3].gate["switched"]
