"""Per-dialogue LoRA on G (paper Sec. 3.3, Eq. 4), attached in place and removed exactly.

Objective (Eq. 4): L_FT = mean_t [ NLL(a^F_t | G(S_t)) + alpha (1 - cos(phi(a^G_t), phi(a^F_t))) ].
The cosine term is not differentiable: a^G is *sampled text* and phi is a separate encoder.
Our formulation (no REINFORCE):

* a^G_t is G's **teacher-forced greedy answer**: the argmax token at every answer position of
  the same forward pass that gives the NLL (free: no extra generation), decoded to text.
* gap_t = 1 - cos(phi(a^G_t), phi(a^F_t)) is computed at the current parameters and used with
  a stop-gradient as a per-example weight: the optimized surrogate is
  ``omega_t * (1 + alpha * sg(gap_t)) * NLL_t`` (``omega_t`` = the hardness weight). Its
  gradient is ``omega_t (1 + alpha gap_t) grad NLL_t``: examples whose meaning G still misses
  are pushed harder, and lowering NLL_t is what moves a^G_t towards a^F_t. The *reported*
  loss is Eq. 4's value, ``NLL_t + alpha gap_t`` (hardness-weighted mean).
* The same gap is the validation divergence for early stopping (App. B.2): training stops
  once the mean gap over the local batch is <= ``lora.early_stop_gap``.

Isolation: the adapter is injected into G's modules in place (peft) for one dialogue only,
``raw.adapter_id`` is set to a hash of the trained adapter weights while it is active (the
request cache key includes it, so cached answers never mix adapters), and ``release`` calls
``unload()``, which puts the original base modules back (bit-exact), restores the
``requires_grad`` flags and resets ``adapter_id`` to None.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoraConfig:
    rank: int
    alpha: float  # the LoRA scale (peft lora_alpha)
    dropout: float
    target_modules: tuple[str, ...]
    lr: float
    lr_schedule: str
    weight_decay: float
    grad_clip: float
    epochs: int
    max_steps: int | None
    examples_per_step: int
    cos_alpha: float  # alpha of Eq. 4
    early_stop_gap: float | None
    max_seq_tokens: int

    @classmethod
    def from_cfg(cls, cfg: Any) -> LoraConfig:
        if cfg["lr_schedule"] not in ("cosine", "constant"):
            raise ValueError(f"lora.lr_schedule={cfg['lr_schedule']!r}; cosine | constant")
        return cls(
            rank=int(cfg["rank"]), alpha=float(cfg["alpha"]), dropout=float(cfg["dropout"]),
            target_modules=tuple(cfg["target_modules"]), lr=float(cfg["lr"]),
            lr_schedule=str(cfg["lr_schedule"]), weight_decay=float(cfg["weight_decay"]),
            grad_clip=float(cfg["grad_clip"]), epochs=int(cfg["epochs"]),
            max_steps=None if cfg["max_steps"] is None else int(cfg["max_steps"]),
            examples_per_step=int(cfg["examples_per_step"]), cos_alpha=float(cfg["cos_alpha"]),
            early_stop_gap=None if cfg["early_stop_gap"] is None else float(cfg["early_stop_gap"]),
            max_seq_tokens=int(cfg["max_seq_tokens"]),
        )


@dataclass
class Example:
    """One pair of the local batch: context (optionally behind a soft prompt) -> F's answer."""

    ctx_ids: torch.Tensor  # (C,)
    y: torch.Tensor  # (T,) F's answer in G's tokens, ending with G's end-of-turn token
    answer: str
    weight: float  # hardness weight omega_t
    kind: str  # "warm" | "mined"
    turn: int
    prefix: torch.Tensor | None = None  # (L, d) soft prompt rows, fixed


def make_example(g: Any, messages: list[dict[str, str]], answer: str, weight: float, kind: str,
                 turn: int, max_seq_tokens: int, prefix: torch.Tensor | None = None) -> Example | None:
    """Render S_t with G's chat template and append a^F + G's end-of-turn token."""
    ctx = g.tokenizer(g.render(messages), add_special_tokens=False)["input_ids"]
    y = g.tokenizer(answer, add_special_tokens=False)["input_ids"]
    if not y:
        return None
    y = [*y, g.tokenizer.eos_token_id]
    budget = max_seq_tokens - (0 if prefix is None else int(prefix.shape[0]))
    y = y[:budget]
    ctx = ctx[-max(budget - len(y), 1):]
    return Example(torch.tensor(ctx, dtype=torch.long), torch.tensor(y, dtype=torch.long),
                   answer, float(weight), kind, turn, prefix)


