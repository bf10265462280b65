"""Start a real loopback server inside a test, and talk to it: ``somabench.serve`` in front of a
backend, or the scripted fault-injecting double (``somabench.testing.scripted``).

Usage::

    from tests.helpers.servers import Behavior, serve_in_thread, server_stats, openai_backend_for

    with serve_in_thread(script=[Behavior.error(429), Behavior.reply("ok")]) as server:
        backend = openai_backend_for(server)          # OpenAIBackend with fast test knobs
        backend.chat([{"role": "user", "content": "hi"}], gen)
        assert server_stats(server)["chat_requests"] == 2

Every server here is bounded (``TEST_MAX_REQUESTS`` requests, ``TEST_LIFETIME_SECONDS``) and
stops when the ``with`` block ends.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from somabench.backends.openai_api import OpenAIBackend
from somabench.serve import OpenAICompatServer
from somabench.testing.scripted import (  # noqa: F401 - re-exported for tests
    SCRIPTED_HEADER,
    SCRIPTED_MODEL_ID,
    Behavior,
    RecordingServer,
    ScriptedServer,
)

TEST_MAX_REQUESTS = 200  # far above any single test's needs; a runaway loop still ends
TEST_LIFETIME_SECONDS = 300.0  # a forgotten server dies on its own
TEST_DEFAULT_MAX_TOKENS = 8  # keeps real generations short if a request omits max_tokens
TEST_HTTP_TIMEOUT = 10.0  # for the helper's own GET /stats

# Client knobs for tests: quick retries so fault tests stay fast; override per test.
TEST_CLIENT_KNOBS: dict[str, Any] = {
    "timeout": 60.0,
    "max_retries": 2,
    "backoff_initial": 0.01,
    "backoff_max": 0.2,
    "concurrency": 1,
}


@contextmanager
def serve_in_thread(
    backend: Any | None = None,
    script: list[Behavior | dict[str, Any]] | None = None,
    *,
    default: Behavior | None = None,
    max_requests: int | None = TEST_MAX_REQUESTS,
    lifetime_seconds: float | None = TEST_LIFETIME_SECONDS,
    default_max_tokens: int | None = TEST_DEFAULT_MAX_TOKENS,
    **kwargs: Any,
) -> Iterator[OpenAICompatServer]:
    """A started loopback server (backend mode if ``backend`` else script mode); stopped on exit.

    The yielded server has ``.base_url`` (``http://127.0.0.1:PORT/v1``), ``.url``, ``.model_id``,
    ``.stats()``, ``.requests`` (bodies received) and ``.stop()``.
    """
    bounds = dict(max_requests=max_requests, lifetime_seconds=lifetime_seconds,
                  default_max_tokens=default_max_tokens, **kwargs)
    if backend is not None:
        if script or default:
            raise ValueError("give either a backend or a script, not both")
        server: OpenAICompatServer = RecordingServer(backend, **bounds)
    else:
        server = ScriptedServer(script, default=default, **bounds)
    with server:
        yield server


def http_get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=TEST_HTTP_TIMEOUT) as resp:  # noqa: S310 - loopback
        return json.loads(resp.read())


def server_stats(server: OpenAICompatServer | str) -> dict[str, Any]:
    """``GET /stats`` over HTTP (server object or its root URL). Note: this request counts."""
    root = server if isinstance(server, str) else server.url
    return http_get_json(root.rstrip("/") + "/stats")


def chat_calls(server: OpenAICompatServer) -> int:
    """Chat-completion requests the server has received (in-process; not an HTTP request)."""
    return int(server.stats()["chat_requests"])


def openai_backend_for(server: OpenAICompatServer | str, model_id: str | None = None,
                       **overrides: Any) -> OpenAIBackend:
    """An ``OpenAIBackend`` pointed at ``server`` with ``TEST_CLIENT_KNOBS`` (+ overrides)."""
    if isinstance(server, str):
        base_url, served = server, model_id
    else:
        base_url, served = server.base_url, server.model_id
    knobs = {**TEST_CLIENT_KNOBS, **overrides}
    return OpenAIBackend(model_id=model_id or served or "test-model", base_url=base_url, **knobs)
