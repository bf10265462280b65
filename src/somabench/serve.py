"""``somabench serve``: a small OpenAI-compatible HTTP server for one local model, loopback only.

Why: users can serve a local model (e.g. the tiny SmolLM2 asset) to another process as F or as
a judge. It serves any somabench backend object (``chat(messages, gen) -> Completion``);
``usage`` is the backend's own exact token counts. The fault-injecting scripted double that
tests and the judge bench use subclasses it in ``somabench.testing.scripted``.

Endpoints: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``, ``GET /stats``
(request counts per endpoint / model / status, in-flight maximum, so tests can assert "0 calls").

The server is bounded: after ``max_requests`` HTTP requests (every endpoint counts) or
``lifetime_seconds`` it shuts itself down. Use it as a context manager or ``start()``/``stop()``;
``python -m somabench serve --asset smollm2-135m-instruct --port 8000`` serves a model for users.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from somabench.backends.base import Backend, GenerationConfig
from somabench.errors import ConfigError

log = logging.getLogger(__name__)

LOOPBACK_HOST = "127.0.0.1"
LOOPBACK_ALIASES = ("127.0.0.1", "localhost")
CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
SHUTDOWN_POLL_SECONDS = 0.05  # how fast serve_forever notices a shutdown; not a serving knob


class ServerConfigError(ConfigError):
    """The server was asked for something it refuses to do (e.g. a non-loopback host)."""


class RequestError(Exception):
    """A client error: answered with ``status`` and an OpenAI-style error body."""

    def __init__(self, status: int, message: str, code: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def check_loopback(host: str) -> str:
    """The address to bind, or a clear refusal: this server never listens beyond loopback."""
    if host not in LOOPBACK_ALIASES:
        raise ServerConfigError(
            f"somabench.serve only listens on loopback ({LOOPBACK_HOST}); refusing host '{host}'. "
            "To reach it from elsewhere, use an SSH tunnel or a real serving stack (e.g. vLLM)."
        )
    return LOOPBACK_HOST


def _text_of(content: Any) -> str:
    """Message content as text (plain string, or OpenAI content parts of type text)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if content is None:
        return ""
    raise RequestError(400, f"message content must be a string or a list of parts, got {type(content).__name__}")


def parse_messages(body: dict[str, Any]) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list")
    out = []
    for m in messages:
        if not isinstance(m, dict) or "role" not in m:
            raise RequestError(400, "each message needs a 'role' and 'content'")
        out.append({"role": str(m["role"]), "content": _text_of(m.get("content"))})
    return out


