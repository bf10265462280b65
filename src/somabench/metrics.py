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
            for part in ("prompt", "completion"):  # split needed for $ cost (prices differ)
                row[f"tokens_{role}_{part}"] = (getattr(usage, part) or 0) if usage is not None else 0
                row[f"adapt_tokens_{role}_{part}"] = (getattr(adapt, part) or 0) if adapt is not None else 0
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
                                                        if r == t.served_by.split("+")[0]),
                                "user_words": len(t.user.split()), "response_words": len(t.response.split())}
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


# -- Split of tokens per dialogue into what the reader should see (Fig. 2 / 5 / 6) -----------
STACKS = ("F", "G", "compressor+router", "adaptation")
"""Stacks of tokens per dialogue: serving tokens of F, of G, of the compressor/router, and all
adaptation tokens (any model) on top, so the reader sees where a method's tokens go."""


def token_stacks(dialogues: pd.DataFrame) -> pd.DataFrame:
    """Per dialogue: serving tokens of F / G / compressor+router and adaptation tokens.

    ``dialogues`` is a :func:`dialogue_frame`; DialogueRecord.tokens already include adaptation,
    so adaptation is subtracted from each role before stacking (the stacks sum to the total).
    """
    out = dialogues.copy()
    adapt = sum(out[f"adapt_tokens_{r}"] for r in TOKEN_ROLES)
    out["F"] = out["tokens_F"] - out["adapt_tokens_F"]
    out["G"] = out["tokens_G"] - out["adapt_tokens_G"]
    out["compressor+router"] = (out["tokens_compressor"] + out["tokens_router"]
                                - out["adapt_tokens_compressor"] - out["adapt_tokens_router"])
    out["adaptation"] = adapt
    return out


def cost_stacks(dialogues: pd.DataFrame, prices: dict[str, Any]) -> tuple[pd.DataFrame, list[str]]:
    """USD per dialogue in the same stacks as :func:`token_stacks`.

    ``prices`` is ``model.prices`` from the run config: USD per 1M tokens per role with
    ``prompt``/``completion`` keys. Roles without a price are not costed; their names are
    returned so the figure can say so (never priced as 0 silently).
    """
    per_million = 1_000_000  # prices are quoted per 1M tokens (conf/model/*.yaml)
    out = dialogues.copy()
    unpriced = []

    def usd(role: str, prefix: str) -> pd.Series:
        price = prices.get(role) if isinstance(prices, dict) else None
        if not price:
            used = out[f"{prefix}tokens_{role}_prompt"] + out[f"{prefix}tokens_{role}_completion"]
            if (used > 0).any() and role not in unpriced:
                unpriced.append(role)
            return pd.Series(0.0, index=out.index)
        return (out[f"{prefix}tokens_{role}_prompt"] * float(price.get("prompt", 0.0))
                + out[f"{prefix}tokens_{role}_completion"] * float(price.get("completion", 0.0))) / per_million

    serve = {r: usd(r, "") - usd(r, "adapt_") for r in TOKEN_ROLES}
    out["F"] = serve["F"]
    out["G"] = serve["G"]
    out["compressor+router"] = serve["compressor"] + serve["router"]
    out["adaptation"] = sum(usd(r, "adapt_") for r in TOKEN_ROLES)
    out["usd_total"] = out[list(STACKS)].sum(axis=1)
    return out, unpriced


# -- Fig. 1: how much content each turn carries ----------------------------------------------
def content_tokens_per_turn(turns: pd.DataFrame) -> pd.DataFrame:
    """Tokens a turn adds to the dialogue (user message + answer), per turn record.

    The answer's tokens are the backend's own count. The user message is not counted by any
    backend on its own (prompt counts include the whole history and the chat template), so
    it is estimated as its words × the run's measured answer tokens per word. Returns the
    turn frame with ``content_tokens`` added. Expects ``run_key`` when several runs are mixed.
    """
    out = turns.copy()
    keys = ["run_key"] if "run_key" in out.columns else ["method", "dataset"]
    ratio = out.groupby(keys)[["completion_tokens", "response_words"]].transform("sum")
    per_word = ratio["completion_tokens"] / ratio["response_words"].where(ratio["response_words"] > 0)
    out["content_tokens"] = out["completion_tokens"] + out["user_words"] * per_word
    return out


def relative_tokens_per_turn(turns: pd.DataFrame) -> pd.DataFrame:
    """Mean content tokens at each turn divided by the mean at the first turn, per dataset."""
    frame = content_tokens_per_turn(turns)
    frame = frame[frame["status"] == "ok"] if "status" in frame.columns else frame
    means = frame.groupby(["dataset", "turn"])["content_tokens"].agg(["mean", "count"]).reset_index()
    first = means[means["turn"] == 0].set_index("dataset")["mean"]
    means["relative"] = means["mean"] / means["dataset"].map(first)
    return means.rename(columns={"mean": "content_tokens", "count": "n"})


# -- Similarity from judge scores (Table 1 / 3) ----------------------------------------------
SCORE_OK = "ok"


