"""Build every table and every figure whose inputs exist; say what was skipped and why.

Why one place: the CLI, the notebook and the tests all call :func:`build_report`, so the
files under ``results/<experiment>/`` are always the same set, named after the paper's
artifacts, with an index (``README.md``) listing what each file is and what was skipped.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from somabench.metrics import (
    SCORE_OK,
    dialogue_throughput,
    excluded_counts,
    panels,
    rank_inversions,
    score_metric,
    score_per_dialogue,
)
from somabench.report import figures as figs
from somabench.report.collect import ReportData, flatten_config
from somabench.report.tables import (
    Cell,
    StatsKnobs,
    Table,
    baseline_method,
    baseline_names,
    make_table,
    paired_note,
    paired_text,
    write_tables,
)
from somabench.stats import compare_to_baseline

log = logging.getLogger(__name__)

DIALOGUE_KEYS = ["run_key", "label", "method", "family", "dataset", "dialogue_id"]


@dataclass
class Artifact:
    """One written table or figure."""

    name: str
    paper: str
    """Which paper table/figure it reproduces (or ``extra``)."""
    paths: list[Path]
    description: str


@dataclass
class ReportResult:
    out_dir: Path
    written: list[Artifact] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(artifact name, reason)."""
    messages: list[str] = field(default_factory=list)

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append((name, reason))
        log.info("skipped %s: %s", name, reason)


# -- derived frames -------------------------------------------------------------------------------
def similarity_scores(data: ReportData, cfg: Any) -> pd.DataFrame:
    """Similarity score lines of every panel (all statuses; aggregation keeps only ok)."""
    return metric_scores(data, str(cfg.similarity_metric))


def metric_scores(data: ReportData, metric: str) -> pd.DataFrame:
    scores = data.scores
    if scores.empty:
        return scores
    return scores[score_metric(scores) == metric]


def score_dialogues(scores: pd.DataFrame, panel: str, metric: str, value: str,
                    subset: str = "all", judge: str | None = None) -> pd.DataFrame:
    """Per dialogue of ONE panel (``somabench.metrics.score_per_dialogue``: the single path)."""
    return score_per_dialogue(scores, panel=panel, metric=metric, by=DIALOGUE_KEYS, subset=subset,
                              judge=judge, value=value)


def similarity_dialogues(scores: pd.DataFrame, panel: str | None = None,
                         metric: str = "similarity", subset: str = "all") -> pd.DataFrame:
    """Similarity per dialogue of one panel (default: the only panel in ``scores``)."""
    names = panels(scores)
    if panel is None:
        if len(names) > 1:
            raise ValueError(f"scores hold panels {names}: name one (they are never mixed)")
        panel = names[0] if names else ""
    if scores.empty or not panel:
        return pd.DataFrame(columns=[*DIALOGUE_KEYS, "similarity", "n_turns", "n_judges", "partial_turns"])
    return score_dialogues(scores, panel, metric, "similarity", subset)


def warm_windows(data: ReportData, cfg: Any) -> dict[str, float]:
    """run_key -> warm window W of the warm-window method's runs (config first, then records)."""
    out: dict[str, float] = {}
    keys = list(cfg.warm_window.config_keys)
    for run in data.runs:
        if run.kind != "run" or run.method != cfg.warm_window.method:
            continue
        flat = flatten_config(run.config)
        value = next((flat[k] for k in keys if isinstance(flat.get(k), int | float)), None)
        if value is None and not data.dialogues.empty:
            adapt = data.dialogues.loc[data.dialogues["run_key"] == run.key, "adaptation"]
            found = [a.get(k) for a in adapt for k in cfg.warm_window.adaptation_keys
                     if isinstance(a, dict) and isinstance(a.get(k), int | float)]
            value = float(pd.Series(found).median()) if found else None
        if value is not None:
            out[run.key] = float(value)
    return out


def _judge_note(scores: pd.DataFrame, scale: str = "× 100") -> list[str]:
    if scores.empty:
        return []
    judges = scores.drop_duplicates(["judge"])[["judge", "judge_kind"]]
    parts = [f"{j} ({k})" for j, k in zip(judges["judge"], judges["judge_kind"], strict=True)]
    panel_names = ", ".join(sorted(scores["panel"].astype(str).unique()))
    notes = [f"Panel {panel_names}: {', '.join(parts)}; per turn the mean over the panel's judges of "
             f"the ok normalized scores, then the mean over turns per dialogue, {scale}."]
    if judges["judge_kind"].astype(str).str.startswith("embedding").any():
        notes.append("Embedding-proxy judges are a cosine-similarity PROXY, not LLM judges.")
    return notes


