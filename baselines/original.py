"""Original: the large model F answers every turn with the full history (the reference).

``original_prefix_cache`` is the same method served the way modern engines serve it: F keeps
the KV cache of earlier prompts and prefills only the tokens no earlier call computed (hf:
``backends/prefix_cache.py``; vLLM: ``enable_prefix_caching``; llama.cpp: ``cache_prompt``).
Answers are the Original's; the records show fewer prompt tokens computed
(``Usage.cached_prompt``), which cached-input prices bill lower (``model.prices.*.cached_prompt``).
"""

from __future__ import annotations

from typing import Any

from somabench.backends.base import Completion
from somabench.methods import Method, Session, TurnPlan


class Original(Method):
    name = "original"

    def plan(self, session: Session, turn: int) -> TurnPlan:
        return TurnPlan(role="F", messages=session.full_messages(turn))


class _OriginalWithF(Original):
    """The Original served with a backend knob of F (``method.model_overrides.F.<knob>``); a
    config without the knob would silently be the plain Original, so it is refused."""

    knob = ""
    config_files = ""

    @classmethod
    def label_problem(cls, cfg: Any) -> str | None:
        overrides = (cfg.get("model_overrides") or {}).get("F") or {}
        if not overrides.get(cls.knob):
            return (f"method {cfg.get('name', cls.name)} needs method.model_overrides.F.{cls.knob}"
                    f" ({cls.config_files}); without it this is the plain Original")
        return None


class OriginalPrefixCache(_OriginalWithF):
    """The Original with F's prefix cache on (``method.model_overrides.F.prefix_cache``)."""

    name = "original_prefix_cache"
    knob = "prefix_cache"
    config_files = "conf/method/original_prefix_cache.yaml"


class OriginalKVPress(_OriginalWithF):
    """The Original with F's KV cache compressed after each prefill (kvpress, in its own venv:
    ``make kvpress-env``): StreamingLLM / SnapKV ... at a compression ratio, set by
    ``method.model_overrides.F.kv_press`` (conf/method/kvpress_*.yaml)."""

    name = "kvpress"
    knob = "kv_press"
    config_files = "conf/method/kvpress_*.yaml"

    def observe(self, session: Session, turn: int, plan: TurnPlan, completion: Completion) -> None:
        """The turn record says whether the press compressed this prompt and how many of its
        KV entries each layer kept (``extra.kv_press``; a request-cache hit keeps it too)."""
        if "kv_press" in completion.meta:
            plan.extra["kv_press"] = completion.meta["kv_press"]
