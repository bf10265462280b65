"""The hf backend's prefix (KV) cache: the store's bookkeeping by hand, then greedy answers of a
real tiny model with and without it over a multi-turn dialogue."""

from __future__ import annotations

import pytest

from somabench.backends.base import GenerationConfig
from somabench.backends.prefix_cache import PrefixCacheStore, common_prefix


class FakeCache:
    """Stands in for a transformers Cache: only its length matters to the store."""

    def __init__(self, length: int) -> None:
        self.length = length

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, tokens_to_remove: int) -> None:
        assert tokens_to_remove < 0  # as transformers 5.x requires
        self.length += tokens_to_remove


def test_common_prefix() -> None:
    assert common_prefix((1, 2, 3), [1, 2, 4, 5]) == 2
    assert common_prefix((1, 2), [1, 2, 3]) == 2
    assert common_prefix((), [1]) == 0
    assert common_prefix((9,), [1]) == 0


def test_extension_takes_the_entry_partial_match_copies_and_crops() -> None:
    store = PrefixCacheStore(max_entries=4)
    first = FakeCache(5)
    store.add([1, 2, 3, 4, 5, 6], first)  # 6 ids, KV of the first 5 (last token never fed)
    hit = store.lookup([1, 2, 3, 4, 5, 7, 8])  # the next turn extends it
    assert hit is not None and hit.cache is first and hit.cached_tokens == 5
    assert len(store) == 0  # taken, not copied
    store.add([1, 2, 3, 4, 5, 7, 8, 9], FakeCache(7))
    other = store.lookup([1, 2, 30, 40])  # another dialogue sharing only the header
    assert other is not None and other.cached_tokens == 2 and other.cache.length == 2
    assert len(store) == 1  # the longer entry stays whole for its own dialogue
    again = store.lookup([1, 2, 3, 4, 5, 7, 8, 9, 10])
    assert again is not None and again.cached_tokens == 7


def test_one_token_always_left_to_prefill_and_misses() -> None:
    store = PrefixCacheStore(max_entries=2)
    store.add([1, 2, 3, 4], FakeCache(3))
    hit = store.lookup([1, 2, 3])  # the whole prompt is cached: keep all but its last token
    assert hit is not None and hit.cached_tokens == 2 and hit.cache.length == 2
    assert store.lookup([7, 8]) is None
    assert store.lookup([1]) is None  # a one-token prompt has nothing to reuse


def test_least_recently_added_entry_is_evicted() -> None:
    store = PrefixCacheStore(max_entries=2)
    for first in (1, 2, 3):
        store.add([first, 0, 0], FakeCache(2))
    assert len(store) == 2
    assert store.lookup([1, 0, 0, 5]) is None
    assert store.lookup([3, 0, 0, 5]).cached_tokens == 2
    with pytest.raises(ValueError, match="max_entries"):
        PrefixCacheStore(0)


USERS = ["What is 17 times 3?", "Now add 9 to it.", "Write the result in words."]


def dialogue(backend, gen: GenerationConfig) -> list:
    """Serve USERS as one dialogue (each turn sees the earlier answers); the completions."""
    history: list[dict[str, str]] = []
    out = []
    for user in USERS:
        messages = [*history, {"role": "user", "content": user}]
        completion = backend.chat(messages, gen)
        out.append(completion)
        history = [*messages, {"role": "assistant", "content": completion.text}]
    return out


def test_prefix_cache_gives_the_plain_answers_and_prefills_less(smollm2_fp32, smollm2_path) -> None:
    from tests.helpers.fixtures import SMOLLM2_MODEL_ID, TEST_TORCH_THREADS

    from somabench.backends.hf import HFBackend

    cached = HFBackend(model_id=SMOLLM2_MODEL_ID, path=str(smollm2_path), dtype="float32",
                       num_threads=TEST_TORCH_THREADS, prefix_cache=True)
    gen = GenerationConfig(max_new_tokens=12)
    plain = dialogue(smollm2_fp32, gen)
    reused = dialogue(cached, gen)
    assert [c.text for c in reused] == [c.text for c in plain]
    assert [c.prompt_tokens for c in reused] == [c.prompt_tokens for c in plain]  # sent: same
    assert [c.cached_prompt_tokens for c in plain] == [0, 0, 0]  # plain: everything prefilled
    assert reused[0].cached_prompt_tokens == 0
    for before, now in zip(reused, reused[1:], strict=False):
        # the earlier turn's prompt (and answer) come from the cache
        assert before.prompt_tokens <= now.cached_prompt_tokens < now.prompt_tokens
    assert cached.fingerprint()["prefix_cache"] is True
    assert "prefix_cache" not in smollm2_fp32.fingerprint()  # plain keys unchanged
    # batches are served row by row, each from its own cache
    rows = cached.chat_batch([[{"role": "user", "content": u}] for u in USERS[:2]], gen)
    assert [r.batch_size for r in rows] == [1, 1]
