"""From score lines to the numbers in tables: similarity %, unparsed shares, judge agreement.

Why these definitions (issue 6, the paper's Table 1):

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

log = logging.getLogger(__name__)

SUMMARY_CSV = "judge_summary.csv"
AGREEMENT_CSV = "judge_agreement.csv"
SUMMARY_MD = "judge_summary.md"
SUBSETS = ("all", "post_switch")
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


def _mean_std(values: pd.Series) -> tuple[float, float]:
    values = values.dropna()
    if values.empty:
        return float("nan"), float("nan")
    std = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    return float(values.mean()), std


def _similarity(ok: pd.DataFrame) -> tuple[float, float, int, int]:
    """(mean %, std %, n dialogues, n turns) from ok lines of one scope (panel or judge)."""
    if ok.empty:
        return float("nan"), float("nan"), 0, 0
    per_turn = ok.groupby(["run_id", "dialogue_id", "turn"])["score_norm"].mean()
    per_dialogue = per_turn.groupby(level=["run_id", "dialogue_id"]).mean()
    mean, std = _mean_std(per_dialogue * PCT)
    return mean, std, int(per_dialogue.size), int(per_turn.size)


def _counts(lines: pd.DataFrame) -> dict[str, Any]:
    status = lines["status"].value_counts()
    n = {s: int(status.get(s, 0)) for s in ("ok", "unparsed", "api_error", "skipped")}
    answered = n["ok"] + n["unparsed"]
    called = answered + n["api_error"]
    return {
        "n_lines": int(len(lines)), "n_ok": n["ok"], "n_unparsed": n["unparsed"],
        "n_api_error": n["api_error"], "n_skipped": n["skipped"],
        "excluded": int(len(lines)) - n["ok"],
        "unparsed_share": n["unparsed"] / answered if answered else float("nan"),
        "api_error_share": n["api_error"] / called if called else float("nan"),
    }


def similarity_table(df: pd.DataFrame, panel: str) -> pd.DataFrame:
    """One row per (metric, subset, scope): the panel, then each judge."""
    rows = []
    if df.empty:
        return pd.DataFrame(rows)
    for metric in sorted(df["metric"].unique()):
        mdf = df[df["metric"] == metric]
        for subset in SUBSETS:
            sdf = mdf if subset == "all" else mdf[mdf["post_switch"].astype(bool)]
            scopes = [(f"panel:{panel}", sdf)] + [
                (judge, sdf[sdf["judge"] == judge]) for judge in sorted(mdf["judge"].unique())]
            for scope, lines in scopes:
                ok = lines[lines["status"] == "ok"]
                mean, std, n_dialogues, n_turns = _similarity(ok)
                kinds = sorted(mdf[mdf["judge"] == scope]["judge_kind"].unique()) if not \
                    scope.startswith("panel:") else sorted(mdf["judge_kind"].unique())
                models = sorted(mdf[mdf["judge"] == scope]["judge_model"].unique()) if not \
                    scope.startswith("panel:") else []
                rows.append({
                    "metric": metric, "subset": subset, "judge": scope,
                    "judge_kind": "+".join(kinds), "judge_model": ",".join(models),
                    "sim_pct_mean": mean, "sim_pct_std": std, "n_dialogues": n_dialogues,
                    "n_turns": n_turns, **_counts(lines),
                })
    return pd.DataFrame(rows)


def _corr(kind: str, a: np.ndarray, b: np.ndarray) -> float:
    from scipy import stats

    if len(a) < MIN_CORRELATION_UNITS or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.pearsonr(a, b) if kind == "pearson" else stats.spearmanr(a, b)
    return float(result[0])


def agreement_table(df: pd.DataFrame) -> pd.DataFrame:
    """Pairwise Pearson/Spearman and all-judge Krippendorff alpha on per-turn score_norm."""
    rows = []
    if df.empty:
        return pd.DataFrame(rows)
    ok = df[df["status"] == "ok"]
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
            rows.append({"metric": metric, "judges": f"{a} vs {b}", "n_units": int(len(x)),
                         "pearson": _corr("pearson", x, y), "spearman": _corr("spearman", x, y),
                         "krippendorff_alpha_interval": float("nan")})
        if len(judges) >= 2:
            units = wide.to_numpy().tolist() if not wide.empty else []
            n_units = int((wide.notna().sum(axis=1) >= 2).sum()) if not wide.empty else 0
            rows.append({"metric": metric, "judges": "all (" + ", ".join(judges) + ")",
                         "n_units": n_units, "pearson": float("nan"), "spearman": float("nan"),
                         "krippendorff_alpha_interval": krippendorff_alpha_interval(units)})
    return pd.DataFrame(rows)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def to_markdown(sim: pd.DataFrame, agree: pd.DataFrame, panel: str, run_ids: list[str]) -> str:
    parts = [f"# Judge summary: panel `{panel}`", "",
             f"Runs: {', '.join(run_ids) or 'n/a'}. Similarity % = 100 x mean over judges of "
             "score_norm per turn, averaged per dialogue; mean ± std over dialogues. "
             "`embedding-proxy` rows are a cosine proxy, not an LLM judgment. Excluded = lines "
             "without an ok score (unparsed, api_error, skipped).", ""]
    if not sim.empty:
        headers = ["metric", "subset", "judge", "kind", "similarity % ↑", "dialogues", "turns",
                   "ok", "unparsed", "api_error", "skipped", "unparsed share ↓"]
        rows = [[r.metric, r.subset, r.judge, r.judge_kind,
                 f"{_fmt(r.sim_pct_mean)} ± {_fmt(r.sim_pct_std)}", str(r.n_dialogues),
                 str(r.n_turns), str(r.n_ok), str(r.n_unparsed), str(r.n_api_error),
                 str(r.n_skipped), _fmt(r.unparsed_share, 3)] for r in sim.itertuples()]
        parts += ["## Similarity", "", _md_table(headers, rows), ""]
    if not agree.empty:
        headers = ["metric", "judges", "paired turns", "Pearson ↑", "Spearman ↑",
                   "Krippendorff α (interval) ↑"]
        rows = [[r.metric, r.judges, str(r.n_units), _fmt(r.pearson, 3), _fmt(r.spearman, 3),
                 _fmt(r.krippendorff_alpha_interval, 3)] for r in agree.itertuples()]
        parts += ["## Inter-judge agreement (per-turn score_norm)", "", _md_table(headers, rows), ""]
    return "\n".join(parts)


def metrics_from(sim: pd.DataFrame, panel: str, objective: str) -> dict[str, Any]:
    """Flat ``area/name`` metrics of the panel rows; ``objective`` = similarity %, all turns."""
    out: dict[str, Any] = {"objective": None}
    if sim.empty:
        return out
    for r in sim[sim["judge"] == f"panel:{panel}"].itertuples():
        area = "sim" if r.metric == objective else r.metric
        suffix = "" if r.subset == "all" else f"_{r.subset}"
        out[f"{area}/judge_mean{suffix}"] = None if math.isnan(r.sim_pct_mean) else r.sim_pct_mean
        out[f"{area}/judge_std{suffix}"] = None if math.isnan(r.sim_pct_std) else r.sim_pct_std
        out[f"{area}/n_dialogues{suffix}"] = r.n_dialogues
        out[f"{area}/excluded{suffix}"] = r.excluded
        if r.metric == objective and r.subset == "all":
            out["objective"] = out[f"{area}/judge_mean"]
    for r in sim[(sim["judge"] != f"panel:{panel}") & (sim["subset"] == "all")].itertuples():
        share = None if math.isnan(r.unparsed_share) else r.unparsed_share
        out[f"judge/unparsed_share/{r.judge}/{r.metric}"] = share
    return out


def scores_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    columns = ["run_id", "dialogue_id", "turn", "judge", "judge_kind", "judge_model", "metric",
               "status", "score_norm", "post_switch"]
    if not rows:
        return pd.DataFrame(columns=columns)
    df = pd.DataFrame(rows)
    df["score_norm"] = pd.to_numeric(df["score_norm"], errors="coerce")
    return df


def write_summary(run_dir: Path, rows: list[dict[str, Any]], panel: str,
                  objective: str) -> dict[str, Any]:
    """Write ``judge_summary.csv``, ``judge_agreement.csv`` and ``judge_summary.md``."""
    df = scores_frame(rows)
    sim = similarity_table(df, panel)
    agree = agreement_table(df)
    sim.to_csv(run_dir / SUMMARY_CSV, index=False)
    agree.to_csv(run_dir / AGREEMENT_CSV, index=False)
    run_ids = sorted(df["run_id"].unique()) if not df.empty else []
    (run_dir / SUMMARY_MD).write_text(to_markdown(sim, agree, panel, run_ids), encoding="utf-8")
    metrics = metrics_from(sim, panel, objective)
    log.info("judge summary %s: %s", run_dir / SUMMARY_MD, json.dumps(
        {k: v for k, v in metrics.items() if k.startswith("sim/") or k == "objective"},
        default=str))
    return metrics
