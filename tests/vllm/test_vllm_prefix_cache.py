"""Issue 26: vLLM's automatic prefix caching as the Original's serving mode. The plain engine
(``prefix_cache`` off, set explicitly: vLLM's V1 engine turns it on by default) prefills every
prompt token; ``prefix_cache=true`` (``method=original_prefix_cache``) reads a dialogue's earlier
turns from the cache and answers the same under greedy decoding."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm", reason="needs vLLM: make vllm-env, then make test-vllm")
pytestmark = pytest.mark.vllm

from somabench.backends.base import Completion, GenerationConfig  # noqa: E402

from .conftest import ENGINE, SMOLLM2_MODEL_ID  # noqa: E402

GEN = GenerationConfig(max_new_tokens=12)
# long enough to fill several KV blocks: vLLM caches whole blocks only
CONTEXT = " ".join(f"Fact {i}: the lighthouse number {i} is painted a different colour." for i in range(24))


@pytest.fixture(scope="module")
def cached_engine(smollm2_dir: Path) -> Iterator[Any]:
    from somabench.backends.vllm_backend import VLLMBackend

    backend = VLLMBackend(model_id=SMOLLM2_MODEL_ID, path=str(smollm2_dir), prefix_cache=True,
                          **ENGINE)
    yield backend
    backend.shutdown()


def two_turns(backend: Any) -> list[Completion]:
    history = [{"role": "user", "content": CONTEXT + "\nWhich colour is lighthouse 3?"}]
    first = backend.chat(history, GEN)
    history += [{"role": "assistant", "content": first.text},
                {"role": "user", "content": "And lighthouse 7?"}]
    return [first, backend.chat(history, GEN)]


def test_prefix_cache_reads_earlier_turns_and_keeps_the_answers(cached_engine: Any,
                                                                  engine: Any) -> None:
    """``engine`` (conftest) is the plain one: the same settings without prefix_cache."""
    plain, cached = two_turns(engine), two_turns(cached_engine)
    assert plain[1].prompt_tokens < ENGINE["max_model_len"]
    assert [c.text for c in cached] == [c.text for c in plain]
    assert [c.cached_prompt_tokens for c in plain] == [0, 0]
    assert cached[1].cached_prompt_tokens is not None
    assert 0 < cached[1].cached_prompt_tokens < cached[1].prompt_tokens
    assert cached_engine.fingerprint()["prefix_cache"] is True
    assert "prefix_cache" not in engine.fingerprint()  # old cached answers stay valid
    assert cached_engine.describe()["prefix_cache"] is True

