"""The paper's figures (matplotlib) from report frames; every builder returns a Figure or
raises :class:`Skip` with the reason the inputs do not allow it. The backend is left to the
caller (the CLI and the W&B logger select Agg; a notebook keeps its inline backend).

Why: the report command must draw every figure whose inputs exist and say why it skipped the
others, so each builder checks its own inputs first. Numbers come from somabench.metrics.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from somabench.metrics import (
    STACKS,
    cost_stacks,
    dialogue_throughput,
    mean_std,
    relative_tokens_per_turn,
    score_metric,
    token_stacks,
)

log = logging.getLogger(__name__)

# Layout constants (fractions of the axis or of a panel; not experiment knobs).
BAR_WIDTH = 0.7            # width of a stacked bar (x step is 1)
GROUP_WIDTH = 0.8          # width of a group of bars per dataset
TOTAL_LABEL_OFFSET = 0.01  # gap between a bar and its total, fraction of the tallest bar
TOP_HEADROOM = 0.12        # room above the tallest bar for its total label
WIDTH_PER_BAR = 0.35       # inches of figure width per bar in single-panel bar charts
WIDTH_PER_GROUPED_BAR = 0.18  # inches per bar in grouped bar charts
TALL_SHARE = 0.3           # extra height for wide grouped bar charts
LEGEND_PANEL_SHARE = 0.4   # extra width (fraction of a panel) for an in-axes legend
YPAD = 0.1                 # ablation y-axis: pad below the lowest bar, fraction of the range
RADAR_LABEL_PAD = 6        # points between the radar and its spoke labels
RADAR_WIDTH = 1.2          # extra width (panels) for the radar's legend on the right
RADAR_HEIGHT = 1.6         # radar height relative to a panel
RADAR_RINGS = 5            # grid rings (0-10 -> 2, 4, 6, 8)
MAX_FILLED = 3             # fill radar polygons only when this few methods are drawn
FILL_ALPHA = 0.08
TITLE_PAD = 14             # points between a polar plot and its title
PERCENT = 100.0            # similarity is in percent
SCATTER_MARGIN = 0.15      # room around scatter points for their labels
MARKER = 3                 # marker size of line plots (points)
TICK_ROTATION = 30         # degrees, for long category labels
TICK_ROTATION_MANY = 45    # degrees, when more than MAX_UNROTATED labels share an axis
MAX_UNROTATED = 6          # grouped bars: rotate dataset labels beyond this many groups


class Skip(Exception):
    """A figure whose inputs are missing; the message says which and how to get them."""


# -- shared helpers ------------------------------------------------------------------------------
def _style(cfg: Any) -> None:
    plt.rcParams.update({"font.size": cfg.figures.font_size, "axes.titlesize": cfg.figures.font_size + 1,
                         "legend.fontsize": cfg.figures.font_size - 1, "axes.spines.top": False,
                         "axes.spines.right": False})


def _figure(cfg: Any, n_panels: int = 1, polar: bool = False, extra_width: float = 0.0,
            height_scale: float = 1.0) -> tuple[Any, list[Any]]:
    _style(cfg)
    ncols = min(n_panels, int(cfg.figures.max_columns))
    nrows = int(np.ceil(n_panels / ncols))
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, layout="constrained",
                             figsize=(cfg.figures.panel_width * ncols + extra_width,
                                      cfg.figures.panel_height * nrows * height_scale),
                             subplot_kw={"projection": "polar"} if polar else None)
    flat = list(axes.flat)
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    return fig, flat[:n_panels]


def dataset_name(cfg: Any, name: str) -> str:
    return dict(cfg.datasets).get(name, name)


def order_datasets(cfg: Any, names: list[str]) -> list[str]:
    order = list(cfg.datasets)
    return [n for n in order if n in names] + sorted(n for n in names if n not in order)


def order_labels(cfg: Any, frame: pd.DataFrame) -> list[str]:
    """Row/legend order: the paper's method order, then variant labels alphabetically."""
    order = list(cfg.methods)
    pairs = frame[["method", "label"]].drop_duplicates()
    rank = {m: i for i, m in enumerate(order)}
    pairs = pairs.assign(rank=pairs["method"].map(lambda m: rank.get(m, len(order))))
    return pairs.sort_values(["rank", "method", "label"])["label"].tolist()