def teacher_forced(model: Any, ex: Example) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token NLL of y and the argmax ids at the same positions (one forward pass)."""
    emb = model.get_input_embeddings()
    dtype = emb.weight.dtype
    x = emb(torch.cat([ex.ctx_ids, ex.y]))
    if ex.prefix is not None:
        x = torch.cat([ex.prefix.to(dtype), x], dim=0)
    n = int(ex.y.shape[0])
    logits = model(inputs_embeds=x.unsqueeze(0), logits_to_keep=n + 1).logits[0, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits, ex.y, reduction="none")
    return nll, logits.argmax(dim=-1)


def gap_weights(gaps: np.ndarray, cos_alpha: float) -> np.ndarray:
    """The stop-gradient example weights (1 + alpha * gap) of the Eq. 4 surrogate."""
    return 1.0 + cos_alpha * np.asarray(gaps, dtype=np.float64)


def semantic_gap(encoder: Any, predicted: list[str], answers: list[str]) -> np.ndarray:
    """1 - cos(phi(a^G), phi(a^F)) per pair, in [0, 2]."""
    a = encoder.encode(predicted)
    b = encoder.encode(answers)
    return 1.0 - (a * b).sum(axis=1)


def adapter_hash(model: Any) -> str:
    """sha256 of the LoRA weights (names and values): the adapter id for the request cache."""
    h = hashlib.sha256()
    for name, p in sorted((n, p) for n, p in model.named_parameters() if "lora_" in n):
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    return "lora-" + h.hexdigest()[:16]


@dataclass
class TrainStats:
    steps: int = 0
    epochs: int = 0
    seconds: float = 0.0
    early_stopped: bool = False
    trainable_params: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    """Per epoch: hardness-weighted mean NLL, gap and Eq. 4 value."""


class SessionAdapter:
    """One dialogue's LoRA on the shared G backend: attach -> train -> (serve) -> release."""

    def __init__(self, raw_g: Any, cfg: LoraConfig) -> None:
        self.raw = raw_g
        self.cfg = cfg
        self.peft: Any = None
        self._flags: list[tuple[torch.nn.Parameter, bool]] = []

    @property
    def active(self) -> bool:
        return self.peft is not None

    def attach(self) -> None:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        if self.active:
            raise RuntimeError("this session already has an adapter")
        if any("lora_" in n for n, _ in self.raw.model.named_parameters()):
            raise RuntimeError("G still carries another dialogue's LoRA; it was not released")
        self._flags = [(p, p.requires_grad) for p in self.raw.model.parameters()]
        config = PeftLoraConfig(r=self.cfg.rank, lora_alpha=self.cfg.alpha,
                                lora_dropout=self.cfg.dropout,
                                target_modules=list(self.cfg.target_modules), bias="none",
                                task_type="CAUSAL_LM")
        self.peft = get_peft_model(self.raw.model, config)

    def train(self, examples: list[Example], encoder: Any) -> TrainStats:
        """Minimize the Eq. 4 surrogate over the local batch (see module docstring)."""
        if not self.active:
            raise RuntimeError("attach() before train()")
        started = time.perf_counter()
        cfg = self.cfg
        model = self.peft
        params = [p for p in model.parameters() if p.requires_grad]
        stats = TrainStats(trainable_params=sum(p.numel() for p in params))
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        per_epoch = math.ceil(len(examples) / cfg.examples_per_step)
        total = per_epoch * cfg.epochs if cfg.max_steps is None else min(per_epoch * cfg.epochs,
                                                                          cfg.max_steps)
        schedule = (lambda s: 1.0) if cfg.lr_schedule == "constant" else \
            (lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total) / max(total, 1))))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        tokenizer = self.raw.tokenizer
        model.train()
        done = False
        for epoch in range(cfg.epochs):
            nlls, gaps, weights = [], [], []
            for start in range(0, len(examples), cfg.examples_per_step):
                chunk = examples[start:start + cfg.examples_per_step]
                opt.zero_grad(set_to_none=True)
                for ex in chunk:
                    nll_tok, argmax = teacher_forced(model, ex)
                    predicted = tokenizer.decode(argmax.tolist(), skip_special_tokens=True)
                    gap = float(semantic_gap(encoder, [predicted], [ex.answer])[0])
                    nll = nll_tok.mean()
                    weight = ex.weight * float(gap_weights(np.array([gap]), cfg.cos_alpha)[0])
                    (weight * nll / len(chunk)).backward()
                    nlls.append(float(nll.detach()))
                    gaps.append(gap)
                    weights.append(ex.weight)
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                sched.step()
                stats.steps += 1
                if stats.steps >= total:
                    done = True
                    break
            w = np.asarray(weights) / max(float(np.sum(weights)), 1e-12)
            mean_nll = float(np.dot(w, nlls[: len(w)]))
            mean_gap = float(np.dot(w, gaps[: len(w)]))
            stats.history.append({"epoch": epoch, "nll": mean_nll, "gap": mean_gap,
                                  "eq4": mean_nll + cfg.cos_alpha * mean_gap})
            stats.epochs = epoch + 1
            if cfg.early_stop_gap is not None and mean_gap <= cfg.early_stop_gap:
                stats.early_stopped = True
                break
            if done:
                break
        model.eval()
        self.raw.adapter_id = adapter_hash(self.raw.model)
        stats.seconds = time.perf_counter() - started
        return stats

    def release(self) -> None:
        """Remove the adapter: original modules back, flags restored, adapter_id None."""
        if self.peft is not None:
            base = self.peft.unload()
            self.raw.model = base
            self.peft = None
        for p, flag in self._flags:
            p.requires_grad_(flag)
        self._flags = []
        self.raw.adapter_id = None
        self.raw.model.eval()
