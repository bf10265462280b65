"""The llama.cpp backend: a real llama_cpp.server on 127.0.0.1 serving the SmolLM2 GGUF, and
the watchdog that bounds the server's life. Real-server tests skip when llama-cpp-python (the
optional ``[llamacpp]`` extra) is not installed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from somabench.backends.llamacpp_server import main as wrapper_main

SMOLLM2_ASSET = "smollm2-135m-instruct"
SMOLLM2_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EXIT_WAIT_SECONDS = 30.0  # generous: the machine is shared; the watchdog polls every second
KNOBS = {"n_ctx": 1024, "n_threads": 1, "n_batch": 256, "startup_timeout": 180,
         "lifetime_seconds": 600, "extra_args": []}
CLIENT = {"timeout": 120.0, "max_retries": 1, "backoff_initial": 0.1, "backoff_max": 1.0,
          "concurrency": 2}

needs_llama_cpp = pytest.mark.skipif(
    __import__("importlib").util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed (optional extra: pip install -e '.[llamacpp]')")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie (exited, not yet reaped by its parent) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z"


def _wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + EXIT_WAIT_SECONDS
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.2)
    return False


def test_wrapper_refuses_non_loopback_host() -> None:
    assert wrapper_main(["--", "--model", "x.gguf", "--host", "0.0.0.0"]) == 2


def test_watchdog_exits_when_lifetime_is_over() -> None:
    code = ("import time; from somabench.backends.llamacpp_server import watchdog; "
            "watchdog(None, 0.5); time.sleep(60)")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], timeout=EXIT_WAIT_SECONDS * 2)
    assert proc.returncode == 0 and time.monotonic() - started < EXIT_WAIT_SECONDS * 2


def test_watchdog_exits_when_parent_dies(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    child = ("import os, time; from somabench.backends.llamacpp_server import watchdog; "
             f"watchdog(os.getppid(), None); open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
             "time.sleep(120)")
    parent = (f"import subprocess, sys, time, os; subprocess.Popen([sys.executable, '-c', {child!r}]); "
              f"[time.sleep(0.2) for _ in range(600) if not os.path.exists({str(pid_file)!r})]")
    subprocess.run([sys.executable, "-c", parent], timeout=180, check=True)  # parent exits here
    pid = int(pid_file.read_text())
    if not _wait_gone(pid):
        os.kill(pid, 9)
        pytest.fail("the orphaned child kept running after its parent exited")


def serve_two_questions(knobs: dict) -> Any:
    """A llamacpp backend for the SmolLM2 GGUF with ``knobs``, after it answered a batch of two
    short questions on loopback (each ok, with usage counts); the caller closes it."""
    from somabench.backends import build_backend
    from somabench.backends.base import GenerationConfig

    cfg = {"backend": "llamacpp", "model_id": SMOLLM2_MODEL_ID, "asset": SMOLLM2_ASSET,
           "path": None, "dtype": "auto", "device": "cpu", "api_key_env": "OPENAI_API_KEY",
           "base_url": None, "llamacpp": knobs, **CLIENT}
    backend = build_backend("F", cfg)
    try:
        assert backend.base_url.startswith("http://127.0.0.1:")
        gen = GenerationConfig(max_new_tokens=8)
        batch = backend.chat_batch([[{"role": "user", "content": "What is 2+2?"}],
                                    [{"role": "user", "content": "Name a colour."}]], gen)
        for c in batch:
            assert c.status == "ok" and c.text
            assert c.prompt_tokens and 0 < c.completion_tokens <= 8
    except BaseException:
        backend.close()
        raise
    return backend


@needs_llama_cpp
def test_llamacpp_backend_serves_the_gguf_and_stops(tmp_path: Path, tiny_assets) -> None:
    backend = serve_two_questions(KNOBS)
    try:
        info = backend.describe()
        assert info["engine"] == "llama.cpp" and info["quantization"] == "Q4_1"
        assert info["n_threads"] == 1 and "--n_threads" in backend.server.command()
        from somabench.data.preflight import context_window

        assert context_window(backend) == int(KNOBS["n_ctx"])  # the preflight checks turns
        fp = backend.fingerprint()
        assert "base_url" not in fp and fp["dtype"] == "Q4_1" and fp["gguf"] == SMOLLM2_ASSET
        # the keys it always had: answers cached before engine=native existed stay valid
        assert "engine" not in fp and "parallel" not in fp
        pid = backend.server.proc.pid
    finally:
        backend.close()
    assert _wait_gone(pid)


def test_null_threads_follow_torchs_thread_count(monkeypatch, tmp_path: Path) -> None:
    """``n_threads: null`` uses torch's thread count (llama-cpp-python's default is half the
    logical CPUs: one idle core on a 2-core machine), and the server is told so."""
    import torch

    from somabench.backends.llamacpp import LlamaCppServer, default_threads

    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    assert default_threads() == 3
    server = LlamaCppServer(tmp_path / "m.gguf", "m", n_ctx=512, n_threads=default_threads(),
                            n_batch=64, startup_timeout=1, lifetime_seconds=None,
                            log_dir=tmp_path)
    command = server.command()
    assert command[command.index("--n_threads") + 1] == "3"