def label_colors(cfg: Any, labels: list[str], frame: pd.DataFrame | None = None) -> dict[str, Any]:
    """A method keeps its colour in every figure (position in the method order); when one
    figure shows several variants of a method, its labels are coloured one by one instead."""
    cmap = plt.get_cmap(cfg.figures.cmap)
    if frame is not None:
        methods = frame.drop_duplicates("label").set_index("label")["method"].reindex(labels)
        if methods.notna().all() and methods.is_unique:
            order = list(cfg.methods)
            unknown = sorted(m for m in methods if m not in order)
            index = {m: i for i, m in enumerate([*order, *unknown])}
            return {label: cmap(index[m] % cmap.N) for label, m in methods.items()}
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def n_text(ns: pd.Series) -> str:
    lo, hi = int(ns.min()), int(ns.max())
    return f"n={lo}" if lo == hi else f"n={lo}–{hi}"


def save(fig: Any, out_dir: Path, stem: str, cfg: Any) -> list[Path]:
    """Write the figure in every configured format and close it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in cfg.figures.formats:
        path = out_dir / f"{stem}.{fmt}"
        fig.savefig(path, dpi=cfg.figures.dpi, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def _rotate(ax: Any) -> None:
    ticks = ax.get_xticklabels()
    angle = TICK_ROTATION if len(ticks) <= MAX_UNROTATED else TICK_ROTATION_MANY
    for tick in ticks:
        tick.set_rotation(angle)
        tick.set_ha("right")
        tick.set_rotation_mode("anchor")


def _legend_below(fig: Any, handles: list[Any], labels: list[str], cfg: Any) -> None:
    ncol = max(1, min(len(labels), int(cfg.figures.max_columns) * 2))
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False)


# -- Fig. 1 ----------------------------------------------------------------------------------
def relative_tokens_per_turn_figure(turns: pd.DataFrame, cfg: Any) -> Any:
    """Fig. 1: mean tokens per turn relative to turn 1, one line per dataset (the long tail)."""
    if turns.empty or "method" not in turns:
        raise Skip("no turn records")
    original = turns[turns["method"] == "original"]
    if original.empty:
        raise Skip("no Original (or reference) records: run method=original or any method with a judge")
    rel = relative_tokens_per_turn(original)
    rel = rel[rel["relative"].notna()]
    datasets = [d for d in order_datasets(cfg, rel["dataset"].unique().tolist())
                if (rel["dataset"] == d).sum() >= 2]
    if not datasets:
        raise Skip("Original records have a single turn per dataset; need dialogues with >= 2 turns")
    fig, (ax,) = _figure(cfg, extra_width=cfg.figures.panel_width * LEGEND_PANEL_SHARE)
    for name in datasets:
        part = rel[rel["dataset"] == name].sort_values("turn")
        ax.plot(part["turn"] + 1, part["relative"], marker="o", markersize=MARKER,
                label=f"{dataset_name(cfg, name)} (n={int(part['n'].iloc[0])})")
    ax.axhline(1.0, color="grey", linewidth=0.6, linestyle=":")
    ax.set_xlabel("turn")
    ax.set_ylabel("tokens per turn / tokens at turn 1")
    ax.set_title("Relative tokens per turn (Original)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(bottom=0)
    ax.legend(title="dataset (dialogues)", loc="best")
    return fig


# -- Fig. 2 / 5 / 6 --------------------------------------------------------------------------
def compact(value: float) -> str:
    """Short bar labels so neighbouring totals never collide: 880, 6.9k, 15k, 1.2M."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            short = value / scale
            return f"{short:.0f}{suffix}" if abs(short) >= 10 else f"{short:.1f}{suffix}"
    return f"{value:.0f}"


