"""Mining and LoRA on the real tiny G (SmolLM2-135M): gradients, verbalization, isolation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from somabench.soma import losses
from somabench.soma.mining import MiningConfig, answer_log_probs, encode_turn, frozen, mine
from somabench.soma.neighbors import NeighborIndex, load_or_build, topk_neighbors, unit_rows
from somabench.soma.soft_prompt import nearest_tokens, verbalize, with_prefix
from somabench.switching.adapter import SessionAdapter
from somabench.switching.lora import (
    EarlyStopping,
    LoraConfig,
    adapter_hash,
    answer_nll,
    gap_weights,
    greedy_answers,
    make_example,
    semantic_gap,
    teacher_forced,
)

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


def mining_cfg(steps: int, **over: Any) -> MiningConfig:
    base: dict[str, Any] = dict(
        length=4, init_std=0.135, n_candidates=2, steps=steps, lr=5e-3, lr_schedule="cosine",
        weight_decay=0.0, grad_clip=1.0, turns_per_step=1,
        weights=losses.MiningWeights(0.7, 50, 1.0, 0.05, 8, 1e-3), max_context_tokens=64,
        max_answer_tokens=16)
    base.update(over)
    return MiningConfig(**base)


def test_mine_runs_and_reports(g: Any) -> None:
    item = encode_turn(g, 0, MESSAGES, ANSWER, 64, 16)
    assert item is not None
    cfg = mining_cfg(2)
    before = {n: p.detach().clone() for n, p in g.model.named_parameters()}
    result = mine(g.model, g.tokenizer, [item], cheap_index(g), cfg, torch.Generator().manual_seed(1))
    assert result.prompts.shape == (2, 4, 576) and len(result.history) == 2
    assert result.history_turns == [[0], [0]]
    assert set(result.hardness) == {0} and result.hardness[0] > 0
    assert len(result.verbalized) == 2 and all(len(v.ids) == 4 for v in result.verbalized)
    assert len(result.prompt_shift) == 2 and len(result.verbalized_changed) == 2
    per_pass = 2 * (4 + int(item.ctx_ids.shape[0]) + int(item.y.shape[0]))  # M x (L + C + T)
    assert result.tokens == {"forward": 3 * per_pass, "backward": 2 * per_pass}  # 2 steps + hardness
    for n, p in g.model.named_parameters():
        assert torch.equal(p, before[n]), f"{n} changed during mining"


def test_mining_lowers_j_moves_p_and_changes_v(g: Any) -> None:
    """At App. B.2's largest lr and a step count the budget affords, J(P) falls, P moves
    and V(P) changes (6 cosine steps did not: issue 12)."""
    item = encode_turn(g, 0, MESSAGES, ANSWER, 64, 16)
    assert item is not None
    result = mine(g.model, g.tokenizer, [item], cheap_index(g), mining_cfg(12, length=8),
                  torch.Generator().manual_seed(3))
    assert result.initial is not None
    assert result.history[-1] < result.history[0] - 0.05  # same turn every step: comparable
    assert min(result.prompt_shift) > 0.1  # ||P - P0|| / ||P0||
    want = ((result.prompts - result.initial).norm(dim=(1, 2)) /
            result.initial.norm(dim=(1, 2))).tolist()
    assert result.prompt_shift == pytest.approx(want)
    assert max(result.verbalized_changed) > 0  # some V(P_m) token moved to another token
    changed = [sum(a != b for a, b in zip(v.ids, v0.ids, strict=True)) / 8
               for v, v0 in zip(result.verbalized, result.verbalized_initial, strict=True)]
    assert result.verbalized_changed == changed


@pytest.mark.slow
def test_ablations_mine_different_prompts_and_f_queries(g: Any) -> None:
    """soma, soma_wo_adl and soma_wo_expw_adl (composed from their configs) on one seed give
    different V(P) and therefore different F queries V(P) (+) D (+) q."""
    from somabench.config import compose

    item = encode_turn(g, 0, MESSAGES, ANSWER, 64, 16)
    assert item is not None
    index = cheap_index(g)
    texts, queries = {}, {}
    for name in ("soma", "soma_wo_adl", "soma_wo_expw_adl"):
        method = compose([f"method={name}", "method.mining.steps=16",
                          "method.mining.max_context_tokens=64", "method.mining.max_answer_tokens=16"]).method
        cfg = MiningConfig.from_cfg(method.soft_prompt, method.mining, 2)
        result = mine(g.model, g.tokenizer, [item], index, cfg, torch.Generator().manual_seed(5))
        texts[name] = tuple(v.text for v in result.verbalized)
        queries[name] = tuple(with_prefix(MESSAGES, v.text, "\n")[0]["content"]
                              for v in result.verbalized)
    assert len(set(texts.values())) == 3, texts
    assert len(set(queries.values())) == 3


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
    stop = dict(metric="gap", holdout_turns=1, min_train_turns=1, eval_every=1, patience=1,
                threshold=None)
    stop.update(over.pop("stop", {}))
    base: dict[str, Any] = dict(
        rank=4, alpha=8.0, dropout=0.0, target_modules=("q_proj", "v_proj"), lr=1e-3,
        lr_schedule="constant", weight_decay=0.0, grad_clip=1.0, epochs=1, max_steps=1,
        examples_per_step=1, batching="padded", cos_alpha=0.5, gap_max_new_tokens=8,
        max_seq_tokens=64, early_stopping=EarlyStopping(**stop))
    base.update(over)
    return LoraConfig(**base)


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


def test_holdout_split_falls_back_to_none_when_w_is_small() -> None:
    stop = EarlyStopping(metric="gap", holdout_turns=1, min_train_turns=2, eval_every=5,
                         patience=2, threshold=None)
    train, held, why = stop.split([0, 1])
    assert (train, held) == ([0, 1], []) and "no early stopping" in why
    assert stop.split([0, 1, 2])[:2] == ([0, 1], [2])


def test_long_answer_leaves_the_context_at_least_half(g: Any) -> None:
    long_answer = " ".join(["five"] * 200)
    ex = make_example(g, MESSAGES * 1, long_answer, 1.0, "warm", 0, 64,
                      prefix=torch.zeros(4, 576))
    assert ex is not None and ex.n_tokens <= 64
    full_ctx = len(g.tokenizer(g.render(MESSAGES), add_special_tokens=False)["input_ids"])
    assert int(ex.ctx_ids.shape[0]) >= min(full_ctx, (64 - 4) // 2)


def test_padded_batch_equals_one_by_one(smollm2_fp32: Any) -> None:
    """Left padding with explicit positions changes nothing: same per-token NLL as unpadded."""
    g32 = smollm2_fp32
    prefix = 0.1 * torch.randn(4, 576, generator=torch.Generator().manual_seed(0))
    short = make_example(g32, MESSAGES, ANSWER, 1.0, "warm", 0, 64)
    longer = make_example(g32, [{"role": "user", "content": "Add 2 and 3, then explain why."}],
                          "Adding 2 and 3 gives 5 because 2 + 3 = 5.", 1.0, "mined", 0, 64, prefix)
    assert short is not None and longer is not None
    with torch.no_grad():
        batched = answer_nll(g32.model, [short, longer])
        single = [answer_nll(g32.model, [ex])[0] for ex in (short, longer)]
        forced = [teacher_forced(g32.model, ex)[0] for ex in (short, longer)]
    for b, s1, f in zip(batched, single, forced, strict=True):
        assert torch.allclose(b, s1, atol=1e-4) and torch.allclose(s1, f, atol=1e-4)


def test_gap_uses_gs_own_greedy_answer(g: Any, encoder: Any) -> None:
    """a^G is G's free-running greedy answer (what G would serve), not a teacher-forced argmax."""
    from somabench.backends.base import GenerationConfig

    ex = make_example(g, MESSAGES, ANSWER, 1.0, "warm", 0, 64)
    assert ex is not None
    texts, used = greedy_answers(g.model, g.tokenizer, [ex], max_new_tokens=8)
    served = g.chat(MESSAGES, GenerationConfig(max_new_tokens=8, do_sample=False,
                                                temperature=0.0, top_p=1.0, seed=0, stop=()))
    assert texts[0] == served.text.strip()
    assert used["prompt"] == int(ex.ctx_ids.shape[0]) and 0 < used["completion"] <= 8
    adapter = SessionAdapter(g, lora_cfg(max_steps=1, stop={"holdout_turns": 0}))
    adapter.attach(seed=0)
    try:
        stats = adapter.train([ex], encoder)
    finally:
        adapter.release()
    first = stats.history[0]  # step 0: the base model's gaps, before any update
    assert first["step"] == 0
    row = stats.history[-1]
    assert row["eq4"] == pytest.approx(row["nll"] + 0.5 * row["gap"])
    assert stats.early_stopping.startswith("no held-out") and stats.best_step is None
    assert stats.generation_tokens["completion"] > 0


