"""Training one dialogue's LoRA on G (paper Sec. 3.3, Eq. 4): config, examples, the loop.

Why here: SOMA and History-FT train the same way (History-FT with alpha = 0, no soft prompts,
weight 1); the adapter's lifecycle around the training (attach, serve, disable, release) is
``switching/adapter.py``.

Objective (Eq. 4): L_FT = mean_t [ NLL(a^F_t | G(S_t)) + alpha (1 - cos(phi(a^G_t), phi(a^F_t))) ].
a^G_t is G's own free-running **greedy** answer to S_t (the paper's a^G; for mined pairs G reads
P_m (+) S_t), generated in one batch at the current adapter. The cosine term is not
differentiable through text and a separate encoder, so it enters as a stop-gradient example
weight: the optimized surrogate is ``omega_t * (1 + alpha * sg(gap_t)) * NLL_t`` (``omega_t`` =
SOMA's hardness weight). Its gradient is ``omega_t (1 + alpha gap_t) grad NLL_t``: pairs whose
meaning G still misses are pushed harder. The gaps are refreshed at step 0 and at every
evaluation before the last step (``early_stopping.eval_every``; ``gap_from_step`` in the history
says which), and the recorded loss is Eq. 4's value ``NLL + alpha * gap``.

Early stopping (App. B.2, "validation divergence"): the caller passes held-out warm pairs; every
``eval_every`` steps the validation divergence is the mean gap of G's greedy answers on them
(``metric: gap``) or their NLL (``metric: nll``); training stops after ``patience`` evaluations
without improvement (or once the divergence is <= ``threshold``) and the best adapter weights are
restored (step 0, the untrained adapter, is recorded but never chosen: early stopping ends
training, it does not undo it). Without held-out pairs (warm window too small) there is no
early stopping and the stats say so.

Batching: ``batching: padded`` runs the pairs of one optimizer step as one left-padded batch
(explicit position ids, so padding changes nothing); ``accumulate`` runs them one by one with
gradient accumulation (identical maths; which is faster depends on the machine).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

BATCHING = ("padded", "accumulate")
METRICS = ("gap", "nll")


@dataclass(frozen=True)
class EarlyStopping:
    """Validation on held-out warm pairs (conf: ``lora.early_stopping``)."""

    metric: str  # gap | nll
    holdout_turns: int  # warm turns held out (the last ones)
    min_train_turns: int  # below holdout + this many warm turns: no early stopping
    eval_every: int  # optimizer steps between evaluations (also refreshes the Eq. 4 gaps)
    patience: int  # evaluations without improvement before stopping
    threshold: float | None  # stop as soon as the validation divergence is <= this

    @classmethod
    def from_cfg(cls, cfg: Any) -> EarlyStopping:
        if cfg["metric"] not in METRICS:
            raise ValueError(f"lora.early_stopping.metric={cfg['metric']!r}; one of {METRICS}")
        return cls(metric=str(cfg["metric"]), holdout_turns=int(cfg["holdout_turns"]),
                   min_train_turns=int(cfg["min_train_turns"]), eval_every=int(cfg["eval_every"]),
                   patience=int(cfg["patience"]),
                   threshold=None if cfg["threshold"] is None else float(cfg["threshold"]))

    def split(self, turns: list[int]) -> tuple[list[int], list[int], str]:
        """(train turns, held-out turns, why) for the warm turns ``turns`` (ascending)."""
        if self.holdout_turns <= 0:
            return turns, [], "holdout_turns = 0"
        if len(turns) < self.holdout_turns + self.min_train_turns:
            return turns, [], (f"{len(turns)} warm pair(s) < holdout_turns {self.holdout_turns} "
                               f"+ min_train_turns {self.min_train_turns}: no early stopping")
        return turns[:-self.holdout_turns], turns[-self.holdout_turns:], "held-out warm pair(s)"


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
    epochs: int | None
    max_steps: int | None
    examples_per_step: int
    batching: str
    cos_alpha: float  # alpha of Eq. 4
    gap_max_new_tokens: int  # length of G's greedy answer a^G for the gap
    max_seq_tokens: int
    early_stopping: EarlyStopping

    @classmethod
    def from_cfg(cls, cfg: Any) -> LoraConfig:
        if cfg["lr_schedule"] not in ("cosine", "constant"):
            raise ValueError(f"lora.lr_schedule={cfg['lr_schedule']!r}; cosine | constant")
        if cfg["batching"] not in BATCHING:
            raise ValueError(f"lora.batching={cfg['batching']!r}; one of {BATCHING}")
        if cfg["epochs"] is None and cfg["max_steps"] is None:
            raise ValueError("lora.epochs and lora.max_steps are both null; set at least one")
        return cls(
            rank=int(cfg["rank"]), alpha=float(cfg["alpha"]), dropout=float(cfg["dropout"]),
            target_modules=tuple(cfg["target_modules"]), lr=float(cfg["lr"]),
            lr_schedule=str(cfg["lr_schedule"]), weight_decay=float(cfg["weight_decay"]),
            grad_clip=float(cfg["grad_clip"]),
            epochs=None if cfg["epochs"] is None else int(cfg["epochs"]),
            max_steps=None if cfg["max_steps"] is None else int(cfg["max_steps"]),
            examples_per_step=int(cfg["examples_per_step"]), batching=str(cfg["batching"]),
            cos_alpha=float(cfg["cos_alpha"]), gap_max_new_tokens=int(cfg["gap_max_new_tokens"]),
            max_seq_tokens=int(cfg["max_seq_tokens"]),
            early_stopping=EarlyStopping.from_cfg(cfg["early_stopping"]),
        )

    def total_steps(self, n_examples: int) -> int:
        per_epoch = math.ceil(n_examples / self.examples_per_step)
        if self.epochs is None:
            return int(self.max_steps or 0)
        if self.max_steps is None:
            return per_epoch * self.epochs
        return min(per_epoch * self.epochs, self.max_steps)


@dataclass
class Example:
    """One pair of the local batch: context (optionally behind a soft prompt) -> F's answer."""

    ctx_ids: torch.Tensor  # (C,)
    y: torch.Tensor  # (T,) F's answer in G's tokens, ending with G's end-of-turn token
    answer: str
    weight: float  # hardness weight omega_t (1 for History-FT)
    kind: str  # "warm" | "mined"
    turn: int
    prefix: torch.Tensor | None = None  # (L, d) soft prompt rows, fixed

    @property
    def n_tokens(self) -> int:
        """Positions of one forward pass over [prefix ; S_t ; y]."""
        pre = 0 if self.prefix is None else int(self.prefix.shape[0])
        return pre + int(self.ctx_ids.shape[0]) + int(self.y.shape[0])


