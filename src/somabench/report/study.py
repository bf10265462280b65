"""The study view (issue 22): every score next to G's share of the turns and the cost.

Why its own artifacts: a similarity table rewards not switching (a session G never served
scores 100 %), so on its own it cannot say whether SOMA saves anything. These tables put, per
method and dataset, the quality beside who served (G's share of turns, sessions switched) and
what it cost (tokens incl. training, USD at the family's prices), mark negative-control data,
and answer "does the adaptation matter?" with a paired comparison on the turns G served
(the adapted G vs the Surrogate's un-adapted G on the same turns). A per-session table gives
the switch diagnostics (Delta on the acceptance batch, on future turns, warm turns, gate).

Artifacts (hook ``add_study_artifacts`` of ``report.build.EXTRA_ARTIFACTS``):
``study_<family>_<panel>.md/.csv``, ``study_sessions_<family>.md/.csv``, the figure
``study_quality_cost_<family>_<panel>`` (similarity vs cost relative to the Original) and
``study_break_even_<family>`` (the G turns a session needs to repay its adaptation: the answer
to "on sessions like mine" for a reader whose sessions are longer than the study's).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from somabench.data.context import ContextRule
from somabench.metrics import (
    cost_stacks,
    frame_markdown,
    panels,
    score_per_dialogue,
    score_per_turn,
    token_stacks,
    turn_usd,
)
from somabench.report.tables import StatsKnobs
from somabench.stats import CI, mean_ci, paired_comparison

KEYS = ["run_key", "label", "method", "dataset", "dialogue_id"]
G = "G"
UNADAPTED = "surrogate"
"""The method whose G answers every turn un-adapted: the 'does adaptation matter' baseline."""
ORIGINAL = "original"


def served_by_g(served_by: pd.Series) -> pd.Series:
    """True for turns G answered (``G`` or ``G+<adapter>``)."""
    return served_by.astype(str).str.split("+").str[0] == G


def served_shares(turns: pd.DataFrame) -> pd.DataFrame:
    """Per dialogue: turns, turns served by G, G's share in percent."""
    if turns.empty:
        return pd.DataFrame(columns=[*KEYS, "turns", "g_turns", "g_share"])
    served = turns.assign(_g=served_by_g(turns["served_by"]))
    out = served.groupby(KEYS, dropna=False).agg(turns=("turn", "count"), g_turns=("_g", "sum"))
    out = out.reset_index()
    out["g_share"] = 100.0 * out["g_turns"] / out["turns"]
    return out


def _switch(adaptation: Any) -> dict[str, Any]:
    return (adaptation or {}).get("switch") or {} if isinstance(adaptation, dict) else {}


def session_frame(data: Any, cfg: Any, family: str, panel: str | None) -> pd.DataFrame:
    """One row per (method, dataset, dialogue): G share, switched, tokens, USD, similarity."""
    dialogues = data.dialogues
    if dialogues.empty:
        return pd.DataFrame()
    dialogues = dialogues[dialogues["family"] == family]
    shares = served_shares(data.turns[data.turns["family"] == family])
    stacks = token_stacks(dialogues)
    usd, unpriced = cost_stacks(dialogues, data.prices(family))
    frame = dialogues[KEYS].copy()
    frame["tokens"] = stacks["tokens_total_incl_training"].to_numpy()
    frame["tokens_training"] = stacks["training"].to_numpy()
    frame["usd"] = usd["usd_total"].to_numpy() * USD_PER if not unpriced else np.nan
    frame["has_switch"] = [bool(_switch(a)) for a in dialogues["adaptation"]]
    frame["switched"] = [_switch(a).get("switch_turn") is not None for a in dialogues["adaptation"]]
    frame = frame.merge(shares, on=KEYS, how="left")
    if panel is not None:
        sim = score_per_dialogue(data.scores[data.scores["family"] == family], panel=panel,
                                 metric=str(cfg.similarity_metric), by=KEYS, value="similarity")
        frame = frame.merge(sim[[*KEYS, "similarity"]], on=KEYS, how="left")
    else:
        frame["similarity"] = np.nan
    frame.loc[frame["method"] == ORIGINAL, "similarity"] = 100.0  # the reference itself
    return frame.sort_values(["dataset", "label", "dialogue_id"], kind="stable").reset_index(drop=True)


