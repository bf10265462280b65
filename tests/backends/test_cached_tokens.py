"""Issue 26: prompt tokens read from a server's cache, as each server reports them."""

from __future__ import annotations

from openai.types.chat import ChatCompletion

from somabench.backends.llamacpp import NativeEngine, PythonEngine
from somabench.backends.openai_api import reported_cached_tokens


def completion(**extra: object) -> ChatCompletion:
    body = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "hi"}}], **extra}
    return ChatCompletion.model_validate(body)


def test_openai_usage_details_are_read() -> None:
    parsed = completion(usage={"prompt_tokens": 50, "completion_tokens": 2, "total_tokens": 52,
                               "prompt_tokens_details": {"cached_tokens": 32}})
    assert reported_cached_tokens(parsed.usage) == 32


def test_llama_cpp_timings_are_read_when_usage_has_no_details() -> None:
    parsed = completion(usage={"prompt_tokens": 50, "completion_tokens": 2, "total_tokens": 52},
                        timings={"cache_n": 41, "prompt_n": 9})
    # the OpenAI client keeps the server's extra field on the parsed object
    assert reported_cached_tokens(parsed.usage, parsed.timings) == 41
    plain = completion(usage={"prompt_tokens": 50, "completion_tokens": 2, "total_tokens": 52},
                       timings={"cache_n": 0, "prompt_n": 50})
    assert reported_cached_tokens(plain.usage, plain.timings) == 0


def test_a_server_that_says_nothing_is_unknown_not_zero() -> None:
    parsed = completion(usage={"prompt_tokens": 50, "completion_tokens": 2, "total_tokens": 52})
    assert reported_cached_tokens(parsed.usage) is None
    assert reported_cached_tokens(None) is None


def test_only_llama_server_can_switch_prompt_caching_per_request() -> None:
    assert NativeEngine.prefix_reuse == "per request"
    assert PythonEngine.prefix_reuse == "always"