def make_example(g: Any, messages: list[dict[str, str]], answer: str, weight: float, kind: str,
                 turn: int, max_seq_tokens: int, prefix: torch.Tensor | None = None) -> Example | None:
    """Render S_t with G's chat template and append a^F + G's end-of-turn token.

    The answer keeps at most half of the budget, so the left-truncated context always keeps
    at least the other half (a long F answer can no longer squeeze S_t to one token).
    """
    ctx = g.tokenizer(g.render(messages), add_special_tokens=False)["input_ids"]
    y = g.tokenizer(answer, add_special_tokens=False)["input_ids"]
    if not y:
        return None
    y = [*y, g.tokenizer.eos_token_id]
    budget = max_seq_tokens - (0 if prefix is None else int(prefix.shape[0]))
    y = y[:max(budget // 2, budget - len(ctx), 1)]
    ctx = ctx[-max(budget - len(y), 1):]
    return Example(torch.tensor(ctx, dtype=torch.long), torch.tensor(y, dtype=torch.long),
                   answer, float(weight), kind, turn, prefix)


def _embed_rows(model: Any, ex: Example, with_answer: bool) -> torch.Tensor:
    emb = model.get_input_embeddings()
    ids = torch.cat([ex.ctx_ids, ex.y]) if with_answer else ex.ctx_ids
    x = emb(ids)
    if ex.prefix is not None:
        x = torch.cat([ex.prefix.to(x.dtype), x], dim=0)
    return x


def _left_pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad (n_i, d) rows to one (B, N, d) batch; mask and position ids that ignore pads."""
    n = max(int(r.shape[0]) for r in rows)
    d = int(rows[0].shape[1])
    x = rows[0].new_zeros((len(rows), n, d))
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for b, r in enumerate(rows):
        x[b, n - r.shape[0]:] = r
        mask[b, n - r.shape[0]:] = 1
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    return x, mask, positions


def answer_nll(model: Any, examples: list[Example]) -> list[torch.Tensor]:
    """Per-token NLL of each example's answer y, from one left-padded forward pass."""
    x, mask, positions = _left_pad([_embed_rows(model, ex, True) for ex in examples])
    n_keep = max(int(ex.y.shape[0]) for ex in examples) + 1
    logits = model(inputs_embeds=x, attention_mask=mask, position_ids=positions,
                   logits_to_keep=n_keep).logits.float()
    out = []
    for b, ex in enumerate(examples):
        t = int(ex.y.shape[0])
        out.append(torch.nn.functional.cross_entropy(logits[b, -t - 1:-1], ex.y, reduction="none"))
    return out


def teacher_forced(model: Any, ex: Example) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token NLL of y and the argmax ids at the same positions (one forward pass)."""
    x = _embed_rows(model, ex, True)
    n = int(ex.y.shape[0])
    logits = model(inputs_embeds=x.unsqueeze(0), logits_to_keep=n + 1).logits[0, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits, ex.y, reduction="none")
    return nll, logits.argmax(dim=-1)


def greedy_answers(model: Any, tokenizer: Any, examples: list[Example],
                   max_new_tokens: int) -> tuple[list[str], dict[str, int]]:
    """a^G: G's own greedy answers to each example's [prefix ;] S_t, one batched generate.

    Returns the texts and the tokens spent (prompt = context positions, completion = new).
    """
    with torch.no_grad():
        x, mask, _ = _left_pad([_embed_rows(model, ex, False) for ex in examples])
        out = model.generate(inputs_embeds=x, attention_mask=mask, max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id)
    texts, completion = [], 0
    eos = tokenizer.eos_token_id
    for row in out.tolist():
        ids = []
        for tok in row:
            if tok == eos:
                break
            ids.append(tok)
        completion += len(ids) + (1 if len(ids) < len(row) else 0)
        texts.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
    prompt = sum(ex.n_tokens - int(ex.y.shape[0]) for ex in examples)
    return texts, {"prompt": prompt, "completion": completion}


def gap_weights(gaps: np.ndarray, cos_alpha: float) -> np.ndarray:
    """The stop-gradient example weights (1 + alpha * gap) of the Eq. 4 surrogate."""
    return 1.0 + cos_alpha * np.asarray(gaps, dtype=np.float64)


def semantic_gap(encoder: Any, predicted: list[str], answers: list[str]) -> np.ndarray:
    """1 - cos(phi(a^G), phi(a^F)) per pair, in [0, 2]."""
    a = encoder.encode(predicted)
    b = encoder.encode(answers)
    return 1.0 - (a * b).sum(axis=1)


def lora_state(model: Any) -> dict[str, torch.Tensor]:
    """A detached copy of the LoRA tensors (names and values)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def adapter_hash(model: Any) -> str:
    """sha256 of the LoRA weights (names and values): the adapter id for the request cache."""
    h = hashlib.sha256()
    for name, p in sorted(lora_state(model).items()):
        h.update(name.encode())
        h.update(p.float().cpu().numpy().tobytes())
    return "lora-" + h.hexdigest()[:16]


@dataclass
class TrainStats:
    steps: int = 0
    epochs: float = 0.0
    seconds: float = 0.0
    early_stopped: bool = False
    early_stopping: str = "none"
    """``held-out warm pair(s)`` or why there was none."""
    best_step: int | None = None
    train_examples: int = 0
    heldout_examples: int = 0
    trainable_params: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    """Per evaluation: step, hardness-weighted train NLL / gap, Eq. 4 value, validation."""
    tokens: dict[str, int] = field(default_factory=lambda: {"forward": 0, "backward": 0})
    """Tokens of training forward/backward passes (validation forward passes count as forward)."""
    generation_tokens: dict[str, int] = field(default_factory=lambda: {"prompt": 0, "completion": 0})
    """G's greedy a^G generations for the Eq. 4 gap (inference, not training)."""
    padding_tokens: int = 0


class LoraTrainer:
    """The Eq. 4 loop over one LoRA-wrapped G (``SessionAdapter.train`` runs it)."""

    def __init__(self, peft: Any, tokenizer: Any, cfg: LoraConfig) -> None:
        self.peft = peft
        self.tokenizer = tokenizer
        self.cfg = cfg

    def _forward_backward(self, chunk: list[Example], gaps: dict[int, float],
                          stats: TrainStats) -> list[float]:
        """One optimizer step's gradients; returns each example's mean NLL."""
        cfg = self.cfg
        weights = [ex.weight * (1.0 + cfg.cos_alpha * gaps.get(id(ex), 0.0)) for ex in chunk]
        nlls: list[float] = []
        groups = [chunk] if cfg.batching == "padded" else [[ex] for ex in chunk]
        for group in groups:
            per_tok = answer_nll(self.peft, group)
            loss = sum(w * nll.mean() for w, nll in
                       zip(weights[len(nlls):len(nlls) + len(group)], per_tok, strict=True))
            (loss / len(chunk)).backward()
            nlls.extend(float(n.detach().mean()) for n in per_tok)
            n_real = sum(ex.n_tokens for ex in group)
            stats.tokens["forward"] += n_real
            stats.tokens["backward"] += n_real
            stats.padding_tokens += len(group) * max(ex.n_tokens for ex in group) - n_real
        return nlls

    def _gaps(self, examples: list[Example], encoder: Any, stats: TrainStats) -> list[float]:
        """1 - cos(phi(a^G), phi(a^F)) with a^G = G's greedy answer at the current adapter."""
        if not examples:
            return []
        was_training = self.peft.training
        self.peft.eval()
        texts, used = greedy_answers(self.peft, self.tokenizer, examples,
                                     self.cfg.gap_max_new_tokens)
        self.peft.train(was_training)
        for key, value in used.items():
            stats.generation_tokens[key] += value
        return [float(v) for v in semantic_gap(encoder, texts, [ex.answer for ex in examples])]

    def _validation(self, held: list[Example], encoder: Any, stats: TrainStats) -> float:
        if self.cfg.early_stopping.metric == "gap":
            gaps = self._gaps(held, encoder, stats)
            return float(np.mean(gaps))
        was_training = self.peft.training
        self.peft.eval()
        with torch.no_grad():
            value = float(np.mean([float(n.mean()) for n in answer_nll(self.peft, held)]))
        self.peft.train(was_training)
        stats.tokens["forward"] += sum(ex.n_tokens for ex in held)
        return value

    def train(self, examples: list[Example], encoder: Any, held_out: list[Example] | None = None,
              progress: bool = False, heldout_note: str | None = None) -> TrainStats:
        """Minimize the Eq. 4 surrogate over the local batch (see module docstring); the
        trained weights stay in ``self.peft`` (the best ones, with early stopping)."""
        from tqdm.auto import tqdm

        if not examples:
            raise ValueError("LoRA training needs at least one (context, answer) pair")
        cfg, es = self.cfg, self.cfg.early_stopping
        held = list(held_out or [])
        model = self.peft
        params = [p for p in model.parameters() if p.requires_grad]
        stats = TrainStats(trainable_params=sum(p.numel() for p in params),
                           train_examples=len(examples), heldout_examples=len(held),
                           early_stopping="held-out warm pair(s)" if held else
                           (heldout_note or "no held-out pair: no early stopping"))
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        total = cfg.total_steps(len(examples))
        schedule = (lambda s: 1.0) if cfg.lr_schedule == "constant" else \
            (lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total) / max(total, 1))))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        use_gap = cfg.cos_alpha > 0
        gaps: dict[int, float] = {}
        recent: list[tuple[Example, float]] = []
        best: tuple[float, int, dict[str, torch.Tensor]] | None = None
        bad, gap_step = 0, -1

        def evaluate(step: int) -> bool:
            """Refresh the Eq. 4 gaps, record, validate; True = stop."""
            nonlocal best, bad, gap_step
            held_gaps: list[float] | None = None
            if use_gap and step < total:  # after the last step the gaps would train nothing
                # the held-out gaps (validation) share the training pairs' generate call
                extra = held if es.metric == "gap" else []
                both = self._gaps(examples + extra, encoder, stats)
                gaps.update(zip(map(id, examples), both[:len(examples)], strict=True))
                held_gaps = both[len(examples):] if extra else None
                gap_step = step
            row: dict[str, float] = {"step": step, "gap_from_step": gap_step}
            if recent:
                w = np.array([ex.weight for ex, _ in recent])
                w = w / max(float(w.sum()), 1e-12)
                row["nll"] = float(np.dot(w, [n for _, n in recent]))
                row["eq4"] = row["nll"]  # alpha = 0 (History-FT): Eq. 4 is the NLL
                if use_gap:
                    row["gap"] = float(np.dot(w, [gaps[id(ex)] for ex, _ in recent]))
                    row["eq4"] = row["nll"] + cfg.cos_alpha * row["gap"]
            stop = False
            if held:
                value = (float(np.mean(held_gaps)) if held_gaps else
                         self._validation(held, encoder, stats))
                row[f"val_{es.metric}"] = value
                if step == 0:
                    pass  # the base model's value, for the record: early stopping picks a trained step
                elif best is None or value < best[0]:
                    best, bad = (value, step, lora_state(model)), 0
                else:
                    bad += 1
                    stop = bad >= es.patience
                if es.threshold is not None and value <= es.threshold:
                    stop = True
            stats.history.append(row)
            return stop

        model.train()
        bar = tqdm(total=total, desc="LoRA", disable=not progress, leave=False, dynamic_ncols=True)
        if use_gap or held:
            evaluate(0)  # the base model's gaps / validation (step 0: nothing trained yet)
        order = list(examples)
        for step in range(1, total + 1):
            start = ((step - 1) * cfg.examples_per_step) % len(order)
            chunk = [order[(start + j) % len(order)]
                     for j in range(min(cfg.examples_per_step, len(order)))]
            opt.zero_grad(set_to_none=True)
            nlls = self._forward_backward(chunk, gaps, stats)
            recent.extend(zip(chunk, nlls, strict=True))
            recent = recent[-len(order):]
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            stats.steps = step
            bar.set_postfix(nll=f"{float(np.mean(nlls)):.3f}", refresh=False)
            bar.update(1)
            if (step % es.eval_every == 0 or step == total) and evaluate(step):
                stats.early_stopped = step < total
                break
        bar.close()
        if best is not None:
            current = dict(model.named_parameters())
            with torch.no_grad():
                for name, value in best[2].items():
                    current[name].copy_(value)
            stats.best_step = best[1]
        stats.epochs = round(stats.steps * cfg.examples_per_step / len(examples), 6)
        model.eval()
        return stats
