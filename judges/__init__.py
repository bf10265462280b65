"""Judges (installed as ``somabench.judges``): the similarity panels, their prompts and
aggregation.

"Judge" means a panel (``judge=<name>``): ``somabench.registry.judge_panels`` maps every
``conf/judge/<name>.yaml`` stem to ``(cfg, run_dir) -> objective | None``, called by
``somabench.task`` after generation and by ``python -m somabench judge``. The judges *inside*
a panel are built from their ``kind`` (``somabench.registry.judge_kinds``): ``llm``
(OpenAI-compatible endpoint), ``local`` (in-process hf model), ``embedding`` (cosine proxy),
``math_answer`` (final-answer check). Each kind is a factory
``(name, spec, panel_cfg, cache, cache_dir) -> Judge``.

Heavy modules load lazily (``"module:attr"`` entries), so importing somabench stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from somabench.registry import judge_kinds, judge_panels

PANEL = "somabench.judges.panel:judge_run"
PANELS = ("embedding", "local", "paper", "task")
"""``conf/judge/<name>.yaml`` panels (tests/test_registry.py checks the list against conf/)."""
for _panel in PANELS:
    judge_panels.register(_panel, PANEL)
judge_panels.register("none", "somabench.judges:judge_nothing")

judge_kinds.register("llm", "somabench.judges.llm_judge:build_llm_judge")
judge_kinds.register("local", "somabench.judges.llm_judge:build_llm_judge")
judge_kinds.register("embedding", "somabench.judges:build_embedding_judge")
judge_kinds.register("math_answer", "somabench.judges.math_answer:build_math_answer_judge")


def judge_nothing(cfg: Any, run_dir: str | Path, reference_dir: str | Path | None = None) -> None:
    """``judge=none``: no judging after generation (re-judge later with ``somabench judge``)."""
    return None


def build_embedding_judge(name: str, spec: dict[str, Any], panel: dict[str, Any],
                          cache: Any, cache_dir: str | None = None) -> Any:
    """Registry factory for ``kind: embedding`` (the proxy needs no cache: it is cheap and
    deterministic)."""
    from somabench.judges.embedding import EmbeddingJudge

    return EmbeddingJudge(name, spec, cache_dir)