def test_early_stopping_on_held_out_pair_keeps_the_best(g: Any, encoder: Any) -> None:
    train = make_example(g, MESSAGES, ANSWER, 1.0, "warm", 0, 64)
    held = make_example(g, [{"role": "user", "content": "What is 4 + 4?"}], "4 + 4 = 8.", 1.0,
                        "warm", 1, 64)
    assert train is not None and held is not None
    adapter = SessionAdapter(g, lora_cfg(lr=5e-2, max_steps=3, epochs=None,
                                         stop={"metric": "nll", "patience": 5}))
    adapter.attach(seed=0)
    try:
        stats = adapter.train([train], encoder, held_out=[held])
        vals = {int(h["step"]): h["val_nll"] for h in stats.history}
        assert sorted(vals) == [0, 1, 2, 3] and stats.early_stopping == "held-out warm pair(s)"
        trained = {k: v for k, v in vals.items() if k > 0}  # step 0 (base) is never chosen
        assert stats.best_step == min(trained, key=lambda k: trained[k])
        with torch.no_grad():
            now = float(answer_nll(g.model, [held])[0].mean())
        assert now == pytest.approx(vals[stats.best_step], abs=1e-4)  # best weights restored
        assert adapter.adapter_id == adapter_hash(g.model) == g.adapter_id
        assert stats.tokens["forward"] == 3 * train.n_tokens + 4 * held.n_tokens
        assert stats.tokens["backward"] == 3 * train.n_tokens
    finally:
        adapter.release()


