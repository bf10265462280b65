"""Prompt tokens computed versus read from a KV/prefix cache (a hook of
:func:`somabench.report.build.build_report`, ``EXTRA_ARTIFACTS``).

Why: the tokens table counts prompt tokens *sent*, which is what an API bills without a cache.
A serving engine with prefix caching (``method=original_prefix_cache``, vLLM's
``enable_prefix_caching``, llama-server's ``cache_prompt``) sends the same prompt but prefills
only its new part, and a hosted API bills the rest at its cached-input rate. This table puts
the prompt tokens the models actually *computed* per dialogue beside the share read from cache,
so a reader sees what the prefix cache saves and whom it saves it for (issue 26).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from somabench.report import figures as figs
from somabench.report.build import Artifact, _named
from somabench.report.tables import StatsKnobs, make_table

ROLES = ("F", "G")
"""The models whose prompts are prefilled per turn (the compressor and router are not cached)."""


def prefill_frame(dialogues: pd.DataFrame) -> pd.DataFrame:
    """Per dialogue, on the served turns (adaptation excluded): ``prompt_sent``,
    ``prompt_cached`` (read from a KV/prefix cache; 0 where the backend reports nothing) and
    ``prompt_computed`` = sent - cached, summed over F and G."""
    out = dialogues.copy()

    def served(role: str, part: str) -> pd.Series:
        total = out.get(f"tokens_{role}_{part}", pd.Series(0.0, index=out.index)).fillna(0.0)
        adapt = out.get(f"adapt_tokens_{role}_{part}", pd.Series(0.0, index=out.index)).fillna(0.0)
        return total - adapt

    out["prompt_sent"] = sum((served(r, "prompt") for r in ROLES), pd.Series(0.0, index=out.index))
    out["prompt_cached"] = sum((served(r, "cached_prompt") for r in ROLES), pd.Series(0.0, index=out.index))
    out["prompt_computed"] = out["prompt_sent"] - out["prompt_cached"]
    return out


def cached_shares(frame: pd.DataFrame) -> dict[str, float]:
    """Per method label: cached prompt tokens / prompt tokens sent, pooled over its dialogues."""
    sums = frame.groupby("label")[["prompt_cached", "prompt_sent"]].sum()
    return {str(label): float(r.prompt_cached / r.prompt_sent) for label, r in sums.iterrows()
            if r.prompt_sent > 0}


def press_note(turns: pd.DataFrame) -> str | None:
    """Per method label whose turns record a KV-cache press (``extra.kv_press``): how many of its
    prompts the press compressed and the share of their prompt KV entries it kept."""
    if turns.empty or "prompt_kv_kept" not in turns or turns["prompt_kv_kept"].isna().all():
        return None
    parts = []
    for label, group in turns.dropna(subset=["prompt_kv_kept"]).groupby("label"):
        sent = float(group["tokens_F_prompt"].sum())
        applied = int(group["kv_press_applied"].fillna(False).astype(bool).sum())
        kept = f"{group['prompt_kv_kept'].sum() / sent:.1%}" if sent > 0 else "n/a"
        parts.append(f"{label}: compressed {applied} of {len(group)} prompts, kept {kept} of their "
                     f"prompt KV entries")
    return ("KV-cache compression (kvpress, per turn extra.kv_press): " + "; ".join(parts) + ". A "
            "press compresses after the prefill, so it computes every prompt token (this table) "
            "and bills them all; what it saves is KV memory and attention while decoding.")


def add_prefill_artifacts(result: Any, data: Any, cfg: Any, family: str, tag: str, out: Path) -> None:
    """``prefill_<tag>``: prompt tokens computed per dialogue, mean [CI], with each method's
    share of prompt tokens read from cache in the footnote."""
    name = f"prefill_{tag}"
    dialogues = data.dialogues[data.dialogues["family"] == family] if not data.dialogues.empty else data.dialogues
    if dialogues.empty:
        result.skip(name, "no dialogue records")
        return
    frame = prefill_frame(_named(cfg, dialogues))
    shares = cached_shares(frame)
    turns = data.turns[data.turns["family"] == family] if not data.turns.empty else data.turns
    pressed = press_note(turns)
    if not any(shares.values()) and pressed is None:
        result.skip(name, "no method read prompt tokens from a KV/prefix cache (every prompt was "
                          "computed in full; the tokens table already says so)")
        return
    cols = [figs.dataset_name(cfg, d) for d in figs.order_datasets(cfg, dialogues["dataset"].unique().tolist())]
    share_text = "; ".join(f"{label} {share:.1%}" for label, share in shares.items())
    notes = ["Prompt tokens F and G prefilled per dialogue on the served turns (adaptation excluded): "
             "tokens sent minus tokens read from a KV/prefix cache, as the engine reported them "
             "(vLLM num_cached_tokens, OpenAI usage.prompt_tokens_details.cached_tokens, llama.cpp "
             "timings.cache_n, the hf backend's kept cache; 0 where a backend reports nothing).",
             f"Share of prompt tokens read from cache, pooled over dialogues: {share_text}.",
             "The cost table prices cached tokens at model.prices.<role>.cached_prompt where set.",
             *([pressed] if pressed else [])]
    table = make_table(frame, value="prompt_computed", row="label", column="dataset",
                       metric="Prompt tokens computed / dialogue",
                       title=f"Prompt tokens computed per dialogue ({family})", higher_is_better=False,
                       decimals_mean=cfg.tables.decimals_tokens, decimals_std=cfg.tables.decimals_tokens,
                       row_order=figs.order_labels(cfg, dialogues), column_order=cols, notes=notes,
                       stats=StatsKnobs.from_cfg(cfg.stats))
    result.written.append(Artifact(name, "extra (issue 26)", table.write(out, name),
                                   "prompt tokens computed per dialogue (sent minus read from a prefix cache)"))


__all__ = ["add_prefill_artifacts", "cached_shares", "prefill_frame", "press_note"]