def g_turn_similarity(data: Any, cfg: Any, family: str, panel: str) -> pd.DataFrame:
    """Per (method, dialogue): similarity on the turns the method's G served after its switch,
    and the Surrogate's similarity on exactly those turns (adapted vs un-adapted G)."""
    scores = data.scores[data.scores["family"] == family]
    if scores.empty:
        return pd.DataFrame()
    by = ["label", "method", "dataset", "dialogue_id"]
    per_turn = score_per_turn(scores, panel=panel, metric=str(cfg.similarity_metric), by=by,
                              value="similarity")
    post = score_per_turn(scores, panel=panel, metric=str(cfg.similarity_metric), by=by,
                          subset="post_switch", value="similarity")
    base = per_turn[per_turn["method"] == UNADAPTED][["dataset", "dialogue_id", "turn", "similarity"]]
    post = post[post["method"] != UNADAPTED]
    if post.empty or base.empty:
        return pd.DataFrame()
    both = post.merge(base.rename(columns={"similarity": "similarity_unadapted"}),
                      on=["dataset", "dialogue_id", "turn"], how="inner")
    return (both.groupby(by).agg(similarity_g=("similarity", "mean"),
                                 similarity_unadapted=("similarity_unadapted", "mean"),
                                 g_turns_scored=("turn", "count")).reset_index())


def _fmt(ci: CI, decimals: int = 1) -> str:
    """``mean [lo, hi]``; below min_n ``mean (n=k: values)``; equal values: the mean alone."""
    if ci.mean is None:
        return "–"
    if ci.lo is None:
        if not ci.values:
            return f"{ci.mean:.{decimals}f}"
        shown = ", ".join(f"{v:.{decimals}f}" for v in ci.values)
        return f"{ci.mean:.{decimals}f} (n={ci.n}: {shown})"
    return f"{ci.mean:.{decimals}f} [{ci.lo:.{decimals}f}, {ci.hi:.{decimals}f}]"


USD_PER = 1000
"""USD are shown per this many dialogues (one dialogue costs fractions of a cent)."""


def control_of(method: str, controls: dict[str, str]) -> str | None:
    """The control method ``method`` is read against (``report.controls``: method pattern ->
    control), None where it has none or is the control itself."""
    for pattern, control in controls.items():
        if fnmatchcase(method, pattern) and method != control:
            return str(control)
    return None


CONTROL_COLUMN = "vs its control (Δ sim., paired)"


def _paired_text(pair: Any, unit: str, n_boot: int) -> str:
    """``Δ [lo, hi], p`` of a paired comparison, or its sign-flip p where no CI is printed. A
    bootstrap p of 0 means no resample reached 0: printed as below its resolution, 1 / n_boot."""
    if pair.lo is not None:
        p = f"p {pair.p:.3g}" if pair.p > 0 else f"p < {1 / n_boot:.1g}"
        text = f"{pair.diff:+.1f} [{pair.lo:+.1f}, {pair.hi:+.1f}], {p}"
    else:
        text = f"{pair.diff:+.1f} (no CI), sign-flip p {pair.p_sign_flip:.3g}"
    return f"{text} (n={pair.n} {unit})"


def _vs_control(sessions: pd.DataFrame, part: pd.DataFrame, dataset: str, label: str,
                controls: dict[str, str], knobs: StatsKnobs, n_perm: int) -> str:
    """The method's similarity minus its control's, paired by session (e.g. a KV press against
    ``kvpress_control``: the same stack with nothing removed, so the gap is the press's own)."""
    control = control_of(str(part["method"].iloc[0]), controls)
    if control is None:
        return "–"
    base = sessions[(sessions["dataset"] == dataset) & (sessions["method"] == control)]
    if base.empty:
        return f"({control} not run)"
    pair = paired_comparison(dict(zip(part["dialogue_id"], part["similarity"], strict=True)),
                             dict(zip(base["dialogue_id"], base["similarity"], strict=True)),
                             n_boot=knobs.n_boot, n_perm=n_perm, confidence=knobs.confidence,
                             seed=_seed(knobs, "study-control", dataset, label),
                             method=knobs.method, min_n=knobs.min_n)
    return _paired_text(pair, f"sessions, vs {control}", knobs.n_boot)


