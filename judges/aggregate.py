"""From score lines to ``judge_summary``: panel scores, unparsed shares, coverage, agreement.

The numbers themselves come from ``somabench.metrics`` (``score_per_dialogue`` /
``score_summary`` / ``score_keys``), the single path the report, W&B, the Optuna objective and
the notebook also use, always for ONE named panel; a run dir judged by several panels gets one
section per panel. What is computed (issue 6, the paper's Table 1):

* per turn, the panel score is the mean of ``score_norm`` over the judges whose line is ``ok``
  (a turn no judge scored is excluded and counted);
* per dialogue, the mean over its scored turns; the table shows 100 x mean +- std (sample std,
  ddof 1; undefined for one dialogue) over dialogues, for all turns and for post-switch turns;
* the same per judge, with counts of ``ok``/``unparsed``/``api_error``/``skipped`` lines, the
  unparsed share (unparsed / (ok + unparsed): how often the judge's reply was unreadable) and
  the api_error share (api_error / lines that needed a call);
* agreement between judges on the per-turn ``score_norm``: pairwise Pearson and Spearman, and
  Krippendorff's alpha (interval metric) over all judges, implemented below.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from somabench.metrics import (
    METRIC_AREAS,
    SUBSETS,
    score_frame,
    score_keys,
    score_per_turn,
    score_summary,
    split_current,
    superseded_note,
)
from somabench.records import JUDGE_OK, JUDGE_STATUSES

log = logging.getLogger(__name__)

SUMMARY_CSV = "judge_summary.csv"
AGREEMENT_CSV = "judge_agreement.csv"
SUMMARY_MD = "judge_summary.md"
UNIT = ["run_id", "dialogue_id"]  # what identifies a dialogue in one run dir's scores.jsonl
MIN_CORRELATION_UNITS = 3  # Pearson/Spearman on fewer paired turns are reported as undefined
PCT = 100.0  # similarity % = 100 x mean score_norm (the paper reports percentages)


def krippendorff_alpha_interval(units: Sequence[Sequence[float | None]]) -> float:
    """Krippendorff's alpha with the interval metric (squared difference).

    ``units`` holds, per unit (a judged turn), the values the coders (judges) gave; ``None``
    or NaN marks a missing value. Only units with at least two values are pairable.
    alpha = 1 - D_o / D_e with, over the n pairable values,
    D_o = (1/n) sum_u (1/(m_u - 1)) sum_{i != j in u} (v_i - v_j)^2 and
    D_e = (1/(n (n - 1))) sum_{i != j} (v_i - v_j)^2 (Krippendorff 2011, "Computing
    Krippendorff's Alpha-Reliability"). Returns NaN when undefined (n < 2 or D_e = 0).
    """
    pairable = []
    for unit in units:
        vals = [float(v) for v in unit if v is not None and not math.isnan(float(v))]
        if len(vals) >= 2:
            pairable.append(np.asarray(vals))
    n = sum(len(u) for u in pairable)
    if n < 2:
        return float("nan")
    # sum over ordered pairs within a set of m values = 2 * m * (sum of squared deviations)
    d_o = sum(2 * len(u) * float(((u - u.mean()) ** 2).sum()) / (len(u) - 1) for u in pairable) / n
    everything = np.concatenate(pairable)
    d_e = 2 * n * float(((everything - everything.mean()) ** 2).sum()) / (n * (n - 1))
    if d_e == 0:
        return float("nan")
    return 1.0 - d_o / d_e


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _counts(lines: pd.DataFrame) -> dict[str, Any]:
    status = lines["status"].value_counts()
    n = {s: int(status.get(s, 0)) for s in JUDGE_STATUSES}
    answered = n["ok"] + n["unparsed"] + n["truncated"]
    called = answered + n["api_error"]
    return {
        "n_lines": int(len(lines)), "n_ok": n["ok"], "n_unparsed": n["unparsed"],
        "n_truncated": n["truncated"], "n_api_error": n["api_error"], "n_skipped": n["skipped"],
        "excluded": int(len(lines)) - n["ok"],
        "unparsed_share": (n["unparsed"] + n["truncated"]) / answered if answered else float("nan"),
        "api_error_share": n["api_error"] / called if called else float("nan"),
    }


def similarity_table(df: pd.DataFrame, panel: str) -> pd.DataFrame:
    """One row per (metric, subset, scope) of ONE panel: the panel, then each judge.

    Numbers come from ``somabench.metrics.score_summary`` (the single aggregate every consumer
    uses); ``partial_turns`` counts turns judged by fewer judges than the panel has.
    """
    rows: list[dict[str, Any]] = []
    if df.empty:
        return pd.DataFrame(rows)
    mine = df[df["panel"].astype(str) == str(panel)] if "panel" in df else df
    for metric in sorted(mine["metric"].unique()):
        mdf = mine[mine["metric"] == metric]
        judges = sorted(mdf["judge"].unique())
        for subset in SUBSETS:
            sdf = mdf if subset == "all" else mdf[mdf["post_switch"].fillna(False).astype(bool)]
            for judge in [None, *judges]:
                lines = sdf if judge is None else sdf[sdf["judge"] == judge]
                summary = score_summary(mine, panel=panel, metric=metric, by=UNIT, subset=subset,
                                        judge=judge, scale=PCT)
                scope = mdf if judge is None else mdf[mdf["judge"] == judge]
                rows.append({
                    "panel": panel, "metric": metric, "subset": subset,
                    "judge": f"panel:{panel}" if judge is None else judge,
                    "judge_kind": "+".join(sorted(scope["judge_kind"].astype(str).unique())),
                    "judge_model": "" if judge is None else ",".join(
                        sorted(scope["judge_model"].astype(str).unique())),
                    "sim_pct_mean": _nan(summary["mean"]), "sim_pct_std": _nan(summary["std"]),
                    "n_dialogues": summary["n_dialogues"], "n_turns": summary["n_turns"],
                    "partial_turns": summary["partial_turns"] if judge is None else 0,
                    "n_judges_configured": len(judges), **_counts(lines),
                })
    return pd.DataFrame(rows)


def coverage_table(df: pd.DataFrame, panel: str) -> pd.DataFrame:
    """Per metric: how many judged turns each number of judges scored (panel coverage)."""
    rows = []
    mine = df[df["panel"].astype(str) == str(panel)] if "panel" in df and not df.empty else df
    for metric in sorted(mine["metric"].unique()) if not mine.empty else []:
        per_turn = score_per_turn(mine, panel=panel, metric=metric, by=UNIT, scale=PCT)
        lines = mine[mine["metric"] == metric]
        units = lines.groupby([*UNIT, "turn"])["judge"].nunique()
        configured = int(lines["judge"].nunique())
        scored = per_turn["n_judges"].value_counts() if not per_turn.empty else pd.Series(dtype=int)
        row = {"panel": panel, "metric": metric, "judges_configured": configured,
               "turns": int(len(units)), "turns_no_score": int(len(units) - len(per_turn))}
        for k in range(configured, 0, -1):
            row[f"turns_{k}_judges"] = int(scored.get(k, 0))
        rows.append(row)
    return pd.DataFrame(rows)


def _corr(kind: str, a: np.ndarray, b: np.ndarray) -> float:
    from scipy import stats

    if len(a) < MIN_CORRELATION_UNITS or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.pearsonr(a, b) if kind == "pearson" else stats.spearmanr(a, b)
    return float(result[0])


def agreement_table(df: pd.DataFrame, panel: str | None = None) -> pd.DataFrame:
    """Pairwise Pearson/Spearman and all-judge Krippendorff alpha on per-turn score_norm, within
    one panel (``panel``; None: ``df`` already holds one panel)."""
    rows: list[dict[str, Any]] = []
    if df.empty:
        return pd.DataFrame(rows)
    if panel is not None and "panel" in df:
        df = df[df["panel"].astype(str) == str(panel)]
    ok = df[df["status"] == JUDGE_OK]
    for metric in sorted(df["metric"].unique()):
        wide = ok[ok["metric"] == metric].pivot_table(
            index=["run_id", "dialogue_id", "turn"], columns="judge", values="score_norm",
            aggfunc="mean")
        judges = sorted(df[df["metric"] == metric]["judge"].unique())
        for a, b in itertools.combinations(judges, 2):
            if a in wide and b in wide:
                pair = wide[[a, b]].dropna()
                x, y = pair[a].to_numpy(), pair[b].to_numpy()
            else:
                x = y = np.array([])
            rows.append({"panel": panel, "metric": metric, "judges": f"{a} vs {b}", "n_units": int(len(x)),
                         "pearson": _corr("pearson", x, y), "spearman": _corr("spearman", x, y),
                         "krippendorff_alpha_interval": float("nan")})
        if len(judges) >= 2:
            units = wide.to_numpy().tolist() if not wide.empty else []
            n_units = int((wide.notna().sum(axis=1) >= 2).sum()) if not wide.empty else 0
            rows.append({"panel": panel, "metric": metric, "judges": "all (" + ", ".join(judges) + ")",
                         "n_units": n_units, "pearson": float("nan"), "spearman": float("nan"),
                         "krippendorff_alpha_interval": krippendorff_alpha_interval(units)})
    return pd.DataFrame(rows)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _section(panel: str, sim: pd.DataFrame, agree: pd.DataFrame, coverage: pd.DataFrame) -> list[str]:
    from somabench.metrics import frame_markdown

    parts = [f"## Panel `{panel}`", ""]
    if not sim.empty:
        view = pd.DataFrame({
            "metric": sim["metric"], "subset": sim["subset"], "judge": sim["judge"],
            "kind": sim["judge_kind"],
            "score % ↑": [f"{_fmt(m)} ± {_fmt(s)}" for m, s in zip(sim["sim_pct_mean"], sim["sim_pct_std"],
                                                                  strict=True)],
            "dialogues": sim["n_dialogues"], "turns": sim["n_turns"],
            "turns < all judges": sim["partial_turns"], "ok": sim["n_ok"], "unparsed": sim["n_unparsed"],
            "truncated": sim["n_truncated"], "api_error": sim["n_api_error"], "skipped": sim["n_skipped"],
            "unparsed share ↓": [_fmt(v, 3) for v in sim["unparsed_share"]]})
        parts += ["### Scores", "", frame_markdown(view)]
    if not coverage.empty:
        parts += ["### Coverage (judges that scored each turn)", "", frame_markdown(coverage)]
    if not agree.empty:
        view = pd.DataFrame({
            "metric": agree["metric"], "judges": agree["judges"], "paired turns": agree["n_units"],
            "Pearson ↑": [_fmt(v, 3) for v in agree["pearson"]],
            "Spearman ↑": [_fmt(v, 3) for v in agree["spearman"]],
            "Krippendorff α (interval) ↑": [_fmt(v, 3) for v in agree["krippendorff_alpha_interval"]]})
        parts += ["### Inter-judge agreement (per-turn score_norm)", "", frame_markdown(view)]
    return parts


def to_markdown(sections: dict[str, tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]],
                run_ids: list[str]) -> str:
    """``judge_summary.md``: one section per panel (panels are never mixed)."""
    parts = ["# Judge summary", "",
             f"Runs: {', '.join(run_ids) or 'n/a'}. Panels: {', '.join(f'`{p}`' for p in sections)}; each "
             "is reported on its own. Score % = 100 x mean over the panel's judges of score_norm per "
             "turn, averaged per dialogue; mean ± std over dialogues (somabench.metrics.score_per_dialogue, "
             "the same path as the report and W&B). `embedding-proxy` rows are a cosine proxy, not an "
             "LLM judgment. Excluded = lines without an ok score (unparsed, truncated, api_error, "
             "skipped); `turns < all judges` counts turns fewer judges scored than the panel has.", ""]
    for panel, (sim, agree, coverage) in sections.items():
        parts += _section(panel, sim, agree, coverage)
    return "\n".join(parts)


def metrics_from(df: pd.DataFrame, panel: str, objective: str) -> dict[str, Any]:
    """Flat ``area/name`` metrics of one panel (``somabench.metrics.score_keys``, the same keys
    W&B logs); ``objective`` = the ``objective`` metric's panel mean, all turns."""
    out: dict[str, Any] = {"objective": None}
    if df.empty:
        return out
    mine = df[df["panel"].astype(str) == str(panel)]
    for metric in sorted(mine["metric"].unique()):
        area = METRIC_AREAS.get(metric, metric)  # the same keys W&B logs (accuracy/..., sim/...)
        out.update(score_keys(mine, panel=panel, metric=metric, area=area, by=UNIT))
    out["objective"] = out.get(f"{METRIC_AREAS.get(objective, objective)}/judge_mean")
    for metric in sorted(mine["metric"].unique()):
        for judge in sorted(mine[mine["metric"] == metric]["judge"].unique()):
            counts = _counts(mine[(mine["metric"] == metric) & (mine["judge"] == judge)])
            share = counts["unparsed_share"]
            out[f"judge/unparsed_share/{judge}/{metric}"] = None if math.isnan(share) else share
    return out


def scores_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    columns = ["run_id", "dialogue_id", "turn", "panel", "panel_fingerprint", "judge", "judge_kind",
               "judge_model", "metric", "status", "score_norm", "post_switch"]
    if not rows:
        return pd.DataFrame(columns=columns)
    df = score_frame(rows)
    for col in ("judge_model",):
        if col not in df:
            df[col] = ""
    return df


def write_summary(run_dir: Path, rows: list[dict[str, Any]], panel: str, objective: str,
                  fingerprints: dict[str, str] | None = None) -> dict[str, Any]:
    """Write ``judge_summary.csv``, ``judge_agreement.csv`` and ``judge_summary.md`` for every
    panel in ``rows`` (each on its own, each from the lines of its current fingerprint:
    ``fingerprints`` panel -> fingerprint, else the newest line's); return ``panel``'s metrics."""
    df, superseded = split_current(scores_frame(rows), fingerprints)
    names = sorted(df["panel"].unique()) if not df.empty else [panel]
    sections = {name: (similarity_table(df, name), agreement_table(df, name), coverage_table(df, name))
                for name in names}
    sims = [s for s, _, _ in sections.values() if not s.empty]
    agrees = [a for _, a, _ in sections.values() if not a.empty]
    (pd.concat(sims) if sims else pd.DataFrame()).to_csv(run_dir / SUMMARY_CSV, index=False)
    (pd.concat(agrees) if agrees else pd.DataFrame()).to_csv(run_dir / AGREEMENT_CSV, index=False)
    run_ids = sorted(df["run_id"].unique()) if not df.empty else []
    text = to_markdown(sections, run_ids)
    notes = superseded_note(superseded)
    if notes:
        text += "\n\n## Earlier panel versions (not aggregated)\n\n" + "\n".join(f"- {n}." for n in notes)
        for note in notes:
            log.warning("%s: %s", run_dir, note)
    (run_dir / SUMMARY_MD).write_text(text + "\n", encoding="utf-8")
    metrics = metrics_from(df, panel, objective)
    log.info("judge summary %s: %s", run_dir / SUMMARY_MD, json.dumps(
        {k: v for k, v in metrics.items()
         if k.startswith(f"{METRIC_AREAS.get(objective, objective)}/") or k == "objective"},
        default=str))
    return metrics
