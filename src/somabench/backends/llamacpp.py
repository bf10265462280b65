"""llama.cpp backend: somabench starts a llama.cpp server on 127.0.0.1 and talks OpenAI to it.

Why: F and the LLM judges only need text, and llama.cpp decodes the GGUF files the offline
packages ship 4-5.5x faster than transformers on CPUs (MODELS.md). G stays in torch (SOMA needs
its embeddings and LoRA). Use it with ``model.F.backend=llamacpp``; knobs in ``model.F.llamacpp``.

Two server engines (``llamacpp.engine``, registry :data:`ENGINES`):

* ``python``: llama-cpp-python's ``llama_cpp.server`` (the ``[llamacpp]`` extra; the sdist
  builds in ~4.5 min). It answers one request at a time.
* ``native``: llama.cpp's own ``llama-server`` (``make llama-server`` builds it from the same
  sdist's vendored llama.cpp). It decodes ``parallel`` requests together in one batch
  (continuous batching), so SOMA's M mined queries, a judge panel's verdicts and a batch of
  dialogues cost about one decode loop instead of one each.

The server is a child process (somabench.backends.llamacpp_server) bounded by the run: it is
stopped by ``close()``, at interpreter exit, and by its own watchdog when this process dies or
``lifetime_seconds`` pass. Requests go through :class:`OpenAIBackend` (retries, concurrency,
usage counts). The model runs at the GGUF's own quantization, so ``dtype`` in the fingerprint
and in ``run.json`` is that quantization (e.g. ``Q4_K_M``); ``describe()`` names the engine, and
the fingerprint holds the engine, its version and the slot count (batched decoding can change
the last bits of the logits, so answers from different engines never share a cache key).
"""

from __future__ import annotations

import atexit
import functools
import importlib.metadata
import logging
import os
import shutil
import subprocess
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from somabench.backends.base import BackendError
from somabench.backends.loopback_process import LOOPBACK_HOST, LoopbackServerProcess, free_port
from somabench.backends.openai_api import DEFAULT_BACKOFF_JITTER, OpenAIBackend

log = logging.getLogger(__name__)

READY_POLL_SECONDS = 0.5  # how often start() asks the server whether it is up
STOP_GRACE_SECONDS = 10.0  # terminate -> kill after this long
LOG_TAIL_CHARS = 2000  # how much of the server log a startup error quotes
FILE_TYPE_PREFIX = "MOSTLY_"  # gguf.LlamaFileType names: MOSTLY_Q4_K_M -> Q4_K_M
NATIVE_BINARY = "llama-server"
NATIVE_BINARY_ENV = "SOMABENCH_LLAMA_SERVER"  # path to llama-server, when not given in the config
VERSION_TIMEOUT_SECONDS = 30  # `llama-server --version` answers at once


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


@dataclass(frozen=True)
class ServerSettings:
    """What every engine's command line needs (from ``model.<role>.llamacpp``)."""

    gguf: Path
    alias: str
    port: int
    n_ctx: int
    n_threads: int | None
    n_batch: int
    parallel: int


class PythonEngine:
    """llama-cpp-python's ``llama_cpp.server``: one request at a time."""

    name = "llama_cpp.server"
    batches = False  # one slot, whatever ``parallel`` says
    prefix_reuse = "always"
    """llama-cpp-python's ``Llama`` reuses the longest prefix it shares with the previous prompt
    on every call (no per-request switch) and reports no cached-token count."""

    @classmethod
    def installed(cls, binary: str | None = None) -> PythonEngine:
        """The engine, or a clear error when llama-cpp-python is missing."""
        if llama_cpp_version() is None:
            raise BackendError(
                "llamacpp.engine=python needs llama-cpp-python, which is not installed. Fix: "
                "pip install -e '.[llamacpp]' (builds from source in ~5 min), or "
                "llamacpp.engine=native after `make llama-server`, or backend=hf.",
                reason="not_found")
        return cls()

    def version(self) -> str | None:
        return llama_cpp_version()

    def launcher_args(self) -> list[str]:
        return []

    def server_args(self, s: ServerSettings) -> list[str]:
        args = ["--model", str(s.gguf), "--model_alias", s.alias, "--host", LOOPBACK_HOST,
                "--port", str(s.port), "--n_ctx", str(s.n_ctx), "--n_batch", str(s.n_batch)]
        if s.n_threads:
            args += ["--n_threads", str(s.n_threads)]
        return args


