"""Derived numbers, computed once from raw counts: tokens per dialogue, throughput, wall time.

Why one module: reports, the run summary and W&B must never disagree about what
"tokens per dialogue" or "throughput" means.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from somabench.records import ENCODER_ROLE, JUDGE_OK, RESTORED_SECONDS, DialogueRecord, TurnRecord

TOKEN_ROLES = ("F", "G", "compressor", "router", ENCODER_ROLE)
USAGE_PARTS = ("prompt", "completion", "cached_prompt")
"""Per-role token columns of :func:`dialogue_frame`; ``cached_prompt`` (prompt tokens read from
a KV/prefix cache, 0 where unknown) is part of ``prompt``, priced at ``cached_prompt`` if set."""
TRAIN_PASSES = ("forward", "backward")
"""Training-token classes (contract 2: ``DialogueRecord.train_tokens[role][pass]``)."""
# Per-turn stages a method times itself (``TurnPlan.seconds``) that are NOT also counted in
# the dialogue's adaptation seconds; used only for records without the runner's ``plan`` timer.
LEGACY_STAGES = ("compress", "route")
PLAN_KEYS = ("plan", "observe", RESTORED_SECONDS)
"""Runner-measured wall seconds of ``Method.plan`` / ``Method.observe`` for a turn (they
include compression, routing, gating and any adaptation the method does while planning), and
the work it restored from a cache (``records.RESTORED_SECONDS``)."""
SETUP_KEY = "setup"
"""One-time setup inside a turn's plan (loading a compressor model on first use): a cost of
the run, not of the turn, so it is left out of end-to-end seconds."""


def _count(value: float | None) -> float:
    """A token count (or seconds) as a float; a count nobody measured is NaN (missing), never 0."""
    return float("nan") if value is None else float(value)


def _load_1m(d: DialogueRecord) -> float:
    """The 1-minute load average when the dialogue ended (NaN where it was not recorded)."""
    load = (getattr(d, "machine", None) or {}).get("load_avg")
    return float(load[0]) if load else float("nan")


def dialogue_frame(dialogues: Iterable[DialogueRecord]) -> pd.DataFrame:
    """One row per dialogue with token totals per role (prompt+completion), adaptation split,
    training tokens (forward/backward per role) and wall/adaptation/start seconds.

    A role that was used but whose count is unknown is NaN in its column and named in
    ``tokens_missing``; ``tokens_total`` sums the known counts (serving + adaptation, without
    training) and ``tokens_total_incl_training`` adds the training tokens.
    """
    rows = []
    for d in dialogues:
        row: dict[str, Any] = {"method": d.method, "dataset": d.dataset, "dialogue_id": d.dialogue_id,
                               "run_id": d.run_id, "n_turns": d.n_turns,
                               "wall_s": d.seconds.get("wall"), "adapt_s": d.seconds.get("adapt", 0.0),
                               "start_s": d.seconds.get("start"), "load_1m": _load_1m(d),
                               "torch_threads": _count((getattr(d, "machine", None) or {}).get("torch_threads"))}
        total = 0.0
        missing = []
        for role in TOKEN_ROLES:
            usage = d.tokens.get(role)
            value = usage.total if usage is not None else 0
            if usage is not None and value is None:
                missing.append(role)
            row[f"tokens_{role}"] = _count(value)
            total += value or 0
            adapt = d.adaptation_tokens.get(role)
            row[f"adapt_tokens_{role}"] = _count(adapt.total) if adapt is not None else 0.0
            for part in USAGE_PARTS:  # split needed for $ cost (prices differ)
                row[f"tokens_{role}_{part}"] = (getattr(usage, part) or 0) if usage is not None else 0
                row[f"adapt_tokens_{role}_{part}"] = (getattr(adapt, part) or 0) if adapt is not None else 0
        train = getattr(d, "train_tokens", None) or {}
        train_total = 0
        for role in ("F", "G"):
            for kind in TRAIN_PASSES:
                value = (train.get(role) or {}).get(kind)
                row[f"train_tokens_{role}_{kind}"] = _count(value) if role in train else 0.0
                train_total += value or 0
        row["tokens_training"] = float(train_total)
        row["tokens_total"] = total
        row["tokens_total_incl_training"] = total + train_total
        row["tokens_missing"] = ",".join(missing)
        rows.append(row)
    return pd.DataFrame(rows)


def turn_seconds_e2e(seconds: dict[str, float]) -> float:
    """Wall seconds a turn cost end to end: planning (compress, route, gate, adaptation done
    while planning) + its share of generation + observing. Records written before the runner
    timed ``plan`` fall back to generation + the method's own ``compress``/``route`` stages
    (their adaptation is then added per dialogue from ``adapt_s``)."""
    gen = float(seconds.get("generate_share", 0.0) or 0.0)
    if "plan" in seconds:
        planned = sum(float(seconds.get(k, 0.0) or 0.0) for k in PLAN_KEYS)
        return gen + max(planned - float(seconds.get(SETUP_KEY, 0.0) or 0.0), 0.0)
    return gen + sum(float(seconds.get(k, 0.0) or 0.0) for k in LEGACY_STAGES)


def turn_frame(turns: Iterable[TurnRecord]) -> pd.DataFrame:
    rows = []
    for t in turns:
        served = t.served_by.split("+")[0]
        answer = t.tokens.get(served)
        row: dict[str, Any] = {"method": t.method, "dataset": t.dataset, "dialogue_id": t.dialogue_id,
                               "turn": t.turn, "served_by": t.served_by, "status": t.status,
                               "cached": t.cached, "generate_share_s": t.seconds.get("generate_share", 0.0),
                               "e2e_s": turn_seconds_e2e(t.seconds), "timed_plan": "plan" in t.seconds,
                               "completion_tokens": _count(answer.completion if answer else None),
                               "user_words": len(t.user.split()), "response_words": len(t.response.split()),
                               # latency (somabench.latency): NaN where not measured
                               **{f"{k}_s": _count(t.seconds.get(k)) for k in ("ttft", "tpot", "latency")}}
        for role in TOKEN_ROLES:
            usage = t.tokens.get(role)
            row[f"tokens_{role}"] = _count(usage.total) if usage is not None else 0.0
            for part in USAGE_PARTS:  # for the per-turn $ cost (prices differ by part)
                row[f"tokens_{role}_{part}"] = (getattr(usage, part) or 0) if usage is not None else 0
        row["tokens_missing"] = ",".join(r for r, u in t.tokens.items() if u.total is None)
        press = (t.extra or {}).get("kv_press") or {}  # KV-cache compression (backends/kv_press.py)
        row["kv_press_applied"] = press.get("applied")
        row["prompt_kv_kept"] = _count(press.get("prompt_kv_kept"))
        rows.append(row)
    return pd.DataFrame(rows)


def mark_missing(dialogues: pd.DataFrame, turns: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Add to each dialogue's ``tokens_missing`` the roles some of its turns could not count: a
    dialogue total summed over turns would otherwise hide them (a sum of a missing and a known
    count looks known)."""
    if dialogues.empty or turns.empty or "tokens_missing" not in turns:
        return dialogues
    per = (turns[turns["tokens_missing"].astype(str) != ""].groupby(keys)["tokens_missing"]
           .agg(lambda s: ",".join(sorted({r for v in s for r in str(v).split(",") if r}))))
    if per.empty:
        return dialogues
    out = dialogues.copy()
    index = pd.MultiIndex.from_frame(out[keys]) if len(keys) > 1 else pd.Index(out[keys[0]])
    extra = pd.Series(per.reindex(index).to_numpy(), index=out.index).fillna("")
    out["tokens_missing"] = [",".join(sorted({r for r in f"{a},{b}".split(",") if r}))
                             for a, b in zip(out["tokens_missing"], extra, strict=True)]
    return out


