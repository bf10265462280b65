"""KV-cache compression for the hf backend through NVIDIA's kvpress (``model.<role>.kv_press``).

Why: KV-cache compression (StreamingLLM's attention sinks + recent window, SnapKV's
attention-based selection, ...) is the neighbouring way to serve a long dialogue cheaper with
the large model kept, so it is a baseline a reviewer expects beside SOMA. kvpress implements the
presses as forward hooks on the attention layers: inside ``with press(model):`` the prompt's KV
cache is compressed right after the prefill (the prefill itself still sees every token; the
first answer token's logits are unchanged) and every later decoding step attends to the kept
``1 - compression_ratio`` share of the prompt's KV entries.

kvpress pins ``transformers<5.3`` (older than the main stack), so it lives in its own venv
(``make kvpress-env``: ``.venv-kvpress``), like vLLM's CPU build. A run that asks for a press
where kvpress is missing fails at once and says where to run it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from somabench.errors import ConfigError

PRESSES = {
    "streaming_llm": "StreamingLLMPress",  # sinks + recent window (Xiao et al. 2023)
    "snapkv": "SnapKVPress",  # attention of the last window's queries (Li et al. 2024)
    "expected_attention": "ExpectedAttentionPress",  # kvpress's own attention estimate
    "knorm": "KnormPress",  # key-norm heuristic
}
"""``kv_press.name`` -> kvpress class (kvpress/presses/)."""
INSTALL_HINT = ("kv_press needs kvpress (it pins transformers<5.3): `make kvpress-env`, then run "
                "with `.venv-kvpress/bin/python -m somabench ...` (docs/baselines.md, KV-cache "
                "compression)")


@dataclass(frozen=True)
class KVPressSpec:
    """``model.<role>.kv_press``: which press, how much of the prompt's KV it removes."""

    name: str
    compression_ratio: float
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_cfg(cls, cfg: Any) -> KVPressSpec | None:
        if not cfg:
            return None
        cfg = dict(cfg)
        name = str(cfg.pop("name", ""))
        if name not in PRESSES:
            raise ConfigError(f"model.F.kv_press.name={name!r}: one of {sorted(PRESSES)}")
        ratio = float(cfg.pop("compression_ratio", 0.0))
        if not 0.0 <= ratio < 1.0:
            raise ConfigError(f"model.F.kv_press.compression_ratio={ratio}: must be in [0, 1)")
        return cls(name=name, compression_ratio=ratio, options=dict(cfg.pop("options", None) or {}))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "compression_ratio": self.compression_ratio, **self.options}


def press_floor(press: Any) -> int:
    """The longest prompt a press cannot compress. kvpress's SnapKV scores the prompt by the
    attention of its last ``window_size`` queries and refuses a prompt no longer than that
    window; StreamingLLM refuses one no longer than its ``n_sink`` sinks."""
    return max(int(getattr(press, "window_size", 0) or 0), int(getattr(press, "n_sink", 0) or 0))


def press_outcome(press: Any, spec: KVPressSpec, prompt_tokens: int) -> dict[str, Any]:
    """What the press does to one prompt, recorded per turn (``TurnRecord.extra.kv_press``).

    A prompt at or below :func:`press_floor` is served uncompressed, as SnapKV's reference
    implementation serves a prompt below its cache budget (the turn says so: ``applied``
    false); otherwise ``prompt_kv_kept`` is kvpress's own count (``compute_n_kept``:
    ``max(1, int(n * (1 - ratio)))``) of the prompt's KV entries each layer keeps."""
    floor = press_floor(press)
    if prompt_tokens <= floor:
        return {"applied": False, "prompt_kv_kept": prompt_tokens,
                "reason": f"prompt of {prompt_tokens} tokens <= the press's {floor}-token window"}
    kept = max(1, int(prompt_tokens * (1 - spec.compression_ratio)))
    return {"applied": True, "prompt_kv_kept": kept}


def build_press(spec: KVPressSpec) -> Any:
    """The kvpress press object (a context manager factory: ``with press(model): ...``)."""
    try:
        kvpress = importlib.import_module("kvpress")
    except ImportError as exc:
        raise ConfigError(f"{INSTALL_HINT}; import failed: {exc}") from None
    cls = getattr(kvpress, PRESSES[spec.name])
    return cls(compression_ratio=spec.compression_ratio, **spec.options)


__all__ = ["INSTALL_HINT", "KVPressSpec", "PRESSES", "build_press", "press_floor", "press_outcome"]
