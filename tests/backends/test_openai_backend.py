"""OpenAIBackend against a real loopback server: a real tiny model, then scripted faults."""

from __future__ import annotations

import json
import time

import pytest
from tests.helpers.servers import chat_calls, openai_backend_for, serve_in_thread, server_stats

from somabench.backends import build_backend
from somabench.backends.base import BackendError, GenerationConfig
from somabench.backends.openai_api import OpenAIBackend
from somabench.cache import CachedBackend, SqliteCache
from somabench.testing.scripted import SCRIPTED_MODEL_ID, Behavior

GEN = GenerationConfig(max_new_tokens=8)
HI = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# -- (a) a real model behind the server ------------------------------------------------------
def test_happy_path_real_model_usage_is_exact(smollm2_server, smollm2_bf16) -> None:
    backend = openai_backend_for(smollm2_server)
    before = chat_calls(smollm2_server)
    out = backend.chat(HI, GEN)
    assert chat_calls(smollm2_server) == before + 1
    local = smollm2_bf16.chat(HI, GEN)  # the same model in-process, greedy
    assert out.text == local.text and out.text
    # usage = what the server's tokenizer counts for the prompt it rendered
    assert out.prompt_tokens == smollm2_bf16.count_tokens(smollm2_bf16.render(HI))
    assert out.completion_tokens == local.completion_tokens
    assert 0 < out.completion_tokens <= GEN.max_new_tokens
    assert out.finish_reason in ("stop", "length")
    assert out.status == "ok" and out.model_id == smollm2_bf16.model_id
    assert out.meta["served_model"] == smollm2_bf16.model_id and "scripted" not in out.meta
    assert out.meta["attempts"] == 1 and out.seconds > 0


def test_cached_rerun_makes_no_server_calls(smollm2_server, tmp_path) -> None:
    cache = SqliteCache(tmp_path / "requests.sqlite")
    backend = CachedBackend(openai_backend_for(smollm2_server), cache)
    prompts = [user("Say hello."), user("Name a color.")]
    before = chat_calls(smollm2_server)
    first = backend.chat_batch(prompts, GEN)
    assert chat_calls(smollm2_server) == before + 2
    again = CachedBackend(openai_backend_for(smollm2_server), SqliteCache(tmp_path / "requests.sqlite"))
    second = again.chat_batch(prompts, GEN)
    assert server_stats(smollm2_server)["chat_requests"] == before + 2  # 0 new calls
    assert [c.text for c in second] == [c.text for c in first]
    assert all(c.cached for c in second) and not any(c.cached for c in first)
    assert [c.prompt_tokens for c in second] == [c.prompt_tokens for c in first]


def test_cache_key_separates_endpoints(smollm2_server) -> None:
    a = openai_backend_for(smollm2_server)
    b = openai_backend_for("http://127.0.0.1:9/v1", model_id=a.model_id)
    assert a.fingerprint()["base_url"] == smollm2_server.base_url
    assert a.fingerprint()["model_id"] == a.model_id
    assert a.fingerprint() != b.fingerprint()


# -- (b) scripted faults -----------------------------------------------------------------------
def test_429_then_success_is_retried_and_respects_retry_after() -> None:
    retry_after = 0.3
    with serve_in_thread(script=[Behavior.error(429, retry_after=retry_after),
                                 Behavior.reply("fine now")]) as server:
        backend = openai_backend_for(server, max_retries=2, backoff_initial=0.01, backoff_max=1.0)
        started = time.monotonic()
        out = backend.chat(user("hi"), GEN)
        elapsed = time.monotonic() - started
        stats = server_stats(server)
    assert out.text == "fine now"
    assert stats["chat_requests"] == 2
    assert stats["by_status"] == {"429": 1, "200": 1}
    assert elapsed >= retry_after  # waited as the server asked (not the 0.01 s backoff)
    assert out.meta["attempts"] == 2 and "HTTP 429" in out.meta["retries"][0]
    assert out.meta["scripted"] is True and out.meta["served_model"] == SCRIPTED_MODEL_ID


def test_server_errors_exhaust_retries() -> None:
    with serve_in_thread(script=[], default=Behavior.error(503)) as server:
        backend = openai_backend_for(server, max_retries=2)
        with pytest.raises(BackendError) as err:
            backend.chat(user("hi"), GEN)
        assert chat_calls(server) == 3  # 1 + max_retries
    assert err.value.reason == "server_error" and len(err.value.attempts) == 3
    assert server.base_url in str(err.value) and "failed after 3 attempt(s)" in str(err.value)


def test_client_errors_are_not_retried() -> None:
    with serve_in_thread(script=[Behavior.error(400, text="bad max_tokens")]) as server:
        backend = openai_backend_for(server, max_retries=3)
        with pytest.raises(BackendError, match="bad max_tokens") as err:
            backend.chat(user("hi"), GEN)
        assert chat_calls(server) == 1
    assert err.value.reason == "bad_request"


def test_timeout_raises_backend_error_after_retries() -> None:
    client_timeout, server_sleep = 0.3, 5.0
    with serve_in_thread(script=[], default=Behavior.sleep(server_sleep)) as server:
        backend = openai_backend_for(server, timeout=client_timeout, max_retries=1)
        started = time.monotonic()
        with pytest.raises(BackendError) as err:
            backend.chat(user("hi"), GEN)
        elapsed = time.monotonic() - started
        assert chat_calls(server) == 2
    assert err.value.reason == "timeout"
    assert "timeout=0.3s" in str(err.value) and server.base_url in str(err.value)
    assert elapsed < server_sleep  # gave up on the client timeout, not the server's reply