def score_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Judge score lines (``scores.jsonl``) as a frame; missing optional columns are added."""
    frame = pd.DataFrame(list(rows))
    for col in ("run_id", "dialogue_id", "turn", "method", "judge", "judge_kind", "prompt_id",
                "status", "score", "score_norm", "post_switch"):
        if col not in frame.columns:
            frame[col] = pd.Series(dtype=object)
    return frame


def score_metric(scores: pd.DataFrame) -> pd.Series:
    """What each score line measures: its ``metric`` (the judge prompt's name, e.g. ``similarity``
    for both similarity_v1 and the embedding proxy, ``ability_memory``); lines without one fall
    back to the prompt id minus its version suffix."""
    from_prompt = scores["prompt_id"].astype(str).str.replace(r"_v\d+$", "", regex=True)
    if "metric" not in scores.columns:
        return from_prompt
    return scores["metric"].where(scores["metric"].notna(), from_prompt).astype(str)


def excluded_counts(scores: pd.DataFrame) -> dict[str, int]:
    """How many score rows are not ``ok``, by status (these never enter an aggregate)."""
    bad = scores[scores["status"] != SCORE_OK]
    return {str(k): int(v) for k, v in bad["status"].value_counts().sort_index().items()}


PERCENT = 100.0  # similarity is reported in percent (paper Table 1)


def similarity_per_turn(scores: pd.DataFrame, by: list[str], scale: float = PERCENT) -> pd.DataFrame:
    """Similarity per turn: mean over judges of the ``ok`` scores' ``score_norm``, × ``scale``.

    ``by`` identifies a dialogue (e.g. run key + dialogue id); output has one row per
    (dialogue, turn) with ``similarity`` and ``n_judges``.
    """
    ok = scores[(scores["status"] == SCORE_OK) & scores["score_norm"].notna()].copy()
    if ok.empty:
        return pd.DataFrame(columns=[*by, "turn", "similarity", "n_judges"])
    ok["score_norm"] = ok["score_norm"].astype(float)
    per_turn = (ok.groupby([*by, "turn"], dropna=False)
                .agg(similarity=("score_norm", "mean"), n_judges=("judge", "nunique")).reset_index())
    per_turn["similarity"] = per_turn["similarity"] * scale
    return per_turn


def similarity_per_dialogue(scores: pd.DataFrame, by: list[str], scale: float = PERCENT) -> pd.DataFrame:
    """Similarity per dialogue: mean over judges per turn, then mean over turns, × ``scale``.

    Only ``ok`` rows with a ``score_norm`` count. ``by`` are the columns that identify a
    dialogue (e.g. run key + dialogue id); each output row is one dialogue with
    ``similarity``, ``n_turns`` (turns with at least one ok score) and ``n_judges``.
    """
    per_turn = similarity_per_turn(scores, by, scale)
    if per_turn.empty:
        return pd.DataFrame(columns=[*by, "similarity", "n_turns", "n_judges"])
    return (per_turn.groupby(by, dropna=False)
            .agg(similarity=("similarity", "mean"), n_turns=("turn", "count"), n_judges=("n_judges", "max"))
            .reset_index())


def mean_std(values: pd.Series) -> tuple[float | None, float | None, int]:
    """Mean and sample std (ddof=1, as the paper's Avg column) of a series, and its size."""
    values = values.dropna().astype(float)
    n = len(values)
    if n == 0:
        return None, None, 0
    return float(values.mean()), (float(values.std(ddof=1)) if n > 1 else None), n


def run_metrics(dialogues: list[DialogueRecord], turns: list[TurnRecord],
                scores: pd.DataFrame | None = None,
                similarity_metric: str | None = None) -> dict[str, float | int | None]:
    """One run's headline numbers with ``area/name`` keys (W&B summary, run comparisons).

    ``similarity_metric`` names the similarity score lines (``report.similarity_metric``).
    """
    dframe = dialogue_frame(dialogues)
    tframe = turn_frame(turns)
    out: dict[str, float | int | None] = {"run/dialogues": len(dframe), "run/turns": len(tframe)}
    if not dframe.empty:
        for role in TOKEN_ROLES:
            for part in ("prompt", "completion"):
                out[f"tokens/{role.lower()}_{part}"] = float(dframe[f"tokens_{role}_{part}"].mean())
        out["tokens/total"] = float(dframe["tokens_total"].mean())
        out["tokens/adaptation"] = float(sum(dframe[f"adapt_tokens_{r}"] for r in TOKEN_ROLES).mean())
        out["time/wall_s"] = float(dframe["wall_s"].mean()) if dframe["wall_s"].notna().any() else None
    if not tframe.empty:
        out["speed/tps"] = throughput(tframe)
        out["turns/served_by_g"] = float(tframe["served_by"].str.startswith("G").mean())
        out["turns/errors"] = int((tframe["status"] != "ok").sum())
    if scores is not None and not scores.empty and similarity_metric:
        sim = scores[score_metric(scores) == similarity_metric]
        per_dialogue = similarity_per_dialogue(sim, ["dialogue_id"])
        mean, std, n = mean_std(per_dialogue["similarity"])
        # same keys as the judge panel's summary (somabench.judges.aggregate.metrics_from)
        out.update({"sim/judge_mean": mean, "sim/judge_std": std, "sim/n_dialogues": n,
                    "sim/excluded": int((sim["status"] != SCORE_OK).sum())})
        post = sim[sim["post_switch"].fillna(False).astype(bool)]
        if not post.empty:
            mean, std, n = mean_std(similarity_per_dialogue(post, ["dialogue_id"])["similarity"])
            out.update({"sim/judge_mean_post_switch": mean, "sim/judge_std_post_switch": std,
                        "sim/n_dialogues_post_switch": n})
    return out


def dialogue_throughput(turns: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Throughput per dialogue (its completion tokens / its generation seconds), so reports
    can show mean ± std over dialogues; ``by`` identifies a dialogue (e.g. run key + id)."""
    rows = []
    for key, group in turns.groupby(by, dropna=False):
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True)),
                     "tps": throughput(group)})
    return pd.DataFrame(rows, columns=[*by, "tps"])