def _stacked(ax: Any, frame: pd.DataFrame, labels: list[str], stacks: list[str], cfg: Any,
             unit_fmt: str | None) -> list[Any]:
    colors = dict(cfg.figures.stack_colors)
    means = frame.groupby("label")[stacks].mean().reindex(labels)
    x = np.arange(len(labels))
    bottom = np.zeros(len(labels))
    handles = []
    for stack in stacks:
        values = means[stack].fillna(0.0).to_numpy()
        handles.append(ax.bar(x, values, bottom=bottom, color=colors.get(stack), label=stack, width=BAR_WIDTH))
        bottom += values
    top = bottom.max() if len(bottom) else 0
    for xi, total in zip(x, bottom, strict=True):
        ax.text(xi, total + top * TOTAL_LABEL_OFFSET, compact(total) if unit_fmt is None else format(total, unit_fmt),
                ha="center", va="bottom",
                fontsize=cfg.figures.font_size - 2)
    ax.set_xticks(x, labels)
    ax.set_ylim(0, top * (1 + TOP_HEADROOM) if top > 0 else 1)
    _rotate(ax)
    return handles


def tokens_per_dialogue_figure(dialogues: pd.DataFrame, cfg: Any, family: str, by_dataset: bool,
                               prices: dict[str, Any] | None = None) -> Any:
    """Fig. 2 (mean over datasets) or Fig. 5/6 (one panel per dataset): tokens per dialogue per
    method, stacked F / G / compressor+router / adaptation. With ``prices``: USD per dialogue."""
    frame = dialogues[dialogues["family"] == family] if not dialogues.empty else dialogues
    if frame.empty:
        raise Skip(f"no dialogue records for family {family}")
    subtitle = ""
    if prices is not None:
        if not prices:
            raise Skip(f"no model.prices in the run config of family {family}")
        frame, unpriced = cost_stacks(frame, prices)
        per = int(cfg.cost_per_dialogues)
        frame[list(STACKS)] = frame[list(STACKS)] * per
        ylabel, unit_fmt = f"USD per {per:,} dialogues", f".{cfg.tables.decimals_cost}f"
        subtitle = f"prices: {prices.get('label', 'from config')}"
        if unpriced:
            subtitle += f"; not priced: {', '.join(unpriced)}"
    else:
        frame = token_stacks(frame)
        ylabel, unit_fmt = "tokens per dialogue", None
    stacks = [s for s in STACKS if (frame[s] != 0).any()] or list(STACKS[:1])
    labels = order_labels(cfg, frame)
    datasets = order_datasets(cfg, frame["dataset"].unique().tolist())
    what = "Cost" if prices is not None else "Tokens per dialogue"
    if by_dataset:
        fig, axes = _figure(cfg, len(datasets))
        for ax, name in zip(axes, datasets, strict=True):
            part = frame[frame["dataset"] == name]
            handles = _stacked(ax, part, [lb for lb in labels if lb in set(part["label"])], stacks, cfg, unit_fmt)
            ax.set_title(f"{dataset_name(cfg, name)} ({n_text(part.groupby('label').size())})")
            ax.set_ylabel(ylabel)
        fig.suptitle(f"{what} by dataset ({family})" + (f"\n{subtitle}" if subtitle else ""))
    else:
        per_dataset = frame.groupby(["label", "dataset"])[stacks].mean().reset_index()
        coverage = per_dataset.groupby("label")["dataset"].nunique()
        partial = {lb for lb in labels if coverage.get(lb, 0) < len(datasets)}
        shown = {lb: f"{lb}*" if lb in partial else lb for lb in labels}
        per_dataset["label"] = per_dataset["label"].map(shown)
        fig, (ax,) = _figure(cfg, extra_width=max(0.0, WIDTH_PER_BAR * len(labels) - cfg.figures.panel_width / 2))
        handles = _stacked(ax, per_dataset, [shown[lb] for lb in labels], stacks, cfg, unit_fmt)
        ax.set_ylabel(ylabel)
        title = f"{what} ({family}; mean over {len(datasets)} dataset{'s' if len(datasets) != 1 else ''})"
        if partial:
            subtitle = "; ".join(filter(None, [subtitle, "* fewer datasets than the others"]))
        ax.set_title(title + (f"\n{subtitle}" if subtitle else ""))
    _legend_below(fig, handles, stacks, cfg)
    return fig