def test_garbage_body_raises_clear_backend_error() -> None:
    with serve_in_thread(script=[Behavior.garbage("<html>oops</html>")]) as server:
        backend = openai_backend_for(server)
        with pytest.raises(BackendError) as err:
            backend.chat(user("hi"), GEN)
    message = str(err.value)
    assert err.value.reason == "bad_response"
    assert "not a chat completion" in message and "<html>oops" in message
    assert server.base_url in message and "OpenAI-compatible" in message


def test_dropped_connection_is_retried() -> None:
    with serve_in_thread(script=[Behavior.drop(), Behavior.reply("after drop")]) as server:
        out = openai_backend_for(server, max_retries=1).chat(user("hi"), GEN)
        assert chat_calls(server) == 2
    assert out.text == "after drop"


def test_server_down_is_a_clear_connection_error() -> None:
    with serve_in_thread(script=[]) as server:
        base_url = server.base_url
    backend = openai_backend_for(base_url, model_id="m", max_retries=1)
    with pytest.raises(BackendError) as err:
        backend.chat(user("hi"), GEN)
    assert err.value.reason == "connection" and len(err.value.attempts) == 2
    assert base_url in str(err.value) and "server" in str(err.value)


def test_concurrency_limit_is_honoured() -> None:
    limit, n_requests, each = 3, 7, 0.3
    with serve_in_thread(script=[], default=Behavior.sleep(each)) as server:
        backend = openai_backend_for(server, concurrency=limit)
        started = time.monotonic()
        outs = backend.chat_batch([user(f"question {i}") for i in range(n_requests)], GEN)
        elapsed = time.monotonic() - started
        stats = server.stats()
    assert [o.text for o in outs] == [f"question {i}" for i in range(n_requests)]  # order kept
    assert stats["max_in_flight"] == limit  # parallel, but never above the limit
    assert elapsed < n_requests * each  # faster than one by one
    assert all(o.batch_size == n_requests and o.seconds == outs[0].seconds for o in outs)


def test_missing_usage_gives_none_not_zero() -> None:
    with serve_in_thread(script=[Behavior.reply("no usage here", usage=False)]) as server:
        out = openai_backend_for(server).chat(user("hi"), GEN)
    assert out.prompt_tokens is None and out.completion_tokens is None


def test_batch_failure_raises_after_all_requests() -> None:
    with serve_in_thread(script=[Behavior.reply("ok"), Behavior.error(404)]) as server:
        backend = openai_backend_for(server, concurrency=1)
        with pytest.raises(BackendError) as err:
            backend.chat_batch([user("a"), user("b"), user("c")], GEN)
        assert chat_calls(server) == 3
    assert err.value.reason == "not_found"


# -- construction, keys, rendering -------------------------------------------------------------
def test_api_key_comes_only_from_the_named_env_var(monkeypatch) -> None:
    knobs = dict(timeout=1.0, max_retries=0, backoff_initial=0.1, backoff_max=1.0, concurrency=1)
    monkeypatch.delenv("SOMABENCH_TEST_KEY", raising=False)
    with pytest.raises(BackendError, match="SOMABENCH_TEST_KEY"):
        OpenAIBackend("m", "https://api.example.com/v1", api_key_env="SOMABENCH_TEST_KEY", **knobs)
    with pytest.raises(BackendError, match="api_key_env"):
        OpenAIBackend("m", "https://api.example.com/v1", **knobs)
    secret = "sk-test-secret-value"
    monkeypatch.setenv("SOMABENCH_TEST_KEY", secret)
    backend = OpenAIBackend("m", "https://api.example.com/v1", api_key_env="SOMABENCH_TEST_KEY",
                            **knobs)
    assert secret not in repr(backend) and secret not in json.dumps(backend.fingerprint())
    assert OpenAIBackend("m", "http://127.0.0.1:9/v1", **knobs).fingerprint()["kind"] == "openai"


def test_built_from_config_and_renders_canonical_json() -> None:
    backend = build_backend("F", {
        "backend": "openai", "model_id": "m", "base_url": "http://localhost:9/v1/",
        "timeout": 1.0, "max_retries": 0, "backoff_initial": 0.1, "backoff_max": 1.0,
        "concurrency": 2, "system_prompt": "Be brief.", "requires_gpu": False,
    })
    assert isinstance(backend, OpenAIBackend) and backend.base_url == "http://localhost:9/v1"
    rendered = backend.render(user("hi"))
    assert json.loads(rendered) == [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "hi"}]
    assert rendered == backend.render(user("hi"))
    assert backend.count_tokens("hello world") is None  # no local tokenizer configured


def test_local_tokenizer_counts(smollm2_path, smollm2_bf16) -> None:
    backend = OpenAIBackend("m", "http://127.0.0.1:9/v1", tokenizer=str(smollm2_path),
                            timeout=1.0, max_retries=0, backoff_initial=0.1, backoff_max=1.0,
                            concurrency=1)
    text = "Counting tokens the same way as the server."
    assert backend.count_tokens(text) == smollm2_bf16.count_tokens(text)
