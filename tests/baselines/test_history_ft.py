"""History-FT: LoRA on real SmolLM2 changes G, one adapter per dialogue, base restored exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from somabench.config import compose
from somabench.data import Dialogue, Turn
from somabench.methods import Session

pytest.importorskip("peft", reason="peft is a core dependency")

PROBE = [{"role": "user", "content": "What is 12 times 7? Answer briefly."}]


def warm_session(dialogue_id: str, answers: list[str]) -> Session:
    """A session at the end of a 2-turn warm window served by F (answers given)."""
    users = ["What is 6 times 7?", "Now add 8 to it.", "Divide that by 5.", "Square it.", "Done?"]
    dialogue = Dialogue(id=dialogue_id, dataset="test",
                        turns=tuple(Turn(user=u, assistant=None) for u in users))
    session = Session(dialogue=dialogue, history_mode="own")
    for t, answer in enumerate(answers):
        session.own_answers.append(answer)
        session.history.append((users[t], answer))
    return session


def probe_logits(raw: Any) -> Any:
    import torch

    enc = raw.tokenizer(raw.render(PROBE), return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        return raw.model(**enc).logits[0, -1].float().clone()


@pytest.mark.slow
def test_lora_changes_g_and_adapters_are_per_dialogue(tmp_path: Path) -> None:
    import torch

    from somabench.baselines.history_ft import HistoryFT
    from somabench.runner import RunContext

    cfg = compose(["method=history_ft", "model=tiny", f"paths.output_root={tmp_path}",
                   f"cache.path={tmp_path / 'cache.sqlite'}"])
    ctx = RunContext(cfg)
    raw = ctx.raw("G")
    base = probe_logits(raw)
    base_weights = {n: p.detach().clone() for n, p in raw.model.named_parameters()}
    method = HistoryFT(cfg.method, ctx)

    a = warm_session("A", ["6 times 7 is 42.", "42 plus 8 is 50."])
    method.adapt(a)
    id_a = raw.adapter_id
    assert id_a and id_a.startswith("lora-")  # SOMA's SessionAdapter: one lifecycle, one hash
    adapter_a = method.session_adapter(a)  # the session owns it, not the method
    assert adapter_a is not None and adapter_a.adapter_id == id_a
    assert method.serve_label(a) == "G+lora"
    assert (probe_logits(raw) - base).abs().max() > 1e-2  # G's outputs actually changed
    info = a.adaptation["lora"]
    assert info["train_pairs"] == 1 and info["holdout_pairs"] == 1 and info["val_losses"]
    assert info["early_stopping"] == "held-out warm pair(s)"
    assert a.train_tokens["G"] == info["train_tokens"] and info["train_tokens"]["backward"] > 0
    assert a.adaptation["train_tokens_by_stage"]["lora"]["G"] == info["train_tokens"]
    assert "G" not in a.adaptation_tokens  # training is not inference (nll validation: no generation)
    assert a.adaptation["seconds_total"] > 0
    method.release_adapter(a)
    assert raw.adapter_id is None and method.session_adapter(a) is None
    assert torch.equal(probe_logits(raw), base)  # base weights restored exactly
    assert all(torch.equal(p, base_weights[n]) for n, p in raw.model.named_parameters())

    b = warm_session("B", ["Forty-two.", "Fifty, since 42 + 8 = 50."])
    method.adapt(b)
    id_b = raw.adapter_id
    assert id_b and id_b != id_a  # B trained its own adapter, never A's
    adapter_b = method.session_adapter(b)
    assert adapter_b is not None and method.serve_label(a) == "G"
    assert len(adapter_b.peft.peft_config) == 1  # exactly one adapter is live
    method.finish(b)  # finish releases too
    assert method.session_adapter(b) is None and not adapter_b.active
    assert raw.adapter_id is None and torch.equal(probe_logits(raw), base)
    assert not any("lora" in n for n, _ in raw.model.named_modules())


@pytest.mark.slow
def test_history_ft_end_to_end_serves_with_the_adapter(switching_overrides, run_dir_of) -> None:
    from somabench.records import load_dialogues, load_turns
    from somabench.task import run_task

    cfg = compose(switching_overrides("history_ft") + ["method.train.max_steps=2",
                                                       "method.train.eval_every=1"])
    run_task(cfg)
    turns = sorted(load_turns(run_dir_of(cfg)), key=lambda t: t.turn)
    assert [t.served_by for t in turns] == ["F", "F", "F", "F", "G+lora"]
    [dialogue] = load_dialogues(run_dir_of(cfg))
    lora = dialogue.adaptation["lora"]
    assert turns[-1].context["adapter_id"] == lora["adapter_id"]
    assert lora["steps"] <= 2 and dialogue.seconds["adapt"] > 0
    assert dialogue.train_tokens["G"] == lora["train_tokens"]
    assert dialogue.train_tokens["G"]["forward"] > dialogue.train_tokens["G"]["backward"] > 0
