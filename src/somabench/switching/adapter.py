"""One dialogue's LoRA adapter on the shared G: one type, one owner, one lifecycle.

Contract 4 (``SessionAdapter(g_backend, lora_cfg)``): ``attach(seed)`` (create) ->
``train(examples, encoder)`` or ``load_state(tensors)`` (restore, the adapter cache) -> serve
(enabled) / ``disabled()`` (base G with the adapter off, for the old-vs-new acceptance test) ->
``release()`` (close). ``adapter_id`` is the hash of the weights, also set on the backend so the
request cache never mixes adapters; ``save(dir)`` writes peft ``save_pretrained`` files, for
serving the adapter elsewhere (vLLM's LoRARequest).

Owner: the dialogue's session. A switching method creates it with
``SwitchingMethod.new_adapter`` (SOMA and History-FT alike), reads it back with
``session_adapter`` and ``finish`` releases it; no method object keeps one.

Isolation: peft injects the adapter into G's modules in place for one dialogue only;
``release`` calls ``unload()``, which puts the original base modules back (bit-exact), restores
the ``requires_grad`` flags and resets the backend's ``adapter_id`` to None.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from somabench.switching.lora import Example, LoraConfig, LoraTrainer, TrainStats, adapter_hash


class SessionAdapter:
    """One dialogue's LoRA on the shared G backend: attach -> train -> (serve) -> release."""

    def __init__(self, g_backend: Any, lora_cfg: LoraConfig) -> None:
        self.raw = g_backend
        self.cfg = lora_cfg
        self.peft: Any = None
        self._flags: list[tuple[torch.nn.Parameter, bool]] = []
        self._adapter_id: str | None = None

    @property
    def active(self) -> bool:
        return self.peft is not None

    @property
    def adapter_id(self) -> str | None:
        """Hash of the trained weights (None before training and after release)."""
        return self._adapter_id

    def attach(self, seed: int | None = None) -> None:
        """Inject a fresh adapter (B = 0: exactly the base model until trained)."""
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        if self.active:
            raise RuntimeError("this session already has an adapter")
        if any("lora_" in n for n, _ in self.raw.model.named_parameters()):
            raise RuntimeError("G still carries another dialogue's LoRA; it was not released")
        if seed is not None:
            torch.manual_seed(seed)  # peft draws the A matrices from torch's global generator
        self._flags = [(p, p.requires_grad) for p in self.raw.model.parameters()]
        config = PeftLoraConfig(r=self.cfg.rank, lora_alpha=self.cfg.alpha,
                                lora_dropout=self.cfg.dropout,
                                target_modules=list(self.cfg.target_modules), bias="none",
                                task_type="CAUSAL_LM")
        self.peft = get_peft_model(self.raw.model, config)
        if hasattr(self.raw, "peft_model"):  # hf G: adapted + base rows in one batch
            self.raw.peft_model = self.peft

    def train(self, examples: list[Example], encoder: Any, held_out: list[Example] | None = None,
              progress: bool = False, heldout_note: str | None = None) -> TrainStats:
        """Minimize the Eq. 4 surrogate over the local batch (``switching/lora.py``)."""
        if not self.active:
            raise RuntimeError("attach() before train()")
        started = time.perf_counter()
        stats = LoraTrainer(self.peft, self.raw.tokenizer, self.cfg).train(
            examples, encoder, held_out=held_out, progress=progress, heldout_note=heldout_note)
        self._adapter_id = adapter_hash(self.raw.model)
        self.raw.adapter_id = self._adapter_id
        stats.seconds = time.perf_counter() - started
        return stats

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Trained LoRA tensors back into a freshly attached adapter (the adapter cache)."""
        if not self.active:
            raise RuntimeError("attach() before load_state()")
        params = {n: p for n, p in self.raw.model.named_parameters() if "lora_" in n}
        if set(params) != set(state):
            raise ValueError(f"cached adapter does not fit this G: {len(state)} tensors cached, "
                             f"{len(params)} LoRA tensors attached")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state[name].to(p.dtype))
        self._adapter_id = adapter_hash(self.raw.model)
        self.raw.adapter_id = self._adapter_id
        self.peft.eval()  # the wrapper too: peft refuses mixed-adapter batches in training mode

    # -- serving helpers ------------------------------------------------------------------------
    @contextlib.contextmanager
    def disabled(self) -> Iterator[Any]:
        """Base G with the adapter switched off (and ``adapter_id`` None for the cache)."""
        if not self.active:
            raise RuntimeError("no adapter attached")
        previous = self.raw.adapter_id
        self.raw.adapter_id = None
        try:
            with self.peft.disable_adapter():
                yield self.raw
        finally:
            self.raw.adapter_id = previous

    def save(self, directory: str | Path) -> Path:
        """peft ``save_pretrained`` of the adapter (adapter_config.json + weights)."""
        if not self.active:
            raise RuntimeError("no adapter attached")
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self.peft.save_pretrained(str(path))
        return path

    def release(self) -> None:
        """Remove the adapter: original modules back, flags restored, adapter_id None."""
        if self.peft is not None:
            base = self.peft.unload()
            self.raw.model = base
            self.peft = None
            if hasattr(self.raw, "peft_model"):
                self.raw.peft_model = None
        for p, flag in self._flags:
            p.requires_grad_(flag)
        self._flags = []
        self._adapter_id = None
        self.raw.adapter_id = None
        self.raw.model.eval()
