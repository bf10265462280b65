"""Soft-prompt mining on G with frozen weights (paper Sec. 3.1-3.2): minimize J(P) with AdamW.

Why this shape: one forward pass of G over [P (+) E(tok_G(S_t)) (+) E(tok_G(a_t^F))] yields every
Pi_{t,i} at F's token positions (causal masking), so each turn costs one pass per step; the M
candidate prompts share the pass as a batch of M rows. Only P receives gradients (G's
parameters are frozen for the duration and restored after). ``logits_to_keep`` limits the
LM head to the answer positions.

Step budget: AdamW moves each coordinate by about lr per step whatever the gradient's scale,
so how far P travels is lr x (schedule-weighted) steps; at the paper's largest lr (5e-3) and an
init std of 0.135, 6 cosine-decayed steps moved P by ~8 % of its norm and left V(P) almost
unchanged. Every run therefore records how far P moved (``prompt_shift`` = ||P - P0|| / ||P0||
per candidate) and how much of V(P) changed (``verbalized_changed``), next to J per step.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from somabench.soma import losses
from somabench.soma.neighbors import NeighborIndex
from somabench.soma.soft_prompt import Verbalized, init_prompts, verbalize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MiningConfig:
    length: int
    init_std: float
    n_candidates: int
    steps: int
    lr: float
    lr_schedule: str
    weight_decay: float
    grad_clip: float
    turns_per_step: int
    weights: losses.MiningWeights
    max_context_tokens: int
    max_answer_tokens: int

    @classmethod
    def from_cfg(cls, soft_prompt: Any, mining: Any, n_candidates: int) -> MiningConfig:
        if mining["lr_schedule"] not in ("cosine", "constant"):
            raise ValueError(f"mining.lr_schedule={mining['lr_schedule']!r}; cosine | constant")
        return cls(
            length=int(soft_prompt["length"]), init_std=float(soft_prompt["init_std"]),
            n_candidates=int(n_candidates), steps=int(mining["steps"]), lr=float(mining["lr"]),
            lr_schedule=str(mining["lr_schedule"]), weight_decay=float(mining["weight_decay"]),
            grad_clip=float(mining["grad_clip"]), turns_per_step=int(mining["turns_per_step"]),
            weights=losses.MiningWeights(
                tau=float(mining["tau"]), top_m=int(mining["top_m"]),
                lambda_exp=float(mining["lambda_exp"]), beta=float(mining["beta"]),
                tail_k=int(mining["tail_k"]), lambda_p=float(mining["lambda_p"])),
            max_context_tokens=int(mining["max_context_tokens"]),
            max_answer_tokens=int(mining["max_answer_tokens"]),
        )


@dataclass
class TurnInput:
    """One warm-start turn in G's token space: context S_t and F's answer y^F."""

    turn: int
    ctx_ids: torch.Tensor  # (C,)
    y: torch.Tensor  # (T,)


def encode_turn(g: Any, turn: int, messages: list[dict[str, str]], answer: str,
                max_context_tokens: int, max_answer_tokens: int) -> TurnInput | None:
    """tok_G(S_t) (G's chat template, left-truncated) and tok_G(a^F) (truncated); None if empty."""
    prompt = g.render(messages)
    ctx = g.tokenizer(prompt, add_special_tokens=False)["input_ids"][-max_context_tokens:]
    y = g.tokenizer(answer, add_special_tokens=False)["input_ids"][:max_answer_tokens]
    if not ctx or not y:
        return None
    return TurnInput(turn, torch.tensor(ctx, dtype=torch.long), torch.tensor(y, dtype=torch.long))


@contextlib.contextmanager
def frozen(model: Any) -> Iterator[None]:
    """Freeze every parameter of ``model``; restore the previous flags afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def answer_log_probs(model: Any, prompts: torch.Tensor, item: TurnInput) -> torch.Tensor:
    """Pi_{t,i}(P) for every candidate: (M, T, V) float32 log-probabilities.

    Sequence = [P_m ; E(ctx) ; E(y)]; position L + C - 1 + i predicts y_i.
    """
    emb = model.get_input_embeddings()
    dtype = emb.weight.dtype
    text = emb(torch.cat([item.ctx_ids, item.y]))  # (C+T, d)
    m = prompts.shape[0]
    x = torch.cat([prompts.to(dtype), text.unsqueeze(0).expand(m, -1, -1)], dim=1)
    n_answer = int(item.y.shape[0])
    logits = model(inputs_embeds=x, logits_to_keep=n_answer + 1).logits[:, :-1]
    return torch.log_softmax(logits.float(), dim=-1)


def sequence_tokens(cfg: MiningConfig, item: TurnInput) -> int:
    """Tokens one candidate's forward pass over [P ; S_t ; y^F] processes."""
    return cfg.length + int(item.ctx_ids.shape[0]) + int(item.y.shape[0])


@dataclass
class MiningResult:
    prompts: torch.Tensor  # (M, L, d) float32, detached
    verbalized: list[Verbalized]
    hardness: dict[int, float]
    """r_t: mean over candidates of F's answer cross-entropy under the mined prompt."""
    steps: int
    seconds: float
    history: list[float] = field(default_factory=list)
    """J(P) per step, mean over the M candidates (the turn(s) of each step: ``history_turns``)."""
    history_turns: list[list[int]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    initial: torch.Tensor | None = None  # P0 (M, L, d)
    verbalized_initial: list[Verbalized] = field(default_factory=list)
    prompt_shift: list[float] = field(default_factory=list)
    """||P_m - P0_m||_F / ||P0_m||_F per candidate."""
    verbalized_changed: list[float] = field(default_factory=list)
    """Share of the L tokens of V(P_m) that differ from V(P0_m), per candidate."""
    tokens: dict[str, int] = field(default_factory=lambda: {"forward": 0, "backward": 0})
    """Tokens processed by G's forward / backward passes (training + the hardness pass)."""


def _lr_lambda(cfg: MiningConfig) -> Any:
    if cfg.lr_schedule == "constant":
        return lambda step: 1.0
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, cfg.steps) / max(cfg.steps, 1)))