def _tag(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text))  # names end up in file names


# -- the build ------------------------------------------------------------------------------------
def build_report(data: ReportData, cfg: Any, out_dir: str | Path,
                 cache_dir: str | None = None) -> ReportResult:
    """Write all tables and figures for ``data`` under ``out_dir``; return what was done.

    Score tables and figures are made per judge panel (file names end in ``_<panel>``): a
    source judged by several panels gets each panel's numbers separately, never a mix.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = ReportResult(out_dir=out)
    result.messages.extend(data.warnings)
    unfinished = [f"{r.key} ({r.status})" for r in data.runs if r.kind == "run" and r.status != "success"]
    if unfinished:
        result.messages.append(f"runs not marked success (their finished dialogues are included): "
                               f"{', '.join(unfinished)}")
    knobs = StatsKnobs.from_cfg(cfg.stats)
    windows = warm_windows(data, cfg)
    families = data.families()
    sim_metric = str(cfg.similarity_metric)
    sim_panels = panels(data.scores, sim_metric)

    for family in families:
        tag = _tag(family)
        for metric, spec in cfg.score_tables.items():
            metric_panels = panels(data.scores, str(metric))
            if not metric_panels:
                if metric == sim_metric:
                    _skip_similarity(result, cfg, tag, "", metric_scores(data, sim_metric))
                continue
            for panel in metric_panels:
                _score_tables(result, data, cfg, knobs, family, tag, str(metric), spec, panel, out)
        _efficiency_tables(result, data, cfg, knobs, family, tag, out)
        every_panel: list[str | None] = [*panels(data.scores)] or [None]  # None: no panel
        for ability_panel in every_panel:
            _ability_table(result, data, cfg, family, tag, ability_panel, out)
        for hook in EXTRA_ARTIFACTS:
            _extra(hook)(result, data, cfg, family, tag, out)
        _figures(result, data, cfg, knobs, family, tag, out, cache_dir)
        each_sim_panel: list[str | None] = [*sim_panels] or [None]
        for sim_panel in each_sim_panel:
            _panel_figures(result, data, cfg, knobs, family, tag, sim_panel, windows, out)

    data.runs_frame().to_csv(out / "runs.csv", index=False)
    _write_dialogue_data(data, cfg, out)
    if cfg.get("export_runs", True):
        from somabench.report.export import export_runs

        export_runs(data, out)  # <out>/runs: the folder rebuilds every number (report/export.py)
    from somabench.report.export import write_results_json

    write_results_json(data, out)  # every table cell, config and version in one file
    _write_index(result, data)
    return result


EXTRA_ARTIFACTS = ("somabench.report.accuracy:add_task_artifacts",
                   "somabench.report.mining:add_mining_artifacts",
                   "somabench.report.latency:add_latency_artifacts",
                   "somabench.report.served:add_served_turn_artifacts",
                   "somabench.report.prefill:add_prefill_artifacts",
                   "somabench.report.study:add_study_artifacts")
"""Artifact builders of other issues, ``(result, data, cfg, family, tag, out) -> None``; each
computes through ``somabench.metrics`` / ``somabench.stats`` like the tables here."""


def _extra(ref: str) -> Any:
    import importlib

    module, attr = ref.split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        log.warning("report hook %s unavailable (%s)", ref, exc)
        return lambda *args: None


def _skip_similarity(result: ReportResult, cfg: Any, tag: str, ptag: str, scores: pd.DataFrame) -> None:
    reason = (f"no similarity scores (scores.jsonl lines with metric {cfg.similarity_metric}): run "
              f"with a judge (judge=embedding|local|paper) or python -m somabench judge <run dir>")
    if not scores.empty:
        reason = f"no ok similarity scores ({excluded_counts(scores)} excluded)"
    for skipped in (f"table1_similarity_{tag}{ptag}", f"table1_similarity_post_switch_{tag}{ptag}",
                    f"similarity_by_judge_{tag}{ptag}"):
        result.skip(skipped, reason)


def _named(cfg: Any, frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(dataset=frame["dataset"].map(lambda d: figs.dataset_name(cfg, d)))


def _coverage_note(per: pd.DataFrame) -> list[str]:
    partial = int(per["partial_turns"].sum()) if "partial_turns" in per else 0
    if not partial:
        return ["Coverage: every scored turn was scored by every judge of the panel."]
    return [f"Coverage: {partial} of {int(per['n_turns'].sum())} scored turns were scored by fewer "
            f"judges than the panel has (cells marked †)."]


def _score_tables(result: ReportResult, data: ReportData, cfg: Any, knobs: StatsKnobs, family: str,
                  tag: str, metric: str, spec: Any, panel: str, out: Path) -> None:
    """Table 1 style tables of one metric and ONE panel: all turns, post-switch turns, per judge,
    and the paired comparison against the baseline method."""
    tcfg = cfg.tables
    ptag = f"_{_tag(panel)}"
    stem, title, paper = str(spec.stem), str(spec.title), str(spec.paper)
    scores = metric_scores(data, metric)
    scores = scores[(scores["family"] == family) & (scores["panel"].astype(str) == panel)]
    scores = scores[~scores["method"].isin(list(cfg.table_exclude_methods))]
    value = str(spec.column)
    per = score_dialogues(scores, panel, metric, value)
    name = f"{stem}_{tag}{ptag}"
    if per.empty:
        result.skip(name, f"no ok {metric} scores of panel {panel} ({excluded_counts(scores)} excluded)")
        return
    common = {"value": value, "row": "label", "column": "dataset", "metric": str(spec.unit),
              "higher_is_better": True, "decimals_mean": tcfg.decimals_mean,
              "decimals_std": tcfg.decimals_std, "stats": knobs, "partial_col": "partial_turns"}
    row_order = figs.order_labels(cfg, per)
    cols = [figs.dataset_name(cfg, d) for d in figs.order_datasets(cfg, per["dataset"].unique().tolist())]
    notes = _judge_note(scores) + _coverage_note(per)
    if (per["method"] == "original").any():
        notes.append("Original: its answers judged against themselves, judge(X, X): a sanity check of "
                     "the judge (100 % for a perfect judge), not a result.")
    table = make_table(_named(cfg, per), title=f"{title} ({family}, panel {panel}), all turns",
                       row_order=row_order, column_order=cols, excluded=excluded_counts(scores),
                       notes=notes, **common)
    result.written.append(Artifact(name, paper, table.write(out, name),
                                   f"{metric} per dataset × method, panel {panel}, mean [95 % CI] over dialogues"))

    post_scores = scores[scores["post_switch"].fillna(False).astype(bool)]
    post = score_dialogues(scores, panel, metric, value, subset="post_switch")
    name = f"{stem}_post_switch_{tag}{ptag}"
    if post.empty:
        result.skip(name, "no ok scores on post-switch turns (post_switch=true in scores.jsonl)")
    else:
        table = make_table(_named(cfg, post), title=f"{title} ({family}, panel {panel}), post-switch turns only",
                           row_order=row_order, column_order=cols, excluded=excluded_counts(post_scores),
                           notes=_judge_note(post_scores) + _coverage_note(post), **common)
        result.written.append(Artifact(name, paper + " variant", table.write(out, name),
                                       f"{metric} on turns served after the switch only"))

    per_judge: dict[str, Table] = {}
    for judge, jscores in scores.groupby("judge"):
        jper = score_dialogues(scores, panel, metric, value, judge=str(judge))
        if jper.empty:
            continue
        per_judge[str(judge)] = make_table(_named(cfg, jper),
                                           title=f"{title} ({family}, panel {panel}), judge {judge}",
                                           row_order=row_order, column_order=cols,
                                           excluded=excluded_counts(jscores), notes=_judge_note(jscores),
                                           **{**common, "partial_col": None})
    name = f"{stem.replace('table1_', '')}_by_judge_{tag}{ptag}" if stem.startswith("table1_") else \
        f"{stem}_by_judge_{tag}{ptag}"
    if len(per_judge) > 1:
        result.written.append(Artifact(name, "extra", write_tables(per_judge, out, name, "judge"),
                                       f"{metric} computed with each judge of panel {panel} alone"))
    else:
        result.skip(name, f"panel {panel} has a single judge (its table is the panel's)")
    _paired_table(result, cfg, knobs, family, tag, ptag, per, value, spec, panel, out)


def _paired_table(result: ReportResult, cfg: Any, knobs: StatsKnobs, family: str, tag: str, ptag: str,
                  per: pd.DataFrame, value: str, spec: Any, panel: str, out: Path) -> None:
    """Every method vs ``report.stats.baseline`` on the same dialogues: diff [CI], p, n."""
    found = baseline_method(cfg.stats, per["method"].unique()) if not per.empty else None
    baseline = found or baseline_names(cfg.stats)[0]
    name = f"{spec.stem}_vs_{_tag(baseline)}_{tag}{ptag}"
    base_rows = per[per["method"] == baseline]
    if base_rows.empty:
        wanted = " | ".join(baseline_names(cfg.stats))
        result.skip(name, f"no {wanted} (report.stats.baseline) scores of panel {panel} to pair with")
        return
    base_label = base_rows["label"].iloc[0]
    if base_rows["label"].nunique() > 1:
        result.messages.append(f"{name}: {baseline} has several variants; paired against {base_label}")
    frame = per[(per["method"] != baseline) | (per["label"] == base_label)]
    named = _named(cfg, frame)
    cols = [figs.dataset_name(cfg, d) for d in figs.order_datasets(cfg, frame["dataset"].unique().tolist())]
    pooled = "All (paired on dataset, dialogue)"
    dm = cfg.tables.decimals_mean
    cells: dict[tuple[str, str], Cell] = {}
    knob: dict[str, Any] = {"n_boot": knobs.n_boot, "n_perm": int(cfg.stats.n_perm), "seed": knobs.seed,
            "confidence": knobs.confidence, "method": knobs.method, "min_n": knobs.min_n}
    rows_long = []
    for col, part in [*((c, named[named["dataset"] == c]) for c in cols), (pooled, named)]:
        cmp = compare_to_baseline(part, value=value, group="label", unit=["dataset", "dialogue_id"],
                                  baseline=base_label, identity=(name, col), **knob)
        for r in cmp.itertuples():
            if r.n == 0:
                continue
            text = paired_text(r, dm)
            cells[(r.label, col)] = Cell(r.diff, None, int(r.n), r.lo, r.hi, "", text)
            rows_long.append({"row": r.label, "column": col, "diff": r.diff, "ci_lo": r.lo, "ci_hi": r.hi,
                              "p": r.p, "n": r.n, "p_sign_flip": r.p_sign_flip, "exact_p": r.exact,
                              "no_ci": r.reason, "mean_method": r.mean_a, "mean_baseline": r.mean_b})
    if not cells:
        result.skip(name, f"no dialogue served by both {base_label} and another method (panel {panel})")
        return
    rows = [lb for lb in figs.order_labels(cfg, frame) if lb != base_label and any((lb, c) in cells for c in
                                                                                 [*cols, pooled])]
    table = Table(title=f"{spec.title} ({family}, panel {panel}): each method minus {base_label}, paired "
                        f"on the same dialogues", metric=f"Δ {spec.unit}", higher_is_better=True, rows=rows,
                  columns=[*cols, pooled], cells=cells, decimals_mean=dm, decimals_std=cfg.tables.decimals_std,
                  run_ids=sorted(frame["run_key"].astype(str).unique()), bold_best=False,
                  confidence=knobs.confidence, describe=f"Δ {spec.unit} (method − {base_label}) ↑: "
                  f"positive = the method scores higher than {base_label}.",
                  notes=[*paired_note(knobs, int(cfg.stats.n_perm), base_label),
                         *getattr(spec, "notes", [])])  # e.g. MATH grader agreement
    paths = table.write(out, name)
    pd.DataFrame(rows_long).to_csv(out / f"{name}.csv", index=False)
    result.written.append(Artifact(name, "extra (statistics)", paths,
                                   f"paired comparison of every method with {base_label}: Δ, CI, p"))


def _efficiency_tables(result: ReportResult, data: ReportData, cfg: Any, knobs: StatsKnobs, family: str,
                       tag: str, out: Path) -> None:
    from somabench.metrics import cost_stacks

    tcfg = cfg.tables
    dialogues = data.dialogues[data.dialogues["family"] == family] if not data.dialogues.empty else data.dialogues
    if dialogues.empty:
        result.skip(f"tokens_per_dialogue_{tag}", "no dialogue records")
        return
    row_order = figs.order_labels(cfg, dialogues)
    named = _named(cfg, dialogues)
    cols = [figs.dataset_name(cfg, d) for d in figs.order_datasets(cfg, dialogues["dataset"].unique().tolist())]
    name = f"tokens_per_dialogue_{tag}"
    has_training = bool((named["tokens_training"].fillna(0) > 0).any()) if "tokens_training" in named else False
    value = "tokens_total_incl_training" if has_training else "tokens_total"
    notes = ["Prompt + completion tokens of F, G, compressor and router (incl. llmlingua's context-level "
             "perplexity pass and the router's embedding calls), the F tokens that produced the "
             "Original's answers a method reads (history_source=reference), plus adaptation."]
    if has_training:
        notes.append("incl. training: forward + backward tokens of mining/LoRA/History-FT training "
                     "(DialogueRecord.train_tokens).")
    missing = named[named["tokens_missing"].astype(str) != ""] if "tokens_missing" in named else named.iloc[0:0]
    if not missing.empty:
        parts = missing.groupby("label")["tokens_missing"].agg(lambda s: ",".join(sorted(set(",".join(s).split(",")))))
        notes.append("Missing counts (a backend reported none; left out of the totals, never counted as 0): "
                     + "; ".join(f"{lb}: {roles}" for lb, roles in parts.items()) + ".")
    table = make_table(named, value=value, row="label", column="dataset", metric="Tokens / dialogue",
                       title=f"Tokens per dialogue ({family}), all models incl. adaptation"
                             + (" and training" if has_training else ""),
                       higher_is_better=False, decimals_mean=tcfg.decimals_tokens,
                       decimals_std=tcfg.decimals_tokens, row_order=row_order, column_order=cols,
                       notes=notes, stats=knobs)
    result.written.append(Artifact(name, "Fig. 2 / 5 / 6 (numbers)", table.write(out, name),
                                   "tokens per dialogue, mean [95 % CI] over dialogues"))

    prices = data.prices(family)
    name = f"cost_per_dialogue_{tag}"
    if prices:
        costed, unpriced = cost_stacks(named, prices)
        per = int(cfg.cost_per_dialogues)
        costed["usd_scaled"] = costed["usd_total"] * per
        notes = [f"USD per {per:,} dialogues at model.prices ({prices.get('label', 'from config')}; "
                 f"USD per 1M tokens; compressor/router at prices.compressor/router, training tokens at "
                 f"prices.train multiples of the role's prompt price)."]
        if unpriced:
            notes.append(f"Not priced (no price in config, so NOT in the totals): {', '.join(unpriced)}.")
        notes += rank_inversions(costed, "label", value, "usd_scaled")
        table = make_table(costed, value="usd_scaled", row="label", column="dataset",
                           metric=f"USD / {per:,} dialogues",
                           title=f"Cost per dialogue ({family})", higher_is_better=False,
                           decimals_mean=tcfg.decimals_cost, decimals_std=tcfg.decimals_cost,
                           row_order=row_order, column_order=cols, notes=notes, stats=knobs)
        result.written.append(Artifact(name, "Fig. 2 cost variant (numbers)", table.write(out, name),
                                       "cost from model.prices (USD per report.cost_per_dialogues dialogues)"))
    else:
        result.skip(name, f"no model.prices in the run config of family {family}")

    turns = data.turns[data.turns["family"] == family] if not data.turns.empty else data.turns
    name = f"throughput_{tag}"
    tps = dialogue_throughput(turns, DIALOGUE_KEYS, dialogues) if not turns.empty else pd.DataFrame()
    if tps.empty or tps["tps"].isna().all():
        result.skip(name, "no turn with generation seconds > 0")
        return
    tps = _named(cfg, tps)
    long = pd.concat([tps.assign(column=tps["dataset"] + " · gen", value=tps["tps"]),
                      tps.assign(column=tps["dataset"] + " · e2e", value=tps["tps_e2e"])])
    order = [f"{c} · {k}" for c in cols for k in ("gen", "e2e")]
    cached = tps.groupby("label")[["cached_turns", "turns"]].sum()
    cached_text = "; ".join(f"{lb} {int(r.cached_turns)}/{int(r.turns)}" for lb, r in cached.iterrows()
                            if r.cached_turns)
    table = make_table(long, value="value", row="label", column="column", metric="Tokens / s",
                       title=f"Throughput ({family}): generation and end-to-end", higher_is_better=True,
                       decimals_mean=tcfg.decimals_tps, decimals_std=tcfg.decimals_tps, row_order=row_order,
                       column_order=order, average=False, stats=knobs,
                       notes=["gen: completion tokens / generation seconds (batch shares). e2e: completion "
                              "tokens / wall seconds of the turns including compression, routing, gating "
                              "and adaptation (amortised over the dialogue's turns).",
                              "Cached answers (request cache) count at the seconds recorded when they were "
                              "generated, possibly by another run: "
                              + (f"cached turns per method: {cached_text}." if cached_text else "no cached turns.")])
    result.written.append(Artifact(name, "Fig. 7 / 8 (numbers)", table.write(out, name),
                                   "generation and end-to-end throughput per dialogue, mean [95 % CI]"))


def _ability_table(result: ReportResult, data: ReportData, cfg: Any, family: str, tag: str,
                   panel: str | None, out: Path) -> None:
    ptag = f"_{_tag(panel)}" if panel else ""
    name = f"abilities_{tag}{ptag}"
    frame = figs.ability_frame(data.scores, cfg, panel) if panel else pd.DataFrame()
    frame = frame[frame["family"] == family] if not frame.empty else frame
    if frame.empty:
        if panel is None or panels(data.scores) == [panel]:
            result.skip(name, f"no ok ability scores (metric {cfg.ability_prefix}*)")
        return
    scores = data.scores
    rows = scores[(scores["family"] == family) & (scores["panel"].astype(str) == panel)
                  & score_metric(scores).str.startswith(str(cfg.ability_prefix))]
    table = make_table(frame, value="score", row="label", column="ability",
                       metric=f"Score (0–{float(cfg.ability_scale):g})",
                       title=f"MT-Bench-101 ability scores ({family}, panel {panel})", higher_is_better=True,
                       decimals_mean=cfg.tables.decimals_mean, decimals_std=cfg.tables.decimals_std,
                       row_order=figs.order_labels(cfg, frame), excluded=excluded_counts(rows),
                       notes=_judge_note(rows, f"× {float(cfg.ability_scale):g}"),
                       stats=StatsKnobs.from_cfg(cfg.stats))
    result.written.append(Artifact(name, "Fig. 10 (numbers)", table.write(out, name),
                                   "ability score per method, mean [95 % CI] over dialogues"))


def _figures(result: ReportResult, data: ReportData, cfg: Any, knobs: StatsKnobs, family: str, tag: str,
             out: Path, cache_dir: str | None) -> None:
    """Figures that do not depend on a judge panel."""
    turns = data.turns[data.turns["family"] == family] if not data.turns.empty else data.turns
    dialogues = data.dialogues
    prices = data.prices(family)
    jobs: list[tuple[str, str, str, Any]] = [
        (f"fig1_relative_tokens_per_turn_{tag}", "Fig. 1",
         "tokens per turn (user + reference answer, F's tokenizer) over every bundled dialogue, / turn 1",
         lambda: figs.data_tokens_per_turn_figure(cfg, out, cache_dir)),
        (f"fig1_served_tokens_per_turn_{tag}", "Fig. 1 (served variant)",
         "tokens per served turn of the Original relative to turn 1 (capped completions)",
         lambda: figs.relative_tokens_per_turn_figure(turns, cfg)),
        (f"fig2_tokens_per_dialogue_{tag}", "Fig. 2", "tokens per dialogue per method, stacked by model",
         lambda: figs.tokens_per_dialogue_figure(dialogues, cfg, family, by_dataset=False, knobs=knobs)),
        (f"fig2_cost_per_dialogue_{tag}", "Fig. 2 (cost)", "cost per method from model.prices, stacked by model",
         lambda: figs.tokens_per_dialogue_figure(dialogues, cfg, family, by_dataset=False, prices=prices,
                                                 knobs=knobs)),
        (f"fig5-6_tokens_by_dataset_{tag}", "Fig. 5 (LLaMA) / Fig. 6 (Qwen)",
         "tokens per dialogue per method, one panel per dataset",
         lambda: figs.tokens_per_dialogue_figure(dialogues, cfg, family, by_dataset=True, knobs=knobs)),
        (f"fig7-8_throughput_{tag}", "Fig. 7 (LLaMA) / Fig. 8 (Qwen)",
         "generation and end-to-end throughput per method and dataset",
         lambda: figs.throughput_figure(turns, cfg, family, dialogues[dialogues["family"] == family]
                                     if not dialogues.empty else dialogues, knobs)),
    ]
    for name, paper, description, make in jobs:
        _draw(result, out, cfg, name, paper, description, make)


def _panel_figures(result: ReportResult, data: ReportData, cfg: Any, knobs: StatsKnobs, family: str,
                   tag: str, panel: str | None, windows: dict[str, float], out: Path) -> None:
    """Figures of one judge panel's scores (file names end in ``_<panel>``)."""
    ptag = f"_{_tag(panel)}" if panel else ""
    scores = similarity_scores(data, cfg)
    sim = similarity_dialogues(scores, panel) if panel else similarity_dialogues(scores.iloc[0:0])
    ww_sim = sim if cfg.warm_window.subset == "all" or not panel else similarity_dialogues(
        scores, panel, subset="post_switch")
    _draw(result, out, cfg, f"fig3-9_ablation_{tag}{ptag}", "Fig. 3 (LLaMA) / Fig. 9 (Qwen)",
          f"SOMA vs its ablations, similarity % (panel {panel})",
          lambda: figs.ablation_figure(sim, cfg, family, knobs))
    _draw(result, out, cfg, f"fig10_abilities_{tag}{ptag}", "Fig. 10",
          f"MT-Bench-101 ability profile per method (panel {panel})",
          lambda: figs.abilities_figure(data.scores, cfg, family, panel))
    points = figs.warm_window_points(ww_sim, windows, cfg, family, knobs)
    _draw(result, out, cfg, f"fig11_warm_window_{tag}{ptag}", "Fig. 11",
          "similarity vs warm window W per dataset", lambda: figs.warm_window_figure(points, cfg, family))

    def plateau() -> Any:
        fig, r = figs.plateau_figure(points, cfg, family)
        result.messages.append(f"Fig. 12 ({family}, panel {panel}): Pearson r between best W and plateau "
                               f"similarity = {r:.2f}")
        return fig

    _draw(result, out, cfg, f"fig12_plateau_vs_best_w_{tag}{ptag}", "Fig. 12",
          "plateau similarity vs best W with Pearson r", plateau)
    if not points.empty:
        _warm_window_table(result, ww_sim, windows, cfg, family, tag, ptag, out)