def summary_table(sessions: pd.DataFrame, g_turns: pd.DataFrame, knobs: StatsKnobs,
                  n_perm: int, roles: dict[str, str],
                  controls: dict[str, str] | None = None) -> pd.DataFrame:
    """Per (dataset, method): the quality / share / cost row of the study table; methods with a
    control (``report.controls``) get their paired difference to it."""
    rows = []
    controls = controls or {}
    with_control = any(control_of(str(m), controls) for m in sessions.get("method", []))
    for (dataset, label), part in sessions.groupby(["dataset", "label"], sort=True):
        def ci(col: str, part: pd.DataFrame = part, dataset: str = dataset, label: str = label) -> CI:
            return mean_ci(part[col].dropna().to_numpy(float), n_boot=knobs.n_boot,
                           seed=_seed(knobs, "study", dataset, label, col),
                           confidence=knobs.confidence, method=knobs.method, min_n=knobs.min_n)

        original = sessions[(sessions["dataset"] == dataset) & (sessions["method"] == ORIGINAL)]
        cost_ratio = (part["tokens"].mean() / original["tokens"].mean()
                      if not original.empty and original["tokens"].mean() else np.nan)
        row = {"dataset": dataset, "role": roles.get(dataset, "study"), "method": label,
               "n": len(part),
               "switched": (f"{int(part['switched'].sum())}/{len(part)}" if part["has_switch"].any()
                            else "–"),
               "G share %": _fmt(ci("g_share")), "similarity %": _fmt(ci("similarity")),
               "tokens/dialogue (incl. training)": _fmt(ci("tokens"), 0),
               "tokens vs Original": f"{cost_ratio:.2f}x" if np.isfinite(cost_ratio) else "–",
               f"USD per {USD_PER} dialogues": (_fmt(ci("usd"), 3) if part["usd"].notna().any()
                                                else "unpriced")}
        mine = g_turns[(g_turns["dataset"] == dataset) & (g_turns["label"] == label)] \
            if not g_turns.empty else pd.DataFrame()
        if mine.empty:
            row["G turns: adapted vs Surrogate (Δ sim., paired)"] = "–"
        else:
            pair = paired_comparison(dict(zip(mine["dialogue_id"], mine["similarity_g"], strict=True)),
                                     dict(zip(mine["dialogue_id"], mine["similarity_unadapted"], strict=True)),
                                     n_boot=knobs.n_boot, n_perm=n_perm, confidence=knobs.confidence,
                                     seed=_seed(knobs, "study-g", dataset, label),
                                     method=knobs.method, min_n=knobs.min_n)
            row["G turns: adapted vs Surrogate (Δ sim., paired)"] = _paired_text(
                pair, f"sessions, {int(mine['g_turns_scored'].sum())} turns", knobs.n_boot)
        if with_control:
            row[CONTROL_COLUMN] = _vs_control(sessions, part, dataset, label, controls, knobs, n_perm)
        rows.append(row)
    return pd.DataFrame(rows)


def break_even_sessions(data: Any, family: str) -> pd.DataFrame:
    """Per session of a switching method: what its adaptation cost beyond the Original
    (``overhead_usd``: adaptation + training + the extra cost of its turns not served by G, e.g.
    the gate's candidates) and what each turn G served saved against the Original's answer to
    the same turn (``saving_usd``: mean over the session's G turns; NaN without one)."""
    dialogues = data.dialogues[data.dialogues["family"] == family] if not data.dialogues.empty else data.dialogues
    turns = data.turns[data.turns["family"] == family] if not data.turns.empty else data.turns
    prices = data.prices(family)
    if dialogues.empty or turns.empty or not prices:
        return pd.DataFrame()
    adaptive = dialogues[[bool(_switch(a)) for a in dialogues["adaptation"]]]
    if adaptive.empty:
        return pd.DataFrame()
    turns = turns[turns["status"] == "ok"]
    usd, _ = turn_usd(turns, prices)
    turns = turns.assign(usd=usd.to_numpy())
    stacks, _ = cost_stacks(adaptive, prices)
    references = {suffix: turns[turns["method"] == reference].drop_duplicates(["dataset", "dialogue_id", "turn"])
                  [["dataset", "dialogue_id", "turn", "usd"]].rename(columns={"usd": "usd_ref"})
                  for reference, suffix in BREAK_EVEN_REFERENCES.items()}  # once, not per session
    rows = []
    for (_, r), one_off in zip(adaptive.iterrows(), stacks["adaptation"] + stacks["training"], strict=True):
        mine = turns[(turns["run_key"] == r["run_key"]) & (turns["dialogue_id"] == r["dialogue_id"])]
        row: dict[str, Any] = {"label": r["label"], "method": r["method"], "dataset": r["dataset"],
                               "dialogue_id": r["dialogue_id"]}
        for suffix, ref in references.items():
            both = mine.merge(ref, on=["dataset", "dialogue_id", "turn"], how="inner")
            if both.empty:
                continue
            by_g = served_by_g(both["served_by"])
            extra = float((both.loc[~by_g, "usd"] - both.loc[~by_g, "usd_ref"]).sum())
            saving = (both.loc[by_g, "usd_ref"] - both.loc[by_g, "usd"]).mean() if by_g.any() else np.nan
            row.update({"g_turns": int(by_g.sum()), f"overhead_usd{suffix}": float(one_off) + extra,
                        f"saving_usd{suffix}": float(saving)})
        if "g_turns" in row:
            rows.append(row)
    return pd.DataFrame(rows)


