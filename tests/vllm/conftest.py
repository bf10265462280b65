"""Fixtures for the tests that need a real vLLM (``make test-vllm``, run with .venv-vllm's python).

One engine per test session (SmolLM2-135M, float32, LoRA enabled: loading takes 1-2 min on a
shared 2-core CPU) and one OpenAI-compatible vLLM server process per session (loopback only,
free port, stopped at the end; a watchdog ``timeout`` kills it even if pytest dies). Every
test module here starts with ``pytestmark = pytest.mark.vllm`` and
``pytest.importorskip("vllm")``: skipped where vLLM is not installed (the main .venv).
"""

from __future__ import annotations

import os
import shutil
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from somabench.backends.loopback_process import LoopbackServerProcess

SMOLLM2_ASSET = "smollm2-135m-instruct"
SMOLLM2_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
# Engine settings for the tests: float32 so the hf comparison is not about bf16 rounding,
# a short context so the over-long prompt test is cheap, rank-8 LoRA like conf/method/soma.yaml.
ENGINE = {"dtype": "float32", "max_model_len": 512, "enforce_eager": True, "enable_lora": True,
          "max_lora_rank": 8, "max_loras": 4, "seed": 0}
KV_CACHE_GB = "1"  # VLLM_CPU_KVCACHE_SPACE: plenty for 512-token requests of a 135M model
SERVER_READY_TIMEOUT = 600.0  # seconds to wait for /v1/models (a loaded 2-core CPU is slow)
SERVER_POLL_SECONDS = 2.0  # how often start() asks /v1/models
SERVER_STOP_GRACE = 30.0  # terminate -> kill after this long
SERVER_LIFETIME = 1800  # the watchdog kills the server after this many seconds regardless
SERVED_NAME = "smollm2-vllm"
THREADS = os.environ.get("SOMABENCH_TEST_THREADS", "1")

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", KV_CACHE_GB)
os.environ.setdefault("OMP_NUM_THREADS", THREADS)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    from somabench import assets

    return Path(assets.resolve(SMOLLM2_ASSET))


@pytest.fixture(scope="session")
def engine(smollm2_dir: Path) -> Iterator[Any]:
    """The real vLLM engine on SmolLM2 (once per session; its engine process is shut down at
    the end, while pytest's output is still open)."""
    from somabench.backends.vllm_backend import VLLMBackend

    backend = VLLMBackend(model_id=SMOLLM2_MODEL_ID, path=str(smollm2_dir), **ENGINE)
    yield backend
    backend.shutdown()


@pytest.fixture(scope="session")
def hf_g(smollm2_dir: Path) -> Any:
    """The same model through transformers (float32), the reference the engine is compared to."""
    from somabench.backends.hf import HFBackend

    return HFBackend(model_id=SMOLLM2_MODEL_ID, path=str(smollm2_dir), dtype="float32",
                     num_threads=int(THREADS))


def get_json(url: str, timeout: float = 5.0) -> Any:
    import json

    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return json.loads(resp.read())


class VLLMServer(LoopbackServerProcess):
    """``python -m vllm.entrypoints.openai.api_server`` on 127.0.0.1:<free port> (its own
    process group, so stop() also ends the engine workers it spawns)."""

    def __init__(self, model_dir: Path, log_path: Path, port: int | None = None) -> None:
        super().__init__(log_path, port, poll_seconds=SERVER_POLL_SECONDS,
                         stop_grace_seconds=SERVER_STOP_GRACE, own_process_group=True)
        self.model_dir = model_dir
        self.model_id = SERVED_NAME

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
               "--model", str(self.model_dir), "--host", "127.0.0.1", "--port", str(self.port),
               "--served-model-name", SERVED_NAME, "--dtype", ENGINE["dtype"],
               "--max-model-len", str(ENGINE["max_model_len"]), "--enforce-eager",
               "--seed", "0", "--disable-log-stats"]
        watchdog = shutil.which("timeout")
        return [watchdog, "--signal=TERM", "--kill-after=30", str(SERVER_LIFETIME), *cmd] \
            if watchdog else cmd

    def start(self, timeout: float = SERVER_READY_TIMEOUT) -> VLLMServer:
        super().start(timeout)
        return self


@pytest.fixture(scope="session")
def vllm_server(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    """A real vLLM OpenAI-compatible server for the session (stopped at the end)."""
    log_path = tmp_path_factory.mktemp("vllm_server") / "server.log"
    server = VLLMServer(smollm2_dir, log_path).start()
    try:
        yield server
    finally:
        server.stop()