def _warm_window_table(result: ReportResult, sim: pd.DataFrame, windows: dict[str, float], cfg: Any,
                       family: str, tag: str, ptag: str, out: Path) -> None:
    frame = sim[(sim["family"] == family) & (sim["method"] == cfg.warm_window.method)].copy()
    frame["W"] = frame["run_key"].map(windows)
    frame = frame.dropna(subset=["W"])
    frame["W"] = frame["W"].map(lambda w: f"W={w:g}")
    frame["dataset"] = frame["dataset"].map(lambda d: figs.dataset_name(cfg, d))
    order = sorted(frame["W"].unique(), key=lambda s: float(s[2:]))
    plateaus = figs.plateau_points(figs.warm_window_points(sim, windows, cfg, family), cfg)
    notes = [f"{figs.dataset_name(cfg, r.dataset)}: plateau {r.plateau:.{cfg.tables.decimals_mean}f} at best W={r.best_W:g}"
             for r in plateaus.itertuples()]
    name = f"warm_window_{tag}{ptag}"
    subset = "post-switch turns" if cfg.warm_window.subset == "post_switch" else "all turns"
    table = make_table(frame, value="similarity", row="dataset", column="W", metric="Similarity %",
                       title=f"Similarity vs warm window W ({cfg.warm_window.method}, {family}, {subset})",
                       higher_is_better=True, decimals_mean=cfg.tables.decimals_mean,
                       decimals_std=cfg.tables.decimals_std, column_order=order, average=False,
                       notes=notes, stats=StatsKnobs.from_cfg(cfg.stats))
    result.written.append(Artifact(name, "Fig. 11 / 12 (numbers)", table.write(out, name),
                                   "similarity per dataset and W"))


