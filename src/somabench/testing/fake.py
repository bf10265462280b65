"""A deterministic stand-in backend for unit tests of control flow only: a test double.

Why: runner, cache and record plumbing can be tested in milliseconds without a model. It never
replaces the thing under test: anything that measures model behaviour uses a real tiny model.
It lives in the ``testing`` namespace (``model.<role>.backend=testing.fake``) so no run can use it
by accident, and everything it returns says it is fake (``kind == "testing.fake"``, text starting
with ``fake``, ``meta["fake"]``, ``describe()["test_double"]``, which run.json records under
``test_doubles`` and reports print as a warning); token counts are whitespace-separated words,
not tokens.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from somabench.backends.base import (
    BackendBase,
    BackendError,
    Completion,
    GenerationConfig,
    Message,
    sha16,
)
from somabench.testing import TEST_DOUBLE_KEY

FAKE_PREFIX = "fake"  # first word of every fake reply, so no one mistakes it for a model's
FAKE_BACKEND = "testing.fake"  # its backend name: the testing namespace says what it is


def _words_from(seed_text: str, n: int) -> list[str]:
    """``n`` pseudo-words derived only from ``seed_text`` (sha256 chain)."""
    words: list[str] = []
    digest = hashlib.sha256(seed_text.encode("utf-8")).hexdigest()
    while len(words) < n:
        words.extend(digest[i:i + 6] for i in range(0, len(digest), 6))
        digest = hashlib.sha256(digest.encode("ascii")).hexdigest()
    return words[:n]


class FakeBackend(BackendBase):
    """Reply = ``fake`` + words hashed from the rendered prompt, ``max_new_tokens`` words long.

    ``fail_marker``: if set, any prompt containing it raises :class:`BackendError` (to test
    ``api_error`` handling). ``calls`` counts generate calls (prompts served).
    ``context_window``: if set, the window the preflight checks turns against (in fake tokens).
    ``delay_seconds``: wait this long per reply (lets a test interrupt a run mid-way).
    """

    kind = FAKE_BACKEND

    def __init__(self, model_id: str = "fake", system_prompt: str | None = None,
                 fail_marker: str | None = None, context_window: int | None = None,
                 delay_seconds: float = 0.0, **_: Any) -> None:
        self.model_id = model_id
        self.context_window = context_window
        self.system_prompt = system_prompt
        self.fail_marker = fail_marker
        self.delay_seconds = float(delay_seconds)
        self.calls = 0

    def describe(self) -> dict[str, Any]:
        return {**super().describe(),
                TEST_DOUBLE_KEY: "testing.fake backend (hashed words, not a model)"}

    def render(self, messages: list[Message]) -> str:
        return self.render_json(messages)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def chat(self, messages: list[Message], gen: GenerationConfig) -> Completion:
        started = time.perf_counter()
        prompt = self.render(messages)
        if self.fail_marker and self.fail_marker in prompt:
            raise BackendError(f"fake backend '{self.model_id}': prompt contains the fail marker "
                               f"{self.fail_marker!r}", reason="error")
        self.calls += 1
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        # like a real model: the reply depends on the prompt and sampling, while max_new_tokens
        # and stop strings only cut it (a longer limit extends the same reply)
        sampling = {k: v for k, v in gen.cache_fields().items() if k not in ("max_new_tokens", "stop")}
        seed_text = json.dumps([self.model_id, prompt, sampling], sort_keys=True)
        words = [FAKE_PREFIX, *_words_from(seed_text, max(gen.max_new_tokens - 1, 0))]
        text = " ".join(words[: gen.max_new_tokens])
        finish = "length"
        for stop in gen.stop:
            if stop and stop in text:
                text, finish = text[: text.index(stop)], "stop"
        return Completion(
            text=text, prompt_tokens=self.count_tokens(prompt),
            completion_tokens=self.count_tokens(text), seconds=time.perf_counter() - started,
            rendered_prompt=prompt, model_id=self.model_id, finish_reason=finish,
            meta={"prompt_hash": sha16(prompt), "fake": True},
        )
