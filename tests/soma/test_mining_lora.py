"""Mining and LoRA on the real tiny G (SmolLM2-135M): gradients, verbalization, isolation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from somabench.soma import losses
from somabench.soma.lora import (
    LoraConfig,
    SessionAdapter,
    gap_weights,
    make_example,
    semantic_gap,
    teacher_forced,
)
from somabench.soma.mining import MiningConfig, answer_log_probs, encode_turn, frozen, mine
from somabench.soma.neighbors import NeighborIndex, load_or_build, topk_neighbors, unit_rows
from somabench.soma.soft_prompt import nearest_tokens, verbalize, with_prefix

MESSAGES = [{"role": "user", "content": "What is 2 + 3?"}]
ANSWER = "2 + 3 = 5."


@pytest.fixture(scope="module")
def g(smollm2_path: Path) -> Any:
    """A private G (this module attaches adapters; never the shared session fixture)."""
    from tests.helpers.fixtures import load_smollm2

    return load_smollm2(smollm2_path, "bfloat16")


@pytest.fixture(scope="module")
def encoder() -> Any:
    from somabench.config import compose
    from somabench.encoder import build_encoder

    return build_encoder(compose([]).model.encoder)


def cheap_index(g: Any, k: int = 4) -> NeighborIndex:
    """A valid-shaped index without the full |V|^2 build (neighbour identity is irrelevant here)."""
    unit = unit_rows(g.embedding_matrix())
    v = unit.shape[0]
    ids = (torch.arange(v)[:, None] + torch.arange(1, k + 1)[None, :]) % v
    return NeighborIndex(ids, (unit * unit[ids[:, 0]]).sum(-1, keepdim=True).repeat(1, k), unit)


def test_blocked_topk_equals_dense_and_disk_cache(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(37, 5, generator=gen)
    unit = unit_rows(emb)
    dense = unit @ unit.T
    dense.fill_diagonal_(float("-inf"))
    want_vals, want_ids = dense.topk(4, dim=1)
    for block in (1, 7, 64):
        ids, cos = topk_neighbors(unit, 4, block)
        assert torch.equal(ids, want_ids) and torch.allclose(cos, want_vals)
    fp = {"kind": "hf", "model_id": "toy", "adapter_id": None}
    first = load_or_build(emb, 4, fingerprint=fp, cache_dir=tmp_path, block_rows=8)
    assert len(list((tmp_path / "soma").glob("neighbors-*.pt"))) == 1
    again = load_or_build(emb, 4, fingerprint={**fp, "adapter_id": "x"}, cache_dir=tmp_path,
                          block_rows=8)
    assert torch.equal(first.ids, again.ids)
    assert first.take(2).ids.shape == (37, 2)


def test_gradients_reach_only_p(g: Any) -> None:
    item = encode_turn(g, 0, MESSAGES, ANSWER, max_context_tokens=64, max_answer_tokens=16)
    assert item is not None
    index = cheap_index(g)
    flags = [p.requires_grad for p in g.model.parameters()]
    prompts = torch.nn.Parameter(torch.randn(2, 4, index.unit.shape[1]) * 0.135)
    weights = losses.MiningWeights(tau=0.7, top_m=50, lambda_exp=1.0, beta=0.05, tail_k=8,
                                   lambda_p=1e-3)
    with frozen(g.model):
        log_probs = answer_log_probs(g.model, prompts, item)
        assert log_probs.shape == (2, item.y.shape[0], index.unit.shape[0])
        parts = [losses.turn_objective(log_probs[m], item.y, index.ids, index.cos, index.unit,
                                       weights)["turn_loss"] for m in range(2)]
        j = losses.j_objective(parts, prompts, weights.lambda_p)
        j.backward()
    assert prompts.grad is not None and torch.isfinite(prompts.grad).all()
    assert prompts.grad.abs().sum() > 0
    assert all(p.grad is None for p in g.model.parameters())
    assert [p.requires_grad for p in g.model.parameters()] == flags  # restored


def test_mine_runs_and_reports(g: Any) -> None:
    item = encode_turn(g, 0, MESSAGES, ANSWER, 64, 16)
    cfg = MiningConfig(length=4, init_std=0.135, n_candidates=2, steps=2, lr=5e-3,
                       lr_schedule="cosine", weight_decay=0.0, grad_clip=1.0, turns_per_step=1,
                       weights=losses.MiningWeights(0.7, 50, 1.0, 0.05, 8, 1e-3),
                       max_context_tokens=64, max_answer_tokens=16)
    before = {n: p.detach().clone() for n, p in g.model.named_parameters()}
    result = mine(g.model, g.tokenizer, [item], cheap_index(g), cfg, torch.Generator().manual_seed(1))
    assert result.prompts.shape == (2, 4, 576) and len(result.history) == 2
    assert set(result.hardness) == {0} and result.hardness[0] > 0
    assert len(result.verbalized) == 2 and all(len(v.ids) == 4 for v in result.verbalized)
    for n, p in g.model.named_parameters():
        assert torch.equal(p, before[n]), f"{n} changed during mining"


def test_verbalization_picks_nearest_token(g: Any) -> None:
    unit = unit_rows(g.embedding_matrix())
    want = torch.tensor([504, 1234, 9000, 77])
    rows = 3.0 * unit[want] + 1e-3 * torch.randn(4, unit.shape[1], generator=torch.Generator().manual_seed(0))
    assert nearest_tokens(rows, unit).tolist() == want.tolist()
    v = verbalize(rows, unit, g.tokenizer)
    assert v.ids == want.tolist()
    assert v.text == g.tokenizer.decode(want.tolist(), skip_special_tokens=True).strip()
    msgs = with_prefix([{"role": "system", "content": "s"}, *MESSAGES], v.text, "\n")
    assert msgs[1]["content"] == v.text + "\n" + MESSAGES[0]["content"]
    assert msgs[0]["content"] == "s"


def lora_cfg(**over: Any) -> LoraConfig:
    base = dict(rank=4, alpha=8.0, dropout=0.0, target_modules=("q_proj", "v_proj"), lr=1e-3,
                lr_schedule="constant", weight_decay=0.0, grad_clip=1.0, epochs=1, max_steps=1,
                examples_per_step=1, cos_alpha=0.5, early_stop_gap=None, max_seq_tokens=64)
    base.update(over)
    return LoraConfig(**base)  # type: ignore[arg-type]


def logits_of(g: Any, ex: Any) -> torch.Tensor:
    with torch.no_grad():
        return teacher_forced(g.model, ex)[0]


def test_adapters_isolated_and_base_restored_exactly(g: Any, encoder: Any) -> None:
    base = {n: p.detach().clone() for n, p in g.model.state_dict().items()}
    flags = [p.requires_grad for p in g.model.parameters()]
    ex = make_example(g, MESSAGES, ANSWER, 1.0, "warm", 0, 64)
    base_nll = logits_of(g, ex)

    a = SessionAdapter(g, lora_cfg(lr=5e-2))
    a.attach()
    with pytest.raises(RuntimeError):
        SessionAdapter(g, lora_cfg()).attach()  # G still carries dialogue A's LoRA
    stats = a.train([ex], encoder)
    assert stats.steps == 1 and g.adapter_id and g.adapter_id.startswith("lora-")
    assert not torch.equal(logits_of(g, ex), base_nll)  # the adapter changes G
    a.release()
    assert g.adapter_id is None
    assert not any("lora" in n for n, _ in g.model.named_modules())
    state = g.model.state_dict()
    assert state.keys() == base.keys()
    assert all(torch.equal(state[n], base[n]) for n in base)  # bit-exact
    assert [p.requires_grad for p in g.model.parameters()] == flags

    b = SessionAdapter(g, lora_cfg())
    b.attach()  # dialogue B starts from a fresh adapter (B = 0): exactly the base model
    assert torch.equal(logits_of(g, ex), base_nll)
    b.release()


def test_eq4_cosine_term_as_stop_gradient_weight(g: Any, encoder: Any) -> None:
    same = semantic_gap(encoder, ["The answer is 5."], ["The answer is 5."])
    far = semantic_gap(encoder, ["Paris is the capital of France."], ["2 + 3 = 5."])
    assert same[0] == pytest.approx(0.0, abs=1e-5) and far[0] > 0.5
    assert gap_weights(np.array([0.0, 0.8]), 0.5).tolist() == pytest.approx([1.0, 1.4])
    # gap is a stop-gradient weight: the reported loss is Eq. 4's value NLL + alpha * gap
    ex = make_example(g, MESSAGES, ANSWER, 1.0, "warm", 0, 64)
    adapter = SessionAdapter(g, lora_cfg(max_steps=None, epochs=1))
    adapter.attach()
    try:
        stats = adapter.train([ex], encoder)
        h = stats.history[-1]
        assert h["eq4"] == pytest.approx(h["nll"] + 0.5 * h["gap"])  # the reported Eq. 4 value
    finally:
        adapter.release()
