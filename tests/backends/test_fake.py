"""FakeBackend: deterministic, labelled, whitespace token counts (control-flow tests only)."""

from __future__ import annotations

import pytest

from somabench.backends import build_backend
from somabench.backends.base import Backend, BackendError, GenerationConfig
from somabench.backends.fake import FakeBackend
from somabench.cache import CachedBackend, SqliteCache
from somabench.registry import backends

GEN = GenerationConfig(max_new_tokens=5)
MSG = [{"role": "user", "content": "hello there"}]


def test_registered_and_speaks_the_protocol() -> None:
    assert backends.get("fake") is FakeBackend
    backend = build_backend("G", {"backend": "fake", "model_id": "fake-g"})
    assert isinstance(backend, Backend) and backend.kind == "fake"


def test_deterministic_and_prompt_dependent() -> None:
    a, b = FakeBackend(), FakeBackend()
    assert a.chat(MSG, GEN).text == b.chat(MSG, GEN).text
    other = a.chat([{"role": "user", "content": "something else"}], GEN).text
    assert other != a.chat(MSG, GEN).text
    assert FakeBackend(model_id="other").chat(MSG, GEN).text != a.chat(MSG, GEN).text


def test_labelled_and_counted_by_whitespace() -> None:
    out = FakeBackend().chat(MSG, GEN)
    assert out.text.split()[0] == "fake" and out.meta["fake"] is True
    assert out.completion_tokens == len(out.text.split()) == GEN.max_new_tokens
    assert out.prompt_tokens == len(out.rendered_prompt.split())
    assert out.finish_reason == "length"


def test_stop_strings_cut_the_reply() -> None:
    backend = FakeBackend()
    full = backend.chat(MSG, GEN).text
    stop = full.split()[2]
    out = backend.chat(MSG, GenerationConfig(max_new_tokens=5, stop=(stop,)))
    assert out.text == full[: full.index(stop)] and out.finish_reason == "stop"


def test_fail_marker_raises_backend_error() -> None:
    backend = FakeBackend(fail_marker="BOOM")
    with pytest.raises(BackendError, match="fail marker"):
        backend.chat([{"role": "user", "content": "x BOOM y"}], GEN)
    assert backend.calls == 0


def test_cache_serves_reruns(tmp_path) -> None:
    inner = FakeBackend()
    cached = CachedBackend(inner, SqliteCache(tmp_path / "c.sqlite"))
    first = cached.chat_batch([MSG, MSG], GEN)
    again = cached.chat_batch([MSG], GEN)
    assert inner.calls == 2 and again[0].cached and again[0].text == first[0].text


def test_longer_limit_extends_the_same_reply() -> None:
    short = FakeBackend().chat(MSG, GEN).text
    longer = FakeBackend().chat(MSG, GenerationConfig(max_new_tokens=9)).text
    assert longer.startswith(short) and len(longer.split()) == 9
