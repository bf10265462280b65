"""phi: the sentence encoder (paper: all-MiniLM-L6-v2) for gates, summaries and proxy judges.

Why one module: SOMA's gate, its extractive summary, the drift monitor, RouteLLM's offline
router and the embedding judge must all embed text the same way.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class Encoder:
    """L2-normalized sentence embeddings with an in-memory memo (texts repeat across turns)."""

    def __init__(self, model: Any, model_id: str, batch_size: int) -> None:
        self.model = model
        self.model_id = model_id
        self.batch_size = batch_size
        self._memo: dict[str, np.ndarray] = {}
        self.tokens = 0
        """Tokens this encoder has embedded (memo hits are free, as in a deployment that keeps
        the vectors): methods charge the difference over their own calls (``encoder`` role)."""

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        """Rows are unit vectors, so a dot product is the cosine."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if todo:
            self.tokens += self.count_tokens(todo)
            vectors = self.model.encode(todo, batch_size=self.batch_size, convert_to_numpy=True,
                                        normalize_embeddings=True, show_progress_bar=False)
            for text, vec in zip(todo, vectors, strict=True):
                self._memo[text] = vec.astype(np.float32)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._memo[t] for t in texts])

    def count_tokens(self, texts: list[str]) -> int:
        """Tokens the model embeds for ``texts`` (special tokens and truncation included)."""
        tokenizer = getattr(self.model, "tokenizer", None)
        if tokenizer is None:
            return 0
        limit = getattr(self.model, "max_seq_length", None)
        ids = tokenizer(texts, truncation=limit is not None, max_length=limit)["input_ids"]
        return int(sum(len(row) for row in ids))

    def cosine(self, a: str, b: str) -> float:
        va, vb = self.encode([a, b])
        return float(np.dot(va, vb))


# Loaded sentence-transformers models by (source, device): the run's phi and the embedding
# judge use the same model, so one process loads it once (issue 11: repeated encoder loads).
_MODELS: dict[tuple[str, str], Any] = {}


def build_encoder(cfg: Any, cache_dir: str | None = None) -> Encoder:
    from sentence_transformers import SentenceTransformer

    path = cfg.get("path")
    if not path and cfg.get("asset"):
        from somabench import assets

        path = str(assets.resolve(cfg.asset, cache_dir))
    os.environ.setdefault("HF_HUB_OFFLINE", "1" if path else os.environ.get("HF_HUB_OFFLINE", "0"))
    key = (str(path or cfg.model_id), str(cfg.get("device", "cpu")))
    if key not in _MODELS:
        _MODELS[key] = SentenceTransformer(key[0], device=key[1])
    return Encoder(_MODELS[key], cfg.model_id, int(cfg.batch_size))
