"""A scripted, fault-injecting OpenAI-compatible server on loopback: a test double.

Why: clients (the OpenAI backend, the LLM judges) must survive rate limits, timeouts, garbage
and dropped connections; tests and the judge bench need a *real* HTTP endpoint that produces
them on cue. It answers from a list of :class:`Behavior` entries consumed in order, then a
default behaviour, and records every request body. Its responses say what it is: ``model`` is
``scripted-echo``, every response carries ``X-Somabench-Scripted: 1`` and ``usage`` counts
whitespace-separated words, not tokens.

    python -m somabench.testing.scripted --script behaviours.json --port 0 --max-requests 2
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from somabench.serve import (
    LOOPBACK_HOST,
    ChatHandler,
    OpenAICompatServer,
    ServerConfigError,
    check_loopback,
    parse_messages,
    run_until_stopped,
)

log = logging.getLogger(__name__)

SCRIPTED_MODEL_ID = "scripted-echo"  # what script mode reports as its model: never a real name
SCRIPTED_HEADER = "X-Somabench-Scripted"
BEHAVIOR_KINDS = ("reply", "echo", "status", "sleep", "garbage", "drop")
DEFAULT_GARBAGE_BODY = "<html>this is not an OpenAI chat completion{"


@dataclass(frozen=True)
class Behavior:
    """One scripted answer to a chat request.

    kinds: ``reply`` (answer ``text``), ``echo`` (answer the last user message), ``status``
    (HTTP ``status`` with an error body and optional ``Retry-After: retry_after``), ``sleep``
    (wait ``seconds``, then answer ``text`` or echo; makes client timeouts happen), ``garbage``
    (HTTP 200 with a non-JSON ``text`` body), ``drop`` (close the connection without answering).
    Build them with the class methods: ``Behavior.reply("hi")``, ``Behavior.echo()``,
    ``Behavior.error(429, retry_after=1)``, ``Behavior.sleep(2.0)``, ``Behavior.garbage()``,
    ``Behavior.drop()``; or from a dict (``{"kind": "status", "status": 500}``).
    """

    kind: str
    text: str | None = None
    status: int | None = None
    retry_after: float | None = None
    seconds: float | None = None
    usage: bool = True
    """False: answer without a ``usage`` object (servers that report no token counts)."""

    def __post_init__(self) -> None:
        if self.kind not in BEHAVIOR_KINDS:
            raise ServerConfigError(f"unknown behavior kind '{self.kind}'; known: {BEHAVIOR_KINDS}")
        if self.kind == "reply" and self.text is None:
            raise ServerConfigError("a 'reply' behavior needs text")
        if self.kind == "status" and self.status is None:
            raise ServerConfigError("a 'status' behavior needs an HTTP status")
        if self.kind == "sleep" and self.seconds is None:
            raise ServerConfigError("a 'sleep' behavior needs seconds")

    @classmethod
    def reply(cls, text: str, usage: bool = True) -> Behavior:
        return cls("reply", text=text, usage=usage)

    @classmethod
    def echo(cls) -> Behavior:
        return cls("echo")

    @classmethod
    def error(cls, status: int, retry_after: float | None = None, text: str | None = None) -> Behavior:
        return cls("status", status=status, retry_after=retry_after, text=text)

    @classmethod
    def sleep(cls, seconds: float, text: str | None = None) -> Behavior:
        return cls("sleep", seconds=seconds, text=text)

    @classmethod
    def garbage(cls, body: str = DEFAULT_GARBAGE_BODY) -> Behavior:
        return cls("garbage", text=body)

    @classmethod
    def drop(cls) -> Behavior:
        return cls("drop")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Behavior:
        return cls(**data)


def _words(text: str) -> int:
    return len(text.split())


class RecordingServer(OpenAICompatServer):
    """The real backend-mode server that also keeps every chat request body (``.requests``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests: list[dict[str, Any]] = []
        """Bodies of the chat requests received (in-process inspection for tests)."""

    def on_request(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(body)


class ScriptedServer(RecordingServer):
    """Answers from a script of behaviours, then ``default`` (echo unless given)."""

    mode = "script"
    owner = "somabench-script"
    response_headers = {SCRIPTED_HEADER: "1"}

    def __init__(self, script: list[Behavior | dict[str, Any]] | None = None, *,
                 default: Behavior | None = None, **kwargs: Any) -> None:
        kwargs.pop("served_model_id", None)
        super().__init__(None, served_model_id=SCRIPTED_MODEL_ID, **kwargs)
        self.script: collections.deque[Behavior] = collections.deque(
            b if isinstance(b, Behavior) else Behavior.from_dict(b) for b in (script or []))
        self.default = default or Behavior.echo()
        self.behaviors: collections.Counter[str] = collections.Counter()

    def stats(self) -> dict[str, Any]:
        snap = super().stats()
        with self._lock:
            snap["behaviors"] = dict(self.behaviors)
            snap["script_remaining"] = len(self.script)
        return snap

    def _next_behavior(self) -> Behavior:
        with self._lock:
            behavior = self.script.popleft() if self.script else self.default
            self.behaviors[behavior.kind] += 1
        return behavior

    def scripted_text(self, behavior: Behavior, messages: list[dict[str, str]]) -> str:
        if behavior.text is not None:
            return behavior.text
        users = [m["content"] for m in messages if m["role"] == "user"]
        return users[-1] if users else ""

    def scripted_body(self, text: str, messages: list[dict[str, str]],
                      usage: bool = True) -> dict[str, Any]:
        """A completion whose ``usage`` counts whitespace words (script mode has no tokenizer)."""
        if not usage:
            return self.completion_body(text, "stop", None, None)
        prompt_words = sum(_words(m["content"]) for m in messages)
        return self.completion_body(text, "stop", prompt_words, _words(text))

    def handle_chat(self, handler: ChatHandler, body: dict[str, Any]) -> None:
        behavior = self._next_behavior()
        if behavior.kind == "drop":
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if behavior.kind == "garbage":
            handler.send_raw(200, (behavior.text or "").encode("utf-8"), "application/json")
            return
        if behavior.kind == "status":
            headers = {}
            if behavior.retry_after is not None:
                headers["Retry-After"] = f"{behavior.retry_after:g}"
            message = behavior.text or f"scripted HTTP {behavior.status}"
            handler.send_error_json(int(behavior.status or 0), message, "scripted_error", headers)
            return
        if behavior.kind == "sleep" and self._stop_event.wait(behavior.seconds):
            return  # server stopping: do not answer
        messages = parse_messages(body)
        text = self.scripted_text(behavior, messages)
        handler.send_json(200, self.scripted_body(text, messages, usage=behavior.usage))


def main(argv: list[str] | None = None) -> int:
    """``python -m somabench.testing.scripted --script FILE``: the double as its own process."""
    parser = argparse.ArgumentParser(prog="python -m somabench.testing.scripted",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--script", required=True, help="JSON file: a list of behaviours")
    parser.add_argument("--host", default=LOOPBACK_HOST, help="must be 127.0.0.1 (loopback only)")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--max-requests", type=int, default=None, help="stop after N requests")
    parser.add_argument("--lifetime-seconds", type=float, default=None, help="stop after S seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    check_loopback(args.host)
    script = json.loads(Path(args.script).read_text(encoding="utf-8"))
    return run_until_stopped(ScriptedServer(
        script, max_requests=args.max_requests, lifetime_seconds=args.lifetime_seconds,
        host=args.host, port=args.port))


if __name__ == "__main__":
    raise SystemExit(main())
