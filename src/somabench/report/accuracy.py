"""Judge-free task tables: final-answer accuracy and answer agreement (issue 16).

Why a module of its own: these numbers need no judge (``judge=task``: the ``math_answer`` kind
grades final answers against gold and against the Original), so they are the offline numbers a
researcher can trust; they go through the same path as similarity (``scores.jsonl`` ->
:func:`somabench.metrics.score_per_dialogue` -> :func:`somabench.report.tables.make_table` with
bootstrap CIs from :mod:`somabench.stats`).

Artifacts per family (and per panel holding these metrics, usually ``task``):

* ``accuracy_<tag>`` / ``answer_agreement_<tag>`` (and ``*_post_switch_<tag>``): dataset x
  method, mean [95 % CI] over dialogues. The Original row is F with full history: for accuracy
  the ceiling, for agreement the sanity check F vs itself (100 %).
* ``accuracy_vs_soma_<tag>`` / ``answer_agreement_vs_soma_<tag>`` (and ``*_post_switch_*``):
  every method minus the baseline (``report.stats.baseline``) on the same dialogues:
  difference [paired bootstrap CI], sign-flip p (the report's paired-table builder).
* ``answer_found_<tag>``: share of graded turns whose reply had an extractable final answer
  (a reply without one is graded wrong; this shows how often that happened). Every accuracy
  table also states the found-rate per method in a footer line.
* Second grader (issue 23): every line also carries math-verify's verdict
  (``correct_math_verify`` in ``raw``). Every table here states how often the two graders agree
  (footer line, per method), ``grader_agreement_<tag>`` has the agreement % per dataset x method
  with CIs, and ``grader_disagreements_<tag>.csv`` lists each disagreement (turn id, gold or
  target, the answers each grader extracted, both verdicts) for a human to settle.
* ``fig_accuracy_per_turn_<tag>``: accuracy per turn index with CIs, and the share of turns G
  served (does quality decay after the switch?), with its numbers in the figure's ``.csv``.

"Post-switch turns" are the turns the baseline method (SOMA) served after its switch, per
dialogue, and every method is scored on those same turns, so the rows compare like with like
(a method without a switch has no post-switch turns of its own). Without the baseline in the
data, each method's own post-switch turns are used (and the table says so).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from somabench.metrics import SCORE_OK, excluded_counts, panels, score_metric, score_per_dialogue
from somabench.records import JUDGE_FINAL
from somabench.report import figures as F
from somabench.report.tables import StatsKnobs, Table, baseline_method, baseline_names, make_table
from somabench.stats import bootstrap_ci

log = logging.getLogger(__name__)

TASK_METRICS = {"accuracy": "Accuracy %", "answer_agreement": "Answer agreement %"}
BY = ["run_key", "label", "method", "family", "dataset", "dialogue_id"]
PERCENT = 100.0
DODGE = 0.08  # turns: horizontal offset between methods so their error bars do not overlap


def _stats(cfg: Any) -> StatsKnobs:
    return StatsKnobs.from_cfg(cfg.stats)


def _baseline_label(frame: pd.DataFrame, cfg: Any) -> str | None:
    base = baseline_method(cfg.stats, frame["method"].unique()) if not frame.empty else None
    labels = frame.loc[frame["method"] == base, "label"].unique() if base else []
    return str(labels[0]) if len(labels) else None


def post_switch_turns(scores: pd.DataFrame, cfg: Any) -> tuple[pd.DataFrame, str]:
    """Score lines on post-switch turns: the baseline's post-switch turns for every method
    (same turns for every row), else each method's own; returns (lines, note)."""
    base = _baseline_label(scores, cfg)
    if base is None:
        own = scores[scores["post_switch"].fillna(False).astype(bool)]
        return own, ("Post-switch: each method's own turns served after its switch (the baseline "
                     f"{' | '.join(baseline_names(cfg.stats))} is not in this report).")
    flagged = scores[(scores["label"] == base) & scores["post_switch"].fillna(False).astype(bool)]
    keys = set(zip(flagged["dataset"], flagged["dialogue_id"], flagged["turn"].astype(int),
                   strict=True))
    mask = [(d, i, int(t)) in keys for d, i, t in zip(scores["dataset"], scores["dialogue_id"],
                                                      scores["turn"], strict=True)]
    return scores[mask], (f"Post-switch: the turns {base} served after its switch, per dialogue; "
                          f"every method is scored on those same turns.")


