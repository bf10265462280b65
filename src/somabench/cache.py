"""One sqlite request cache in front of every backend (and judges).

Why: reruns never regenerate a finished answer, and a cache key that forgets the model serves
model B with model A's answers (lm-eval-harness #2715). The key hashes everything that changes
the output: backend fingerprint (kind, model, revision, adapter, source/base URL, dtype), the
rendered prompt and the generation settings. A hit keeps the seconds measured when the answer
was generated, so throughput stays true; the record is flagged ``cached``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from somabench.backends.base import BackendBase, Completion, GenerationConfig, Message
from somabench.locks import file_lock

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the stored payload changes shape
LOCK_SUFFIX = ".lock"  # serializes setup (WAL switch, table): <cache file>.lock


def cache_key(components: dict[str, Any]) -> str:
    blob = json.dumps({"v": CACHE_FORMAT, **components}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class SqliteCache:
    """A key -> JSON payload table shared safely by threads and processes (WAL mode)."""

    def __init__(self, path: str | Path, namespace: str = "requests") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.namespace = namespace
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False)
        # Parallel sweep jobs open one file at once; switching to WAL fails with "database is
        # locked" without waiting for the busy timeout, so setup is serialized by a file lock.
        with file_lock(self.path.with_name(self.path.name + LOCK_SUFFIX)):
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS cache (ns TEXT, key TEXT, value TEXT, "
                "PRIMARY KEY (ns, key))"
            )
            self._conn.commit()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT value FROM cache WHERE ns=? AND key=?", (self.namespace, key)
            ).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(row[0])

    def put(self, key: str, value: dict[str, Any]) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO cache (ns, key, value) VALUES (?, ?, ?)",
                (self.namespace, key, json.dumps(value, ensure_ascii=False)),
            )
            self._conn.commit()

    def stats(self) -> str:
        return f"cache[{self.namespace}]: {self.hits} hits / {self.misses} misses"

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class CachedBackend(BackendBase):
    """Wraps a backend; misses of a batch are generated together, hits come from sqlite."""

    def __init__(self, inner: Any, cache: SqliteCache) -> None:
        self.inner = inner
        self.cache = cache
        self.kind = inner.kind
        self.model_id = inner.model_id

    def __getattr__(self, name: str) -> Any:  # tokenizer, model, embedding_matrix ...
        return getattr(self.inner, name)

    def key_components(self, messages: list[Message], gen: GenerationConfig,
                       base: bool = False) -> dict[str, Any]:
        """``base``: a row served with the session adapter off (keyed like the base model)."""
        return {
            "backend": self.inner.fingerprint(base=True) if base else self.inner.fingerprint(),
            "prompt": self.inner.render(messages),
            "gen": gen.cache_fields(),
        }

    def chat(self, messages: list[Message], gen: GenerationConfig) -> Completion:
        return self.chat_batch([messages], gen)[0]

    def chat_batch(self, batch: list[list[Message]], gen: GenerationConfig,
                   base_rows: Sequence[bool] | None = None) -> list[Completion]:
        """``base_rows`` (hf G with a session adapter): see ``HFBackend.chat_batch``."""
        extra = {} if base_rows is None else {"base_rows": list(base_rows)}
        if gen.do_sample and gen.seed is None:  # unseeded sampling is never cached
            return self.inner.chat_batch(batch, gen, **extra)
        flags = list(base_rows) if base_rows is not None else [False] * len(batch)
        keys = []
        results: list[Completion | None] = []
        for messages, base in zip(batch, flags, strict=True):
            components = self.key_components(messages, gen, base=base)
            key = cache_key(components)
            log.debug("cache key %s <- %s", key[:12], {k: v for k, v in components.items()
                                                        if k != "prompt"})
            keys.append(key)
            hit = self.cache.get(key)
            results.append(Completion(**{**hit, "cached": True}) if hit else None)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            if base_rows is not None:
                extra = {"base_rows": [flags[i] for i in missing]}
            fresh = self.inner.chat_batch([batch[i] for i in missing], gen, **extra)
            for i, completion in zip(missing, fresh, strict=True):
                results[i] = completion
                if completion.status == "ok":
                    self.cache.put(keys[i], dataclasses.asdict(completion))
        return [r for r in results if r is not None]

    @property
    def supports_base_rows(self) -> bool:  # BackendBase's False would hide the inner's answer
        return bool(getattr(self.inner, "supports_base_rows", False))

    def render(self, messages: list[Message]) -> str:
        return self.inner.render(messages)

    def count_tokens(self, text: str) -> int | None:
        return self.inner.count_tokens(text)

    def fingerprint(self) -> dict[str, Any]:
        return self.inner.fingerprint()
