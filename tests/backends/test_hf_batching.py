"""HFBackend.chat_batch (left-padded, one generate call) == one-by-one greedy, on real SmolLM2."""

from __future__ import annotations

from somabench.backends.base import GenerationConfig

GEN = GenerationConfig(max_new_tokens=8)
# Different lengths on purpose: the short prompts get left padding in the batch.
PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about the sea and the wind over the old "
                                 "harbour at dawn, with gulls."}],
    [{"role": "system", "content": "You are terse."},
     {"role": "user", "content": "2+2=?"}],
]


def check_batch_equals_single(backend) -> None:
    batched = backend.chat_batch(PROMPTS, GEN)
    single = [backend.chat(m, GEN) for m in PROMPTS]
    assert [c.text for c in batched] == [c.text for c in single]
    assert [c.completion_tokens for c in batched] == [c.completion_tokens for c in single]
    # padding is not counted as prompt
    assert [c.prompt_tokens for c in batched] == [c.prompt_tokens for c in single]
    assert all(c.batch_size == len(PROMPTS) for c in batched)


def test_batched_greedy_equals_one_by_one_float32(smollm2_fp32) -> None:
    check_batch_equals_single(smollm2_fp32)


def test_batched_greedy_equals_one_by_one_bfloat16(smollm2_bf16) -> None:
    """bf16 (the tiny config's default dtype): also exact on these prompts."""
    check_batch_equals_single(smollm2_bf16)

