"""llama.cpp's own ``llama-server`` (``model.<role>.llamacpp.engine=native``): finding the binary,
its command line (loopback, a full ``n_ctx`` per slot), the wrapper that bounds its life, and a
real server answering a batch when ``make llama-server`` has built one (skipped otherwise)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from somabench.backends.base import BackendError
from somabench.backends.llamacpp import (
    NATIVE_BINARY_ENV,
    LlamaCppServer,
    NativeEngine,
    PythonEngine,
    build_engine,
    find_llama_server,
)

from .test_llamacpp import EXIT_WAIT_SECONDS, _wait_gone, serve_two_questions

REQUIRE_ENV = "SOMABENCH_REQUIRE_LLAMA_SERVER"  # set by `make test-llama-server`: never skip


def _fake_binary(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "llama-server"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def _installed_binary() -> Path | None:
    try:
        return find_llama_server(None)
    except BackendError:
        return None


def test_an_explicit_binary_that_is_missing_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(BackendError) as err:
        find_llama_server(str(tmp_path / "nope" / "llama-server"))
    assert "nope/llama-server" in str(err.value) and "make llama-server" in str(err.value)


def test_the_binary_is_found_through_the_environment(monkeypatch, tmp_path: Path) -> None:
    fake = _fake_binary(tmp_path, "exit 0")
    monkeypatch.setenv(NATIVE_BINARY_ENV, str(fake))
    assert find_llama_server(None) == fake
    assert isinstance(build_engine("native", str(fake)), NativeEngine)
    with pytest.raises(BackendError, match="one of"):
        build_engine("vulkan")


def test_native_command_line_gives_every_slot_the_context_and_listens_on_loopback(
        tmp_path: Path) -> None:
    fake = _fake_binary(tmp_path, "exit 0")
    server = LlamaCppServer(tmp_path / "m.gguf", "m", n_ctx=1024, n_threads=2, n_batch=256,
                            startup_timeout=1, lifetime_seconds=60, log_dir=tmp_path,
                            engine=NativeEngine(fake), parallel=3)
    cmd = server.command()
    wrapper, args = cmd[:cmd.index("--")], cmd[cmd.index("--") + 1:]
    assert wrapper[wrapper.index("--exec") + 1] == str(fake)
    assert wrapper[wrapper.index("--lifetime-seconds") + 1] == "60"
    assert args[args.index("--host") + 1] == "127.0.0.1"
    assert args[args.index("--ctx-size") + 1] == str(1024 * 3)  # the server splits it over slots
    assert args[args.index("--parallel") + 1] == "3"
    assert args[args.index("--threads") + 1] == "2"
    # the default engine is still llama-cpp-python's server, with its own flag names and one slot
    python = LlamaCppServer(tmp_path / "m.gguf", "m", n_ctx=1024, n_threads=2, n_batch=256,
                            startup_timeout=1, lifetime_seconds=None, log_dir=tmp_path,
                            parallel=3)
    python_cmd = python.command()
    assert "--exec" not in python_cmd and "--n_ctx" in python_cmd
    assert python.parallel == 1 and "--parallel" not in python_cmd
    with pytest.raises(ValueError, match="parallel"):
        LlamaCppServer(tmp_path / "m.gguf", "m", n_ctx=1, n_threads=1, n_batch=1,
                       startup_timeout=1, lifetime_seconds=None, log_dir=tmp_path,
                       engine=PythonEngine(), parallel=0)


def _spawn_wrapper(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    """The wrapper running a fake server that records its pid and sleeps; (wrapper, child pid)."""
    pid_file = tmp_path / "server.pid"
    fake = _fake_binary(tmp_path, f"echo $$ > {pid_file}\nexec sleep 120")
    proc = subprocess.Popen([sys.executable, "-m", "somabench.backends.llamacpp_server", *extra,
                             "--exec", str(fake), "--", "--port", "1"])
    deadline = time.monotonic() + EXIT_WAIT_SECONDS
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline, "the fake server never started"
        time.sleep(0.1)
    return proc, int(pid_file.read_text())


def test_the_server_dies_with_a_killed_wrapper(tmp_path: Path) -> None:
    """SIGKILL leaves no handler to run: the kernel's parent-death signal stops the binary."""
    proc, child = _spawn_wrapper(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=EXIT_WAIT_SECONDS)
    if not _wait_gone(child):
        os.kill(child, signal.SIGKILL)
        pytest.fail("llama-server kept running after its wrapper was killed")


