"""llama.cpp backend: somabench starts ``llama_cpp.server`` on 127.0.0.1 and talks OpenAI to it.

Why: F and the LLM judges only need text, and llama.cpp decodes the GGUF files the offline
packages ship 4-5.5x faster than transformers on CPUs (MODELS.md). G stays in torch (SOMA needs
its embeddings and LoRA). An optional extra: ``pip install -e '.[llamacpp]'`` (the sdist builds
in ~4.5 min). Use it with ``model.F.backend=llamacpp``; knobs in ``model.F.llamacpp``.

The server is a child process (somabench.backends.llamacpp_server) bounded by the run: it is
stopped by ``close()``, at interpreter exit, and by its own watchdog when this process dies or
``lifetime_seconds`` pass. Requests go through :class:`OpenAIBackend` (retries, concurrency,
usage counts). The model runs at the GGUF's own quantization, so ``dtype`` in the fingerprint
and in ``run.json`` is that quantization (e.g. ``Q4_K_M``); ``describe()`` names the engine.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import logging
import os
import sys
import weakref
from pathlib import Path
from typing import Any

from somabench.backends.base import BackendError
from somabench.backends.loopback_process import LOOPBACK_HOST, LoopbackServerProcess, free_port
from somabench.backends.openai_api import OpenAIBackend
from somabench.registry import backends

log = logging.getLogger(__name__)

READY_POLL_SECONDS = 0.5  # how often start() asks the server whether it is up
STOP_GRACE_SECONDS = 10.0  # terminate -> kill after this long
LOG_TAIL_CHARS = 2000  # how much of the server log a startup error quotes
FILE_TYPE_PREFIX = "MOSTLY_"  # gguf.LlamaFileType names: MOSTLY_Q4_K_M -> Q4_K_M


def llama_cpp_version() -> str | None:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return None


def gguf_quantization(path: Path) -> str | None:
    """The GGUF's file type (e.g. ``Q4_K_M``) from its header; None when unreadable."""
    try:
        import gguf

        reader = gguf.GGUFReader(str(path))
        field = reader.fields.get("general.file_type")
        if field is None:
            return None
        value = int(field.parts[field.data[0]][0])
        name = gguf.LlamaFileType(value).name
        return name.removeprefix(FILE_TYPE_PREFIX)
    except Exception as exc:  # noqa: BLE001 - a label only; never fail a run for it
        log.warning("could not read the quantization of %s: %s", path, exc)
        return None


def default_threads() -> int:
    """Threads for ``n_threads: null``: as many as torch uses for G (its default is the physical
    cores). llama-cpp-python's own default, half the logical CPUs, assumes SMT and left one of
    this 2-core machine's cores idle (decode 26.6 vs 31.3 tok/s, back-to-back runs)."""
    try:
        import torch

        return max(1, int(torch.get_num_threads()))
    except ImportError:  # pragma: no cover - torch is a core dependency
        return max(1, os.cpu_count() or 1)


class LlamaCppServer(LoopbackServerProcess):
    """One ``llama_cpp.server`` child process serving one GGUF on 127.0.0.1."""

    def __init__(self, gguf: Path, alias: str, *, n_ctx: int, n_threads: int | None,
                 n_batch: int, startup_timeout: float, lifetime_seconds: float | None,
                 log_dir: Path, extra_args: list[str] | None = None) -> None:
        port = free_port()
        super().__init__(log_dir / f"llamacpp-{os.getpid()}-{port}.log", port,
                         poll_seconds=READY_POLL_SECONDS, stop_grace_seconds=STOP_GRACE_SECONDS)
        self.gguf = gguf
        self.alias = alias
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_batch = n_batch
        self.startup_timeout = startup_timeout
        self.lifetime_seconds = lifetime_seconds
        self.extra_args = list(extra_args or [])

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "somabench.backends.llamacpp_server",
               "--parent-pid", str(os.getpid())]
        if self.lifetime_seconds is not None:
            cmd += ["--lifetime-seconds", str(self.lifetime_seconds)]
        cmd += ["--", "--model", str(self.gguf), "--model_alias", self.alias,
                "--host", LOOPBACK_HOST, "--port", str(self.port), "--n_ctx", str(self.n_ctx),
                "--n_batch", str(self.n_batch)]
        if self.n_threads:
            cmd += ["--n_threads", str(self.n_threads)]
        return cmd + self.extra_args

    def start(self, timeout: float | None = None) -> LlamaCppServer:
        super().start(self.startup_timeout if timeout is None else timeout)
        atexit.register(self.stop)
        return self

    def on_ready(self, seconds: float) -> None:
        log.info("llama.cpp server for %s (%s) ready at %s in %.1fs (log %s)", self.alias,
                 self.gguf.name, self.base_url, seconds, self.log_path)

    def failure(self, what: str, reason: str) -> Exception:
        return BackendError(
            f"the llama.cpp server for {self.alias} ({self.gguf}) {what}. Its log "
            f"({self.log_path}) ends with:\n{self.log_tail(LOG_TAIL_CHARS)}\nFix: check that "
            f"llama-cpp-python is installed (pip install -e '.[llamacpp]') and the GGUF loads, or "
            f"raise model.<role>.llamacpp.startup_timeout.", reason=reason)

    def stop(self) -> None:
        running = self.proc is not None and self.proc.poll() is None
        super().stop()
        if running:
            log.info("llama.cpp server for %s stopped", self.alias)


