"""Per-turn latency like vLLM's serving benchmark: TTFT, TPOT and end-to-end latency.

Why one module: the runner stamps each turn's timings here, and the run summary, the report
and W&B summarise them here, so "TTFT" means one thing everywhere (docs/reports.md, Latency).

Clock of a turn: every dialogue of a batch sends its turn at the same moment, the start of the
runner's turn step. ``queue`` is the wait from then until the call that answers the turn starts
(the other dialogues' planning, its own planning, an earlier role's batch); TTFT adds the
call's first token (for a batched call: the batch's first decoding step), end-to-end latency
adds the whole call (a batched answer is delivered when its batch returns). TPOT is
(last token - first token) / (output tokens - 1) of the answer itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from somabench.backends.base import Completion

QUEUE, TTFT, TPOT, LATENCY = "queue", "ttft", "tpot", "latency"
"""Keys this module adds to ``TurnRecord.seconds`` (all in seconds)."""
MEASURES = (TTFT, TPOT, LATENCY)
STATS = ("mean", "median", "p90", "p99")
"""Summary statistics per method and dataset (vLLM's benchmark reports these percentiles)."""
LABELS = {TTFT: "TTFT", TPOT: "TPOT", LATENCY: "latency"}
OK = "ok"


def queue_of_call(step_started: float, call_started: float) -> float:
    """Wait of a turn whose answer the runner requested at ``call_started``."""
    return round(max(call_started - step_started, 0.0), 6)


def queue_of_planned(step_started: float, plan_ended: float, completion: Completion) -> float:
    """Wait of a turn the method answered itself while planning (e.g. a served session adapter).

    When inside the plan the call started is not known, so the call is placed at the end of
    the plan: the wait is an upper bound and TTFT is never under-reported. A cache hit cost
    no time in this run: its answer was there when the plan ended."""
    spent = 0.0 if completion.cached else completion.seconds
    return round(max(plan_ended - step_started - spent, 0.0), 6)


def turn_timing(queue: float | None, completion: Completion) -> dict[str, float]:
    """``queue``/``ttft``/``tpot``/``latency`` seconds of one answered turn; a value the backend
    cannot tell (no streaming: no first token time) is left out, never 0. A cache hit keeps
    the generation times measured when it was generated (as throughput does)."""
    if queue is None:
        return {}
    out = {QUEUE: round(queue, 6), LATENCY: round(queue + completion.seconds, 6)}
    first, last = completion.first_token_s, completion.last_token_s
    if first is not None:
        out[TTFT] = round(queue + first, 6)
        n = completion.completion_tokens
        end = last if last is not None else completion.seconds
        if n is not None and n > 1:
            out[TPOT] = round(max(end - first, 0.0) / (n - 1), 6)
    return out


def latency_frame(turns: Iterable[Any]) -> pd.DataFrame:
    """One row per answered (``ok``) turn with ``ttft_s``, ``tpot_s``, ``latency_s`` (NaN where
    unknown: runs recorded before latency was measured, non-streaming backends)."""
    rows = []
    for t in turns:
        if t.status != OK:
            continue
        row = {"method": t.method, "dataset": t.dataset, "dialogue_id": t.dialogue_id,
               "turn": t.turn, "served_by": t.served_by, "cached": t.cached}
        for key in MEASURES:
            value = t.seconds.get(key)
            row[f"{key}_s"] = float("nan") if value is None else float(value)
        rows.append(row)
    columns = ["method", "dataset", "dialogue_id", "turn", "served_by", "cached",
               *(f"{k}_s" for k in MEASURES)]
    return pd.DataFrame(rows, columns=columns)


def describe(values: pd.Series) -> dict[str, float | None]:
    """Mean, median, p90 and p99 of the known values (linear interpolation, as numpy)."""
    known = values.dropna().to_numpy(dtype=float)
    if known.size == 0:
        return dict.fromkeys(STATS)
    return {"mean": float(known.mean()), "median": float(np.percentile(known, 50)),
            "p90": float(np.percentile(known, 90)), "p99": float(np.percentile(known, 99))}


def latency_summary(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group: ``<measure>_s_<stat>`` for TTFT, TPOT, latency and ``latency_turns`` (the
    turns with a latency; TTFT/TPOT may have fewer where a backend does not stream)."""
    columns = [*by, "latency_turns", *(f"{m}_s_{s}" for m in MEASURES for s in STATS)]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for key, group in frame.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = dict(zip(by, key, strict=True))
        row["latency_turns"] = int(group[f"{LATENCY}_s"].notna().sum())
        for measure in MEASURES:
            for stat, value in describe(group[f"{measure}_s"]).items():
                row[f"{measure}_s_{stat}"] = value
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def with_latency(summary: pd.DataFrame, turns: Iterable[Any]) -> pd.DataFrame:
    """The run summary (one row per method and dataset) with the latency columns added."""
    if summary.empty:
        return summary
    keys = ["method", "dataset"]
    stats = latency_summary(latency_frame(turns), keys)
    return summary.merge(stats, on=keys, how="left")


def latency_metrics(turns: Iterable[Any]) -> dict[str, float | None]:
    """Flat ``latency/<measure>_s_<stat>`` keys of a run (W&B summary)."""
    frame = latency_frame(turns)
    out: dict[str, float | None] = {}
    for measure in MEASURES:
        for stat, value in describe(frame[f"{measure}_s"]).items():
            out[f"latency/{measure}_s_{stat}"] = value
    return out


__all__ = ["LATENCY", "MEASURES", "QUEUE", "STATS", "TPOT", "TTFT", "describe", "latency_frame",
           "latency_metrics", "latency_summary", "queue_of_call", "queue_of_planned",
           "turn_timing", "with_latency"]
