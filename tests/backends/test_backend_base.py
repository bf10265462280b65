"""The backend seam: every registered backend satisfies the complete ``Backend`` protocol, the
shared helpers live once in ``BackendBase``, and OpenAI retries back off with per-client
jitter (parallel clients must not retry in lockstep)."""

from __future__ import annotations

import inspect
import json

import pytest

from somabench.backends.base import Backend, BackendBase, Completion, GenerationConfig, Message
from somabench.backends.openai_api import BACKOFF_FACTOR, OpenAIBackend
from somabench.registry import backends, load_builtin
from somabench.testing.fake import FakeBackend

GEN = GenerationConfig(max_new_tokens=4)
DOWN = "http://127.0.0.1:9/v1"  # never contacted: only waits are computed
PROTOCOL_METHODS = ("chat", "chat_batch", "render", "count_tokens", "fingerprint", "describe")


def client(**knobs: object) -> OpenAIBackend:
    settings = {"timeout": 1.0, "max_retries": 5, "backoff_initial": 1.0, "backoff_max": 8.0,
                "concurrency": 1, **knobs}
    return OpenAIBackend("m", DOWN, **settings)  # type: ignore[arg-type]


def test_the_protocol_is_complete_and_the_base_class_satisfies_it() -> None:
    for name in (*PROTOCOL_METHODS, "supports_base_rows"):
        assert hasattr(Backend, name), name
    fake = FakeBackend(system_prompt="be brief")
    assert isinstance(fake, Backend) and not fake.supports_base_rows
    assert "base_rows" in inspect.signature(Backend.chat_batch).parameters


def test_every_registered_backend_takes_base_rows_and_describes_itself() -> None:
    import importlib.util

    load_builtin()
    optional = {"vllm": "vllm", "llamacpp": "llama_cpp"}
    for name in backends.names():
        if name in optional and importlib.util.find_spec(optional[name]) is None:
            continue  # resolved (and checked) only where the extra is installed
        cls = backends.get(name)
        for method in PROTOCOL_METHODS:
            assert callable(getattr(cls, method)), (name, method)
        assert "base_rows" in inspect.signature(cls.chat_batch).parameters, name


def test_helpers_live_once_in_backend_base() -> None:
    """``with_system`` and ``chat`` are not copied into the backends any more."""
    from somabench.backends import hf, openai_api, vllm_backend
    from somabench.testing import fake

    for module in (hf, openai_api, vllm_backend, fake):
        assert "def with_system" not in inspect.getsource(module), module.__name__
    assert "def chat(" not in inspect.getsource(hf)
    fake_backend = FakeBackend(system_prompt="be brief")
    messages: list[Message] = [{"role": "user", "content": "hi"}]
    assert fake_backend.with_system(messages)[0] == {"role": "system", "content": "be brief"}
    own: list[Message] = [{"role": "system", "content": "mine"}, *messages]
    assert fake_backend.with_system(own) == own
    assert json.loads(fake_backend.render(messages))[0]["content"] == "be brief"


def test_chat_and_chat_batch_are_defined_by_each_other() -> None:
    class OneByOne(BackendBase):
        def chat(self, messages: list[Message], gen: GenerationConfig) -> Completion:
            return Completion(text=messages[-1]["content"], prompt_tokens=None,
                              completion_tokens=None, seconds=0.0, rendered_prompt="",
                              model_id="x")

    out = OneByOne().chat_batch([[{"role": "user", "content": "a"}],
                                 [{"role": "user", "content": "b"}]], GEN)
    assert [c.text for c in out] == ["a", "b"]
    with pytest.raises(ValueError, match="cannot serve base rows"):
        OneByOne().chat_batch([[{"role": "user", "content": "a"}]], GEN, base_rows=[True])
    with pytest.raises(TypeError, match="must implement chat or chat_batch"):
        type("Neither", (BackendBase,), {})


def test_backoff_without_jitter_is_the_plain_exponential() -> None:
    backend = client(backoff_jitter=0.0)
    assert [backend._wait_seconds(a, None) for a in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert backend._wait_seconds(0, 5.0) == 5.0  # Retry-After is the least we wait
    assert backend._wait_seconds(0, 60.0) == 8.0  # ... capped at backoff_max


def test_jitter_spreads_waits_per_client_and_a_seed_repeats_them() -> None:
    jitter = 0.5
    waits = {seed: [client(backoff_jitter=jitter, backoff_seed=seed)._wait_seconds(a, None)
                    for a in range(6)] for seed in (1, 2)}
    again = [client(backoff_jitter=jitter, backoff_seed=1)._wait_seconds(a, None) for a in range(6)]
    assert waits[1] == again  # deterministic per seed (tests, reproducible logs)
    assert waits[1] != waits[2]  # two clients of one outage do not retry in lockstep
    for attempt, wait in enumerate(waits[1]):
        plain = min(1.0 * BACKOFF_FACTOR ** attempt, 8.0)
        assert (1 - jitter) * plain <= wait <= plain
    capped = [client(backoff_jitter=jitter, backoff_seed=s)._wait_seconds(9, None)
              for s in range(20)]
    assert len(set(capped)) == len(capped)  # at the cap too (jitter is applied after it)
    assert client(backoff_jitter=jitter, backoff_seed=3)._wait_seconds(0, 5.0) >= 5.0


def test_jitter_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError, match="backoff_jitter must be in"):
        client(backoff_jitter=1.5)
