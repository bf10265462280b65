"""Model backends behind one protocol, built from a ``model.F`` / ``model.G`` config entry."""

from __future__ import annotations

import logging
from typing import Any

from somabench.backends.base import Backend, BackendBase, Completion, GenerationConfig, Message
from somabench.registry import backends

log = logging.getLogger(__name__)

# Heavy or optional backends register lazily: importing somabench never imports them.
backends.register("hf", "somabench.backends.hf:HFBackend")
backends.register("openai", "somabench.backends.openai_api:OpenAIBackend")
backends.register("vllm", "somabench.backends.vllm_backend:VLLMBackend")
backends.register("llamacpp", "somabench.backends.llamacpp:LlamaCppBackend")  # extra [llamacpp]
# A test double, in the testing namespace: run.json lists it under test_doubles and reports warn.
backends.register("testing.fake", "somabench.testing.fake:FakeBackend")

__all__ = ["Backend", "BackendBase", "Completion", "GenerationConfig", "Message", "build_backend"]


class ModelLoadError(RuntimeError):
    """A model cannot be loaded here; the message says how to point the role elsewhere."""


def how_to_point_elsewhere(role: str) -> str:
    return (
        f"To run {role} elsewhere, either serve it behind an OpenAI-compatible endpoint and use\n"
        f"  model.{role}.backend=openai model.{role}.base_url=http://HOST:PORT/v1 "
        f"model.{role}.model_id=NAME [model.{role}.api_key_env=ENV_VAR]\n"
        f"or load a local copy with\n"
        f"  model.{role}.path=/path/to/hf/model/dir   (or model.{role}.gguf_file=/path/model.gguf)\n"
        f"or use the offline tiny family: model=tiny (or model=tiny_qwen)."
    )


def build_backend(role: str, cfg: Any, cache_dir: str | None = None) -> Any:
    """Instantiate the backend for ``role`` (F or G) from its config entry."""
    from somabench.config import to_dict

    spec = to_dict(cfg)
    kind = spec.pop("backend")
    cls = backends.get(kind)
    if kind in ("hf", "vllm"):
        _preflight_local(role, spec, kind, cache_dir)
    if kind in ("hf", "vllm", "llamacpp"):
        spec.setdefault("cache_dir", cache_dir)  # dtype probe cache / assembled GGUF files
    try:
        return cls(**spec)
    except ModelLoadError:
        raise
    except OSError as exc:  # transformers raises OSError for unreachable hub / missing files
        raise ModelLoadError(
            f"model.{role} ({spec.get('model_id')}) could not be loaded: {exc}\n"
            + how_to_point_elsewhere(role)
        ) from exc


def _preflight_local(role: str, spec: dict[str, Any], kind: str, cache_dir: str | None) -> None:
    """Fail fast, before any download or compute, when a local model cannot run here."""
    import os

    asset = spec.pop("asset", None)
    requires_gpu = spec.pop("requires_gpu", False)
    if asset and not spec.get("path") and not spec.get("gguf_file"):
        from somabench import assets

        spec["path"] = str(assets.resolve(asset, cache_dir))
    if requires_gpu:
        import torch

        if not torch.cuda.is_available():
            raise ModelLoadError(
                f"model.{role} = {spec.get('model_id')} needs a GPU (model.{role}.requires_gpu="
                f"true) and this machine has none.\n" + how_to_point_elsewhere(role)
            )
    if not spec.get("path") and not spec.get("gguf_file"):
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        if offline and not _in_hf_cache(spec["model_id"]):
            raise ModelLoadError(
                f"model.{role} = {spec['model_id']} is not in the local Hugging Face cache and "
                f"HF_HUB_OFFLINE=1 forbids downloading it.\n" + how_to_point_elsewhere(role)
            )


def _in_hf_cache(model_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - any failure means "not usable offline"
        return False
