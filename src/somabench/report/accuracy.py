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
  (``unparsed`` lines are excluded from accuracy, never counted as 0; this shows how many).
* ``fig_accuracy_per_turn_<tag>``: accuracy per turn index with CIs, and the share of turns G
  served (does quality decay after the switch?), with its numbers in the figure's ``.csv``.

"Post-switch turns" are the turns the baseline method (SOMA) served after its switch, per
dialogue, and every method is scored on those same turns, so the rows compare like with like
(a method without a switch has no post-switch turns of its own). Without the baseline in the
data, each method's own post-switch turns are used (and the table says so).
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from somabench.metrics import SCORE_OK, excluded_counts, panels, score_metric, score_per_dialogue
from somabench.report import figures as F
from somabench.report.tables import StatsKnobs, Table, make_table
from somabench.stats import bootstrap_ci

log = logging.getLogger(__name__)

TASK_METRICS = {"accuracy": "Accuracy %", "answer_agreement": "Answer agreement %"}
BY = ["run_key", "label", "method", "family", "dataset", "dialogue_id"]
PERCENT = 100.0
DODGE = 0.08  # turns: horizontal offset between methods so their error bars do not overlap


def _stats(cfg: Any) -> StatsKnobs:
    return StatsKnobs.from_cfg(cfg.stats)


def _baseline_label(frame: pd.DataFrame, cfg: Any) -> str | None:
    labels = frame.loc[frame["method"] == str(cfg.stats.baseline), "label"].unique()
    return str(labels[0]) if len(labels) else None


def post_switch_turns(scores: pd.DataFrame, cfg: Any) -> tuple[pd.DataFrame, str]:
    """Score lines on post-switch turns: the baseline's post-switch turns for every method
    (same turns for every row), else each method's own; returns (lines, note)."""
    base = _baseline_label(scores, cfg)
    if base is None:
        own = scores[scores["post_switch"].fillna(False).astype(bool)]
        return own, ("Post-switch: each method's own turns served after its switch (the baseline "
                     f"{cfg.stats.baseline} is not in this report).")
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


def answer_found(lines: pd.DataFrame) -> pd.DataFrame:
    """Per dialogue: % of graded turns (ok or unparsed) whose reply had a final answer."""
    graded = lines[lines["status"].isin([SCORE_OK, "unparsed"])]
    if graded.empty:
        return pd.DataFrame(columns=[*BY, "value"])
    graded = graded.assign(found=(graded["status"] == SCORE_OK).astype(float) * PERCENT)
    per_turn = graded.groupby([*BY, "turn"], dropna=False)["found"].mean().reset_index()
    return per_turn.groupby(BY, dropna=False)["found"].mean().rename("value").reset_index()


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
                                       "with `python -m somabench.judge <run dir> judge=task`")
        return
    knobs = _stats(cfg)
    for panel in task_panels:
        suffix = f"{tag}_{_tag(panel)}"
        lines = scores[scores["panel"].astype(str) == panel]
        post_lines, post_note = post_switch_turns(lines, cfg)
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
                title = f"{name_of} ({family}, panel {panel}), {subset}"
                table = _table(per, mlines, cfg, title, unit, [_metric_note(metric, panel), *extra])
                result.written.append(Artifact(name, "extra (issue 16)", table.write(out, name),
                                               f"{unit} per dataset x method, {subset}, "
                                               f"mean [CI] over dialogues"))
                spec = SimpleNamespace(stem=stem, title=f"{name_of}, {subset}", unit=unit)
                _paired_table(result, cfg, knobs, family, tag, f"_{_tag(panel)}", per, "value",
                              spec, panel, out)
        acc_lines = lines[score_metric(lines) == "accuracy"]
        found = answer_found(acc_lines)
        if not found.empty:
            name = f"answer_found_{suffix}"
            not_graded = acc_lines[~acc_lines["status"].isin([SCORE_OK, "unparsed"])]
            table = _table(found, not_graded, cfg,
                           f"Final answer found ({family}, panel {panel}), graded turns",
                           "Answer found %", ["Share of graded turns (ok + unparsed accuracy lines) "
                                              "whose reply had an extractable final answer; the "
                                              "others are excluded from accuracy, never scored 0."])
            result.written.append(Artifact(name, "extra (issue 16)", table.write(out, name),
                                           "% of graded turns with an extractable final answer"))
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


def _metric_note(metric: str, panel: str) -> str:
    what = ("final answer vs the gold answer; the Original row (F, full history) is the ceiling"
            if metric == "accuracy" else
            "final answer vs the Original's final answer on the same turn; the Original row is "
            "F vs itself (100 % by construction)")
    return (f"{TASK_METRICS[metric]}: {what}. Graded by MATH equivalence (panel `{panel}`, "
            f"judges/math_equiv.py), no LLM judge. Turns without gold are skipped; replies without "
            f"a final answer are excluded as unparsed (see answer_found).")