class OpenAICompatServer:
    """A bounded, loopback-only OpenAI-compatible server (see the module docstring)."""

    mode = "backend"
    owner = "somabench"
    """``owned_by`` in ``GET /v1/models``."""
    response_headers: dict[str, str] = {}
    """Headers added to every response (the scripted double labels itself with one)."""

    def __init__(
        self,
        backend: Backend | None,
        *,
        served_model_id: str | None = None,
        max_requests: int | None,
        lifetime_seconds: float | None,
        default_max_tokens: int | None = None,
        host: str = LOOPBACK_HOST,
        port: int = 0,
    ) -> None:
        self.host = check_loopback(host)
        self.port = port
        self.backend = backend
        self.model_id = served_model_id or (backend.model_id if backend is not None else "")
        self.max_requests = max_requests
        self.lifetime_seconds = lifetime_seconds
        self.default_max_tokens = default_max_tokens
        self._lock = threading.Lock()
        self._backend_lock = threading.Lock()  # one generation at a time: models aren't re-entrant
        self._stop_event = threading.Event()
        self._done = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._started_at: float | None = None
        self._counter = 0
        self._stats: dict[str, Any] = {
            "requests_total": 0,
            "chat_requests": 0,
            "by_endpoint": collections.Counter(),
            "by_model": collections.Counter(),
            "by_status": collections.Counter(),
            "in_flight": 0,
            "max_in_flight": 0,
        }

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Root URL, e.g. ``http://127.0.0.1:PORT``."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self._httpd.server_address[1]}"

    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url`` (root + ``/v1``) to give a client."""
        return self.url + "/v1"

    def start(self) -> OpenAICompatServer:
        if self._httpd is not None:
            raise RuntimeError("server already started")
        handler = type("Handler", (ChatHandler,), {"app": self})
        httpd = ThreadingHTTPServer((self.host, self.port), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._started_at = time.monotonic()
        self._thread = threading.Thread(
            target=self._serve, name=f"somabench-serve-{self.mode}", daemon=True
        )
        self._thread.start()
        if self.lifetime_seconds is not None:
            self._timer = threading.Timer(self.lifetime_seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()
        log.info("serving %s (%s mode) at %s (max_requests=%s, lifetime_seconds=%s)",
                 self.model_id, self.mode, self.base_url, self.max_requests, self.lifetime_seconds)
        return self

    def _serve(self) -> None:
        assert self._httpd is not None
        try:
            self._httpd.serve_forever(poll_interval=SHUTDOWN_POLL_SECONDS)
        finally:
            self._httpd.server_close()
            self._done.set()

    def _expire(self) -> None:
        log.info("server at %s reached lifetime_seconds=%s; shutting down", self.url,
                 self.lifetime_seconds)
        self.stop()

    def stop(self) -> None:
        """Stop serving (idempotent; wakes scripted sleeps so the process exits promptly)."""
        self._stop_event.set()
        if self._timer is not None:
            self._timer.cancel()
        httpd = self._httpd
        if httpd is None:
            return
        if threading.current_thread() is self._thread:
            return
        if not self._done.is_set():
            httpd.shutdown()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped (by bound, ``stop()`` or Ctrl-C)."""
        return self._done.wait(timeout)

    @property
    def running(self) -> bool:
        return self._httpd is not None and not self._done.is_set()

    def __enter__(self) -> OpenAICompatServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- bookkeeping ---------------------------------------------------------------------------
    def _count_request(self, endpoint: str) -> bool:
        """Count one request; True when it is the last one allowed."""
        with self._lock:
            self._stats["requests_total"] += 1
            self._stats["by_endpoint"][endpoint] += 1
            total = self._stats["requests_total"]
        return self.max_requests is not None and total >= self.max_requests

    def _finish_bound(self) -> None:
        log.info("server at %s reached max_requests=%s; shutting down", self.url, self.max_requests)
        threading.Thread(target=self.stop, name="somabench-serve-stop", daemon=True).start()

    def stats(self) -> dict[str, Any]:
        """A JSON-ready snapshot (what ``GET /stats`` returns)."""
        with self._lock:
            snap = {k: (dict(v) if isinstance(v, collections.Counter) else v)
                    for k, v in self._stats.items()}
            snap["by_status"] = {str(k): v for k, v in snap["by_status"].items()}
        snap.update(
            mode=self.mode, model=self.model_id, max_requests=self.max_requests,
            lifetime_seconds=self.lifetime_seconds,
            uptime_seconds=(time.monotonic() - self._started_at) if self._started_at else 0.0,
        )
        return snap

    def _next_id(self) -> str:
        with self._lock:
            self._counter += 1
            return f"chatcmpl-somabench-{self._counter}"

    # -- chat ----------------------------------------------------------------------------------
    def completion_body(self, text: str, finish_reason: str | None, prompt_tokens: int | None,
                        completion_tokens: int | None) -> dict[str, Any]:
        usage = None
        if prompt_tokens is not None and completion_tokens is not None:
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                     "total_tokens": prompt_tokens + completion_tokens}
        return {
            "id": self._next_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_id,
            "system_fingerprint": f"somabench-{self.mode}",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
                "logprobs": None,
            }],
            "usage": usage,
        }

    def generation_config(self, body: dict[str, Any]) -> GenerationConfig:
        """Map OpenAI request fields onto our GenerationConfig.

        temperature absent or 0 means greedy (deterministic, unlike OpenAI's default of 1);
        temperature > 0 samples and needs a ``seed`` so answers are reproducible.
        """
        if body.get("stream"):
            raise RequestError(400, "streaming is not supported by somabench.serve")
        if body.get("n") not in (None, 1):
            raise RequestError(400, "only n=1 is supported by somabench.serve")
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if max_tokens is None:
            max_tokens = self.default_max_tokens
        if max_tokens is None:
            raise RequestError(400, "max_tokens is required (this server has no default_max_tokens)")
        temperature = body.get("temperature")
        do_sample = bool(temperature)
        if do_sample and body.get("seed") is None:
            raise RequestError(400, "temperature > 0 needs a seed here (reproducible sampling); "
                                    "pass seed or use temperature 0")
        stop = body.get("stop") or ()
        stop = (stop,) if isinstance(stop, str) else tuple(stop)
        fields: dict[str, Any] = {"max_new_tokens": int(max_tokens), "do_sample": do_sample,
                                  "stop": stop}
        if do_sample and temperature is not None:
            fields.update(temperature=float(temperature), seed=int(body["seed"]))
            if body.get("top_p") is not None:
                fields["top_p"] = float(body["top_p"])
        return GenerationConfig(**fields)

    def answer_backend(self, body: dict[str, Any]) -> dict[str, Any]:
        model = body.get("model")
        if model != self.model_id:
            raise RequestError(404, f"model '{model}' is not served here; available: ['{self.model_id}']",
                               code="model_not_found")
        messages = parse_messages(body)
        gen = self.generation_config(body)
        if self.backend is None:  # script mode answers from its script, never from here
            raise RequestError(500, "this server has no model to answer with")
        with self._backend_lock:
            completion = self.backend.chat(messages, gen)
        return self.completion_body(completion.text, completion.finish_reason,
                                    completion.prompt_tokens, completion.completion_tokens)

    def on_request(self, body: dict[str, Any]) -> None:
        """Hook called with every chat request body (the test double records them)."""

    def handle_chat(self, handler: ChatHandler, body: dict[str, Any]) -> None:
        """Answer one chat request through ``handler`` (the backend's completion)."""
        handler.send_json(200, self.answer_backend(body))


