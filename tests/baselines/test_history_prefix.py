"""History-Prefix end to end: SOMA's switch, then G answers with the Original's history."""

from __future__ import annotations

import pytest

from somabench.config import compose
from somabench.records import load_dialogues, load_turns
from somabench.task import run_task


@pytest.mark.slow
def test_g_prompt_contains_the_originals_history(switching_overrides, run_dir_of) -> None:
    cfg = compose(switching_overrides("history_prefix"))
    run_task(cfg)
    turns = sorted(load_turns(run_dir_of(cfg)), key=lambda t: t.turn)
    assert [t.gate["phase"] for t in turns] == ["warm", "warm", "gate", "gate", "switched"]
    assert [t.served_by for t in turns] == ["F", "F", "F", "F", "G"]
    last = turns[-1]
    assert last.model_id == cfg.model.G.model_id
    for earlier in turns[:-1]:  # every earlier query and the Original's (F's) answer to it
        assert earlier.user in last.rendered_prompt
        assert earlier.response in last.rendered_prompt
    assert last.context["verbatim_turns"] == 4
    # gate turns carry G's candidate (same full-history prompt) and its score
    assert all(t.extra["candidate"] is not None and t.gate["score"] is not None for t in turns[2:4])
    [dialogue] = load_dialogues(run_dir_of(cfg))
    assert dialogue.adaptation["switch"]["switch_turn"] == 3
    assert dialogue.adaptation_tokens["G"].completion > 0  # gate candidates are counted
