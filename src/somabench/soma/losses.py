"""SOMA's mining objective (paper Sec. 3.2): s_tau, Eq. 1, the expectation weight, H_tail, J(P).

Why separate pure functions: each term is checked by hand on a toy vocabulary
(tests/soma/test_losses.py); mining.py only wires them to G's forward pass.

Shapes: T = answer positions read from one forward pass, V = vocabulary, k = neighbours,
d = embedding size. ``log_probs`` are G's next-token log-distributions Pi_{t,i} at the
positions that predict F's tokens y_{t,i} (re-tokenized with G's tokenizer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def neighbourhood_sets(y: torch.Tensor, neighbor_ids: torch.Tensor,
                       neighbor_cos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sets {y_i} U N_k(y_i) and their cosines to y_i: (T, k+1) ids and cosines.

    Column 0 is the teacher token itself (cos = 1).
    """
    ids = torch.cat([y[:, None], neighbor_ids[y]], dim=1)
    cos = torch.cat([torch.ones_like(y, dtype=neighbor_cos.dtype)[:, None], neighbor_cos[y]], 1)
    return ids, cos


def s_tau(cos_to_teacher: torch.Tensor, tau: float) -> torch.Tensor:
    """s_tau(v | y) = exp(cos(e_v, e_y)/tau) / sum_{u in {y} U N_k(y)} exp(cos(e_u, e_y)/tau)."""
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    return torch.softmax(cos_to_teacher / tau, dim=-1)


def log1m_exp(log_p: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(log_p)) for log_p <= 0, stable at both ends (Maechler 2012, "log1mexp").

    Why: ``1 - p`` in float32 cancels catastrophically as p -> 1, and the old
    ``(1 - p).clamp_min(1e-6)`` zeroed the gradient exactly where G copies F most
    confidently. Near 0 (log_p > -ln 2) ``log(-expm1(log_p))`` keeps full precision, further
    out ``log1p(-exp(log_p))`` does. Values closer to 0 than the dtype's machine epsilon (p that
    rounds to 1) are lifted to -eps in value only: the clamp is straight-through, so the
    gradient there is the finite one at -eps (about 1/eps, the true one is larger), never zero.
    """
    bound = -torch.finfo(log_p.dtype).eps
    x = log_p - (log_p - bound).clamp_min(0.0).detach()  # value min(log_p, -eps), gradient 1
    near_zero = x > -0.6931471805599453  # -ln 2: the switch point of the two forms
    # Each branch is evaluated only where it is accurate (dummy -1 elsewhere: no NaN grads).
    dummy = torch.full_like(x, -1.0)
    return torch.where(near_zero, torch.log(-torch.expm1(torch.where(near_zero, x, dummy))),
                       torch.log1p(-torch.exp(torch.where(near_zero, dummy, x))))


def unlikelihood_terms(log_probs: torch.Tensor, set_ids: torch.Tensor,
                       weights: torch.Tensor) -> torch.Tensor:
    """Per position: sum_v s_tau(v|y_i) * [-log(1 - Pi_i[v])] over the neighbourhood set (T,)."""
    return (weights * -log1m_exp(log_probs.gather(-1, set_ids))).sum(-1)


def l_sem(log_probs: torch.Tensor, set_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Eq. 1: the mean over the T_F positions of the neighbourhood unlikelihood."""
    return unlikelihood_terms(log_probs, set_ids, weights).mean()


def expected_cosine(log_probs: torch.Tensor, unit_emb: torch.Tensor, y: torch.Tensor,
                    top_m: int) -> torch.Tensor:
    """cos(e_bar_i, e_{y_i}) with e_bar_i = sum_{v in top-m(Pi_i)} Pi_i[v] e_v (T,).

    Rows of ``unit_emb`` are unit vectors (the paper assumes ||e_v|| = 1). Truncating to the
    top-m tokens avoids the dense sum over |V| (Sec. 3.2); cosine is scale-free, so the
    truncated mass need not be renormalized.
    """
    probs, index = log_probs.exp().topk(min(top_m, log_probs.shape[-1]), dim=-1)  # (T, m)
    e_bar = torch.einsum("tm,tmd->td", probs, unit_emb[index])
    e_y = unit_emb[y]
    return (e_bar * e_y).sum(-1) / e_bar.norm(dim=-1).clamp_min(torch.finfo(e_bar.dtype).tiny)


def expectation_weight(cos_bar: torch.Tensor, lambda_exp: float) -> torch.Tensor:
    """w_i = 1 + lambda_exp * clip(cos(e_bar_i, e_y_i), 0, 1) (T,)."""
    if lambda_exp < 0:
        raise ValueError(f"lambda_exp must be >= 0, got {lambda_exp}")
    return 1.0 + lambda_exp * cos_bar.clamp(0.0, 1.0)


def l_sem_exp(log_probs: torch.Tensor, set_ids: torch.Tensor, weights: torch.Tensor,
              unit_emb: torch.Tensor, y: torch.Tensor, top_m: int,
              lambda_exp: float) -> torch.Tensor:
    """Eq. 2: (1/T) sum_i w_i * sum_v s_tau(v|y_i) [-log(1 - Pi_i[v])]."""
    w = expectation_weight(expected_cosine(log_probs, unit_emb, y, top_m), lambda_exp)
    return (w * unlikelihood_terms(log_probs, set_ids, weights)).mean()


def h_tail(log_probs: torch.Tensor, tail_k: int) -> torch.Tensor:
    """Mean entropy of the next-token distributions at the last K positions (all if T < K).

    The paper's tail(t, K) is "the last K positions of the concatenated input seen by G",
    computed from the same Pi_{t,i} (no extra pass): the last K of the T_F answer positions.
    """
    tail = log_probs[-tail_k:] if tail_k > 0 else log_probs
    return -(tail.exp() * tail).sum(-1).mean()


@dataclass(frozen=True)
class MiningWeights:
    """The knobs of J(P) (conf: method.mining)."""

    tau: float
    top_m: int
    lambda_exp: float
    beta: float
    tail_k: int
    lambda_p: float


def turn_objective(log_probs: torch.Tensor, y: torch.Tensor, neighbor_ids: torch.Tensor,
                   neighbor_cos: torch.Tensor, unit_emb: torch.Tensor,
                   w: MiningWeights) -> dict[str, torch.Tensor]:
    """One turn's L_sem_exp - beta * H_tail, with the parts for the record."""
    set_ids, set_cos = neighbourhood_sets(y, neighbor_ids, neighbor_cos)
    weights = s_tau(set_cos, w.tau)
    sem = l_sem_exp(log_probs, set_ids, weights, unit_emb, y, w.top_m, w.lambda_exp)
    ent = h_tail(log_probs, w.tail_k)
    return {"l_sem_exp": sem, "h_tail": ent, "turn_loss": sem - w.beta * ent}


def j_objective(turn_losses: list[torch.Tensor], prompt: torch.Tensor,
                lambda_p: float) -> torch.Tensor:
    """J(P) = (1/|B|) sum_{t in B} [L_sem_exp - beta H_tail] + lambda ||P||_F^2."""
    return torch.stack(turn_losses).mean() + lambda_p * prompt.pow(2).sum()
