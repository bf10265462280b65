"""Fixed-budget extractive summary of the earlier dialogue (paper Sec. 3.3, after the switch).

Why: once G serves, the growing history is not resent. Past turns are split into sentences,
embedded with phi, and greedily selected for relevance to the current query (cosine to it),
representativeness (cosine to the running centroid of past content) and non-redundancy
(minus the highest cosine to an already selected sentence), while the summary fits a token
budget counted with G's tokenizer. Selected sentences keep their original order. The last K
turns are sent verbatim next to it (method.py). After a drift rollback the centroid is
refreshed on the new window (``centroid_from``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def split_sentences(text: str, min_chars: int) -> list[str]:
    """Sentences of ``text`` (split after . ! ? and at line breaks); short bits dropped."""
    parts = (p.strip() for p in _SENTENCE_END.split(text or ""))
    return [p for p in parts if len(p) >= min_chars]


@dataclass(frozen=True)
class SummaryConfig:
    budget_tokens: int
    verbatim_turns: int
    w_relevance: float
    w_representative: float
    w_redundancy: float
    min_sentence_chars: int
    include_user: bool
    include_assistant: bool
    header: str
    separator: str

    @classmethod
    def from_cfg(cls, cfg: Any) -> SummaryConfig:
        return cls(
            budget_tokens=int(cfg["budget_tokens"]), verbatim_turns=int(cfg["verbatim_turns"]),
            w_relevance=float(cfg["w_relevance"]), w_representative=float(cfg["w_representative"]),
            w_redundancy=float(cfg["w_redundancy"]),
            min_sentence_chars=int(cfg["min_sentence_chars"]),
            include_user=bool(cfg["include_user"]), include_assistant=bool(cfg["include_assistant"]),
            header=str(cfg["header"]), separator=str(cfg["separator"]),
        )


@dataclass
class Summary:
    text: str
    tokens: int
    sentences: list[str] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    """Indices of the chosen sentences in the candidate list (ascending = original order)."""
    n_candidates: int = 0


def candidates(pairs: list[tuple[str, str]], cfg: SummaryConfig) -> list[tuple[int, str]]:
    """(turn index, sentence) in dialogue order: user text then assistant text per turn."""
    out: list[tuple[int, str]] = []
    for turn, (user, assistant) in enumerate(pairs):
        if cfg.include_user:
            out.extend((turn, s) for s in split_sentences(user, cfg.min_sentence_chars))
        if cfg.include_assistant:
            out.extend((turn, s) for s in split_sentences(assistant, cfg.min_sentence_chars))
    return out


def summarize(pairs: list[tuple[str, str]], query: str, cfg: SummaryConfig,
              embed: Callable[[list[str]], np.ndarray], count_tokens: Callable[[str], int],
              centroid_from: int = 0) -> Summary:
    """Greedy extractive selection within ``cfg.budget_tokens`` (see module docstring).

    ``pairs`` are the (user, assistant) turns to summarize (those before the verbatim tail);
    the running centroid covers the sentences of turns ``>= centroid_from`` (all when none).
    """
    pool = candidates(pairs, cfg)
    if not pool or cfg.budget_tokens <= 0:
        return Summary(text="", tokens=0, n_candidates=len(pool))
    texts = [s for _, s in pool]
    vectors = embed(texts)
    q = embed([query])[0]
    recent = [i for i, (turn, _) in enumerate(pool) if turn >= centroid_from] or list(range(len(pool)))
    centroid = vectors[recent].mean(axis=0)
    centroid = centroid / max(float(np.linalg.norm(centroid)), np.finfo(np.float32).tiny)
    base = cfg.w_relevance * (vectors @ q) + cfg.w_representative * (vectors @ centroid)
    chosen: list[int] = []
    remaining = set(range(len(pool)))
    while remaining:
        if chosen:
            redundancy = (vectors[sorted(remaining)] @ vectors[chosen].T).max(axis=1)
        else:
            redundancy = np.zeros(len(remaining))
        order = sorted(remaining)
        scores = base[order] - cfg.w_redundancy * redundancy
        picked = None
        for idx in np.argsort(-scores, kind="stable"):
            i = order[int(idx)]
            trial = sorted([*chosen, i])
            if count_tokens(cfg.separator.join(texts[j] for j in trial)) <= cfg.budget_tokens:
                picked = i
                break
            remaining.discard(i)  # never fits: longer than what is left
        if picked is None:
            break
        chosen.append(picked)
        remaining.discard(picked)
    chosen.sort()
    text = cfg.separator.join(texts[i] for i in chosen)
    return Summary(text=text, tokens=count_tokens(text) if text else 0,
                   sentences=[texts[i] for i in chosen], positions=chosen, n_candidates=len(pool))
