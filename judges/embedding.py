"""The embedding PROXY: cosine of all-MiniLM-L6-v2 vectors of the answer and the Original's.

Why: a fast, deterministic, offline stand-in for the LLM similarity judges (smoke runs,
sweeps on a laptop). It is labelled ``embedding-proxy`` in every line and table because
cosine similarity is not the paper's metric: it rewards shared wording, not correctness.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from somabench.judges.base import Judge, JudgeError, JudgeItem, Verdict
from somabench.judges.prompting import JudgePrompt

log = logging.getLogger(__name__)


class EmbeddingJudge(Judge):
    """Scores ``cosine(phi(candidate), phi(reference))``; only runs ``kind: embedding`` prompts."""

    kind = "embedding-proxy"

    def __init__(self, name: str, spec: dict[str, Any], cache_dir: str | None = None) -> None:
        self.name = name
        self.spec = dict(spec)
        self.model = str(self.spec["model"])
        self.cache_dir = cache_dir
        self._encoder: Any = None

    def supports(self, prompt: JudgePrompt) -> bool:
        return prompt.kind == "embedding"

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from omegaconf import OmegaConf

            from somabench.encoder import build_encoder

            cfg = OmegaConf.create({"model_id": self.model, "asset": self.spec.get("asset"),
                                    "path": self.spec.get("path"),
                                    "device": self.spec.get("device", "cpu"),
                                    "batch_size": self.spec["batch_size"]})
            self._encoder = build_encoder(cfg, cache_dir=self.cache_dir)
        return self._encoder

    def preflight(self) -> None:
        asset, path = self.spec.get("asset"), self.spec.get("path")
        if asset and not path:
            from somabench import assets

            try:
                assets.resolve(str(asset), self.cache_dir, fetch_if_missing=False)
            except assets.AssetError as exc:
                raise JudgeError(f"judge '{self.name}': {exc}") from exc

    def prepare(self, items: list[JudgeItem]) -> None:
        """Encode every text once, in batches (the per-item cosines then hit the memo)."""
        texts = [t for it in items for t in (it.candidate, it.reference) if t is not None]
        if texts:
            self.encoder.encode(texts)

    def request_key(self, item: JudgeItem, prompt: JudgePrompt, settings: dict[str, Any]) -> str:
        from somabench.cache import cache_key

        return cache_key({"judge": {"kind": "embedding", "model": self.model,
                                    "asset": self.spec.get("asset"), "path": self.spec.get("path")},
                          "prompt_id": prompt.id, "prompt_sha": prompt.sha,
                          "candidate": item.candidate, "reference": item.reference})

    def judge(self, item: JudgeItem, prompt: JudgePrompt, settings: dict[str, Any]) -> Verdict:
        if item.reference is None:
            return Verdict(status="skipped", error="no reference answer for this turn")
        started = time.perf_counter()
        try:
            cosine = self.encoder.cosine(item.candidate, item.reference)
        except Exception as exc:  # noqa: BLE001 - recorded, never a number
            return Verdict(status="api_error", error=f"{type(exc).__name__}: {exc}", attempts=1)
        # score stays in the prompt's range [0, 1]: a negative cosine counts as 0; raw keeps it.
        score = min(max(cosine, prompt.lo), prompt.hi)
        return Verdict(status="ok", score=round(score, 6), raw=f"{cosine:.6f}", attempts=1,
                       seconds=time.perf_counter() - started,
                       request_key=self.request_key(item, prompt, settings))

    def close(self) -> None:
        self._encoder = None
