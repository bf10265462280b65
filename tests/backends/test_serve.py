"""somabench.serve (the user's server) and its scripted test double: loopback only, real HTTP,
scripted faults in order, bounded lifetime."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from tests.helpers.servers import http_get_json, serve_in_thread, server_stats

from somabench.commands.serve import build_arg_parser, main
from somabench.serve import ServerConfigError
from somabench.testing.scripted import (
    SCRIPTED_HEADER,
    SCRIPTED_MODEL_ID,
    Behavior,
    ScriptedServer,
)

HTTP_TIMEOUT = 10.0


def post_chat(base_url: str, body: dict) -> tuple[int, dict, dict]:
    req = urllib.request.Request(base_url + "/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:  # noqa: S310
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com"])
def test_refuses_non_loopback_host(host: str) -> None:
    with pytest.raises(ServerConfigError, match="only listens on loopback"):
        ScriptedServer([], host=host, max_requests=1, lifetime_seconds=1)


def test_cli_refuses_non_loopback_host() -> None:
    with pytest.raises(ServerConfigError, match="loopback"):
        main(["--asset", "smollm2-135m-instruct", "--host", "0.0.0.0"])  # before loading


def test_cli_parser_defaults_to_loopback() -> None:
    args = build_arg_parser().parse_args(["--asset", "smollm2-135m-instruct", "--port", "0"])
    assert args.host == "127.0.0.1" and args.port == 0


def test_endpoints_and_scripted_labels() -> None:
    script = [Behavior.reply("scripted hello world")]
    with serve_in_thread(script=script) as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        assert http_get_json(server.url + "/health")["status"] == "ok"
        models = http_get_json(server.base_url + "/models")
        assert [m["id"] for m in models["data"]] == [SCRIPTED_MODEL_ID]
        status, headers, body = post_chat(server.base_url, {
            "model": "whatever", "messages": user("one two three"), "max_tokens": 4})
        assert status == 200
        assert headers[SCRIPTED_HEADER] == "1"
        assert body["model"] == SCRIPTED_MODEL_ID
        assert body["choices"][0]["message"]["content"] == "scripted hello world"
        # script mode counts whitespace words: 3 prompt words, 3 reply words
        assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
        # after the script: the default behaviour echoes the last user message
        _, _, echoed = post_chat(server.base_url, {"model": "m", "messages": user("echo me")})
        assert echoed["choices"][0]["message"]["content"] == "echo me"
        stats = server_stats(server)
        assert stats["chat_requests"] == 2
        assert stats["by_endpoint"] == {"GET /health": 1, "GET /v1/models": 1,
                                        "POST /v1/chat/completions": 2, "GET /stats": 1}
        assert stats["by_model"] == {"whatever": 1, "m": 1}
        assert stats["behaviors"] == {"reply": 1, "echo": 1}
        assert server.requests[0]["max_tokens"] == 4


def test_status_behavior_sets_retry_after_and_error_body() -> None:
    with serve_in_thread(script=[Behavior.error(429, retry_after=1.5)]) as server:
        status, headers, body = post_chat(server.base_url, {"model": "m", "messages": user("x")})
    assert status == 429
    assert headers["Retry-After"] == "1.5"
    assert body["error"]["code"] == 429


def test_unknown_route_and_bad_json() -> None:
    with serve_in_thread(script=[]) as server:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url + "/nope", timeout=HTTP_TIMEOUT)  # noqa: S310
        assert err.value.code == 404
        req = urllib.request.Request(server.base_url + "/chat/completions", data=b"{not json",
                                     method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=HTTP_TIMEOUT)  # noqa: S310
        assert err.value.code == 400


def test_max_requests_shuts_the_server_down() -> None:
    with serve_in_thread(script=[], max_requests=2) as server:
        post_chat(server.base_url, {"model": "m", "messages": user("a")})
        post_chat(server.base_url, {"model": "m", "messages": user("b")})
        assert server.wait(HTTP_TIMEOUT), "server did not stop after max_requests"
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(server.url + "/health", timeout=HTTP_TIMEOUT)  # noqa: S310


def test_lifetime_shuts_the_server_down() -> None:
    with serve_in_thread(script=[], lifetime_seconds=0.2) as server:
        started = time.monotonic()
        assert server.wait(HTTP_TIMEOUT)
        assert time.monotonic() - started < HTTP_TIMEOUT
        assert not server.running


def test_stop_wakes_a_scripted_sleep() -> None:
    """A sleeping request must not keep a stopped server (or the test run) alive."""
    server = ScriptedServer([Behavior.sleep(60.0)], max_requests=5, lifetime_seconds=60)
    server.start()
    t = threading.Thread(target=lambda: post_chat_quiet(server.base_url), daemon=True)
    t.start()
    deadline = time.monotonic() + HTTP_TIMEOUT
    while server.stats()["in_flight"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    server.stop()
    t.join(HTTP_TIMEOUT)
    assert not t.is_alive()
    assert time.monotonic() - started < HTTP_TIMEOUT / 2


def post_chat_quiet(base_url: str) -> None:
    try:
        post_chat(base_url, {"model": "m", "messages": user("x")})
    except Exception:  # noqa: BLE001 - the server drops it on stop; that is the point
        pass


def test_behavior_validation() -> None:
    with pytest.raises(ServerConfigError):
        Behavior("teleport")
    with pytest.raises(ServerConfigError):
        Behavior("status")
    assert Behavior.from_dict({"kind": "status", "status": 503}).status == 503


def test_backend_mode_rejects_unknown_model_and_streaming(smollm2_server) -> None:
    calls_before = smollm2_server.stats()["chat_requests"]
    status, _, body = post_chat(smollm2_server.base_url,
                                {"model": "gpt-4o", "messages": user("hi"), "max_tokens": 2})
    assert status == 404 and "not served here" in body["error"]["message"]
    status, _, body = post_chat(smollm2_server.base_url, {
        "model": smollm2_server.model_id, "messages": user("hi"), "max_tokens": 2, "stream": True})
    assert status == 400 and "streaming" in body["error"]["message"]
    status, _, body = post_chat(smollm2_server.base_url, {
        "model": smollm2_server.model_id, "messages": user("hi"), "max_tokens": 2,
        "temperature": 0.7})
    assert status == 400 and "seed" in body["error"]["message"]
    assert smollm2_server.stats()["chat_requests"] == calls_before + 3
    assert SCRIPTED_HEADER not in post_chat(smollm2_server.base_url, {
        "model": "x", "messages": user("hi")})[1]


def test_scripted_process_serves_and_stops_by_itself(tmp_path) -> None:
    """The scripted double as its own process (`python -m somabench.testing.scripted`):
    ready line, answers, bound."""
    import re
    import subprocess
    import sys

    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"kind": "reply", "text": "from the cli"}]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "somabench.testing.scripted", "--script", str(script), "--port", "0",
         "--max-requests", "2", "--lifetime-seconds", "60"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        base_url = None
        for line in proc.stderr:  # the CLI logs "ready: base_url=..." once listening
            found = re.search(r"ready: base_url=(http://127\.0\.0\.1:\d+/v1)", line)
            if found:
                base_url = found.group(1)
                break
        assert base_url, "the CLI never reported ready"
        status, headers, body = post_chat(base_url, {"model": "m", "messages": user("x")})
        assert status == 200 and body["choices"][0]["message"]["content"] == "from the cli"
        assert http_get_json(base_url.removesuffix("/v1") + "/health")["status"] == "ok"
        assert proc.wait(timeout=30) == 0  # second request was the last allowed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