class ChatHandler(BaseHTTPRequestHandler):
    app: OpenAICompatServer
    server_version = "somabench-serve"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    # -- plumbing ------------------------------------------------------------------------------
    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.send_raw(status, json.dumps(payload).encode("utf-8"), "application/json", headers)

    def send_raw(self, status: int, data: bytes, content_type: str,
                  headers: dict[str, str] | None = None) -> None:
        with self.app._lock:
            self.app._stats["by_status"][status] += 1
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in {**self.app.response_headers, **(headers or {})}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # client gave up (e.g. its timeout)
            log.debug("client went away before the response was written")

    def send_error_json(self, status: int, message: str, code: str,
                         headers: dict[str, str] | None = None) -> None:
        body = {"error": {"message": message, "type": code, "code": status}}
        self.send_json(status, body, headers)

    def _route(self, method: str) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        endpoint = f"{method} {path}"
        last = self.app._count_request(endpoint)
        try:
            if method == "GET" and path == "/health":
                self.send_json(200, {"status": "ok", "mode": self.app.mode})
            elif method == "GET" and path == "/stats":
                self.send_json(200, self.app.stats())
            elif method == "GET" and path == MODELS_PATH:
                self.send_json(200, {"object": "list", "data": [
                    {"id": self.app.model_id, "object": "model", "created": 0,
                     "owned_by": self.app.owner}
                ]})
            elif method == "POST" and path == CHAT_PATH:
                self._chat()
            else:
                self.send_error_json(404, f"no route {endpoint}", "not_found")
        finally:
            if last:
                self.app._finish_bound()

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        self._route("POST")

    # -- chat ----------------------------------------------------------------------------------
    def _read_body(self) -> dict[str, Any]:
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError(411, "Content-Length required")
        raw = self.rfile.read(int(length))
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RequestError(400, f"request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise RequestError(400, "request body must be a JSON object")
        return body

    def _chat(self) -> None:
        app = self.app
        with app._lock:
            app._stats["chat_requests"] += 1
            app._stats["in_flight"] += 1
            app._stats["max_in_flight"] = max(app._stats["max_in_flight"], app._stats["in_flight"])
        try:
            body = self._read_body()
            with app._lock:
                app._stats["by_model"][str(body.get("model"))] += 1
            app.on_request(body)
            app.handle_chat(self, body)
        except RequestError as exc:
            self.send_error_json(exc.status, exc.message, exc.code)
        except Exception as exc:  # noqa: BLE001 - a server answers 500, it does not crash
            log.exception("chat request failed")
            self.send_error_json(500, f"{type(exc).__name__}: {exc}", "server_error")
        finally:
            with app._lock:
                app._stats["in_flight"] -= 1


def run_until_stopped(server: OpenAICompatServer) -> int:
    """Start ``server``, log its address, block until a bound or Ctrl-C stops it."""
    server.start()
    log.info("ready: base_url=%s model=%s (Ctrl-C stops)", server.base_url, server.model_id)
    try:
        server.wait()
    except KeyboardInterrupt:
        log.info("interrupted; stopping")
    finally:
        server.stop()
    return 0