def _named(frame: pd.DataFrame, cfg: Any) -> pd.DataFrame:
    return frame.assign(dataset_name=frame["dataset"].map(lambda d: F.dataset_name(cfg, d)))


def _table(per: pd.DataFrame, lines: pd.DataFrame, cfg: Any, title: str, metric: str,
           notes: list[str]) -> Table:
    named = _named(per, cfg)
    cols = [F.dataset_name(cfg, d) for d in F.order_datasets(cfg, per["dataset"].unique().tolist())]
    return make_table(named, value="value", row="label", column="dataset_name", title=title,
                      metric=metric, higher_is_better=True,
                      decimals_mean=cfg.tables.decimals_mean, decimals_std=cfg.tables.decimals_std,
                      row_order=F.order_labels(cfg, per), column_order=cols,
                      excluded=excluded_counts(lines), notes=notes, stats=_stats(cfg))


def raw_field(lines: pd.DataFrame, key: str) -> pd.Series:
    """``key`` of each line's ``raw`` JSON (the grader's details); None where absent."""
    def get(text: Any) -> Any:
        try:
            value = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            return None
        return value.get(key) if isinstance(value, dict) else None

    if "raw" not in lines.columns:
        return pd.Series([None] * len(lines), index=lines.index, dtype=object)
    return lines["raw"].map(get).astype(object)


def found_flags(lines: pd.DataFrame) -> pd.Series:
    """Per graded line (ok or unparsed): did the reply have a final answer? Lines of this
    grader record it (``raw.found``); older lines marked a missing answer ``unparsed``."""
    return (lines["status"] == SCORE_OK) & (raw_field(lines, "found") != False)  # noqa: E712


def answer_found(lines: pd.DataFrame) -> pd.DataFrame:
    """Per dialogue: % of graded turns (ok or unparsed) whose reply had a final answer."""
    graded = lines[lines["status"].isin(JUDGE_FINAL)]
    if graded.empty:
        return pd.DataFrame(columns=[*BY, "value"])
    graded = graded.assign(found=found_flags(graded).astype(float) * PERCENT)
    per_turn = graded.groupby([*BY, "turn"], dropna=False)["found"].mean().reset_index()
    return per_turn.groupby(BY, dropna=False)["found"].mean().rename("value").reset_index()


DISAGREEMENT_COLUMNS = ["metric", "label", "method", "dataset", "dialogue_id", "turn", "target",
                        "target_from", "answer", "math_verify_answer", "grader_a_math_equiv",
                        "grader_b_math_verify"]


def grader_pairs(lines: pd.DataFrame) -> pd.DataFrame:
    """The ok lines with both verdicts: ``grader_a`` (MATH equivalence, the score),
    ``grader_b`` (math-verify; None when it gave none) and ``agree`` (None without b)."""
    ok = lines[(lines["status"] == SCORE_OK) & lines["score_norm"].notna()]
    b = raw_field(ok, "correct_math_verify")
    out = ok.assign(grader_a=ok["score_norm"].astype(float) >= 1.0,
                    grader_b=b.map(lambda v: v if isinstance(v, bool) else None).astype(object))
    agree = [None if gb is None else bool(ga == gb)
             for ga, gb in zip(out["grader_a"], out["grader_b"], strict=True)]
    return out.assign(agree=pd.Series(agree, index=out.index, dtype=object))


def disagreements(lines: pd.DataFrame) -> pd.DataFrame:
    """One row per graded turn where the two graders differ (``DISAGREEMENT_COLUMNS``)."""
    pairs = grader_pairs(lines)
    bad = pairs[pairs["agree"].map(lambda v: v is False)]
    if bad.empty:
        return pd.DataFrame(columns=DISAGREEMENT_COLUMNS)
    rows = bad.assign(metric=score_metric(bad), target=raw_field(bad, "target"),
                      target_from=raw_field(bad, "target_from"), answer=raw_field(bad, "answer"),
                      math_verify_answer=raw_field(bad, "math_verify_answer"),
                      grader_a_math_equiv=bad["grader_a"], grader_b_math_verify=bad["grader_b"])
    return rows[DISAGREEMENT_COLUMNS].sort_values(["metric", "label", "dataset", "dialogue_id",
                                                   "turn"]).reset_index(drop=True)