BREAK_EVEN_REFERENCES = {ORIGINAL: "", "original_prefix_cache": "_prefix_cache"}
"""What a session is repaid against: the Original, and (where it ran) the Original with F's
prefix cache, billed at the cached-input rate (issue 26): the serving a reviewer compares with."""


def break_even_table(sessions: pd.DataFrame, knobs: StatsKnobs) -> pd.DataFrame:
    """Per (dataset, method): the overhead per session, the saving per G turn, and the G turns
    a session needs to repay its overhead (overhead / saving; the range from the saving's CI)."""
    rows = []
    for (dataset, label), part in sessions.groupby(["dataset", "label"], sort=True):
        def ci(col: str, scale: float, part: pd.DataFrame = part, dataset: str = dataset,
               label: str = label) -> CI:
            return mean_ci(part[col].dropna().to_numpy(float) * scale, n_boot=knobs.n_boot,
                           seed=_seed(knobs, "break-even", dataset, label, col),
                           confidence=knobs.confidence, method=knobs.method, min_n=knobs.min_n)

        row: dict[str, Any] = {"dataset": dataset, "method": label, "n": len(part),
                               "sessions with G turns": int((part["g_turns"] > 0).sum()),
                               "G turns per session": f"{part['g_turns'].mean():.2f}"}
        for suffix in BREAK_EVEN_REFERENCES.values():
            if f"saving_usd{suffix}" not in part or part[f"overhead_usd{suffix}"].isna().all():
                continue
            overhead, saving = ci(f"overhead_usd{suffix}", USD_PER), ci(f"saving_usd{suffix}", USD_PER)
            against = "" if not suffix else " vs Original + prefix cache"
            row[f"overhead USD per {USD_PER} sessions{against}"] = _fmt(overhead, 3)
            row[f"saving USD per {USD_PER} G turns{against}"] = _fmt(saving, 3)
            row[f"G turns to break even{against}"] = _turns_needed(overhead, saving)
        rows.append(row)
    return pd.DataFrame(rows)


def _turns_needed(overhead: CI, saving: CI) -> str:
    """overhead / saving as a count of G turns, the range from the saving's interval."""
    cost = overhead.mean
    if saving.mean is None or cost is None:
        return "– (G served no turn)"
    if saving.mean <= 0:
        return "never (a G turn cost more than F's)"
    if saving.lo is not None and saving.hi is not None:
        high = f"{cost / saving.lo:.0f}" if saving.lo > 0 else "∞"
        return f"{cost / saving.mean:.0f} [{cost / saving.hi:.0f}, {high}]"
    return f"{cost / saving.mean:.0f}"


BREAK_EVEN_NOTE = (
    "Overhead: per session, the method's adaptation (e.g. F's answers to the mined prompts) and "
    "training cost, plus what its turns not served by G cost beyond the Original's answers to the "
    "same turns (e.g. the gate's candidates). Saving: per turn G served, the Original's cost of that turn minus the "
    "method's (paired on the same dialogue and turn; mean per session). G turns to break even: "
    "overhead / saving, the range from the saving's interval (the overhead's is not propagated). "
    "Measured at the study's turn positions: in a longer session the Original's history, and so "
    "the saving per G turn, grows, so the count is an upper bound there. At model.prices "
    "(illustrative): another F:G price ratio or training price moves it. 'vs Original + prefix "
    "cache': the same against the Original with F's prefix cache (method original_prefix_cache), "
    "its cached prompt tokens at the cached-input rate.")