def mine(model: Any, tokenizer: Any, turns: list[TurnInput], index: NeighborIndex,
         cfg: MiningConfig, generator: torch.Generator, progress: bool = False) -> MiningResult:
    """Minimize J(P) over the warm-start turns for M candidate prompts at once."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    if not turns:
        raise ValueError("soft-prompt mining needs at least one warm-start turn with an answer")
    unit = index.unit
    dim = int(model.get_input_embeddings().weight.shape[1])
    initial = init_prompts(cfg.n_candidates, cfg.length, dim, cfg.init_std, generator)
    prompts = torch.nn.Parameter(initial.clone())
    opt = torch.optim.AdamW([prompts], lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    w = cfg.weights
    history: list[float] = []
    history_turns: list[list[int]] = []
    parts: dict[str, list[float]] = {}
    tokens = {"forward": 0, "backward": 0}
    was_training = model.training
    model.eval()
    bar = tqdm(total=cfg.steps, desc="SOMA mining", disable=not progress, leave=False,
               dynamic_ncols=True)
    with frozen(model):
        for step in range(cfg.steps):
            first = (step * cfg.turns_per_step) % len(turns)
            batch = [turns[(first + j) % len(turns)] for j in range(min(cfg.turns_per_step, len(turns)))]
            opt.zero_grad(set_to_none=True)
            per_candidate: list[list[torch.Tensor]] = [[] for _ in range(cfg.n_candidates)]
            parts = {"l_sem_exp": [], "h_tail": []}
            for item in batch:
                log_probs = answer_log_probs(model, prompts, item)
                for m in range(cfg.n_candidates):
                    out = losses.turn_objective(log_probs[m], item.y, index.ids, index.cos, unit, w)
                    per_candidate[m].append(out["turn_loss"])
                    parts["l_sem_exp"].append(float(out["l_sem_exp"].detach()))
                    parts["h_tail"].append(float(out["h_tail"].detach()))
                n_tok = cfg.n_candidates * sequence_tokens(cfg, item)
                tokens["forward"] += n_tok
                tokens["backward"] += n_tok
            total = sum(losses.j_objective(per_candidate[m], prompts[m], w.lambda_p)
                        for m in range(cfg.n_candidates))
            total.backward()
            torch.nn.utils.clip_grad_norm_([prompts], cfg.grad_clip)
            opt.step()
            sched.step()
            history.append(float(total.detach()) / cfg.n_candidates)
            history_turns.append([item.turn for item in batch])
            bar.set_postfix(J=f"{history[-1]:.3f}", refresh=False)
            bar.update(1)
        bar.close()
        hardness, final_sem = _hardness(model, prompts.detach(), turns, index, w)
    tokens["forward"] += sum(cfg.n_candidates * sequence_tokens(cfg, item) for item in turns)
    model.train(was_training)
    mined = prompts.detach().clone()
    verbalized = [verbalize(mined[m], unit, tokenizer) for m in range(cfg.n_candidates)]
    verbalized_initial = [verbalize(initial[m], unit, tokenizer) for m in range(cfg.n_candidates)]
    shift = ((mined - initial).norm(dim=(1, 2)) / initial.norm(dim=(1, 2))).tolist()
    changed = [sum(a != b for a, b in zip(v.ids, v0.ids, strict=True)) / max(len(v.ids), 1)
               for v, v0 in zip(verbalized, verbalized_initial, strict=True)]
    # J of the last step that read the same warm turn(s) as step 0: steps cycle through the
    # turns, and J values of different turns are not comparable.
    same = [j for j, ts in enumerate(history_turns) if ts == history_turns[0]] or [0]
    final = {
        "J_first": history[0] if history else float("nan"),
        "J_last": history[same[-1]] if history else float("nan"),
        "J_last_step": float(same[-1]),
        "l_sem_exp_last_step": sum(parts.get("l_sem_exp", [])) / max(len(parts.get("l_sem_exp", [])), 1),
        "h_tail_last_step": sum(parts.get("h_tail", [])) / max(len(parts.get("h_tail", [])), 1),
        "l_sem_exp_final": final_sem,
        "prompt_norm": float(mined.norm(dim=(1, 2)).mean()),
        "prompt_shift_mean": sum(shift) / len(shift),
        "verbalized_changed_mean": sum(changed) / len(changed),
    }
    return MiningResult(prompts=mined, verbalized=verbalized, hardness=hardness,
                        steps=cfg.steps, seconds=time.perf_counter() - started, history=history,
                        history_turns=history_turns, final=final, initial=initial,
                        verbalized_initial=verbalized_initial, prompt_shift=shift,
                        verbalized_changed=changed, tokens=tokens)


def _hardness(model: Any, prompts: torch.Tensor, turns: list[TurnInput], index: NeighborIndex,
              w: losses.MiningWeights) -> tuple[dict[int, float], float]:
    """r_t = mean_m CE(y^F | P_m (+) S_t): how far the mined directions push G from F at t."""
    hardness: dict[int, float] = {}
    sem: list[float] = []
    with torch.no_grad():
        for item in turns:
            log_probs = answer_log_probs(model, prompts, item)
            ce = -log_probs.gather(-1, item.y.expand(prompts.shape[0], -1).unsqueeze(-1)).squeeze(-1)
            hardness[item.turn] = float(ce.mean())
            for m in range(prompts.shape[0]):
                sem.append(float(losses.turn_objective(log_probs[m], item.y, index.ids, index.cos,
                                                       index.unit, w)["l_sem_exp"]))
    return hardness, sum(sem) / max(len(sem), 1)
