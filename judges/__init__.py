"""Judges (installed as ``somabench.judges``): the similarity panel, its prompts and aggregation.

Registered in ``somabench.registry.judges``:

* ``panel``: ``judge_run(cfg, run_dir) -> float | None``, called by ``somabench.task`` after
  generation (the objective: panel similarity %, all turns);
* judge kinds used by ``conf/judge/*.yaml`` entries: ``llm`` (OpenAI-compatible endpoint),
  ``local`` (in-process hf model), ``embedding`` (cosine proxy), ``math_answer`` (final-answer
  accuracy and agreement, no model). Each is a factory
  ``(name, spec, panel_cfg, cache, cache_dir) -> Judge``.

Heavy modules load lazily (``"module:attr"`` entries), so importing somabench stays cheap.
"""

from __future__ import annotations

from typing import Any

from somabench.registry import judges

judges.register("panel", "somabench.judges.panel:judge_run")
judges.register("llm", "somabench.judges.llm_judge:build_llm_judge")
judges.register("local", "somabench.judges.llm_judge:build_llm_judge")
judges.register("embedding", "somabench.judges:build_embedding_judge")
judges.register("math_answer", "somabench.judges.math_answer:build_math_answer_judge")


def build_embedding_judge(name: str, spec: dict[str, Any], panel: dict[str, Any],
                          cache: Any, cache_dir: str | None = None) -> Any:
    """Registry factory for ``kind: embedding`` (the proxy needs no cache: it is cheap and
    deterministic)."""
    from somabench.judges.embedding import EmbeddingJudge

    return EmbeddingJudge(name, spec, cache_dir)