def grader_agreement(lines: pd.DataFrame) -> pd.DataFrame:
    """Per dialogue: % of graded turns (with a math-verify verdict) where both graders agree."""
    pairs = grader_pairs(lines)
    pairs = pairs[pairs["agree"].notna()]
    if pairs.empty:
        return pd.DataFrame(columns=[*BY, "value"])
    pairs = pairs.assign(value=pairs["agree"].astype(float) * PERCENT)
    return pairs.groupby(BY, dropna=False)["value"].mean().reset_index()


def _per_label(cfg: Any, frame: pd.DataFrame, value: pd.Series) -> str:
    """``Original 100.0 % (n=8), SOMA 87.5 % (n=8)``: pooled over the label's lines."""
    parts = []
    for label in F.order_labels(cfg, frame):
        mine = value[frame["label"] == label].dropna()
        if len(mine):
            parts.append(f"{label} {mine.astype(float).mean() * PERCENT:.1f} % (n={len(mine)})")
    return ", ".join(parts)


def agreement_note(lines: pd.DataFrame, cfg: Any, csv_name: str) -> str:
    """The footer line every accuracy table carries: do the two graders agree on these lines?"""
    pairs = grader_pairs(lines)
    judged = pairs[pairs["agree"].notna()]
    missing = len(pairs) - len(judged)
    if judged.empty:
        return ("Graders: no math-verify verdict on these lines (judged before the second grader "
                "existed, or math-verify failed); rejudge with judge=task to compare.")
    n_bad = int((~judged["agree"].astype(bool)).sum())
    return (f"Graders: MATH equivalence (the score) and math-verify (second opinion) agree on "
            f"{judged['agree'].astype(float).mean() * PERCENT:.1f} % of {len(judged)} graded "
            f"turns ({_per_label(cfg, judged, judged['agree'])}); {n_bad} disagreement(s) in "
            f"{csv_name}" + (f"; no math-verify verdict on {missing}" if missing else "") + ".")


def found_note(lines: pd.DataFrame, cfg: Any, found_name: str) -> str:
    """The footer line with the found-rate beside accuracy (a reply without an answer is 0)."""
    graded = lines[lines["status"].isin(JUDGE_FINAL)]
    if graded.empty:
        return "Final answer found: no graded turns."
    return (f"Final answer found (share of graded turns; a reply without one is graded wrong): "
            f"{_per_label(cfg, graded, found_flags(graded))}; per dataset with CIs in "
            f"{found_name}.")


def per_turn_points(lines: pd.DataFrame, cfg: Any, metric: str) -> pd.DataFrame:
    """Per (label, dataset, turn index): metric % with its bootstrap CI over dialogues, and
    the share of that turn's served answers (every line, scored or not) that G gave."""
    mine = lines[score_metric(lines) == metric]
    ok = mine[mine["status"] == SCORE_OK]
    if ok.empty:
        return pd.DataFrame(columns=["label", "method", "dataset", "turn", "mean", "lo", "hi",
                                     "n", "g_share"])
    ok = ok.assign(value=ok["score_norm"].astype(float) * PERCENT)
    per = ok.groupby([*BY, "turn"], dropna=False)["value"].mean().reset_index()
    keys = ["label", "method", "dataset", "turn"]
    g_share = (mine["served_by"].astype(str).str.startswith("G").astype(float) * PERCENT) \
        .groupby([mine[k] for k in keys]).mean()
    rows = []
    knobs = _stats(cfg)
    for (label, method, dataset, turn), part in per.groupby(keys):
        ci = bootstrap_ci(part["value"], n_boot=knobs.n_boot, seed=knobs.seed,
                          confidence=knobs.confidence)
        rows.append({"label": label, "method": method, "dataset": dataset, "turn": int(turn) + 1,
                     "mean": ci.mean, "lo": ci.lo, "hi": ci.hi, "n": ci.n,
                     "g_share": float(g_share.loc[(label, method, dataset, turn)])})
    return pd.DataFrame(rows)


