"""Soft prompts P in R^{L x d} on G and their verbalization V(P) for F (paper Sec. 3.1).

Why: F is a black box that only reads text, so each mined prompt is projected row by row onto
the nearest token of G's embedding space (cosine), and that text prefix is what F receives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


def init_prompts(n_candidates: int, length: int, dim: int, std: float,
                 generator: torch.Generator) -> torch.Tensor:
    """M candidate prompts with rows i.i.d. N(0, std^2 I), shape (M, L, d), float32."""
    if std <= 0:
        # A zero prompt makes RMSNorm divide 0 by 0 (NaN gradients; MODELS.md).
        raise ValueError(f"soft_prompt.init_std must be > 0, got {std}")
    return torch.randn((n_candidates, length, dim), generator=generator) * std


def nearest_tokens(prompt: torch.Tensor, unit_emb: torch.Tensor) -> torch.Tensor:
    """v_l = argmax_v cos(p_l, e_v) for every row of ``prompt`` (..., L) token ids."""
    rows = prompt.detach().float()
    rows = rows / rows.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    return (rows @ unit_emb.T).argmax(dim=-1)


@dataclass
class Verbalized:
    """V(P): the nearest-token ids and their text (what F is sent)."""

    ids: list[int]
    tokens: list[str]
    text: str


def verbalize(prompt: torch.Tensor, unit_emb: torch.Tensor, tokenizer: Any) -> Verbalized:
    """V(P) = (tok(v_1), ..., tok(v_L)) for one prompt (L, d)."""
    ids = [int(v) for v in nearest_tokens(prompt, unit_emb).tolist()]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    text = tokenizer.decode(ids, skip_special_tokens=True).strip()
    return Verbalized(ids=ids, tokens=[str(t) for t in tokens], text=text)


def with_prefix(messages: list[dict[str, str]], prefix: str, separator: str) -> list[dict[str, str]]:
    """V(P) (+) D_{t-1} (+) q_t as chat messages: the prefix opens the first user message."""
    out = [dict(m) for m in messages]
    for message in out:
        if message["role"] == "user":
            message["content"] = f"{prefix}{separator}{message['content']}" if prefix else \
                message["content"]
            break
    return out