def _seed(knobs: StatsKnobs, *identity: Any) -> int:
    from somabench.stats import cell_seed

    return cell_seed(knobs.seed, *identity)


def diagnostics_table(data: Any, family: str) -> pd.DataFrame:
    """Per adapted session: where it switched and what Delta said on each kind of context."""
    dialogues = data.dialogues
    if dialogues.empty:
        return pd.DataFrame()
    rows = []
    for r in dialogues[dialogues["family"] == family].itertuples():
        adaptation = r.adaptation if isinstance(r.adaptation, dict) else {}
        switch = _switch(adaptation)
        acc = switch.get("acceptance") or {}
        if not acc.get("applicable"):
            continue
        warm = [d for d in acc.get("warm_deltas") or [] if d is not None]
        held = set(adaptation.get("lora_heldout_turns") or [])
        rows.append({
            "method": r.label, "dataset": r.dataset, "dialogue_id": r.dialogue_id,
            "switch_turn": switch.get("switch_turn"), "threshold": switch.get("threshold"),
            "gate_scores": " ".join(f"{s:.2f}" for s in switch.get("gate_scores") or []),
            "B_contexts": acc.get("contexts"), "B_size": acc.get("batch"), "B_capped": acc.get("batch_capped"),
            "Delta_B": acc.get("Delta"), "passed": acc.get("passed"), "required": acc.get("required"),
            "gate_closed": acc.get("gate_closed"), "Delta_future_turns": acc.get("Delta_future_turns"),
            "Delta_warm_trained": _mean([d for i, d in enumerate(warm) if i not in held]),
            "Delta_warm_heldout": _mean([d for i, d in enumerate(warm) if i in held]),
            "adapter_cache_hit": (adaptation.get("adapter_cache") or {}).get("hit"),
        })
    return pd.DataFrame(rows)


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def quality_cost_figure(sessions: pd.DataFrame, roles: dict[str, str], cfg: Any, panel: str,
                        knobs: StatsKnobs) -> Any:
    """Similarity (y) against cost relative to the Original (x), one point per method and
    dataset with its intervals (the tables' estimator; none below min_n: the point alone) and its
    G share and n beside it. Top row: tokens incl. training; bottom row (where priced): USD,
    which is where a prefix cache's cached-input rate shows (the tokens it sends are the same)."""
    import matplotlib.pyplot as plt

    from somabench.report import figures as figs

    datasets = sorted(sessions["dataset"].unique())
    labels = figs.order_labels(cfg, sessions)
    colors = figs.label_colors(cfg, labels, sessions)  # a method's colour in every figure
    width = cfg.figures.panel_width * 1.6
    x_axes = [("tokens", "x", "tokens per dialogue incl. training / the Original's")]
    if "usd" in sessions and sessions["usd"].notna().any():
        x_axes.append(("usd", "x-usd", "USD per dialogue / the Original's (model.prices)"))
    fig, axes = plt.subplots(len(x_axes), len(datasets), squeeze=False, layout="constrained",
                             figsize=(width * len(datasets), cfg.figures.panel_height * 1.3 * len(x_axes)))
    to_place: list[tuple[Any, tuple[list[Any], list[Any]]]] = []
    for row_axes, (column, stream_x, xlabel) in zip(axes, x_axes, strict=True):
        for ax, dataset in zip(row_axes, datasets, strict=True):
            to_place.append((ax, _quality_cost_panel(ax, sessions[sessions["dataset"] == dataset], dataset,
                                                   column, stream_x, colors, knobs)))
            title = figs.dataset_name(cfg, dataset)
            if roles.get(dataset) == "negative_control":
                title += " (negative control)"
            ax.set_title(title, pad=10)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"similarity to the Original % ({panel})")
    fig.suptitle(f"Quality vs cost ({knobs.confidence:.0%} CI whiskers where n >= {knobs.min_n})",
                 fontsize=9)
    # labels last, in the final pixel geometry: the constrained layout resizes the axes when
    # drawn, which would move markers closer than the labels were placed for
    fig.canvas.draw()
    fig.set_layout_engine("none")
    for ax, (points, point_colors) in to_place:
        figs.place_labels(ax, points, colors=point_colors)
    return fig