def per_turn_figure(points: pd.DataFrame, cfg: Any, family: str, metric: str) -> Any:
    """Accuracy per turn index (mean and CI over dialogues) above the share of turns G served."""
    import matplotlib.pyplot as plt

    if points.empty:
        raise F.Skip(f"no ok {metric} scores")
    datasets = F.order_datasets(cfg, points["dataset"].unique().tolist())
    F._style(cfg)
    fig, axes = plt.subplots(2, len(datasets), squeeze=False, sharex="col", layout="constrained",
                             height_ratios=[3, 1],
                             figsize=(cfg.figures.panel_width * len(datasets),
                                      cfg.figures.panel_height * 4 / 3))
    labels = F.order_labels(cfg, points)
    colors = F.label_colors(cfg, labels, points)
    for j, dataset in enumerate(datasets):
        top, bottom = axes[0][j], axes[1][j]
        part = points[points["dataset"] == dataset]
        for i, label in enumerate(labels):
            line = part[part["label"] == label].sort_values("turn")
            if line.empty:
                continue
            err = np.array([line["mean"] - line["lo"], line["hi"] - line["mean"]], dtype=float)
            x = line["turn"] + (i - (len(labels) - 1) / 2) * DODGE  # error bars side by side
            top.errorbar(x, line["mean"], yerr=err, color=colors[label], label=label,
                         marker="o", markersize=F.MARKER, capsize=2)
            bottom.plot(line["turn"], line["g_share"], color=colors[label], marker="o",
                        markersize=F.MARKER)
        top.set_ylim(0, PERCENT)
        top.set_ylabel(f"{TASK_METRICS.get(metric, metric)} ({F.n_text(part['n'])} dialogues)")
        top.set_title(f"{F.dataset_name(cfg, dataset)} ({family})")
        bottom.set_ylim(0, PERCENT)
        bottom.set_ylabel("served by G %")
        bottom.set_xlabel("turn")
        bottom.set_xticks(sorted(part["turn"].unique()))
    handles, names = axes[0][0].get_legend_handles_labels()
    F._legend_below(fig, handles, names, cfg)
    return fig