def test_disabled_serves_base_g_and_save_writes_peft_files(g: Any, encoder: Any,
                                                           tmp_path: Path) -> None:
    ex = make_example(g, MESSAGES, ANSWER, 1.0, "warm", 0, 64)
    assert ex is not None
    base = logits_of(g, ex)
    adapter = SessionAdapter(g, lora_cfg(lr=5e-2, cos_alpha=0.0, stop={"holdout_turns": 0}))
    adapter.attach(seed=0)
    try:
        adapter.train([ex], encoder)
        trained_id = g.adapter_id
        assert not torch.equal(logits_of(g, ex), base)
        with adapter.disabled():
            assert g.adapter_id is None  # cache key of the base model
            assert torch.equal(logits_of(g, ex), base)
        assert g.adapter_id == trained_id and not torch.equal(logits_of(g, ex), base)
        out = adapter.save(tmp_path / "adapter")
        assert (out / "adapter_config.json").exists()
        assert any(out.glob("adapter_model.*"))
        # the G_serve engine exports it through its typed ServedAdapter seam (no getattr)
        from somabench.switching.vllm_serving import export_adapter

        exported = export_adapter(adapter, tmp_path / "exported")
        assert (exported / "adapter_config.json").exists() and adapter.adapter_id == trained_id
    finally:
        adapter.release()


@pytest.fixture(scope="module")
def g32(smollm2_path: Path) -> Any:
    """A private fp32 G: batched rows are compared token for token."""
    from tests.helpers.fixtures import load_smollm2

    return load_smollm2(smollm2_path, "float32")


def test_mixed_adapter_batch_matches_separate_calls(g32: Any, encoder: Any) -> None:
    """The gate's one-batch path (adapted + base rows via peft ``adapter_names``) gives the
    answers of the adapter-on and the adapter-off calls (fp32 G, greedy, same padding)."""
    from somabench.backends.base import GenerationConfig

    g = g32

    ex = make_example(g, MESSAGES, ANSWER, 1.0, "warm", 0, 64)
    assert ex is not None
    gen = GenerationConfig(max_new_tokens=12)
    batch = [MESSAGES, [{"role": "user", "content": "Name a prime number larger than 10."}]]
    adapter = SessionAdapter(g, lora_cfg(lr=5e-2, cos_alpha=0.0, stop={"holdout_turns": 0}))
    assert not g.supports_base_rows
    adapter.attach(seed=0)
    try:
        adapter.train([ex], encoder)
        assert g.supports_base_rows
        new = [c.text for c in g.chat_batch(batch, gen)]
        with adapter.disabled():
            old = [c.text for c in g.chat_batch(batch, gen)]
        assert new != old  # the adapter changes G, so the test can tell the rows apart
        mixed = g.chat_batch(batch + batch, gen, base_rows=[False, False, True, True])
        assert [c.text for c in mixed] == new + old
        assert all(c.batch_size == 4 for c in mixed)
    finally:
        adapter.release()
    assert not g.supports_base_rows
    with pytest.raises(RuntimeError, match="session adapter"):
        g.chat_batch(batch, gen, base_rows=[True, False])


def test_cache_keys_base_rows_like_the_base_model(g32: Any, encoder: Any, tmp_path: Path) -> None:
    """A base row of a mixed batch is cached under the base model's key (adapter_id None), so
    it is reused by a plain base-G call and never mixed up with the adapted row."""
    from somabench.backends.base import GenerationConfig
    from somabench.cache import CachedBackend, SqliteCache

    g = g32
    ex = make_example(g, MESSAGES, ANSWER, 1.0, "warm", 0, 64)
    assert ex is not None
    gen = GenerationConfig(max_new_tokens=8)
    cached = CachedBackend(g, SqliteCache(str(tmp_path / "cache.sqlite")))
    adapter = SessionAdapter(g, lora_cfg(lr=5e-2, cos_alpha=0.0, stop={"holdout_turns": 0}))
    adapter.attach(seed=0)
    try:
        adapter.train([ex], encoder)
        first = cached.chat_batch([MESSAGES, MESSAGES], gen, base_rows=[False, True])
        assert not any(c.cached for c in first) and first[0].text != first[1].text
        with adapter.disabled():
            base = cached.chat(MESSAGES, gen)
        adapted = cached.chat(MESSAGES, gen)
    finally:
        adapter.release()
    assert base.cached and base.text == first[1].text
    assert adapted.cached and adapted.text == first[0].text