# -- Fig. 7 / 8 ------------------------------------------------------------------------------
DIALOGUE = ["run_key", "label", "method", "family", "dataset", "dialogue_id"]


def _grouped_figure(cfg: Any, n_bars: int) -> tuple[Any, list[Any]]:
    """One panel wide enough for ``n_bars`` bars, but never wider than a row of panels (then
    taller instead, so the figure stays readable on a page)."""
    width = min(max(cfg.figures.panel_width, WIDTH_PER_GROUPED_BAR * n_bars),
                cfg.figures.panel_width * int(cfg.figures.max_columns))
    return _figure(cfg, extra_width=width - cfg.figures.panel_width,
                   height_scale=1.0 + TALL_SHARE * (width > cfg.figures.panel_width * 2))


def _grouped_bars(ax: Any, frame: pd.DataFrame, value: str, err: str | None, labels: list[str],
                  datasets: list[str], colors: dict[str, Any], cfg: Any) -> list[Any]:
    width = GROUP_WIDTH / max(len(labels), 1)
    x = np.arange(len(datasets))
    handles = []
    for i, label in enumerate(labels):
        part = frame[frame["label"] == label].set_index("dataset").reindex(datasets)
        yerr = part[err].to_numpy(dtype=float) if err else None
        handles.append(ax.bar(x - GROUP_WIDTH / 2 + width * (i + 0.5), part[value].to_numpy(dtype=float), width,
                              yerr=yerr, capsize=2, color=colors[label], label=label,
                              error_kw={"elinewidth": 0.8}))
    ax.set_xticks(x, [dataset_name(cfg, d) for d in datasets])
    if len(datasets) > MAX_UNROTATED:
        _rotate(ax)
    return handles


def throughput_figure(turns: pd.DataFrame, cfg: Any, family: str) -> Any:
    """Fig. 7 / 8: completion tokens per generation second per method and dataset
    (mean ± std over dialogues of each dialogue's throughput)."""
    if turns.empty:
        raise Skip("no turn records")
    per_dialogue = dialogue_throughput(turns[turns["family"] == family], DIALOGUE).dropna(subset=["tps"])
    if per_dialogue.empty:
        raise Skip(f"no turn with generation seconds > 0 for family {family}")
    frame = cell_stats(per_dialogue, ["label", "method", "dataset"], "tps")
    labels = order_labels(cfg, frame)
    datasets = order_datasets(cfg, frame["dataset"].unique().tolist())
    fig, (ax,) = _grouped_figure(cfg, len(labels) * len(datasets))
    handles = _grouped_bars(ax, frame, "mean", "std", labels, datasets, label_colors(cfg, labels, frame), cfg)
    ax.set_ylabel("throughput (completion tokens / s)")
    ax.set_title(f"Throughput ({family}; mean ± std over dialogues)")
    _legend_below(fig, handles, labels, cfg)
    return fig


# -- Fig. 3 / 9 ------------------------------------------------------------------------------
def cell_stats(frame: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    rows = []
    for key, group in frame.groupby(keys):
        mean, std, n = mean_std(group[value])
        rows.append({**dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)),
                     "mean": mean, "std": std, "n": n})
    return pd.DataFrame(rows, columns=[*keys, "mean", "std", "n"])