def _quality_cost_panel(ax: Any, part: pd.DataFrame, dataset: str, column: str, stream_x: str,
                        colors: dict[str, Any], knobs: StatsKnobs) -> tuple[list[Any], list[Any]]:
    """One dataset's points: x = ``column`` per dialogue over the Original's mean, y = similarity;
    returns the labels to place (and their colours) once the figure's layout is final."""

    labels_here: list[tuple[float, float, str]] = []
    label_colors: list[Any] = []
    base = part.loc[part["method"] == ORIGINAL, column].mean()
    for label, rows in part.groupby("label"):
        ratio = rows[column].to_numpy(float) / base if base else np.full(len(rows), np.nan)
        sim = rows["similarity"].dropna().to_numpy(float)
        # y: the study table's similarity interval itself (same values, same stream), so
        # the figure's whisker is the table's cell; x has no table counterpart
        streams = (("fig", stream_x), ("study", "similarity"))
        cis = [mean_ci(v, n_boot=knobs.n_boot, seed=_seed(knobs, stream, dataset, label, k),
                       confidence=knobs.confidence, method=knobs.method, min_n=knobs.min_n)
               for (stream, k), v in zip(streams, (ratio, sim), strict=True)]
        x, y = cis[0].mean, cis[1].mean
        if x is None or y is None:
            continue
        err = [[[c.mean - c.lo], [c.hi - c.mean]]
               if c.mean is not None and c.lo is not None and c.hi is not None else None
               for c in cis]
        ax.errorbar([x], [y], xerr=err[0], yerr=err[1], fmt="o", capsize=3, ms=6,
                    color=colors[label])
        share = rows["g_share"].mean()
        labels_here.append((x, y, f"{label}\nG {share:.0f} %, n={len(rows)}"))
        label_colors.append(colors[label])
    ax.axvline(1.0, color="grey", lw=0.6, ls=":")
    ax.set_xlim(left=0)
    return labels_here, label_colors


def _roles(data: Any, family: str) -> dict[str, str]:
    """dataset -> study | negative_control, from each run's dataset config and its dialogues'
    tasks (every task a negative control -> the dataset row is one)."""
    out: dict[str, str] = {}
    for run in data.runs:
        if run.family != family:
            continue
        dcfg = (run.config or {}).get("dataset") or {}
        try:
            rule = ContextRule.from_cfg(dcfg)
        except Exception:  # noqa: BLE001 - an old run without the keys is simply a study row
            continue
        tasks = (dcfg.get("tasks") or [])
        if tasks and all(t in rule.negative_control_tasks for t in tasks):
            out[run.dataset] = "negative_control"
        else:
            out.setdefault(run.dataset, "study")
    return out


NOTE = ("G share: turns served by G / turns, per session (mean over sessions). Switched: "
        "sessions in which the gate switched to G (– : the method never switches). Tokens: serving + adaptation + training "
        "(forward and backward passes), the Original's ratio beside. Similarity: the judge "
        "panel's score of each answer against the Original's (the Original is the reference, "
        "100 by definition). G turns column: on the turns the method's G served after its switch, "
        "its similarity minus the Surrogate's (un-adapted G) on the same turns, paired by "
        "session. Negative control: sessions of independent turns (SOMA's premise does not hold). "
        "Vs its control (where a method has one, report.controls): its similarity minus its "
        "control's, paired by session; a KV press is read against kvpress_control (the same "
        "stack and one-prompt-at-a-time serving with nothing removed), not against 100.")


