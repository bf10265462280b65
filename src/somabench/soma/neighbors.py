"""Semantic neighbourhoods N_k(u) (paper Def. 3.1): top-k cosine neighbours in G's embeddings.

Why precomputed: Eq. 1 needs the k nearest tokens of every teacher token at every mining step.
The paper queries an ANN index over L2-normalized embeddings; here an exact index is built
once per model by blocked matrix products (never the dense |V| x |V| matrix: one block of
``block_rows`` x |V| cosines at a time) and cached on disk, keyed by the model fingerprint and
the embedding values, so later runs and dialogues load it in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

INDEX_FORMAT = 1  # bump when the stored tensors change meaning


@dataclass
class NeighborIndex:
    """``ids[u]`` = the k tokens v != u with the highest cos(e_u, e_v), best first."""

    ids: torch.Tensor  # (|V|, k) int64
    cos: torch.Tensor  # (|V|, k) float32
    unit: torch.Tensor  # (|V|, d) float32, L2-normalized embedding rows

    @property
    def k(self) -> int:
        return int(self.ids.shape[1])

    def take(self, k: int) -> NeighborIndex:
        if k > self.k:
            raise ValueError(f"neighbour index holds k={self.k} < requested {k}")
        return NeighborIndex(self.ids[:, :k], self.cos[:, :k], self.unit)


def unit_rows(embedding: torch.Tensor) -> torch.Tensor:
    """L2-normalized float32 copy of an embedding matrix (|V| x d)."""
    emb = embedding.detach().float()
    return emb / emb.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)


def topk_neighbors(unit: torch.Tensor, k: int, block_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k cosine neighbours (self excluded) by blocked matmul."""
    n = unit.shape[0]
    if k >= n:
        raise ValueError(f"k={k} must be smaller than the vocabulary ({n})")
    ids = torch.empty((n, k), dtype=torch.int64)
    cos = torch.empty((n, k), dtype=torch.float32)
    with torch.no_grad():
        for start in range(0, n, block_rows):
            stop = min(start + block_rows, n)
            block = unit[start:stop] @ unit.T  # (rows, |V|)
            rows = torch.arange(stop - start)
            block[rows, rows + start] = float("-inf")  # V \ {u}
            values, index = torch.topk(block, k, dim=1)
            ids[start:stop] = index
            cos[start:stop] = values
    return ids, cos


def _key(fingerprint: dict[str, Any], unit: torch.Tensor, k: int) -> str:
    probe = unit[:: max(1, unit.shape[0] // 64)].contiguous().numpy().tobytes()
    blob = json.dumps({"v": INDEX_FORMAT, "fp": fingerprint, "shape": list(unit.shape), "k": k},
                      sort_keys=True, default=str).encode() + probe
    return hashlib.sha256(blob).hexdigest()[:16]


def load_or_build(embedding: torch.Tensor, k: int, *, fingerprint: dict[str, Any],
                  cache_dir: str | Path | None, block_rows: int) -> NeighborIndex:
    """The index for ``embedding`` with at least ``k`` neighbours (disk-cached when possible)."""
    unit = unit_rows(embedding)
    path = None
    if cache_dir is not None:
        fp = {key: value for key, value in fingerprint.items() if key != "adapter_id"}
        path = Path(cache_dir) / "soma" / f"neighbors-{_key(fp, unit, k)}.pt"
        if path.exists():
            data = torch.load(path, map_location="cpu", weights_only=True)
            return NeighborIndex(data["ids"], data["cos"], unit)
    started = time.perf_counter()
    ids, cos = topk_neighbors(unit, k, block_rows)
    log.info("built the top-%d neighbour index over %d tokens in %.1fs", k, unit.shape[0],
             time.perf_counter() - started)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"ids": ids, "cos": cos}, tmp)
        tmp.replace(path)
    return NeighborIndex(ids, cos, unit)