def ablation_figure(similarity: pd.DataFrame, cfg: Any, family: str) -> Any:
    """Fig. 3 / 9: similarity of SOMA and its ablations per dataset (mean ± std over dialogues)."""
    wanted = list(cfg.ablation.methods)
    frame = similarity[(similarity["family"] == family) & similarity["method"].isin(wanted)] \
        if not similarity.empty else similarity
    present = sorted(set(frame["method"])) if not frame.empty else []
    if len(present) < 2:
        missing = [m for m in wanted if m not in present]
        raise Skip(f"needs similarity scores for at least two of {wanted} (family {family}); "
                   f"missing: {', '.join(missing)}")
    stats = cell_stats(frame, ["label", "method", "dataset"], "similarity")
    labels = order_labels(cfg, stats)
    datasets = order_datasets(cfg, stats["dataset"].unique().tolist())
    fig, (ax,) = _grouped_figure(cfg, len(labels) * len(datasets))
    handles = _grouped_bars(ax, stats, "mean", "std", labels, datasets, label_colors(cfg, labels, stats), cfg)
    low = float((stats["mean"] - stats["std"].fillna(0)).min())
    ax.set_ylim(max(0.0, low - YPAD * (PERCENT - low)), PERCENT)
    ax.set_ylabel("similarity to Original (%)")
    ax.set_title(f"Ablation ({family}; {n_text(stats['n'])} dialogues per bar)")
    _legend_below(fig, handles, labels, cfg)
    return fig


# -- Fig. 10 ---------------------------------------------------------------------------------
def ability_frame(scores: pd.DataFrame, cfg: Any) -> pd.DataFrame:
    """Per (family, label, ability): ability score (0–scale) per dialogue, ok rows only."""
    prefix = str(cfg.ability_prefix)
    if scores.empty:
        return pd.DataFrame(columns=["family", "label", "method", "ability", "dialogue_id", "score"])
    scores = scores.assign(_metric=score_metric(scores))
    rows = scores[scores["_metric"].str.startswith(prefix)]
    ok = rows[(rows["status"] == "ok") & rows["score_norm"].notna()].copy()
    if ok.empty:
        return pd.DataFrame(columns=["family", "label", "method", "ability", "dialogue_id", "score"])
    ok["ability"] = ok["_metric"].str.removeprefix(prefix)
    ok["score"] = ok["score_norm"].astype(float) * float(cfg.ability_scale)
    per_turn = ok.groupby(["family", "label", "method", "ability", "run_key", "dialogue_id", "turn"])["score"].mean()
    return per_turn.groupby(["family", "label", "method", "ability", "run_key", "dialogue_id"]).mean().reset_index()


def abilities_figure(scores: pd.DataFrame, cfg: Any, family: str) -> Any:
    """Fig. 10: MT-Bench-101 ability profile per method (radar; bars below 3 abilities)."""
    frame = ability_frame(scores, cfg)
    frame = frame[frame["family"] == family]
    if frame.empty:
        raise Skip(f"no ok ability scores (metric {cfg.ability_prefix}*) for family {family}: judge "
                   f"dataset=mtbench101 with the ability prompts (judges/prompts/ability_*_v1.json)")
    stats = cell_stats(frame, ["label", "method", "ability"], "score")
    labels = order_labels(cfg, stats)
    abilities = sorted(stats["ability"].unique())
    colors = label_colors(cfg, labels, stats)
    scale = float(cfg.ability_scale)
    if len(abilities) < 3:
        fig, (ax,) = _figure(cfg)
        handles = _grouped_bars(ax, stats.rename(columns={"ability": "dataset"}), "mean", "std", labels,
                                abilities, colors, cfg)
        ax.set_ylim(0, scale)
        ax.set_ylabel(f"score (0–{scale:g})")
    else:
        fig, (ax,) = _figure(cfg, polar=True, extra_width=cfg.figures.panel_width * RADAR_WIDTH,
                             height_scale=RADAR_HEIGHT)
        angles = np.linspace(0, 2 * np.pi, len(abilities), endpoint=False)
        ring = np.append(angles, angles[:1])
        handles = []
        for label in labels:
            part = stats[stats["label"] == label].set_index("ability").reindex(abilities)["mean"].to_numpy(dtype=float)
            (line,) = ax.plot(ring, np.append(part, part[:1]), marker="o", markersize=MARKER,
                              color=colors[label], label=label)
            if len(labels) <= MAX_FILLED:
                ax.fill(ring, np.append(part, part[:1]), color=colors[label], alpha=FILL_ALPHA)
            handles.append(line)
        ax.set_xticks(angles, abilities)
        ax.set_ylim(0, scale)
        ax.set_yticks(np.linspace(0, scale, RADAR_RINGS + 1)[1:-1])  # no label on the outer ring
        ax.set_rlabel_position(np.degrees(np.pi / len(abilities)))  # between the first two spokes
        ax.tick_params(axis="x", pad=RADAR_LABEL_PAD)
        ax.tick_params(axis="y", labelsize=cfg.figures.font_size - 2, labelcolor="dimgray")
        ax.set_title(f"Ability profile ({family}; score 0–{scale:g}; {n_text(stats['n'])} dialogues)",
                     pad=TITLE_PAD)
        fig.legend(handles, labels, loc="outside right center", frameon=False)
        return fig
    ax.set_title(f"Ability profile ({family}; score 0–{scale:g}; {n_text(stats['n'])} dialogues)",
                 pad=TITLE_PAD)
    _legend_below(fig, handles, labels, cfg)
    return fig