def throughput(turns: pd.DataFrame) -> float | None:
    """Generation throughput: completion tokens of served answers / their generation seconds
    (batch shares). Cached answers count at the seconds recorded when they were generated."""
    seconds = turns["generate_share_s"].sum()
    tokens = turns["completion_tokens"]
    if seconds <= 0 or tokens.isna().all():
        return None
    return float(tokens.sum() / seconds)


def e2e_throughput(turns: pd.DataFrame, adapt_s: float = 0.0, start_s: float = 0.0) -> float | None:
    """End-to-end throughput: completion tokens / wall seconds of the turns including
    compression, routing, gating and adaptation (amortised over the turns it serves).

    ``adapt_s`` is added only for turns without the runner's ``plan`` timer (old records:
    their adaptation is not inside any turn's seconds); ``start_s`` is ``Method.start``'s time.
    """
    tokens = turns["completion_tokens"]
    legacy = ~turns["timed_plan"].astype(bool) if "timed_plan" in turns else pd.Series(True, index=turns.index)
    seconds = float(turns["e2e_s"].sum()) + float(start_s or 0.0) + (float(adapt_s or 0.0) if legacy.any() else 0.0)
    if seconds <= 0 or tokens.isna().all():
        return None
    return float(tokens.sum() / seconds)