def find_llama_server(binary: str | None) -> Path:
    """llama.cpp's ``llama-server``: ``binary``, else $SOMABENCH_LLAMA_SERVER, else next to this
    Python (``make llama-server`` installs it there), else on PATH."""
    tried = []
    for candidate in (binary, os.environ.get(NATIVE_BINARY_ENV),
                      str(Path(sys.executable).parent / NATIVE_BINARY),
                      shutil.which(NATIVE_BINARY)):
        if not candidate:
            continue
        path = Path(candidate).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path
        tried.append(str(path))
        if candidate == binary:  # an explicit path that is wrong is an error, not a hint
            break
    raise BackendError(
        f"llamacpp.engine=native needs llama.cpp's {NATIVE_BINARY} (looked at: "
        f"{', '.join(tried) or 'PATH'}). Fix: `make llama-server` (builds it from the "
        f"llama-cpp-python sdist's llama.cpp, ~5 min on 2 cores), or set "
        f"model.<role>.llamacpp.binary=/path/to/{NATIVE_BINARY} or ${NATIVE_BINARY_ENV}, or use "
        f"llamacpp.engine=python.", reason="not_found")


@functools.cache
def native_version(binary: str) -> str | None:
    """``llama-server --version``'s version line, e.g. ``0.5.0-dev (build 1, commit 0c1e570)``."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True,  # noqa: S603
                             timeout=VERSION_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in (out.stdout + out.stderr).splitlines():
        if line.startswith("version:"):
            return line.removeprefix("version:").strip()
    return None


class NativeEngine:
    """llama.cpp's ``llama-server``: ``parallel`` slots decoded in one batch."""

    name = NATIVE_BINARY
    batches = True
    prefix_reuse = "per request"
    """llama-server honours the request field ``cache_prompt`` (reuse the slot's KV cache of the
    previous prompt) and reports ``timings.cache_n``."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary

    @classmethod
    def installed(cls, binary: str | None = None) -> NativeEngine:
        """The engine on the ``llama-server`` found by :func:`find_llama_server`."""
        return cls(find_llama_server(binary))

    def version(self) -> str | None:
        return native_version(str(self.binary))

    def launcher_args(self) -> list[str]:
        return ["--exec", str(self.binary)]

    def server_args(self, s: ServerSettings) -> list[str]:
        # each slot gets the full n_ctx: a per-slot cache splits --ctx-size over the slots
        args = ["--model", str(s.gguf), "--alias", s.alias, "--host", LOOPBACK_HOST,
                "--port", str(s.port), "--ctx-size", str(s.n_ctx * s.parallel),
                "--parallel", str(s.parallel), "--no-kv-unified", "--batch-size", str(s.n_batch),
                "--no-webui"]
        if s.n_threads:
            args += ["--threads", str(s.n_threads), "--threads-batch", str(s.n_threads)]
        return args


ENGINES: dict[str, type[PythonEngine] | type[NativeEngine]] = {
    "python": PythonEngine, "native": NativeEngine}


def build_engine(name: str, binary: str | None = None) -> PythonEngine | NativeEngine:
    if name not in ENGINES:
        raise BackendError(f"model.<role>.llamacpp.engine={name!r}; one of {sorted(ENGINES)}",
                           reason="bad_request")
    return ENGINES[name].installed(binary)


class LlamaCppServer(LoopbackServerProcess):
    """One llama.cpp server child process (``engine``) serving one GGUF on 127.0.0.1."""

    def __init__(self, gguf: Path, alias: str, *, n_ctx: int, n_threads: int | None,
                 n_batch: int, startup_timeout: float, lifetime_seconds: float | None,
                 log_dir: Path, extra_args: list[str] | None = None,
                 engine: PythonEngine | NativeEngine | None = None, parallel: int = 1) -> None:
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
        self.engine = engine if engine is not None else PythonEngine()
        if parallel < 1:
            raise ValueError(f"llamacpp.parallel must be >= 1, got {parallel}")
        self.parallel = int(parallel) if self.engine.batches else 1

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "somabench.backends.llamacpp_server",
               "--parent-pid", str(os.getpid())]
        if self.lifetime_seconds is not None:
            cmd += ["--lifetime-seconds", str(self.lifetime_seconds)]
        settings = ServerSettings(self.gguf, self.alias, self.port, self.n_ctx, self.n_threads,
                                  self.n_batch, self.parallel)
        return [*cmd, *self.engine.launcher_args(), "--",
                *self.engine.server_args(settings), *self.extra_args]

    def start(self, timeout: float | None = None) -> LlamaCppServer:
        super().start(self.startup_timeout if timeout is None else timeout)
        atexit.register(self.stop)
        return self

    def on_ready(self, seconds: float) -> None:
        log.info("llama.cpp %s for %s (%s, %d slot(s)) ready at %s in %.1fs (log %s)",
                 self.engine.name, self.alias, self.gguf.name, self.parallel, self.base_url,
                 seconds, self.log_path)

    def failure(self, what: str, reason: str) -> Exception:
        return BackendError(
            f"the llama.cpp server for {self.alias} ({self.gguf}) {what}. Its log "
            f"({self.log_path}) ends with:\n{self.log_tail(LOG_TAIL_CHARS)}\nFix: check that "
            f"the {self.engine.name} engine is installed (engine=python: pip install -e "
            f"'.[llamacpp]'; engine=native: make llama-server) and the GGUF loads, or raise "
            f"model.<role>.llamacpp.startup_timeout.", reason=reason)

    def stop(self) -> None:
        running = self.proc is not None and self.proc.poll() is None
        super().stop()
        if running:
            log.info("llama.cpp server for %s stopped", self.alias)


class LlamaCppBackend(OpenAIBackend):
    """A GGUF served by llama.cpp on loopback, spoken to through the OpenAI backend.

    Args beyond :class:`OpenAIBackend`'s client knobs:
        asset / gguf_file: an offline asset (its GGUF is assembled once from the cached wheels)
            or a GGUF path; ``llamacpp.gguf_file`` wins over ``asset``.
        llamacpp: server knobs (``n_ctx``, ``n_threads``, ``n_batch``, ``startup_timeout``,
            ``lifetime_seconds``, ``extra_args``), from ``model.<role>.llamacpp``.
        prefix_cache: engine=native sends ``cache_prompt`` with this value on every request
            (llama-server's default is on; the plain Original turns it off, so it re-computes its
            history; ``method=original_prefix_cache`` turns it on). engine=python cannot switch:
            llama-cpp-python always reuses the previous prompt's prefix (``describe`` says so).
    """

    kind = "llamacpp"

    def __init__(self, model_id: str, *, llamacpp: dict[str, Any], asset: str | None = None,
                 gguf_file: str | None = None, cache_dir: str | None = None,
                 timeout: float, max_retries: int, backoff_initial: float, backoff_max: float,
                 concurrency: int, system_prompt: str | None = None, revision: str | None = None,
                 stream: bool = False, prefix_cache: bool = False,
                 backoff_jitter: float = DEFAULT_BACKOFF_JITTER, **_: Any) -> None:
        knobs = dict(llamacpp)
        self.prefix_cache = bool(prefix_cache)
        self.engine = build_engine(str(knobs.get("engine") or "python"), knobs.get("binary"))
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
            engine=self.engine, parallel=int(knobs.get("parallel") or 1),
        ).start()
        weakref.finalize(self, self.server.stop)
        tokenizer = asset if asset else None  # local tokenizer for count_tokens (same vocab)
        super().__init__(model_id, self.server.base_url, timeout=timeout, max_retries=max_retries,
                         backoff_initial=backoff_initial, backoff_max=backoff_max,
                         backoff_jitter=backoff_jitter, concurrency=concurrency, api_key_env=None, tokenizer=tokenizer,
                         system_prompt=system_prompt, revision=revision,
                         extra_body=({"cache_prompt": self.prefix_cache}
                                     if self.engine.prefix_reuse == "per request" else None),
                         stream=stream)  # +model.<role>.stream=true: TTFT (somabench.latency)

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
        """No port (it changes every run); the GGUF, the engine and its version instead.

        engine=python keeps the keys it always had (its cached answers stay valid); the native
        server adds its name and slot count: batched decoding may change the last bits."""
        fp = {key: value for key, value in super().fingerprint().items() if key != "base_url"}
        fp.update(gguf=self.asset or str(self.gguf), dtype=self.quantization,
                  engine_version=self.engine.version())
        if self.engine.batches:
            fp.update(engine=self.engine.name, parallel=self.server.parallel)
        if self.prefix_cache:  # absent when off: the plain Original's cached answers stay valid
            fp["prefix_cache"] = True
        return fp

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "engine": "llama.cpp", "server": self.engine.name,
                "engine_version": self.engine.version(), "parallel": self.server.parallel,
                "n_threads": self.server.n_threads,
                "quantization": self.quantization, "gguf_path": str(self.gguf),
                "prefix_cache": self.prefix_cache, "prefix_reuse": self.engine.prefix_reuse,
                "dtype_reason": f"llama.cpp computes with the GGUF's own quantization "
                                f"({self.quantization}); model dtype does not apply",
                "server_log": str(self.server.log_path)}

    def close(self) -> None:
        self.server.stop()
