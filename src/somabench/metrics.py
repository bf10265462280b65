"""Derived numbers, computed once from raw counts: tokens per dialogue, throughput, wall time.

Why one module: reports, the run summary and W&B must never disagree about what
"tokens per dialogue" or "throughput" means.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from somabench.records import DialogueRecord, TurnRecord

TOKEN_ROLES = ("F", "G", "compressor", "router")


def dialogue_frame(dialogues: Iterable[DialogueRecord]) -> pd.DataFrame:
    """One row per dialogue with token totals per role (prompt+completion), adaptation split."""
    rows = []
    for d in dialogues:
        row: dict[str, Any] = {"method": d.method, "dataset": d.dataset, "dialogue_id": d.dialogue_id,
                               "run_id": d.run_id, "n_turns": d.n_turns,
                               "wall_s": d.seconds.get("wall"), "adapt_s": d.seconds.get("adapt", 0.0)}
        total = 0
        for role in TOKEN_ROLES:
            usage = d.tokens.get(role)
            value = usage.total if usage is not None else None
            row[f"tokens_{role}"] = value or 0
            total += value or 0
            adapt = d.adaptation_tokens.get(role)
            row[f"adapt_tokens_{role}"] = (adapt.total or 0) if adapt is not None else 0
        row["tokens_total"] = total
        rows.append(row)
    return pd.DataFrame(rows)


def turn_frame(turns: Iterable[TurnRecord]) -> pd.DataFrame:
    rows = []
    for t in turns:
        row: dict[str, Any] = {"method": t.method, "dataset": t.dataset, "dialogue_id": t.dialogue_id,
                               "turn": t.turn, "served_by": t.served_by, "status": t.status,
                               "cached": t.cached, "generate_share_s": t.seconds.get("generate_share", 0.0),
                               "completion_tokens": sum((u.completion or 0) for r, u in t.tokens.items()
                                                        if r == t.served_by.split("+")[0])}
        for role in TOKEN_ROLES:
            usage = t.tokens.get(role)
            row[f"tokens_{role}"] = (usage.total or 0) if usage is not None else 0
        rows.append(row)
    return pd.DataFrame(rows)


def throughput(turns: pd.DataFrame) -> float | None:
    """Completion tokens of served answers / their generation seconds (batch shares)."""
    seconds = turns["generate_share_s"].sum()
    return float(turns["completion_tokens"].sum() / seconds) if seconds > 0 else None


def summary_table(dialogues: list[DialogueRecord], turns: list[TurnRecord]) -> pd.DataFrame:
    """Per method: dialogues, turns, tokens per dialogue (F/G/other/total), throughput, wall time."""
    dframe = dialogue_frame(dialogues)
    tframe = turn_frame(turns)
    if dframe.empty:
        return pd.DataFrame()
    out = []
    for (method, dataset), group in dframe.groupby(["method", "dataset"], sort=True):
        tgroup = tframe[(tframe["method"] == method) & (tframe["dataset"] == dataset)]
        out.append({
            "method": method, "dataset": dataset, "dialogues": len(group),
            "turns": int(group["n_turns"].sum()),
            "F_tokens/dlg": group["tokens_F"].mean(), "G_tokens/dlg": group["tokens_G"].mean(),
            "other_tokens/dlg": (group["tokens_compressor"] + group["tokens_router"]).mean(),
            "adapt_tokens/dlg": sum(group[f"adapt_tokens_{r}"] for r in TOKEN_ROLES).mean(),
            "total_tokens/dlg": group["tokens_total"].mean(),
            "served_by_G_%": 100.0 * (tgroup["served_by"].str.startswith("G").mean()) if len(tgroup) else None,
            "throughput_tok/s": throughput(tgroup) if len(tgroup) else None,
            "cached_%": 100.0 * tgroup["cached"].mean() if len(tgroup) else None,
            "wall_s/dlg": group["wall_s"].mean(), "adapt_s/dlg": group["adapt_s"].mean(),
        })
    return pd.DataFrame(out)


def to_markdown(frame: pd.DataFrame, floatfmt: str = ".1f") -> str:
    """A dependency-free markdown table (pandas' to_markdown needs tabulate)."""
    if frame.empty:
        return "_(no rows)_\n"
    cols = list(frame.columns)

    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and pd.isna(v)):
            return "–"
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"
