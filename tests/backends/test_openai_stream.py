"""OpenAI backend with ``stream: true``: first/last token times from a real SSE stream.

The server here is a STAND-IN (a loopback HTTP server speaking the chat-completions stream
format with fixed delays, no model), so the times it causes are known."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from somabench.backends.base import GenerationConfig
from somabench.backends.openai_api import OpenAIBackend
from somabench.latency import turn_timing

FIRST_DELAY_S = 0.3   # before the first content chunk (the stand-in's "prefill")
STEP_S = 0.05         # between content chunks
PIECES = ["Hel", "lo", " wor", "ld"]
SERVER_LIFETIME_S = 60  # the server stops by itself even if a test hangs


class _Handler(BaseHTTPRequestHandler):
    bodies: list[dict] = []

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()

        def send(obj: dict | str) -> None:
            data = obj if isinstance(obj, str) else json.dumps(obj)
            self.wfile.write(f"data: {data}\n\n".encode())
            self.wfile.flush()

        base = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": body["model"]}
        send({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        time.sleep(FIRST_DELAY_S)
        for i, piece in enumerate(PIECES):
            if i:
                time.sleep(STEP_S)
            send({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        send({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        send({**base, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": len(PIECES),
                                               "total_tokens": 9 + len(PIECES)}})
        send("[DONE]")


@pytest.fixture
def stream_server() -> Iterator[str]:
    _Handler.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stopper = threading.Timer(SERVER_LIFETIME_S, server.shutdown)
    stopper.daemon = True
    stopper.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        stopper.cancel()
        server.shutdown()
        server.server_close()


def backend(url: str, concurrency: int = 8) -> OpenAIBackend:
    return OpenAIBackend("stand-in", url, timeout=10, max_retries=0, backoff_initial=0.1,
                         backoff_max=0.1, concurrency=concurrency, stream=True)


GEN = GenerationConfig(max_new_tokens=8)


def test_stream_records_first_and_last_token(stream_server: str) -> None:
    c = backend(stream_server).chat([{"role": "user", "content": "hi"}], GEN)
    assert c.text == "".join(PIECES) and c.finish_reason == "stop"
    assert (c.prompt_tokens, c.completion_tokens) == (9, len(PIECES))
    assert FIRST_DELAY_S <= c.first_token_s < c.last_token_s <= c.seconds
    # the last chunk cannot arrive before the server sent it; the gap between first and last
    # arrival can shrink under load (a late first read), so it is not bounded from below
    assert c.last_token_s >= FIRST_DELAY_S + STEP_S * (len(PIECES) - 1)
    timing = turn_timing(0.0, c)
    assert timing["ttft"] < timing["latency"]
    assert timing["tpot"] == pytest.approx((c.last_token_s - c.first_token_s) / (len(PIECES) - 1),
                                           abs=1e-6)
    body = _Handler.bodies[-1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_batch_times_count_the_wait_for_a_slot(stream_server: str) -> None:
    """concurrency=1: the second request waits for the first; its first token is later."""
    first, second = backend(stream_server, concurrency=1).chat_batch(
        [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]], GEN)
    early, late = sorted((first, second), key=lambda c: c.first_token_s)
    assert late.first_token_s >= early.last_token_s + FIRST_DELAY_S
    assert early.seconds == late.seconds >= late.last_token_s  # both delivered with the batch