@backends.register("llamacpp")
class LlamaCppBackend(OpenAIBackend):
    """A GGUF served by llama.cpp on loopback, spoken to through the OpenAI backend.

    Args beyond :class:`OpenAIBackend`'s client knobs:
        asset / gguf_file: an offline asset (its GGUF is assembled once from the cached wheels)
            or a GGUF path; ``llamacpp.gguf_file`` wins over ``asset``.
        llamacpp: server knobs (``n_ctx``, ``n_threads``, ``n_batch``, ``startup_timeout``,
            ``lifetime_seconds``, ``extra_args``), from ``model.<role>.llamacpp``.
    """

    kind = "llamacpp"

    def __init__(self, model_id: str, *, llamacpp: dict[str, Any], asset: str | None = None,
                 gguf_file: str | None = None, cache_dir: str | None = None,
                 timeout: float, max_retries: int, backoff_initial: float, backoff_max: float,
                 concurrency: int, system_prompt: str | None = None, revision: str | None = None,
                 **_: Any) -> None:
        if llama_cpp_version() is None:
            raise BackendError(
                f"model backend 'llamacpp' ({model_id}) needs llama-cpp-python, which is not "
                f"installed. Fix: pip install -e '.[llamacpp]' (builds from source in ~5 min), "
                f"or use backend=hf.", reason="not_found")
        knobs = dict(llamacpp)
        self.gguf = self._locate(model_id, knobs.get("gguf_file") or gguf_file, asset, cache_dir)
        self.quantization = gguf_quantization(self.gguf)
        self.asset = asset
        from somabench.assets import default_cache_dir

        self.server = LlamaCppServer(
            self.gguf, model_id, n_ctx=int(knobs["n_ctx"]),
            n_threads=int(knobs["n_threads"]) if knobs.get("n_threads") else default_threads(),
            n_batch=int(knobs["n_batch"]), startup_timeout=float(knobs["startup_timeout"]),
            lifetime_seconds=(float(knobs["lifetime_seconds"])
                              if knobs.get("lifetime_seconds") is not None else None),
            log_dir=Path(cache_dir or default_cache_dir()) / "logs",
            extra_args=[str(a) for a in knobs.get("extra_args") or []],
        ).start()
        weakref.finalize(self, self.server.stop)
        tokenizer = asset if asset else None  # local tokenizer for count_tokens (same vocab)
        super().__init__(model_id, self.server.base_url, timeout=timeout, max_retries=max_retries,
                         backoff_initial=backoff_initial, backoff_max=backoff_max,
                         concurrency=concurrency, api_key_env=None, tokenizer=tokenizer,
                         system_prompt=system_prompt, revision=revision)

    @staticmethod
    def _locate(model_id: str, gguf_file: str | None, asset: str | None,
                cache_dir: str | None) -> Path:
        if gguf_file:
            path = Path(gguf_file).expanduser()
            if not path.is_file():
                raise BackendError(f"llamacpp.gguf_file={gguf_file} for {model_id} does not exist",
                                   reason="not_found")
            return path
        if asset:
            from somabench import assets

            return assets.gguf_file(asset, cache_dir)
        raise BackendError(f"backend llamacpp for {model_id} needs a GGUF: set "
                           f"model.<role>.asset or model.<role>.llamacpp.gguf_file",
                           reason="not_found")

    @property
    def context_window(self) -> int:
        """The server's ``n_ctx``: the most llama.cpp accepts, so the preflight can check every
        turn against it (the OpenAI-compatible API does not report a window)."""
        return self.server.n_ctx

    def fingerprint(self) -> dict[str, Any]:
        """No port (it changes every run); the GGUF and the engine version instead."""
        fp = {key: value for key, value in super().fingerprint().items() if key != "base_url"}
        fp.update(gguf=self.asset or str(self.gguf), dtype=self.quantization,
                  engine_version=llama_cpp_version())
        return fp

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "engine": "llama.cpp", "n_threads": self.server.n_threads,
                "quantization": self.quantization, "gguf_path": str(self.gguf),
                "dtype_reason": f"llama.cpp computes with the GGUF's own quantization "
                                f"({self.quantization}); model dtype does not apply",
                "server_log": str(self.server.log_path)}

    def close(self) -> None:
        self.server.stop()