# -- Fig. 11 / 12 ----------------------------------------------------------------------------
def warm_window_points(similarity: pd.DataFrame, windows: dict[str, float], cfg: Any, family: str) -> pd.DataFrame:
    """Similarity (mean ± std over dialogues) per dataset and warm window W.

    ``windows`` maps run_key -> W (see :func:`somabench.report.build.warm_windows`).
    """
    if similarity.empty:
        return pd.DataFrame(columns=["dataset", "W", "mean", "std", "n"])
    frame = similarity[(similarity["family"] == family) & (similarity["method"] == cfg.warm_window.method)].copy()
    frame["W"] = frame["run_key"].map(windows)
    frame = frame.dropna(subset=["W"])
    return cell_stats(frame, ["dataset", "W"], "similarity")


def plateau_points(points: pd.DataFrame, cfg: Any) -> pd.DataFrame:
    """Per dataset: plateau score (best mean similarity) and best W (the smallest W whose
    similarity is within ``warm_window.plateau_tolerance`` points of the plateau)."""
    rows = []
    tol = float(cfg.warm_window.plateau_tolerance)
    for dataset, group in points.groupby("dataset"):
        if group["W"].nunique() < 2:
            continue
        plateau = float(group["mean"].max())
        best_w = float(group[group["mean"] >= plateau - tol]["W"].min())
        rows.append({"dataset": dataset, "plateau": plateau, "best_W": best_w})
    return pd.DataFrame(rows, columns=["dataset", "plateau", "best_W"])