def add_study_artifacts(result: Any, data: Any, cfg: Any, family: str, tag: str, out: Path) -> None:
    """Report hook: the study table, the per-session diagnostics and the quality-cost figure."""
    from somabench.report import figures as figs
    from somabench.report.build import Artifact, _tag

    name = f"study_{tag}"
    if data.dialogues.empty or not (data.dialogues["family"] == family).any():
        result.skip(name, "no dialogues of this family")
        return
    scores = data.scores
    sim_panels = panels(scores[scores["family"] == family], str(cfg.similarity_metric)) \
        if not scores.empty else []
    knobs = StatsKnobs.from_cfg(cfg.stats)
    roles = _roles(data, family)
    out.mkdir(parents=True, exist_ok=True)
    post_switch = pd.DataFrame()
    each_panel: list[str | None] = [*sim_panels] or [None]  # None: no similarity panel
    for panel in each_panel:
        suffix = f"{tag}_{_tag(panel)}" if panel else tag
        sessions = session_frame(data, cfg, family, panel)
        g_turns = g_turn_similarity(data, cfg, family, panel) if panel else pd.DataFrame()
        if post_switch.empty and not g_turns.empty:  # the diagnostics' post-switch gap
            post_switch = g_turns.assign(post_switch_gap=1.0 - g_turns["similarity_g"] / 100.0,
                                         panel=panel)
        table = summary_table(sessions, g_turns, knobs, int(cfg.stats.n_perm), roles,
                              dict(cfg.get("controls") or {}))
        md, csv, sess_csv = out / f"study_{suffix}.md", out / f"study_{suffix}.csv", \
            out / f"study_sessions_{suffix}.csv"
        md.write_text(f"## Quality beside G's share and cost ({family}, panel {panel or 'none'})\n\n"
                      + frame_markdown(table) + f"\n\n<sub>{NOTE} {knobs.describe()}.</sub>\n",
                      encoding="utf-8")
        table.to_csv(csv, index=False)
        sessions.to_csv(sess_csv, index=False)
        result.written.append(Artifact(f"study_{suffix}", "extra (issue 22)", [md, csv, sess_csv],
                                       "similarity beside G's share, sessions switched and cost"))
        if panel:
            fig = quality_cost_figure(sessions, roles, cfg, panel, knobs)
            fname = f"study_quality_cost_{suffix}"
            result.written.append(Artifact(fname, "extra (issue 22)", figs.save(fig, out, fname, cfg),
                                           "similarity vs tokens relative to the Original"))
    _write_break_even(result, data, family, tag, knobs, out)
    diag = diagnostics_table(data, family)
    if not diag.empty and not post_switch.empty:
        keep = post_switch.drop(columns=["method"]).rename(columns={"label": "method"})[
            ["method", "dataset", "dialogue_id", "post_switch_gap", "g_turns_scored"]]
        diag = diag.merge(keep, on=["method", "dataset", "dialogue_id"], how="left")
    if diag.empty:
        result.skip(f"study_sessions_{tag}", "no adapted session with an acceptance test")
        return
    for col in ("switch_turn", "B_size", "g_turns_scored"):  # counts stay integers (NaN: none)
        if col in diag:
            diag[col] = pd.to_numeric(diag[col], errors="coerce").astype("Int64")
    dmd, dcsv = out / f"study_diagnostics_{tag}.md", out / f"study_diagnostics_{tag}.csv"
    dmd.write_text(f"## Switch diagnostics per session ({family})\n\nDelta = mean Gap(un-adapted G) "
                   "- mean Gap(adapted G) (positive: adaptation brought G closer to F) on the "
                   "acceptance batch B (its contexts: future gate turns or held-out mined ones), "
                   "on the gate turns (future), and on the warm turns the adapter trained on / "
                   "held out. post_switch_gap: 1 - the panel's similarity on the turns G served after the switch.\n\n" + frame_markdown(diag, floatfmt=".3f") + "\n", encoding="utf-8")
    diag.to_csv(dcsv, index=False)
    result.written.append(Artifact(f"study_diagnostics_{tag}", "extra (issue 22)", [dmd, dcsv],
                                   "per-session switch and Delta diagnostics"))


def _write_break_even(result: Any, data: Any, family: str, tag: str, knobs: StatsKnobs, out: Path) -> None:
    """``study_break_even_<tag>``: the G turns a session needs to repay its adaptation."""
    from somabench.report.build import Artifact

    name = f"study_break_even_{tag}"
    sessions = break_even_sessions(data, family)
    if sessions.empty:
        result.skip(name, "no switching method with priced turns paired with the Original's")
        return
    md, csv = out / f"{name}.md", out / f"{name}.csv"
    md.write_text(f"## When does the adaptation pay for itself? ({family})\n\n"
                  + frame_markdown(break_even_table(sessions, knobs))
                  + f"\n\n<sub>{BREAK_EVEN_NOTE} {knobs.describe()}.</sub>\n", encoding="utf-8")
    sessions.to_csv(csv, index=False)
    result.written.append(Artifact(name, "extra (issue 22)", [md, csv],
                                   "overhead per session, saving per G turn, G turns to break even"))


__all__ = ["add_study_artifacts", "break_even_sessions", "control_of", "break_even_table", "diagnostics_table", "served_shares", "session_frame",
           "summary_table"]