def test_the_server_stops_at_the_end_of_its_lifetime_and_on_sigterm(tmp_path: Path) -> None:
    proc, child = _spawn_wrapper(tmp_path, "--lifetime-seconds", "1")
    assert proc.wait(timeout=EXIT_WAIT_SECONDS) == 0  # the watchdog's exit
    assert _wait_gone(child)
    (tmp_path / "server.pid").unlink()
    proc, child = _spawn_wrapper(tmp_path)
    proc.terminate()  # LoopbackServerProcess.stop()
    assert proc.wait(timeout=EXIT_WAIT_SECONDS) == 128 + signal.SIGTERM
    assert _wait_gone(child)


@pytest.mark.skipif(_installed_binary() is None and not os.environ.get(REQUIRE_ENV),
                    reason="llama.cpp's llama-server is not built (make llama-server)")
def test_native_server_serves_the_gguf_with_parallel_slots(tmp_path: Path, tiny_assets) -> None:
    knobs = {"engine": "native", "parallel": 2, "binary": None, "n_ctx": 1024, "n_threads": 1,
             "n_batch": 256, "startup_timeout": 180, "lifetime_seconds": 600, "extra_args": []}
    backend = serve_two_questions(knobs)
    try:
        info = backend.describe()
        assert info["server"] == "llama-server" and info["parallel"] == 2
        assert info["engine_version"] and info["quantization"] == "Q4_1"
        fp = backend.fingerprint()
        assert fp["engine"] == "llama-server" and fp["parallel"] == 2
        assert backend.context_window == 1024
        wrapper_pid = backend.server.proc.pid
    finally:
        backend.close()
    assert _wait_gone(wrapper_pid)


def _two_turns(prefix_cache: bool) -> list:
    """Two turns of one dialogue on a fresh native server: (turn-1, turn-2) completions."""
    from somabench.backends import build_backend
    from somabench.backends.base import GenerationConfig

    from .test_llamacpp import CLIENT, SMOLLM2_ASSET, SMOLLM2_MODEL_ID

    knobs = {"engine": "native", "parallel": 1, "binary": None, "n_ctx": 1024, "n_threads": 1,
             "n_batch": 256, "startup_timeout": 180, "lifetime_seconds": 600, "extra_args": []}
    cfg = {"backend": "llamacpp", "model_id": SMOLLM2_MODEL_ID, "asset": SMOLLM2_ASSET,
           "path": None, "dtype": "auto", "device": "cpu", "api_key_env": "OPENAI_API_KEY",
           "base_url": None, "llamacpp": knobs, "prefix_cache": prefix_cache, **CLIENT}
    backend = build_backend("F", cfg)
    try:
        assert backend.describe()["prefix_cache"] is prefix_cache
        gen = GenerationConfig(max_new_tokens=12)
        history = [{"role": "user", "content": "Tell me one fact about the Moon."}]
        first = backend.chat(history, gen)
        history += [{"role": "assistant", "content": first.text},
                    {"role": "user", "content": "And one about the Sun?"}]
        return [first, backend.chat(history, gen)]
    finally:
        backend.close()


@pytest.mark.skipif(_installed_binary() is None and not os.environ.get(REQUIRE_ENV),
                    reason="llama.cpp's llama-server is not built (make llama-server)")
def test_cache_prompt_follows_the_prefix_cache_knob_with_the_same_answers(tiny_assets) -> None:
    """Issue 26: the plain Original re-computes its history (cache_prompt off, cache_n 0); with
    prefix_cache the second turn reads the first turn's tokens from the slot's cache."""
    plain = _two_turns(prefix_cache=False)
    cached = _two_turns(prefix_cache=True)
    assert [c.text for c in cached] == [c.text for c in plain]  # greedy: same answers
    assert plain[1].cached_prompt_tokens == 0
    assert cached[1].cached_prompt_tokens is not None
    assert 0 < cached[1].cached_prompt_tokens < cached[1].prompt_tokens