def add_task_artifacts(result: Any, data: Any, cfg: Any, family: str, tag: str, out: Path) -> None:
    """Write the accuracy / agreement tables and the per-turn figure for one family (a hook of
    :func:`somabench.report.build.build_report`, ``EXTRA_ARTIFACTS``)."""
    from somabench.report.build import Artifact, _paired_table, _tag

    scores = data.scores
    if not scores.empty:
        scores = scores[(scores["family"] == family)
                        & score_metric(scores).isin(list(TASK_METRICS))]
    task_panels = panels(scores) if not scores.empty else []
    if not task_panels:
        result.skip(f"accuracy_{tag}", "no accuracy / answer_agreement scores: grade final answers "
                                       "with `python -m somabench judge <run dir> judge=task`")
        return
    knobs = _stats(cfg)
    for panel in task_panels:
        suffix = f"{tag}_{_tag(panel)}"
        lines = scores[scores["panel"].astype(str) == panel]
        post_lines, post_note = post_switch_turns(lines, cfg)
        csv_name = f"grader_disagreements_{suffix}.csv"
        found_name = f"answer_found_{suffix}"
        for metric, unit in TASK_METRICS.items():
            name_of = unit.removesuffix(" %")
            for subset, subset_lines, extra in (("all turns", lines, []),
                                                ("post-switch turns", post_lines, [post_note])):
                stem = metric if subset == "all turns" else f"{metric}_post_switch"
                name = f"{stem}_{suffix}"
                per = score_per_dialogue(subset_lines, panel=panel, metric=metric, by=BY,
                                         value="value")
                if per.empty:
                    result.skip(name, f"no ok {metric} scores of panel {panel} on {subset}")
                    continue
                mlines = subset_lines[score_metric(subset_lines) == metric]
                graders = [agreement_note(mlines, cfg, csv_name),
                           found_note(mlines, cfg, found_name)]
                title = f"{name_of} ({family}, panel {panel}), {subset}"
                table = _table(per, mlines, cfg, title, unit,
                               [_metric_note(metric, panel), *extra, *graders])
                result.written.append(Artifact(name, "extra (issue 16)", table.write(out, name),
                                               f"{unit} per dataset x method, {subset}, "
                                               f"mean [CI] over dialogues"))
                spec = SimpleNamespace(stem=stem, title=f"{name_of}, {subset}", unit=unit,
                                       notes=graders)
                _paired_table(result, cfg, knobs, family, tag, f"_{_tag(panel)}", per, "value",
                              spec, panel, out)
        acc_lines = lines[score_metric(lines) == "accuracy"]
        found = answer_found(acc_lines)
        if not found.empty:
            not_graded = acc_lines[~acc_lines["status"].isin(JUDGE_FINAL)]
            table = _table(found, not_graded, cfg,
                           f"Final answer found ({family}, panel {panel}), graded turns",
                           "Answer found %", ["Share of graded turns whose reply had an "
                                              "extractable final answer; a reply without one "
                                              "is graded wrong (score 0), not excluded.",
                                              agreement_note(acc_lines, cfg, csv_name)])
            result.written.append(Artifact(found_name, "extra (issue 16)",
                                           table.write(out, found_name),
                                           "% of graded turns with an extractable final answer"))
        _grader_artifacts(result, lines, cfg, family, panel, suffix, csv_name, out)
        points = per_turn_points(lines, cfg, "accuracy")
        name = f"fig_accuracy_per_turn_{suffix}"
        try:
            fig = per_turn_figure(points, cfg, family, "accuracy")
        except F.Skip as exc:
            result.skip(name, str(exc))
            continue
        paths = F.save(fig, out, name, cfg)
        points.to_csv(out / f"{name}.csv", index=False)
        paths.append(out / f"{name}.csv")
        result.written.append(Artifact(name, "extra (issue 16)", paths,
                                       "accuracy per turn index [CI] and share served by G"))


def _grader_artifacts(result: Any, lines: pd.DataFrame, cfg: Any, family: str, panel: str,
                      suffix: str, csv_name: str, out: Path) -> None:
    """``grader_agreement_<suffix>`` (table) and the disagreements CSV (both metrics, all
    turns): where MATH equivalence and math-verify differ, for a human to settle."""
    from somabench.report.build import Artifact

    agree = grader_agreement(lines)
    name = f"grader_agreement_{suffix}"
    if agree.empty:
        result.skip(name, "no math-verify verdicts (lines judged before the second grader "
                          "existed): rejudge with judge=task")
        return
    pairs = grader_pairs(lines)
    table = _table(agree, pairs[pairs["agree"].isna()], cfg,
                   f"Grader agreement ({family}, panel {panel}): MATH equivalence vs math-verify, "
                   f"accuracy and answer agreement lines", "Graders agree %",
                   [f"Share of graded turns on which the two graders give the same verdict; "
                    f"excluded rows: lines where math-verify gave none. Disagreements: "
                    f"{csv_name}."])
    result.written.append(Artifact(name, "extra (issue 23)", table.write(out, name),
                                   "% of graded turns where both MATH graders agree"))
    out.mkdir(parents=True, exist_ok=True)
    disagreements(lines).to_csv(out / csv_name, index=False)
    result.written.append(Artifact(csv_name.removesuffix(".csv"), "extra (issue 23)",
                                   [out / csv_name],
                                   "turns where MATH equivalence and math-verify disagree"))


def _metric_note(metric: str, panel: str) -> str:
    what = ("final answer vs the gold answer; the Original row (F, full history) is the ceiling"
            if metric == "accuracy" else
            "final answer vs the Original's final answer on the same turn; the Original row is "
            "F vs itself (100 % by construction)")
    return (f"{TASK_METRICS[metric]}: {what}. Graded by MATH equivalence (panel `{panel}`, "
            f"judges/math_equiv.py; exact), no LLM judge. Turns without gold are skipped; a reply "
            f"without a final answer is graded wrong (lines judged before issue 23 marked it "
            f"unparsed and are excluded).")