def dialogue_throughput(turns: pd.DataFrame, by: list[str],
                        dialogues: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per dialogue: generation ``tps`` and end-to-end ``tps_e2e`` (see :func:`e2e_throughput`;
    adaptation/start seconds come from ``dialogues`` when given), and ``cached_turns``."""
    extra: dict[Any, tuple[float, float]] = {}
    if dialogues is not None and not dialogues.empty:
        keys = [k for k in by if k in dialogues.columns]
        for key, group in dialogues.groupby(keys, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            extra[key] = (float(group["adapt_s"].fillna(0.0).sum()),
                          float(group["start_s"].fillna(0.0).sum()) if "start_s" in group else 0.0)
    rows = []
    for key, group in turns.groupby(by, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        adapt_s, start_s = extra.get(key, (0.0, 0.0))
        rows.append({**dict(zip(by, key, strict=True)), "tps": throughput(group),
                     "tps_e2e": e2e_throughput(group, adapt_s, start_s),
                     "cached_turns": int(group["cached"].sum()), "turns": len(group)})
    return pd.DataFrame(rows, columns=[*by, "tps", "tps_e2e", "cached_turns", "turns"])


def mean_tps(per: pd.DataFrame, column: str = "tps") -> float | None:
    """THE throughput estimator of a run or a cell: the mean over dialogues of each dialogue's
    tokens / seconds (:func:`dialogue_throughput`), for generation (``tps``) and end to end
    (``tps_e2e``) alike. Why per dialogue: the dialogue is the unit every CI resamples, and
    since a dialogue's end-to-end seconds include its generation seconds, end-to-end can never
    exceed generation (a pooled ratio for one and a mean of ratios for the other could)."""
    if per.empty or column not in per or not per[column].notna().any():
        return None
    return float(per[column].mean())


def summary_table(dialogues: list[DialogueRecord], turns: list[TurnRecord]) -> pd.DataFrame:
    """Per method: dialogues, turns, tokens per dialogue (F/G/other/total), throughput, wall time."""
    dframe = dialogue_frame(dialogues)
    tframe = turn_frame(turns)
    if dframe.empty:
        return pd.DataFrame()
    out = []
    for (method, dataset), group in dframe.groupby(["method", "dataset"], sort=True):
        tgroup = tframe[(tframe["method"] == method) & (tframe["dataset"] == dataset)]
        per = dialogue_throughput(tgroup, ["dialogue_id"], group) if len(tgroup) else pd.DataFrame()
        out.append({
            "method": method, "dataset": dataset, "dialogues": len(group),
            "turns": int(group["n_turns"].sum()),
            "F_tokens/dlg": group["tokens_F"].mean(), "G_tokens/dlg": group["tokens_G"].mean(),
            "other_tokens/dlg": (group["tokens_compressor"] + group["tokens_router"]).mean(),
            "adapt_tokens/dlg": sum(group[f"adapt_tokens_{r}"] for r in TOKEN_ROLES).mean(),
            "train_tokens/dlg": group["tokens_training"].mean(),
            "total_tokens/dlg": group["tokens_total"].mean(),
            "total_tokens_incl_training/dlg": group["tokens_total_incl_training"].mean(),
            "served_by_G_%": 100.0 * (tgroup["served_by"].str.startswith("G").mean()) if len(tgroup) else None,
            "throughput_tok/s": mean_tps(per, "tps"),  # generation only (mean over dialogues)
            "e2e_tok/s": mean_tps(per, "tps_e2e"),
            "cached_turns": int(tgroup["cached"].sum()) if len(tgroup) else 0,
            "wall_s/dlg": group["wall_s"].mean(), "adapt_s/dlg": group["adapt_s"].mean(),
        })
    from somabench.latency import with_latency  # TTFT/TPOT/latency mean, median, p90, p99

    return with_latency(pd.DataFrame(out), turns)


# -- Split of tokens per dialogue into what the reader should see (Fig. 2 / 5 / 6) -----------
STACKS = ("F", "G", "compressor+router", "adaptation", "training")
"""Stacks of tokens per dialogue: serving tokens of F, of G, of the compressor/router, the
adaptation tokens (inference calls spent adapting, any model) and the training tokens
(forward + backward passes of mining/LoRA/History-FT, contract 2), so the reader sees where
a method's tokens go. Totals with the last stack are labelled "incl. training"."""


def token_stacks(dialogues: pd.DataFrame) -> pd.DataFrame:
    """Per dialogue: serving tokens of F / G / compressor+router, adaptation and training tokens.

    ``dialogues`` is a :func:`dialogue_frame`; DialogueRecord.tokens already include adaptation,
    so adaptation is subtracted from each role before stacking (the stacks sum to
    ``tokens_total_incl_training``). Missing counts stay NaN.
    """
    out = dialogues.copy()
    adapt = sum(out[f"adapt_tokens_{r}"] for r in TOKEN_ROLES)
    out["F"] = out["tokens_F"] - out["adapt_tokens_F"]
    out["G"] = out["tokens_G"] - out["adapt_tokens_G"]
    out["compressor+router"] = (out["tokens_compressor"] + out["tokens_router"]
                                - out["adapt_tokens_compressor"] - out["adapt_tokens_router"])
    out["adaptation"] = adapt
    out["training"] = out["tokens_training"] if "tokens_training" in out else 0.0
    return out


PER_MILLION = 1_000_000  # prices are quoted in USD per 1M tokens (conf/model/*.yaml)


def _price(prices: dict[str, Any], role: str) -> dict[str, Any] | None:
    price = prices.get(role) if isinstance(prices, dict) else None
    return dict(price) if price else None


def role_usd(frame: pd.DataFrame, prices: dict[str, Any], role: str, prefix: str = "",
             unpriced: list[str] | None = None) -> pd.Series:
    """USD per row for ``role``'s ``<prefix>tokens_<role>_{prompt,completion,cached_prompt}``
    columns at ``prices[role]`` (USD per 1M tokens). Prompt tokens read from a cache cost the
    ``cached_prompt`` rate where one is set (else the prompt rate). A role with tokens but no
    price costs 0 here and is appended to ``unpriced`` (the caller says so; never silent)."""
    price = _price(prices, role)
    zero = pd.Series(0.0, index=frame.index)
    prompt = frame[f"{prefix}tokens_{role}_prompt"].fillna(0.0)
    completion = frame[f"{prefix}tokens_{role}_completion"].fillna(0.0)
    column = f"{prefix}tokens_{role}_cached_prompt"
    cached = frame[column].fillna(0.0) if column in frame else zero
    if not price:
        if unpriced is not None and ((prompt + completion) > 0).any() and role not in unpriced:
            unpriced.append(role)
        return zero
    fresh_rate = float(price.get("prompt", 0.0))
    # no cached-input rate set: cached tokens are billed like any prompt token (unchanged)
    cached_rate = float(price["cached_prompt"]) if price.get("cached_prompt") is not None else fresh_rate
    return ((prompt - cached) * fresh_rate + cached * cached_rate
            + completion * float(price.get("completion", 0.0))) / PER_MILLION


def turn_usd(turns: pd.DataFrame, prices: dict[str, Any]) -> tuple[pd.Series, list[str]]:
    """USD of each turn (a :func:`turn_frame`): every role's tokens at its price, as
    :func:`cost_stacks` prices a dialogue's serving stacks; and the roles left unpriced."""
    unpriced: list[str] = []
    total = sum((role_usd(turns, prices, role, "", unpriced) for role in TOKEN_ROLES),
                pd.Series(0.0, index=turns.index))
    return total, unpriced


def cost_stacks(dialogues: pd.DataFrame, prices: dict[str, Any]) -> tuple[pd.DataFrame, list[str]]:
    """USD per dialogue in the same stacks as :func:`token_stacks`.

    ``prices`` is ``model.prices`` from the run config: USD per 1M tokens per role
    (``F``, ``G``, ``compressor``, ``router``) with ``prompt``/``completion`` keys, and
    ``cached_prompt`` (optional: the cached-input rate for prompt tokens read from a prefix
    cache, ``Usage.cached_prompt``), and
    ``train: {forward: m_f, backward: m_b}``: a training token of role R costs m × R's prompt
    price (contract 2). Token classes used without a price are not costed; their names are
    returned so tables/figures say so (never priced as 0 silently).
    """
    out = dialogues.copy()
    unpriced: list[str] = []

    def usd(role: str, prefix: str) -> pd.Series:
        return role_usd(out, prices, role, prefix, unpriced)

    serve = {r: usd(r, "") - usd(r, "adapt_") for r in TOKEN_ROLES}
    out["F"] = serve["F"]
    out["G"] = serve["G"]
    out["compressor+router"] = serve["compressor"] + serve["router"]
    out["adaptation"] = sum(usd(r, "adapt_") for r in TOKEN_ROLES)
    train_price = _price(prices, "train") or {}
    training = pd.Series(0.0, index=out.index)
    for role in ("F", "G"):
        for kind in TRAIN_PASSES:
            col = f"train_tokens_{role}_{kind}"
            if col not in out or not (out[col].fillna(0.0) > 0).any():
                continue
            base = _price(prices, role)
            if not base or kind not in train_price:
                name = f"train.{kind} ({role})"
                if name not in unpriced:
                    unpriced.append(name)
                continue
            training = training + out[col].fillna(0.0) * float(train_price[kind]) * float(
                base.get("prompt", 0.0)) / PER_MILLION
    out["training"] = training
    out["usd_total"] = out[list(STACKS)].sum(axis=1)
    return out, unpriced


def rank_inversions(frame: pd.DataFrame, label: str, tokens: str, usd: str) -> list[str]:
    """Pairs where a method is cheaper in USD although it uses more tokens, with the reason the
    stacks give (which token classes are cheap): cost figures must say why, not just rank."""
    means = frame.groupby(label)[[tokens, usd]].mean().dropna()
    notes = []
    for a, ra in means.iterrows():
        for b, rb in means.iterrows():
            if a != b and ra[usd] < rb[usd] and ra[tokens] > rb[tokens]:
                notes.append(f"{a} costs less than {b} with {ra[tokens] / rb[tokens]:.1f}x its tokens "
                             f"(its token classes are priced lower: model.prices)")
    return notes


# -- Fig. 1: how much content each turn carries ----------------------------------------------
def content_tokens_per_turn(turns: pd.DataFrame) -> pd.DataFrame:
    """Tokens a *served* turn adds to the dialogue (user message + answer), per turn record.

    The answer's tokens are the backend's own count. The user message is not counted by any
    backend on its own (prompt counts include the whole history and the chat template), so
    it is estimated as its words × the run's measured answer tokens per word. Returns the
    turn frame with ``content_tokens`` added. Expects ``run_key`` when several runs are mixed.
    This is the served-tokens variant of Fig. 1; :func:`data_tokens_per_turn` is the paper's.
    """
    out = turns.copy()
    keys = ["run_key"] if "run_key" in out.columns else ["method", "dataset"]
    ratio = out.groupby(keys)[["completion_tokens", "response_words"]].transform("sum")
    per_word = ratio["completion_tokens"] / ratio["response_words"].where(ratio["response_words"] > 0)
    out["content_tokens"] = out["completion_tokens"] + out["user_words"] * per_word
    return out


def relative_to_first_turn(frame: pd.DataFrame, value: str) -> pd.DataFrame:
    """Mean ``value`` at each turn divided by the mean at the first turn, per dataset, with
    ``n`` (dialogues reaching that turn)."""
    means = frame.groupby(["dataset", "turn"])[value].agg(["mean", "count"]).reset_index()
    first = means[means["turn"] == 0].set_index("dataset")["mean"]
    means["relative"] = means["mean"] / means["dataset"].map(first)
    return means.rename(columns={"mean": value, "count": "n"})


def relative_tokens_per_turn(turns: pd.DataFrame) -> pd.DataFrame:
    """Served variant: mean content tokens at each turn / the mean at turn 1, per dataset."""
    frame = content_tokens_per_turn(turns)
    frame = frame[frame["status"] == "ok"] if "status" in frame.columns else frame
    return relative_to_first_turn(frame, "content_tokens")


def data_tokens_per_turn(dialogues: Iterable[Any], count: Any) -> pd.DataFrame:
    """Fig. 1 as in the paper, a property of the data: per (dataset, dialogue, turn) the tokens
    of the user message plus the dataset's reference assistant text, counted with ``count``
    (F's tokenizer: ``text -> int``). Turns without reference text count the user only and
    are flagged (``has_reference``). No generation."""
    rows = []
    for d in dialogues:
        for turn, t in enumerate(d.turns):
            reference = getattr(t, "reference", None) or getattr(t, "assistant", None) or ""
            rows.append({"dataset": d.dataset, "dialogue_id": d.id, "turn": turn,
                         "tokens": int(count(t.user)) + (int(count(reference)) if reference else 0),
                         "has_reference": bool(reference)})
    return pd.DataFrame(rows, columns=["dataset", "dialogue_id", "turn", "tokens", "has_reference"])


# -- Scores from judge lines: one path for every consumer ---------------------------------------
SCORE_OK = JUDGE_OK
PERCENT = 100.0  # bounded [0, 1] scores are reported in percent (paper Table 1)
SUBSETS = ("all", "post_switch")
UNKNOWN_PANEL = "unnamed"  # score lines written without a panel name (hand-made files)
FINGERPRINT = "panel_fingerprint"  # score-line field: which version of the panel wrote it
LEGACY_FINGERPRINT = ""  # lines written before panels had fingerprints


def score_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Judge score lines (``scores.jsonl``) as a frame; missing optional columns are added,
    ``metric`` is filled (:func:`score_metric`). A line without ``panel`` is put in the panel
    ``unnamed`` (kept apart: it is never relabelled as whatever panel judged last), a line
    without ``panel_fingerprint`` gets ``""`` (written before fingerprints existed)."""
    frame = pd.DataFrame(list(rows))
    for col in ("run_id", "dialogue_id", "turn", "method", "panel", FINGERPRINT, "judge", "judge_kind",
                "prompt_id", "metric", "status", "score", "score_norm", "post_switch", "finish_reason",
                "timestamp"):
        if col not in frame.columns:
            frame[col] = pd.Series(dtype=object)
    if not frame.empty:
        frame["metric"] = score_metric(frame)
        frame["panel"] = frame["panel"].where(frame["panel"].notna(), UNKNOWN_PANEL).astype(str)
        frame[FINGERPRINT] = frame[FINGERPRINT].where(frame[FINGERPRINT].notna(), LEGACY_FINGERPRINT).astype(str)
        frame["score_norm"] = pd.to_numeric(frame["score_norm"], errors="coerce")
    return frame


def current_fingerprints(scores: pd.DataFrame, recorded: dict[str, Any] | None = None) -> dict[str, str]:
    """panel -> its current fingerprint in ONE run's score lines: the one ``judge.json``
    recorded for the panel's latest judging (``recorded``: panel -> fingerprint), else the
    fingerprint of the panel's newest line."""
    out: dict[str, str] = {}
    if scores.empty:
        return out
    for panel, lines in scores.groupby("panel", sort=True):
        fp = (recorded or {}).get(str(panel))
        if fp is None:
            stamped = lines.sort_values("timestamp", na_position="first", kind="stable")
            fp = stamped[FINGERPRINT].iloc[-1]
        out[str(panel)] = str(fp or LEGACY_FINGERPRINT)
    return out


def split_current(scores: pd.DataFrame, recorded: dict[str, Any] | None = None
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ONE run's score lines -> (lines of each panel's current fingerprint, a summary of the
    others: panel, current, fingerprint, n_lines). A panel re-judged under the same name after
    its judges, models or prompts changed keeps its old lines in ``scores.jsonl`` for audit;
    they are reported (``superseded``), never averaged in."""
    columns = ["panel", "current", FINGERPRINT, "n_lines"]
    if scores.empty:
        return scores, pd.DataFrame(columns=columns)
    current = current_fingerprints(scores, recorded)
    keep = scores[FINGERPRINT].astype(str) == scores["panel"].astype(str).map(current)
    old = scores[~keep]
    summary = (old.groupby(["panel", FINGERPRINT]).size().rename("n_lines").reset_index()
               if not old.empty else pd.DataFrame(columns=["panel", FINGERPRINT, "n_lines"]))
    summary.insert(1, "current", summary["panel"].map(current))
    return scores[keep], summary[columns]


def superseded_note(summary: pd.DataFrame, where: str = "") -> list[str]:
    """One line per panel with lines of older panel versions (for notes and ``ls runs``)."""
    notes = []
    for panel, rows in summary.groupby("panel", sort=True):
        parts = ", ".join(f"{fp or 'no fingerprint'} ({int(n)} lines)"
                          for fp, n in zip(rows[FINGERPRINT], rows["n_lines"], strict=True))
        notes.append(f"{where}panel {panel} was judged by several versions (current fingerprint "
                     f"{rows['current'].iloc[0] or 'none'}); lines of {parts} are kept in scores.jsonl "
                     f"but NOT aggregated")
    return notes


def score_metric(scores: pd.DataFrame) -> pd.Series:
    """What each score line measures: its ``metric`` (the judge prompt's name, e.g. ``similarity``
    for both similarity_v1 and the embedding proxy, ``ability_memory``, MATH's ``accuracy`` and
    ``answer_agreement``); lines without one fall back to the prompt id minus its version."""
    from_prompt = scores["prompt_id"].astype(str).str.replace(r"_v\d+$", "", regex=True)
    if "metric" not in scores.columns:
        return from_prompt
    return scores["metric"].where(scores["metric"].notna(), from_prompt).astype(str)


def panels(scores: pd.DataFrame, metric: str | None = None) -> list[str]:
    """Panels with lines (of ``metric``) in ``scores``, sorted."""
    if scores.empty:
        return []
    rows = scores if metric is None else scores[score_metric(scores) == metric]
    return sorted(rows["panel"].dropna().astype(str).unique())


def excluded_counts(scores: pd.DataFrame) -> dict[str, int]:
    """How many score rows are not ``ok``, by status (these never enter an aggregate)."""
    bad = scores[scores["status"] != SCORE_OK]
    return {str(k): int(v) for k, v in bad["status"].value_counts().sort_index().items()}


def select_scores(scores: pd.DataFrame, *, panel: str, metric: str, subset: str = "all",
                  judge: str | None = None) -> pd.DataFrame:
    """The lines of ONE panel and ONE metric (all statuses), optionally post-switch turns only
    and/or one judge. Every aggregate starts here, so no consumer can mix panels."""
    if not panel:
        raise ValueError("a score aggregate needs a panel name (scores of different panels are "
                         "never mixed)")
    if subset not in SUBSETS:
        raise ValueError(f"subset={subset!r}; one of {SUBSETS}")
    if scores.empty:
        return scores
    rows = scores[(scores["panel"].astype(str) == str(panel)) & (score_metric(scores) == metric)]
    _refuse_mixed(rows, panel)
    if subset == "post_switch":
        rows = rows[rows["post_switch"].fillna(False).astype(bool)]
    if judge is not None:
        rows = rows[rows["judge"] == judge]
    return rows


def _refuse_mixed(rows: pd.DataFrame, panel: str) -> None:
    """One run's lines of one panel must come from one version of it (:func:`split_current`
    filters them); averaging two versions is the bug this guards against."""
    if rows.empty or FINGERPRINT not in rows:
        return
    run = "run_key" if "run_key" in rows else "run_id"
    versions = rows.assign(_fp=rows[FINGERPRINT].fillna(LEGACY_FINGERPRINT)).groupby(run)["_fp"].nunique()
    mixed = versions[versions > 1]
    if not mixed.empty:
        raise ValueError(f"run(s) {', '.join(map(str, mixed.index))} hold lines of several versions "
                         f"(fingerprints) of panel {panel}; keep the current one first "
                         f"(somabench.metrics.split_current)")


def score_per_turn(scores: pd.DataFrame, *, panel: str, metric: str, by: list[str],
                   subset: str = "all", judge: str | None = None, scale: float = PERCENT,
                   value: str | None = None) -> pd.DataFrame:
    """Per (dialogue, turn): the mean over the panel's judges of the ``ok`` ``score_norm`` ×
    ``scale``, in column ``value`` (default: the metric's name).

    ``by`` identifies a dialogue (e.g. run key + dialogue id). ``n_judges`` counts the judges
    that scored the turn, ``n_judges_panel`` the judges with any line for it (the panel's
    configured judges: every judge writes a line per unit, ok or not); ``partial`` marks a
    turn judged by fewer judges than configured. Turns no judge scored are absent.
    """
    value = value or metric
    columns = [*by, "turn", value, "n_judges", "n_judges_panel", "partial"]
    rows = select_scores(scores, panel=panel, metric=metric, subset=subset, judge=judge)
    ok = rows[(rows["status"] == SCORE_OK) & rows["score_norm"].notna()].copy() if not rows.empty else rows
    if ok.empty:
        return pd.DataFrame(columns=columns)
    ok["score_norm"] = ok["score_norm"].astype(float)
    per_turn = (ok.groupby([*by, "turn"], dropna=False)
                .agg(**{value: ("score_norm", "mean"), "n_judges": ("judge", "nunique")}).reset_index())
    configured = rows.groupby([*by, "turn"], dropna=False)["judge"].nunique().rename("n_judges_panel")
    per_turn = per_turn.merge(configured.reset_index(), on=[*by, "turn"], how="left")
    per_turn[value] = per_turn[value] * scale
    per_turn["partial"] = per_turn["n_judges"] < per_turn["n_judges_panel"]
    return per_turn[columns]


def score_per_dialogue(scores: pd.DataFrame, *, panel: str, metric: str, by: list[str],
                       subset: str = "all", judge: str | None = None, scale: float = PERCENT,
                       value: str | None = None) -> pd.DataFrame:
    """Per dialogue: the mean over its scored turns of :func:`score_per_turn`.

    THE aggregate every consumer uses (report tables and figures, ``judge_summary``, W&B,
    the Optuna objective, the notebook). Output: ``by`` + ``value`` (default: the metric's
    name), ``n_turns`` (turns with at least one ok score), ``n_judges`` (most judges on a
    turn), ``partial_turns`` (turns judged by fewer judges than the panel has).
    """
    value = value or metric
    columns = [*by, value, "n_turns", "n_judges", "partial_turns"]
    per_turn = score_per_turn(scores, panel=panel, metric=metric, by=by, subset=subset, judge=judge,
                              scale=scale, value=value)
    if per_turn.empty:
        return pd.DataFrame(columns=columns)
    return (per_turn.groupby(by, dropna=False)
            .agg(**{value: (value, "mean"), "n_turns": ("turn", "count"), "n_judges": ("n_judges", "max"),
                    "partial_turns": ("partial", "sum")})
            .reset_index()[columns])


def similarity_per_turn(scores: pd.DataFrame, by: list[str], scale: float = PERCENT, *,
                        panel: str, metric: str = "similarity") -> pd.DataFrame:
    """:func:`score_per_turn` with the similarity column name (Table 1 wording)."""
    return score_per_turn(scores, panel=panel, metric=metric, by=by, scale=scale, value="similarity")


def similarity_per_dialogue(scores: pd.DataFrame, by: list[str], scale: float = PERCENT, *,
                            panel: str, metric: str = "similarity", subset: str = "all") -> pd.DataFrame:
    """:func:`score_per_dialogue` with the similarity column name (Table 1 wording)."""
    return score_per_dialogue(scores, panel=panel, metric=metric, by=by, subset=subset, scale=scale,
                              value="similarity")


def mean_std(values: pd.Series) -> tuple[float | None, float | None, int]:
    """Mean and sample std (ddof=1, as the paper's Avg column) of a series, and its size."""
    values = values.dropna().astype(float)
    n = len(values)
    if n == 0:
        return None, None, 0
    return float(values.mean()), (float(values.std(ddof=1)) if n > 1 else None), n


def score_summary(scores: pd.DataFrame, *, panel: str, metric: str, by: list[str],
                  subset: str = "all", judge: str | None = None,
                  scale: float = PERCENT) -> dict[str, Any]:
    """One panel's headline for one metric: mean ± std over dialogues of
    :func:`score_per_dialogue`, with n dialogues / turns, excluded lines and partial turns."""
    lines = select_scores(scores, panel=panel, metric=metric, subset=subset, judge=judge)
    per = score_per_dialogue(scores, panel=panel, metric=metric, by=by, subset=subset, judge=judge,
                             scale=scale, value="value")
    mean, std, n = mean_std(per["value"]) if not per.empty else (None, None, 0)
    return {"mean": mean, "std": std, "n_dialogues": n,
            "n_turns": int(per["n_turns"].sum()) if not per.empty else 0,
            "partial_turns": int(per["partial_turns"].sum()) if not per.empty else 0,
            "excluded": int((lines["status"] != SCORE_OK).sum()) if not lines.empty else 0}


def score_keys(scores: pd.DataFrame, *, panel: str, metric: str, area: str,
               by: list[str]) -> dict[str, Any]:
    """Flat ``area/name`` keys of one panel and metric (all turns and post-switch), shared by
    ``judge_summary`` (the Optuna objective) and W&B so they can never disagree."""
    out: dict[str, Any] = {}
    for subset in SUBSETS:
        summary = score_summary(scores, panel=panel, metric=metric, by=by, subset=subset)
        if subset != "all" and summary["n_dialogues"] == 0:
            continue
        suffix = "" if subset == "all" else f"_{subset}"
        out[f"{area}/judge_mean{suffix}"] = summary["mean"]
        out[f"{area}/judge_std{suffix}"] = summary["std"]
        out[f"{area}/n_dialogues{suffix}"] = summary["n_dialogues"]
        out[f"{area}/excluded{suffix}"] = summary["excluded"]
        out[f"{area}/partial_turns{suffix}"] = summary["partial_turns"]
    return out


METRIC_AREAS = {"similarity": "sim"}  # W&B/summary key area per metric (others: the metric name)


def run_metrics(dialogues: list[DialogueRecord], turns: list[TurnRecord],
                scores: pd.DataFrame | None = None, *, panel: str | None = None,
                metrics: Iterable[str] | None = None) -> dict[str, float | int | None]:
    """One run's headline numbers with ``area/name`` keys (W&B summary, run comparisons).

    Score keys come from :func:`score_keys`: for every panel in ``scores`` under
    ``panel/<name>/<area>/...``, and for ``panel`` (the run's own, ``judge.name``) also
    unprefixed (``sim/judge_mean``), exactly the keys ``judge_summary`` returns.
    ``metrics`` limits which score metrics are summarised (default: all present).
    """
    dframe = dialogue_frame(dialogues)
    tframe = turn_frame(turns)
    out: dict[str, float | int | None] = {"run/dialogues": len(dframe), "run/turns": len(tframe)}
    if not dframe.empty:
        for role in TOKEN_ROLES:
            for part in ("prompt", "completion"):
                out[f"tokens/{role.lower()}_{part}"] = float(dframe[f"tokens_{role}_{part}"].mean())
        out["tokens/total"] = float(dframe["tokens_total"].mean())
        out["tokens/total_incl_training"] = float(dframe["tokens_total_incl_training"].mean())
        out["tokens/adaptation"] = float(sum(dframe[f"adapt_tokens_{r}"] for r in TOKEN_ROLES).mean())
        out["tokens/training"] = float(dframe["tokens_training"].mean())
        out["time/wall_s"] = float(dframe["wall_s"].mean()) if dframe["wall_s"].notna().any() else None
    if not tframe.empty:
        per = dialogue_throughput(tframe, ["dialogue_id"], dframe if not dframe.empty else None)
        out["speed/tps"] = mean_tps(per, "tps")
        out["speed/tps_e2e"] = mean_tps(per, "tps_e2e")
        out["turns/cached"] = int(tframe["cached"].sum())
        out["turns/served_by_g"] = float(tframe["served_by"].str.startswith("G").mean())
        out["turns/errors"] = int((tframe["status"] != "ok").sum())
    if scores is not None and not scores.empty:
        wanted = set(metrics) if metrics is not None else set(score_metric(scores))
        for name in panels(scores):
            present = set(score_metric(scores[scores["panel"] == name]))
            for metric in sorted(present & wanted):
                keys = score_keys(scores, panel=name, metric=metric, area=METRIC_AREAS.get(metric, metric),
                                  by=["run_id", "dialogue_id"])
                out.update({f"panel/{name}/{k}": v for k, v in keys.items()})
                if name == panel:
                    out.update(keys)
    return out


MISSING_CELL = "–"
"""What a markdown table shows for a missing value (here and in ``somabench.report.tables``)."""


def frame_markdown(frame: pd.DataFrame, floatfmt: str = ".1f") -> str:
    """A plain frame as a markdown table (pandas' to_markdown needs tabulate); missing -> –.

    Why here and not in ``report.tables``: the run summary, the judge summary and the report
    all render plain frames this one way, and the run and the judges sit below the report."""
    if frame.empty:
        return "_(no rows)_\n"
    cols = [str(c) for c in frame.columns]

    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return MISSING_CELL
        if isinstance(v, float | np.floating):
            return format(float(v), floatfmt)
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


to_markdown = frame_markdown
"""The run summary's name for :func:`frame_markdown`."""