def _draw(result: ReportResult, out: Path, cfg: Any, name: str, paper: str, description: str, make: Any) -> None:
    try:
        fig = make()
    except figs.Skip as exc:
        result.skip(name, str(exc))
        return
    result.written.append(Artifact(name, paper, figs.save(fig, out, name, cfg), description))


DIALOGUE_DATA = "data/dialogues.csv"
EXCLUDED_PREFIX = "excluded_"


def dialogue_data(data: ReportData, cfg: Any) -> pd.DataFrame:
    """One row per (run, dialogue): tokens (metrics.dialogue_frame), per panel the similarity
    (``similarity@<panel>``, ``n_turns@<panel>``, ``n_judges@<panel>``), and how many similarity
    lines of the dialogue were excluded per status (``excluded_<status>``, all panels)."""
    if data.dialogues.empty:
        return pd.DataFrame()
    frame = data.dialogues.drop(columns=["adaptation"], errors="ignore")
    scores = similarity_scores(data, cfg)
    for panel in panels(scores):
        sim = similarity_dialogues(scores, panel)
        if sim.empty:
            continue
        cols = {c: f"{c}@{panel}" for c in ("similarity", "n_turns", "n_judges", "partial_turns")}
        frame = frame.merge(sim[["run_key", "dialogue_id", *cols]].rename(columns=cols),
                            on=["run_key", "dialogue_id"], how="left")
    if not scores.empty:
        bad = scores[scores["status"] != SCORE_OK]
        if not bad.empty:
            counts = bad.groupby(["run_key", "dialogue_id", "status"]).size().unstack(fill_value=0)
            counts.columns = [f"{EXCLUDED_PREFIX}{c}" for c in counts.columns]
            frame = frame.merge(counts.reset_index(), on=["run_key", "dialogue_id"], how="left")
    excluded_cols = [c for c in frame.columns if c.startswith(EXCLUDED_PREFIX)]
    frame[excluded_cols] = frame[excluded_cols].fillna(0).astype(int)
    return frame