def warm_window_figure(points: pd.DataFrame, cfg: Any, family: str) -> Any:
    """Fig. 11: final similarity vs warm-start window W, one line per dataset."""
    multi = [d for d, g in points.groupby("dataset") if g["W"].nunique() >= 2] if not points.empty else []
    if not multi:
        raise Skip(f"needs {cfg.warm_window.method} runs with >= 2 warm windows W on one dataset "
                   f"(family {family}); W is read from {list(cfg.warm_window.config_keys)}")
    plateaus = plateau_points(points, cfg).set_index("dataset")
    fig, (ax,) = _figure(cfg, extra_width=cfg.figures.panel_width * LEGEND_PANEL_SHARE)
    for name in order_datasets(cfg, multi):
        part = points[points["dataset"] == name].sort_values("W")
        (line,) = ax.plot(part["W"], part["mean"], marker="o", markersize=MARKER, label=dataset_name(cfg, name))
        best = plateaus.loc[name]
        ax.plot(best["best_W"], part.set_index("W").loc[best["best_W"], "mean"], marker="o", markersize=8,
                markerfacecolor="none", color=line.get_color())
    ax.set_xlabel("warm-start window W (turns)")
    ax.set_ylabel("post-switch similarity (%)" if cfg.warm_window.subset == "post_switch"
                  else "similarity to Original (%)")
    ax.set_title(f"Similarity vs warm window ({family}; ring = best W)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(title="dataset", loc="lower right")
    return fig


def plateau_figure(points: pd.DataFrame, cfg: Any, family: str) -> tuple[Any, float]:
    """Fig. 12: plateau similarity vs best W per dataset, with the Pearson r; returns (fig, r)."""
    from scipy.stats import pearsonr

    plateaus = plateau_points(points, cfg) if not points.empty else pd.DataFrame()
    need = int(cfg.warm_window.min_points_for_r)
    if len(plateaus) < need:
        raise Skip(f"needs a W sweep on >= {need} datasets for a correlation (family {family}); "
                   f"have {len(plateaus)}")
    x, y = plateaus["best_W"].to_numpy(dtype=float), plateaus["plateau"].to_numpy(dtype=float)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        raise Skip(f"best W or plateau is the same on every dataset (family {family}); r is undefined")
    r, p = pearsonr(x, y)
    fig, (ax,) = _figure(cfg)
    ax.scatter(x, y, color="#4c72b0", zorder=3)
    for _, row in plateaus.iterrows():
        ax.annotate(dataset_name(cfg, row["dataset"]), (row["best_W"], row["plateau"]), xytext=(4, 4),
                    textcoords="offset points", fontsize=cfg.figures.font_size - 1)
    slope, intercept = np.polyfit(x, y, 1)
    xs = np.linspace(x.min(), x.max(), 2)
    ax.plot(xs, slope * xs + intercept, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("best warm window W (turns)")
    ax.set_ylabel("plateau similarity (%)")
    ax.set_title(f"Plateau vs best W ({family})\nPearson r = {r:.2f} (p = {p:.2g}, n = {len(x)} datasets)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.margins(x=SCATTER_MARGIN, y=SCATTER_MARGIN)
    return fig, float(r)


# -- per-run figures (W&B) -------------------------------------------------------------------
def per_turn_figure(turns: pd.DataFrame, similarity_turns: pd.DataFrame | None, cfg: Any, title: str) -> Any:
    """One run: mean tokens per turn by role (bars) and, when judged, similarity per turn (line)."""
    if turns.empty:
        raise Skip("no turn records")
    frame = turns.copy()
    frame["F"] = frame["tokens_F"]
    frame["G"] = frame["tokens_G"]
    frame["compressor+router"] = frame["tokens_compressor"] + frame["tokens_router"]
    roles = [r for r in ("F", "G", "compressor+router") if (frame[r] != 0).any()] or ["F"]
    means = frame.groupby("turn")[roles].mean()
    fig, (ax,) = _figure(cfg, extra_width=cfg.figures.panel_width * LEGEND_PANEL_SHARE)
    colors = dict(cfg.figures.stack_colors)
    bottom = np.zeros(len(means))
    x = means.index.to_numpy() + 1
    handles = []
    for name in roles:
        values = means[name].to_numpy(dtype=float)
        handles.append(ax.bar(x, values, bottom=bottom, color=colors.get(name), label=name, width=BAR_WIDTH))
        bottom += values
    ax.set_ylim(0, (bottom.max() or 1) * (1 + TOP_HEADROOM))
    ax.set_xlabel("turn")
    ax.set_ylabel("tokens per turn (prompt + completion)")
    ax.set_xticks(x)
    if similarity_turns is not None and not similarity_turns.empty:
        twin = ax.twinx()
        twin.spines["right"].set_visible(True)
        sim = similarity_turns.groupby("turn")["similarity"].mean()
        (line,) = twin.plot(sim.index.to_numpy() + 1, sim.to_numpy(), color="black", marker="o",
                            markersize=MARKER, label="similarity %")
        twin.set_ylim(0, PERCENT * (1 + TOP_HEADROOM))
        twin.set_ylabel("similarity to Original (%)")
        handles.append(line)
    ax.set_title(title)
    _legend_below(fig, handles, [h.get_label() for h in handles], cfg)
    return fig
