"""Serving each dialogue's own LoRA adapter from one vLLM engine (``model.G_serve``): the
post-switch G turns of a switching method, when a run configures it.

Why here and not in backends: this is the switching methods' use of an engine (it exports a
session adapter, keys it by its weights' hash and puts the view behind the request cache), so it
sits beside the session adapter; the vllm backend stays a plain engine that knows nothing of
sessions or the cache.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Protocol

from somabench.backends.base import Completion, GenerationConfig
from somabench.backends.vllm_backend import VLLMBackend

ADAPTER_DIR = "vllm_adapters"  # under paths.cache_dir: exported session adapters


class ServedAdapter(Protocol):
    """What the G_serve engine needs of a session adapter
    (``somabench.switching.adapter.SessionAdapter``, contract 4); a protocol, so the backends
    need not import the switching package, which imports them."""

    @property
    def adapter_id(self) -> str | None: ...

    def save(self, directory: str | Path) -> Path: ...


def export_adapter(adapter: ServedAdapter, out_dir: Path) -> Path:
    """Save a session adapter in peft format (``SessionAdapter.save(dir)``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return Path(adapter.save(out_dir))


SERVER_KEY = "session_adapter_server"
"""The run-scoped slot (``MethodContext.shared``) of the G_serve engine."""


class SessionAdapterServer:
    """One vLLM engine running G (``enable_lora``) serving every dialogue's own adapter.

    ``backend_for(adapter, adapter_id)`` exports the adapter once (keyed by ``adapter_id``, the
    hash of its weights), registers it and returns a backend serving only it (behind the
    request cache when one is given); ``release(adapter_id)`` frees the engine slot and deletes
    the exported copy.
    """

    def __init__(self, engine: VLLMBackend, adapter_root: Path, cache: Any = None) -> None:
        if not engine.enable_lora:
            raise ValueError("model.G_serve must set enable_lora: true (one LoRA per dialogue)")
        self.engine = engine
        self.adapter_root = Path(adapter_root)
        self.cache = cache
        self.exports: dict[str, float] = {}  # adapter_id -> seconds spent exporting

    @classmethod
    def from_cfg(cls, cfg: Any, cache: Any = None) -> SessionAdapterServer:
        """Build from a run config: ``model.G_serve`` must serve the same model as ``model.G``."""
        from somabench.backends import build_backend
        from somabench.config import to_dict

        spec = to_dict(cfg.model.G_serve)
        g = to_dict(cfg.model.G)
        if spec.get("model_id") != g.get("model_id"):
            raise ValueError(f"model.G_serve.model_id={spec.get('model_id')!r} must equal "
                             f"model.G.model_id={g.get('model_id')!r}: the adapters are trained "
                             f"on G's weights")
        if spec.get("backend") != "vllm":
            raise ValueError(f"model.G_serve.backend={spec.get('backend')!r}: only vllm serves "
                             f"session adapters")
        for key in ("asset", "path"):
            if spec.get(key) is None:
                spec[key] = g.get(key)
        spec.setdefault("cache_dir", str(cfg.paths.cache_dir))
        engine = build_backend("G_serve", spec, cache_dir=str(cfg.paths.cache_dir))
        return cls(engine, Path(str(cfg.paths.cache_dir)) / ADAPTER_DIR, cache)

    def backend_for(self, adapter: ServedAdapter | None, adapter_id: str | None) -> Any:
        """The backend for one dialogue's turns (base G when it has no adapter)."""
        from somabench.cache import CachedBackend

        if adapter is None or adapter_id is None:
            view: Any = self.engine
        else:
            if adapter_id not in self.engine.adapters:
                started = time.perf_counter()
                target = self.adapter_root / adapter_id
                if not (target / "adapter_config.json").is_file():
                    target = export_adapter(adapter, target)
                self.engine.add_adapter(adapter_id, target)
                self.exports[adapter_id] = time.perf_counter() - started
            view = self.engine.with_adapter(adapter_id)
        return CachedBackend(view, self.cache) if self.cache is not None else view

    def close(self) -> None:
        """Stop the engine (``MethodContext.shared`` calls it when the run ends)."""
        self.engine.close()

    def release(self, adapter_id: str | None) -> None:
        if adapter_id is None or adapter_id not in self.engine.adapters:
            return
        path = Path(self.engine.adapters[adapter_id])
        self.engine.remove_adapter(adapter_id)
        if path.parent == self.adapter_root:
            shutil.rmtree(path, ignore_errors=True)


def session_server(ctx: Any) -> SessionAdapterServer | None:
    """The run's adapter server when ``model.G_serve`` is configured (built once per run)."""
    cfg = getattr(ctx, "cfg", None)
    model = cfg.get("model") if cfg is not None else None
    if model is None or model.get("G_serve") is None:
        return None
    server: SessionAdapterServer = ctx.shared(SERVER_KEY, lambda: SessionAdapterServer.from_cfg(ctx.cfg, ctx.cache))
    return server


def serve_switched_turn(ctx: Any, session: Any, plan: Any, gen: GenerationConfig,
                        adapter: ServedAdapter | None) -> Completion | None:
    """A post-switch G turn (``plan.messages``) through ``model.G_serve`` with this dialogue's
    adapter, or None when no G_serve is configured (the runner's G backend serves the turn).
    ``plan.extra["g_serve"]`` records the engine and the adapter id."""
    server = session_server(ctx)
    if server is None:
        return None
    adapter_id = (adapter.adapter_id or ctx.raw("G").adapter_id) if adapter is not None else None
    session.state["g_serve_adapter"] = adapter_id
    plan.extra["g_serve"] = {"engine": server.engine.describe()["engine"], "adapter_id": adapter_id}
    return server.backend_for(adapter, adapter_id).chat(plan.messages, gen)


def release_session(ctx: Any, session: Any) -> None:
    """Free the dialogue's adapter in the G_serve engine (called when the dialogue ends)."""
    server = ctx.shared(SERVER_KEY)
    if server is not None:
        server.release(session.state.pop("g_serve_adapter", None))
