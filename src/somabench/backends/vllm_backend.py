"""vLLM offline engine backend for GPU users (tensor parallel F, multi-LoRA G).

Why: on a GPU, vLLM batches continuously and serves many LoRA adapters (e.g. one per session's
G) from one base model; this backend puts it behind the same ``chat(messages, gen)`` protocol.
Importing this module never needs vllm; constructing the backend does (``pip install
somabench[vllm]``, CUDA GPU). Written against vLLM's documented offline API: ``vllm.LLM``,
``LLM.generate(prompts, sampling_params, lora_request=...)``, ``vllm.SamplingParams`` and
``vllm.lora.request.LoRARequest(lora_name, lora_int_id, lora_path)``.

The prompt is rendered here with the tokenizer's chat template (so records hold exactly what
the model saw) and passed to ``generate`` as text; token counts come from the request output.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

from somabench.backends import ModelLoadError
from somabench.backends.base import (
    BackendBase,
    BackendError,
    Completion,
    GenerationConfig,
    Message,
    sha16,
)
from somabench.registry import backends

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "the vllm backend needs the optional dependency vllm and a CUDA GPU. "
    "Fix: pip install 'somabench[vllm]' on a machine with CUDA, or use backend=hf (CPU/GPU) "
    "or backend=openai (any OpenAI-compatible server, e.g. `vllm serve` elsewhere)."
)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


class VLLMUnavailableError(ModelLoadError, ImportError):
    """vllm (or CUDA) is missing; the message says how to get it or what to use instead."""


@backends.register("vllm")
class VLLMBackend(BackendBase):
    """A ``vllm.LLM`` engine with the tokenizer's chat template and per-request LoRA adapters.

    Args (engine settings go straight to ``vllm.LLM``):
        model_id: hub name (or served name when ``path`` is given).
        path: local model directory (preferred offline).
        tensor_parallel_size, dtype, max_model_len, gpu_memory_utilization: engine settings.
        enable_lora, max_lora_rank, max_loras: LoRA serving settings.
        adapters: ``{name: path}`` adapters known up front (more via :meth:`add_adapter`).
        adapter: name of the adapter every request uses by default (``None`` = base model).
        engine_kwargs: any further ``vllm.LLM`` keyword arguments.
    """

    kind = "vllm"

    def __init__(
        self,
        model_id: str,
        path: str | None = None,
        tensor_parallel_size: int | None = None,
        dtype: str | None = None,
        max_model_len: int | None = None,
        gpu_memory_utilization: float | None = None,
        enable_lora: bool = False,
        max_lora_rank: int | None = None,
        max_loras: int | None = None,
        adapters: dict[str, str] | None = None,
        adapter: str | None = None,
        revision: str | None = None,
        seed: int | None = None,
        trust_remote_code: bool = False,
        system_prompt: str | None = None,
        engine_kwargs: dict[str, Any] | None = None,
        **_: Any,
    ) -> None:
        if not vllm_available():
            raise VLLMUnavailableError(INSTALL_HINT)
        import torch

        if not torch.cuda.is_available():
            raise VLLMUnavailableError("no CUDA GPU is visible to torch: " + INSTALL_HINT)
        from vllm import LLM

        self.model_id = model_id
        self.revision = revision
        self.source = str(Path(path)) if path else model_id
        self.dtype_name = dtype or "auto"
        self.system_prompt = system_prompt
        self.enable_lora = enable_lora
        kwargs: dict[str, Any] = {
            "model": self.source,
            "revision": revision,
            "trust_remote_code": trust_remote_code,
            "enable_lora": enable_lora,
        }
        optional = {
            "tensor_parallel_size": tensor_parallel_size, "dtype": dtype,
            "max_model_len": max_model_len, "gpu_memory_utilization": gpu_memory_utilization,
            "max_lora_rank": max_lora_rank if enable_lora else None,
            "max_loras": max_loras if enable_lora else None, "seed": seed,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        kwargs.update(engine_kwargs or {})
        started = time.perf_counter()
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        log.info("vLLM loaded %s in %.1fs (%s)", self.source, time.perf_counter() - started,
                 {k: v for k, v in kwargs.items() if k != "model"})
        self._adapters: dict[str, tuple[int, str]] = {}
        for name, adapter_path in (adapters or {}).items():
            self.add_adapter(name, adapter_path)
        self.adapter_id = None
        if adapter is not None:
            self._require_adapter(adapter)
            self.adapter_id = adapter

    # -- adapters -------------------------------------------------------------------------------
    def add_adapter(self, name: str, path: str) -> None:
        """Make a LoRA adapter directory servable under ``name`` (ids are assigned here)."""
        if not self.enable_lora:
            raise ValueError("LoRA adapters need enable_lora=true for the vllm backend")
        if name in self._adapters and self._adapters[name][1] != str(path):
            raise ValueError(f"adapter '{name}' is already registered with another path")
        self._adapters.setdefault(name, (len(self._adapters) + 1, str(path)))  # vLLM ids are >= 1

    def _require_adapter(self, name: str) -> tuple[int, str]:
        if name not in self._adapters:
            raise ValueError(f"unknown LoRA adapter '{name}'; registered: {sorted(self._adapters)}")
        return self._adapters[name]

    def lora_request(self, name: str | None) -> Any:
        if name is None:
            return None
        from vllm.lora.request import LoRARequest

        int_id, path = self._require_adapter(name)
        return LoRARequest(name, int_id, path)

    def with_adapter(self, name: str) -> _AdapterView:
        """A backend view that serves every request with adapter ``name`` (own cache key)."""
        self._require_adapter(name)
        return _AdapterView(self, name)

    # -- rendering and counting -----------------------------------------------------------------
    def with_system(self, messages: list[Message]) -> list[Message]:
        if self.system_prompt and not any(m["role"] == "system" for m in messages):
            return [{"role": "system", "content": self.system_prompt}, *messages]
        return messages

    def render(self, messages: list[Message]) -> str:
        """The exact prompt text the model sees (tokenizer chat template + generation prompt)."""
        return self.tokenizer.apply_chat_template(
            self.with_system(messages), tokenize=False, add_generation_prompt=True
        )

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def fingerprint(self) -> dict[str, Any]:
        fp = super().fingerprint()
        fp.update(source=self.source, dtype=self.dtype_name)
        if self.adapter_id is not None:
            fp["adapter_path"] = self._adapters[self.adapter_id][1]
        return fp

    # -- generation ------------------------------------------------------------------------------
    def sampling_params(self, gen: GenerationConfig) -> Any:
        from vllm import SamplingParams

        kwargs: dict[str, Any] = {"n": 1, "max_tokens": gen.max_new_tokens,
                                  "stop": list(gen.stop) or None}
        if gen.do_sample:
            if gen.seed is None:
                raise ValueError("sampling needs a seed (generation.seed) so results are reproducible")
            kwargs.update(temperature=gen.temperature, top_p=gen.top_p, seed=gen.seed)
        else:
            kwargs.update(temperature=0.0)  # vLLM: temperature 0 means greedy
        return SamplingParams(**kwargs)

    def chat(self, messages: list[Message], gen: GenerationConfig,
             adapter: str | None = None) -> Completion:
        return self.chat_batch([messages], gen, adapter=adapter)[0]

    def chat_batch(self, batch: list[list[Message]], gen: GenerationConfig,
                   adapter: str | None = None) -> list[Completion]:
        prompts = [self.render(m) for m in batch]
        return self.generate_text(prompts, gen, adapter=adapter)

    def generate_text(self, prompts: list[str], gen: GenerationConfig,
                      adapter: str | None = None) -> list[Completion]:
        adapter = adapter if adapter is not None else self.adapter_id
        lora = self.lora_request(adapter)
        params = self.sampling_params(gen)
        started = time.perf_counter()
        try:
            outputs = self.llm.generate(prompts, params, use_tqdm=False, lora_request=lora)
        except (RuntimeError, ValueError) as exc:
            raise BackendError(f"vLLM generation failed for {self.source} "
                               f"(adapter={adapter}): {exc}", reason="error") from exc
        seconds = time.perf_counter() - started
        results = []
        for prompt, out in zip(prompts, outputs, strict=True):
            best = out.outputs[0]
            prompt_ids = getattr(out, "prompt_token_ids", None)
            results.append(Completion(
                text=best.text.strip(),
                prompt_tokens=len(prompt_ids) if prompt_ids is not None else None,
                completion_tokens=len(best.token_ids) if best.token_ids is not None else None,
                seconds=seconds, rendered_prompt=prompt, model_id=self.model_id,
                batch_size=len(prompts), finish_reason=best.finish_reason,
                meta={"prompt_hash": sha16(prompt), "adapter": adapter},
            ))
        return results


class _AdapterView(BackendBase):
    """The same engine, every request served with one LoRA adapter; its own fingerprint."""

    kind = "vllm"

    def __init__(self, base: VLLMBackend, adapter: str) -> None:
        self.base = base
        self.model_id = base.model_id
        self.revision = base.revision
        self.adapter_id = adapter

    def render(self, messages: list[Message]) -> str:
        return self.base.render(messages)

    def count_tokens(self, text: str) -> int:
        return self.base.count_tokens(text)

    def fingerprint(self) -> dict[str, Any]:
        fp = self.base.fingerprint()
        fp.update(adapter_id=self.adapter_id,
                  adapter_path=self.base._require_adapter(self.adapter_id)[1])
        return fp

    def chat(self, messages: list[Message], gen: GenerationConfig) -> Completion:
        return self.base.chat(messages, gen, adapter=self.adapter_id)

    def chat_batch(self, batch: list[list[Message]], gen: GenerationConfig) -> list[Completion]:
        return self.base.chat_batch(batch, gen, adapter=self.adapter_id)
