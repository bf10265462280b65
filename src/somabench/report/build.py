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
    dialogue_throughput,
    excluded_counts,
    score_metric,
    similarity_per_dialogue,
)
from somabench.report import figures as figs
from somabench.report.collect import ReportData, flatten_config
from somabench.report.tables import Table, make_table, write_tables

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
    """Similarity score lines (all statuses; aggregation keeps only ok)."""
    scores = data.scores
    if scores.empty:
        return scores
    return scores[score_metric(scores) == str(cfg.similarity_metric)]


def similarity_dialogues(scores: pd.DataFrame) -> pd.DataFrame:
    return similarity_per_dialogue(scores, DIALOGUE_KEYS) if not scores.empty else pd.DataFrame(
        columns=[*DIALOGUE_KEYS, "similarity", "n_turns", "n_judges"])


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
    notes = [f"Judges: {', '.join(parts)}; per turn the mean over judges of the ok normalized "
             f"scores, then the mean over turns per dialogue, {scale}."]
    if judges["judge_kind"].astype(str).str.startswith("embedding").any():
        notes.append("Embedding-proxy judges are a cosine-similarity PROXY, not LLM judges.")
    return notes


# -- the build ------------------------------------------------------------------------------------
def build_report(data: ReportData, cfg: Any, out_dir: str | Path) -> ReportResult:
    """Write all tables and figures for ``data`` under ``out_dir``; return what was done."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = ReportResult(out_dir=out)
    result.messages.extend(data.warnings)
    unfinished = [f"{r.key} ({r.status})" for r in data.runs if r.kind == "run" and r.status != "success"]
    if unfinished:
        result.messages.append(f"runs not marked success (their finished dialogues are included): "
                               f"{', '.join(unfinished)}")
    sim_scores = similarity_scores(data, cfg)
    sim = similarity_dialogues(sim_scores)
    windows = warm_windows(data, cfg)
    ww_sim = sim if cfg.warm_window.subset == "all" or sim_scores.empty else similarity_dialogues(
        sim_scores[sim_scores["post_switch"].fillna(False).astype(bool)])
    families = data.families()

    for family in families:
        tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", family)  # family names end up in file names
        fam_scores = sim_scores[sim_scores["family"] == family] if not sim_scores.empty else sim_scores
        table_scores = fam_scores[~fam_scores["method"].isin(list(cfg.table_exclude_methods))] \
            if not fam_scores.empty else fam_scores
        fam_sim = sim[(sim["family"] == family) & ~sim["method"].isin(list(cfg.table_exclude_methods))]
        _similarity_tables(result, cfg, family, tag, table_scores, fam_sim, out)
        _efficiency_tables(result, data, cfg, family, tag, out)
        _ability_table(result, data, cfg, family, tag, out)
        _figures(result, data, cfg, family, tag, sim, ww_sim, windows, out)

    data.runs_frame().to_csv(out / "runs.csv", index=False)
    _write_dialogue_data(data, cfg, out)
    _write_index(result, data)
    return result


def _similarity_tables(result: ReportResult, cfg: Any, family: str, tag: str, scores: pd.DataFrame,
                       sim: pd.DataFrame, out: Path) -> None:
    tcfg = cfg.tables
    name = f"table1_similarity_{tag}"
    paper = "Table 1 (LLaMA) / Table 3 (Qwen)"
    if sim.empty:
        reason = (f"no similarity scores (scores.jsonl lines with metric {cfg.similarity_metric}): run "
                  f"with a judge (judge=embedding|local|paper) or python -m somabench.judge <run dir>")
        if not scores.empty:
            reason = f"no ok similarity scores ({excluded_counts(scores)} excluded)"
        for skipped in (name, f"table1_similarity_post_switch_{tag}", f"similarity_by_judge_{tag}"):
            result.skip(skipped, reason)
        return
    common = {"value": "similarity", "row": "label", "column": "dataset", "metric": "Similarity %",
              "higher_is_better": True, "decimals_mean": tcfg.decimals_mean, "decimals_std": tcfg.decimals_std}
    row_order = figs.order_labels(cfg, sim)
    col_order = figs.order_datasets(cfg, sim["dataset"].unique().tolist())
    named = sim.assign(dataset=sim["dataset"].map(lambda d: figs.dataset_name(cfg, d)))
    cols = [figs.dataset_name(cfg, d) for d in col_order]
    table = make_table(named, title=f"Similarity to the Original ({family}), all turns",
                       row_order=row_order, column_order=cols, excluded=excluded_counts(scores),
                       notes=_judge_note(scores), **common)
    result.written.append(Artifact(name, paper, table.write(out, name),
                                   "similarity % per dataset × method, mean ± std over dialogues"))

    post_scores = scores[scores["post_switch"].fillna(False).astype(bool)]
    post = similarity_dialogues(post_scores)
    name = f"table1_similarity_post_switch_{tag}"
    if post.empty:
        result.skip(name, "no ok scores on post-switch turns (post_switch=true in scores.jsonl)")
    else:
        post = post.assign(dataset=post["dataset"].map(lambda d: figs.dataset_name(cfg, d)))
        table = make_table(post, title=f"Similarity to the Original ({family}), post-switch turns only",
                           row_order=row_order, column_order=cols, excluded=excluded_counts(post_scores),
                           notes=_judge_note(post_scores), **common)
        result.written.append(Artifact(name, paper + " variant", table.write(out, name),
                                       "similarity % on turns served after the switch only"))

    per_judge: dict[str, Table] = {}
    for judge, jscores in scores.groupby("judge"):
        jsim = similarity_dialogues(jscores)
        if jsim.empty:
            continue
        jsim = jsim.assign(dataset=jsim["dataset"].map(lambda d: figs.dataset_name(cfg, d)))
        per_judge[str(judge)] = make_table(jsim, title=f"Similarity to the Original ({family}), judge {judge}",
                                           row_order=row_order, column_order=cols,
                                           excluded=excluded_counts(jscores), notes=_judge_note(jscores),
                                           **common)
    name = f"similarity_by_judge_{tag}"
    if per_judge:
        result.written.append(Artifact(name, "extra", write_tables(per_judge, out, name, "judge"),
                                       "Table 1 computed with each judge alone"))
    else:
        result.skip(name, "no judge has ok similarity scores")


def _efficiency_tables(result: ReportResult, data: ReportData, cfg: Any, family: str, tag: str,
                       out: Path) -> None:
    from somabench.metrics import cost_stacks

    tcfg = cfg.tables
    dialogues = data.dialogues[data.dialogues["family"] == family] if not data.dialogues.empty else data.dialogues
    if dialogues.empty:
        result.skip(f"tokens_per_dialogue_{tag}", "no dialogue records")
        return
    row_order = figs.order_labels(cfg, dialogues)
    named = dialogues.assign(dataset=dialogues["dataset"].map(lambda d: figs.dataset_name(cfg, d)))
    cols = [figs.dataset_name(cfg, d) for d in figs.order_datasets(cfg, dialogues["dataset"].unique().tolist())]
    name = f"tokens_per_dialogue_{tag}"
    table = make_table(named, value="tokens_total", row="label", column="dataset", metric="Tokens / dialogue",
                       title=f"Tokens per dialogue ({family}), all models incl. adaptation",
                       higher_is_better=False, decimals_mean=tcfg.decimals_tokens,
                       decimals_std=tcfg.decimals_tokens, row_order=row_order, column_order=cols,
                       notes=["Prompt + completion tokens of F, G, compressor and router, plus adaptation."])
    result.written.append(Artifact(name, "Fig. 2 / 5 / 6 (numbers)", table.write(out, name),
                                   "tokens per dialogue, mean ± std over dialogues"))

    prices = data.prices(family)
    name = f"cost_per_dialogue_{tag}"
    if prices:
        costed, unpriced = cost_stacks(named, prices)
        per = int(cfg.cost_per_dialogues)
        costed["usd_scaled"] = costed["usd_total"] * per
        notes = [f"USD per {per:,} dialogues at model.prices ({prices.get('label', 'from config')}; "
                 f"USD per 1M tokens)."]
        if unpriced:
            notes.append(f"Not priced (no price in config): {', '.join(unpriced)}.")
        table = make_table(costed, value="usd_scaled", row="label", column="dataset",
                           metric=f"USD / {per:,} dialogues",
                           title=f"Cost per dialogue ({family})", higher_is_better=False,
                           decimals_mean=tcfg.decimals_cost, decimals_std=tcfg.decimals_cost,
                           row_order=row_order, column_order=cols, notes=notes)
        result.written.append(Artifact(name, "Fig. 2 cost variant (numbers)", table.write(out, name),
                                       "cost from model.prices (USD per report.cost_per_dialogues dialogues)"))
    else:
        result.skip(name, f"no model.prices in the run config of family {family}")

    turns = data.turns[data.turns["family"] == family] if not data.turns.empty else data.turns
    name = f"throughput_{tag}"
    tps = dialogue_throughput(turns, DIALOGUE_KEYS) if not turns.empty else pd.DataFrame()
    if tps.empty or tps["tps"].isna().all():
        result.skip(name, "no turn with generation seconds > 0")
        return
    tps = tps.assign(dataset=tps["dataset"].map(lambda d: figs.dataset_name(cfg, d)))
    table = make_table(tps, value="tps", row="label", column="dataset", metric="Tokens / s",
                       title=f"Throughput ({family}): completion tokens per generation second",
                       higher_is_better=True, decimals_mean=tcfg.decimals_tps, decimals_std=tcfg.decimals_tps,
                       row_order=row_order, column_order=cols,
                       notes=["Per dialogue: its completion tokens / its generation seconds (batch shares); "
                              "cached turns keep their original seconds."])
    result.written.append(Artifact(name, "Fig. 7 / 8 (numbers)", table.write(out, name),
                                   "throughput per dialogue, mean ± std"))


def _ability_table(result: ReportResult, data: ReportData, cfg: Any, family: str, tag: str, out: Path) -> None:
    name = f"abilities_{tag}"
    frame = figs.ability_frame(data.scores, cfg)
    frame = frame[frame["family"] == family]
    if frame.empty:
        result.skip(name, f"no ok ability scores (metric {cfg.ability_prefix}*)")
        return
    scores = data.scores
    rows = scores[(scores["family"] == family)
                  & score_metric(scores).str.startswith(str(cfg.ability_prefix))]
    table = make_table(frame, value="score", row="label", column="ability",
                       metric=f"Score (0–{float(cfg.ability_scale):g})",
                       title=f"MT-Bench-101 ability scores ({family})", higher_is_better=True,
                       decimals_mean=cfg.tables.decimals_mean, decimals_std=cfg.tables.decimals_std,
                       row_order=figs.order_labels(cfg, frame), excluded=excluded_counts(rows),
                       notes=_judge_note(rows, f"× {float(cfg.ability_scale):g}"))
    result.written.append(Artifact(name, "Fig. 10 (numbers)", table.write(out, name),
                                   "ability score per method, mean ± std over dialogues"))


def _figures(result: ReportResult, data: ReportData, cfg: Any, family: str, tag: str, sim: pd.DataFrame,
             ww_sim: pd.DataFrame, windows: dict[str, float], out: Path) -> None:
    turns = data.turns[data.turns["family"] == family] if not data.turns.empty else data.turns
    dialogues = data.dialogues
    prices = data.prices(family)
    jobs: list[tuple[str, str, str, Any]] = [
        (f"fig1_relative_tokens_per_turn_{tag}", "Fig. 1", "tokens per turn relative to turn 1, per dataset",
         lambda: figs.relative_tokens_per_turn_figure(turns, cfg)),
        (f"fig2_tokens_per_dialogue_{tag}", "Fig. 2", "tokens per dialogue per method, stacked by model",
         lambda: figs.tokens_per_dialogue_figure(dialogues, cfg, family, by_dataset=False)),
        (f"fig2_cost_per_dialogue_{tag}", "Fig. 2 (cost)", "cost per method from model.prices, stacked by model",
         lambda: figs.tokens_per_dialogue_figure(dialogues, cfg, family, by_dataset=False, prices=prices)),
        (f"fig5-6_tokens_by_dataset_{tag}", "Fig. 5 (LLaMA) / Fig. 6 (Qwen)",
         "tokens per dialogue per method, one panel per dataset",
         lambda: figs.tokens_per_dialogue_figure(dialogues, cfg, family, by_dataset=True)),
        (f"fig7-8_throughput_{tag}", "Fig. 7 (LLaMA) / Fig. 8 (Qwen)", "throughput per method and dataset",
         lambda: figs.throughput_figure(turns, cfg, family)),
        (f"fig3-9_ablation_{tag}", "Fig. 3 (LLaMA) / Fig. 9 (Qwen)", "SOMA vs its ablations, similarity %",
         lambda: figs.ablation_figure(sim, cfg, family)),
        (f"fig10_abilities_{tag}", "Fig. 10", "MT-Bench-101 ability profile per method",
         lambda: figs.abilities_figure(data.scores, cfg, family)),
    ]
    for name, paper, description, make in jobs:
        _draw(result, out, cfg, name, paper, description, make)
    points = figs.warm_window_points(ww_sim, windows, cfg, family)
    _draw(result, out, cfg, f"fig11_warm_window_{tag}", "Fig. 11", "similarity vs warm window W per dataset",
          lambda: figs.warm_window_figure(points, cfg, family))

    def plateau() -> Any:
        fig, r = figs.plateau_figure(points, cfg, family)
        result.messages.append(f"Fig. 12 ({family}): Pearson r between best W and plateau similarity = {r:.2f}")
        return fig

    _draw(result, out, cfg, f"fig12_plateau_vs_best_w_{tag}", "Fig. 12",
          "plateau similarity vs best W with Pearson r", plateau)
    if not points.empty:
        _warm_window_table(result, ww_sim, windows, cfg, family, tag, out)


def _warm_window_table(result: ReportResult, sim: pd.DataFrame, windows: dict[str, float], cfg: Any,
                       family: str, tag: str, out: Path) -> None:
    frame = sim[(sim["family"] == family) & (sim["method"] == cfg.warm_window.method)].copy()
    frame["W"] = frame["run_key"].map(windows)
    frame = frame.dropna(subset=["W"])
    frame["W"] = frame["W"].map(lambda w: f"W={w:g}")
    frame["dataset"] = frame["dataset"].map(lambda d: figs.dataset_name(cfg, d))
    order = sorted(frame["W"].unique(), key=lambda s: float(s[2:]))
    plateaus = figs.plateau_points(figs.warm_window_points(sim, windows, cfg, family), cfg)
    notes = [f"{figs.dataset_name(cfg, r.dataset)}: plateau {r.plateau:.{cfg.tables.decimals_mean}f} at best W={r.best_W:g}"
             for r in plateaus.itertuples()]
    name = f"warm_window_{tag}"
    subset = "post-switch turns" if cfg.warm_window.subset == "post_switch" else "all turns"
    table = make_table(frame, value="similarity", row="dataset", column="W", metric="Similarity %",
                       title=f"Similarity vs warm window W ({cfg.warm_window.method}, {family}, {subset})",
                       higher_is_better=True, decimals_mean=cfg.tables.decimals_mean,
                       decimals_std=cfg.tables.decimals_std, column_order=order, average=False,
                       notes=notes)
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
    """One row per (run, dialogue): tokens (metrics.dialogue_frame), similarity, and how many
    similarity lines of the dialogue were excluded per status (``excluded_<status>``)."""
    if data.dialogues.empty:
        return pd.DataFrame()
    frame = data.dialogues.drop(columns=["adaptation"], errors="ignore")
    scores = similarity_scores(data, cfg)
    sim = similarity_dialogues(scores)
    if not sim.empty:
        frame = frame.merge(sim[["run_key", "dialogue_id", "similarity", "n_turns", "n_judges"]],
                            on=["run_key", "dialogue_id"], how="left", suffixes=("", "_judged"))
    else:
        frame["similarity"] = float("nan")
    if not scores.empty:
        bad = scores[scores["status"] != "ok"]
        if not bad.empty:
            counts = bad.groupby(["run_key", "dialogue_id", "status"]).size().unstack(fill_value=0)
            counts.columns = [f"{EXCLUDED_PREFIX}{c}" for c in counts.columns]
            frame = frame.merge(counts.reset_index(), on=["run_key", "dialogue_id"], how="left")
    excluded_cols = [c for c in frame.columns if c.startswith(EXCLUDED_PREFIX)]
    frame[excluded_cols] = frame[excluded_cols].fillna(0).astype(int)
    return frame


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
    frame.to_csv(out / DIALOGUE_DATA, index=False)


def _write_index(result: ReportResult, data: ReportData) -> None:
    out = result.out_dir
    lines = [f"# Report: {data.experiment()}", "", f"Source: `{data.source}` — "
             f"{sum(r.kind == 'run' for r in data.runs)} run(s), "
             f"{sum(r.kind == 'reference' for r in data.runs)} reference run(s) (see `runs.csv`).",
             "", "Regenerate: `python -m somabench.report <source> --out <this dir>`.", "",
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