def dialogue_panels(frame: pd.DataFrame) -> list[str]:
    """Panels with a similarity column in a :func:`dialogue_data` frame."""
    return sorted(c.split("@", 1)[1] for c in frame.columns if c.startswith("similarity@"))


def excluded_from(frame: pd.DataFrame) -> dict[str, int]:
    """Excluded similarity lines by status, from :func:`dialogue_data` columns."""
    return {c.removeprefix(EXCLUDED_PREFIX): int(frame[c].sum()) for c in frame.columns
            if c.startswith(EXCLUDED_PREFIX) and frame[c].sum() > 0}


def load_dialogue_data(source: str | Path, cfg: Any) -> pd.DataFrame:
    """The per-dialogue frame from a results folder (``data/dialogues.csv``, written by the report
    command) or straight from an outputs folder (collects the runs)."""
    from somabench.report.collect import load_local

    path = Path(source)
    if (path / DIALOGUE_DATA).exists():
        return pd.read_csv(path / DIALOGUE_DATA)
    return dialogue_data(load_local(path, cfg), cfg)


def _write_dialogue_data(data: ReportData, cfg: Any, out: Path) -> None:
    """``data/dialogues.csv``: the small per-dialogue file the notebook reads from results/."""
    frame = dialogue_data(data, cfg)
    if frame.empty:
        return
    (out / DIALOGUE_DATA).parent.mkdir(exist_ok=True)
    order = [c for c in ("dataset", "method", "dialogue_id") if c in frame]
    frame.sort_values(order, kind="stable").to_csv(out / DIALOGUE_DATA, index=False)


def _write_index(result: ReportResult, data: ReportData) -> None:
    out = result.out_dir
    lines = [f"# Report: {data.experiment()}", "", f"Source: `{data.source}` — "
             f"{sum(r.kind == 'run' for r in data.runs)} run(s), "
             f"{sum(r.kind == 'reference' for r in data.runs)} reference run(s) (see `runs.csv`).",
             "", "Regenerate: `python -m somabench report <source> --out <this dir>`.", "",
             "| artifact | paper | what | files |", "|---|---|---|---|"]
    for art in result.written:
        files = ", ".join(f"[{p.suffix[1:]}]({p.name})" for p in art.paths)
        lines.append(f"| {art.name} | {art.paper} | {art.description} | {files} |")
    if result.skipped:
        lines += ["", "## Skipped", ""] + [f"- **{n}**: {r}" for n, r in result.skipped]
    if result.messages:
        lines += ["", "## Notes", ""] + [f"- {m}" for m in result.messages]
    (out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "report.json").write_text(json.dumps({
        "source": data.source, "written": {a.name: [p.name for p in a.paths] for a in result.written},
        "skipped": dict(result.skipped), "messages": result.messages}, indent=2), encoding="utf-8")
