"""The drift monitor on the real phi (all-MiniLM-L6-v2) with the configured defaults: a
synthetic topic shift fires it and hands the *next* turn to F; an on-topic dialogue does not."""

from __future__ import annotations

from typing import Any

import pytest

from somabench.config import compose
from somabench.methods import Session
from somabench.switching.controller import SwitchConfig, SwitchController

PASTA = [
    ("How do I make fresh pasta dough at home?",
     "Mix 300 g of flour with 3 eggs, knead for ten minutes and let the dough rest."),
    ("How long should the dough rest?",
     "Let it rest for about 30 minutes, wrapped, so the gluten relaxes."),
    ("Can I use semolina flour instead?",
     "Yes, semolina gives a firmer, more golden pasta; mix it with some plain flour."),
    ("How thin should I roll it for tagliatelle?", "Roll it to about 1 mm, then cut 6 mm strips."),
    ("How long do I boil fresh tagliatelle?",
     "Fresh pasta cooks fast: two to three minutes in salted boiling water."),
    ("What sauce goes well with it?",
     "A butter and sage sauce or a light ragu works well with fresh egg pasta."),
    ("Can I freeze leftover pasta?",
     "Yes, dust the nests with flour, freeze them on a tray, then bag them."),
]
TAXES = [
    ("What is the capital gains tax rate on stocks held over a year?",
     "Long-term capital gains are taxed at 0, 15 or 20 percent depending on income."),
    ("Do I have to report crypto sales on my tax return?",
     "Yes, selling cryptocurrency is a taxable event and goes on Form 8949."),
    ("Can I deduct losses from my investments?",
     "Capital losses offset gains and up to 3,000 dollars of ordinary income per year."),
    ("When is the deadline for filing my federal tax return?",
     "Federal returns are usually due on April 15; an extension moves it to October 15."),
]


@pytest.fixture(scope="module")
def minilm() -> Any:
    from somabench.encoder import build_encoder

    return build_encoder(compose([]).model.encoder)


def serve(turns: list[tuple[str, str]], encoder: Any) -> tuple[list[str], Any]:
    """Route/observe like SwitchingMethod: W = 2 warm turns, gate passes on turns 2 and 3."""
    cfg = compose(["method=soma", "method.switch.gate.threshold=0.5"])
    ctl = SwitchController(SwitchConfig.from_cfg(cfg.method.switch))
    state = ctl.new_state()
    ctl.calibrate(state, [])
    phases = []
    for t, (query, answer) in enumerate(turns):
        route = ctl.route(state, t)
        phases.append(route.phase)
        if route.phase == "rollback":
            ctl.rolled_back(state, t)
        q_vec, a_vec = encoder.encode([query, answer])
        sim = ctl.drift_similarity(state, t, q_vec)
        if route.phase == "gate":
            ctl.score_gate(state, t, 0.9)
        ctl.observe_drift(state, t, q_vec, a_vec, sim)
    return phases, state


def test_on_topic_dialogue_never_rolls_back(minilm: Any) -> None:
    phases, state = serve(PASTA, minilm)
    assert phases == ["warm", "warm", "gate", "gate"] + ["switched"] * 3
    assert state.rollbacks == [] and len(state.drift.history) == len(PASTA) - 1


def test_topic_shift_hands_the_next_turn_to_f(minilm: Any) -> None:
    phases, state = serve(PASTA[:5] + TAXES, minilm)
    # switch after turn 3. The first tax question (turn 5) is averaged with a pasta query
    # (window 2), the second (turn 6) drops the similarity: the monitor fires after turn 6,
    # F serves turn 7 (the next one), the window restarts at the drifted queries (turn 5)
    assert phases[:7] == ["warm", "warm", "gate", "gate", "switched", "switched", "switched"]
    assert phases[7] == "rollback" and phases.count("rollback") == 1
    assert state.rollbacks == [7] and state.drift.refreshes == [{"turn": 7, "window_from": 5}]
    assert phases[8] == "switched"  # G continues on the new topic


def test_soma_refreshes_its_summary_on_the_drifted_window() -> None:
    from somabench.data.schema import Dialogue, Turn
    from somabench.soma.method import Soma

    class NoCtx:
        cfg = None

    method = Soma(compose(["method=soma"]).method, NoCtx())
    dialogue = Dialogue(id="d", dataset="toy", turns=tuple(Turn(q, None) for q, _ in PASTA))
    session = Session(dialogue=dialogue, history_mode="own")
    session.state[method.STATE_KEY] = method.controller.new_state()
    session.state[method.STATE_KEY].drift.since = 5  # what rolled_back() set
    method.on_rollback(session, 6)
    assert session.state["summary_from"] == 5
    assert session.adaptation["summary_refreshes"] == [{"turn": 6, "centroid_from": 5}]
