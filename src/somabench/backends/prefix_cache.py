"""A prefix (KV) cache for the hf backend: a turn prefills only what an earlier call did not.

Why: modern serving does not re-compute a dialogue's history at every turn. vLLM reuses the KV
blocks of a shared prefix (``enable_prefix_caching``), llama.cpp's server the previous prompt
of its slot (``cache_prompt``). This store does the same for transformers, by content: it keeps
the token ids and KV cache of the last few sequences it served (prompt + answer) and hands the
next prompt the cache of the entry sharing its longest common token prefix, cropped to that
prefix. Nothing is keyed by dialogue, so any method (and any batch order) benefits exactly as
much as its prompts share prefixes, as in vLLM's automatic prefix caching.

An entry the new prompt extends completely is taken (the next turn of the same dialogue);
one it shares only part of is copied before cropping, so the other dialogue keeps its cache.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass
class Hit:
    """The cache to prefill from and how many of the prompt's tokens it already holds."""

    cache: Any
    cached_tokens: int


def common_prefix(a: tuple[int, ...], b: list[int]) -> int:
    """Length of the longest common prefix of two token id sequences."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def crop_to(cache: Any, keep: int) -> None:
    """Crop a transformers Cache to its first ``keep`` positions. A negative argument removes
    that many tokens in every transformers this runs with (4.x read a positive one as the
    length to keep, recent 5.x refuse it)."""
    remove = int(cache.get_seq_length()) - keep
    if remove > 0:
        cache.crop(-remove)


class PrefixCacheStore:
    """Up to ``max_entries`` (token ids, KV cache) pairs, least recently used evicted first."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError(f"prefix cache max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[int, tuple[tuple[int, ...], Any]] = OrderedDict()
        self._next = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, ids: list[int]) -> Hit | None:
        """The cache to continue from for prompt ``ids`` (None: prefill everything). At least
        one prompt token is always left to prefill (generation needs its logits)."""
        best_key, best_len = None, 0
        for key, (tokens, _) in self._entries.items():
            n = common_prefix(tokens, ids)
            if n > best_len:
                best_key, best_len = key, n
        keep = min(best_len, len(ids) - 1)
        if best_key is None or keep <= 0:
            return None
        tokens, cache = self._entries[best_key]
        if not getattr(cache, "is_croppable", True):
            return None
        if keep == len(tokens):  # the prompt extends the entry: take it, no copy
            del self._entries[best_key]
        else:  # partial match: the entry stays whole for whoever it belongs to
            cache = copy.deepcopy(cache)
            crop_to(cache, keep)
        return Hit(cache=cache, cached_tokens=keep)

    def add(self, ids: list[int], cache: Any) -> None:
        """Keep ``cache`` (holding the KV of ``ids``) for later prompts."""
        if cache is None or not ids:
            return
        length = int(cache.get_seq_length())
        self._entries[self._next] = (tuple(ids[:length]), cache)
        self._next += 1
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
