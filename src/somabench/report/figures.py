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
from matplotlib.patches import Patch

from somabench.metrics import (
    STACKS,
    cost_stacks,
    dialogue_throughput,
    mean_std,
    panels,
    rank_inversions,
    relative_tokens_per_turn,
    score_metric,
    score_per_dialogue,
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
ROW_HEIGHT = 0.28          # inches per bar row in horizontal bar charts
MIN_PLOT_HEIGHT = 1.6      # inches: a horizontal bar chart is never flatter than this
LABEL_WRAP = 22            # characters per line of a method label on a bar axis
LINE_SPACING = 1.35        # height of a text line, in font sizes
LABEL_GAP = 0.08           # inches between the wrapped labels of neighbouring bar rows
AXIS_MARGIN = 1.0          # inches of a bar panel taken by its title, tick labels and x label
POINTS_PER_INCH = 72.0
CMAP_SMALL = 10            # tab10 holds this many distinct colours
CMAP_MEDIUM = 20           # tab20 holds this many
LIGHT_ALPHA = 0.45         # the first of two side-by-side bars (e.g. generation-only throughput)
DOT_SIZE = 22              # points^2: one dialogue in a dot plot (cells below report.stats.min_n)
DODGE = 0.08               # turns: horizontal offset between lines so their whiskers do not overlap
MAX_DODGE = 0.5            # turns: all the lines of one turn stay within this width


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


LABEL_OFFSETS = tuple(sorted(((dx, dy) for dx in (6, -6, 40, 80, 120) for dy in (-14, 8, -30, 24, -46, 40)),
                             key=lambda o: (abs(o[0]) > 6, abs(o[0]), abs(o[1]))))
"""Candidate text offsets (points) around a labelled marker, tried in order."""
MARKER_PAD = 4.0
"""Pixels around a label's box within which another marker counts as covered by it."""


def place_labels(ax: Any, points: list[tuple[float, float, str]], fontsize: float = 7,
                 colors: list[Any] | None = None) -> None:
    """Annotate each ``(x, y, text)`` at the first offset of :data:`LABEL_OFFSETS` whose text
    box overlaps no label placed before, covers no other marker and stays inside the axes (else
    the least bad one): two methods with nearly the same position get readable labels instead of
    one smear. Each label is drawn in its marker's colour (``colors``) with a thin leader line to
    it, so a label beside a crowd of markers still names the right one. Call after the axes'
    limits are final."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    markers = [ax.transData.transform((x, y)) for x, y, _ in points]
    placed: list[Any] = []
    for i, (x, y, text) in enumerate(points):
        color = colors[i] if colors is not None else "black"
        others = [m for j, m in enumerate(markers) if j != i]
        best, best_cost = None, None
        for dx, dy in LABEL_OFFSETS:
            note = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points",
                               fontsize=fontsize, ha="left" if dx > 0 else "right",
                               va="top" if dy < 0 else "bottom", color=color,
                               arrowprops={"arrowstyle": "-", "color": color, "lw": 0.5,
                                           "shrinkA": 0, "shrinkB": 3})
            box = note.get_window_extent(renderer)
            overlap = sum(max(0.0, min(box.x1, o.x1) - max(box.x0, o.x0))
                          * max(0.0, min(box.y1, o.y1) - max(box.y0, o.y0)) for o in placed)
            covered = sum(box.x0 - MARKER_PAD <= mx <= box.x1 + MARKER_PAD
                          and box.y0 - MARKER_PAD <= my <= box.y1 + MARKER_PAD for mx, my in others)
            outside = (max(0.0, frame.x0 - box.x0) + max(0.0, box.x1 - frame.x1)
                       + max(0.0, frame.y0 - box.y0) + max(0.0, box.y1 - frame.y1)) * box.height
            cost = overlap + outside + covered * box.width * box.height
            if best_cost is None or cost < best_cost:
                if best is not None:
                    best[0].remove()
                best, best_cost = (note, box), cost
            else:
                note.remove()
            if cost == 0:
                break
        if best is not None:
            placed.append(best[1])


def order_labels(cfg: Any, frame: pd.DataFrame) -> list[str]:
    """Row/legend order: the paper's method order, then variant labels alphabetically."""
    order = list(cfg.methods)
    pairs = frame[["method", "label"]].drop_duplicates()
    rank = {m: i for i, m in enumerate(order)}
    pairs = pairs.assign(rank=pairs["method"].map(lambda m: rank.get(m, len(order))))
    return pairs.sort_values(["rank", "method", "label"])["label"].tolist()


def distinct_colors(cfg: Any, n: int) -> list[Any]:
    """``n`` colours, all different: tab10 up to 10, tab20 up to 20, then evenly spaced hues."""
    if n <= CMAP_SMALL:
        cmap = plt.get_cmap(cfg.figures.cmap)
        return [cmap(i) for i in range(n)]
    if n <= CMAP_MEDIUM:  # tab20's dark shades first, then the light ones (neighbours differ)
        cmap = plt.get_cmap(cfg.figures.get("cmap_many", "tab20"))
        order = [*range(0, CMAP_MEDIUM, 2), *range(1, CMAP_MEDIUM, 2)]
        return [cmap(order[i]) for i in range(n)]
    cmap = plt.get_cmap("hsv")
    return [cmap(i / n) for i in range(n)]


def label_colors(cfg: Any, labels: list[str], frame: pd.DataFrame | None = None) -> dict[str, Any]:
    """One colour per label, never shared, for any number of labels. A method keeps its colour
    across figures (position in the configured method order, when each label is one method)."""
    if frame is not None:
        methods = frame.drop_duplicates("label").set_index("label")["method"].reindex(labels)
        if methods.notna().all() and methods.is_unique:
            order = list(cfg.methods)
            unknown = sorted(m for m in methods if m not in order)
            everyone = [*order, *unknown]
            colors = distinct_colors(cfg, len(everyone))
            index = {m: i for i, m in enumerate(everyone)}
            return {label: colors[index[m]] for label, m in methods.items()}
    colors = distinct_colors(cfg, len(labels))
    return {label: colors[i] for i, label in enumerate(labels)}


def wrap(label: str) -> str:
    """A method label broken into lines of at most LABEL_WRAP characters (axes stay wide)."""
    import textwrap

    return "\n".join(textwrap.wrap(str(label), LABEL_WRAP)) or str(label)


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
    ax.set_title("Served variant: relative tokens per served turn (Original)\n"
                 "answers capped at max_new_tokens; user tokens estimated from words")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(bottom=0)
    ax.legend(title="dataset (dialogues)", loc="best")
    return fig


def data_tokens_per_turn_figure(cfg: Any, out: Path, cache_dir: str | None) -> Any:
    """Fig. 1 from the data: mean tokens per turn (user + the dataset's reference answer, F's
    tokenizer) over every dialogue of each dataset, / turn 1; n (dialogues) per point."""
    from somabench.report import fig1_data

    fcfg = cfg.fig1
    try:
        counts, source = fig1_data.build(fcfg, cache_dir, out)
    except fig1_data.Fig1Unavailable as exc:
        raise Skip(str(exc)) from exc
    rel = fig1_data.relative(counts, fcfg.get("max_turns"), int(fcfg.min_dialogues))
    datasets = [d for d in order_datasets(cfg, rel["dataset"].unique().tolist()) if (rel["dataset"] == d).sum() >= 2]
    if not datasets:
        raise Skip("no dataset has >= 2 turns with enough dialogues (report.fig1.min_dialogues)")
    fig, axes = _figure(cfg, 2, extra_width=cfg.figures.panel_width * LEGEND_PANEL_SHARE)
    colors = distinct_colors(cfg, len(datasets))
    for color, name in zip(colors, datasets, strict=True):
        part = rel[rel["dataset"] == name].sort_values("turn")
        axes[0].plot(part["turn"] + 1, part["relative"], marker="o", markersize=MARKER, color=color,
                     label=f"{dataset_name(cfg, name)} (n={int(part['n'].iloc[0])})")
        axes[1].plot(part["turn"] + 1, part["n"], marker="o", markersize=MARKER, color=color)
    axes[0].axhline(1.0, color="grey", linewidth=0.6, linestyle=":")
    axes[0].set_ylabel("tokens per turn / tokens at turn 1")
    axes[0].set_ylim(bottom=0)
    axes[0].set_title("Relative tokens per turn (data)")
    axes[1].set_ylabel("n (dialogues reaching the turn)")
    axes[1].set_yscale("log")
    axes[1].set_title("n per point")
    for ax in axes:
        ax.set_xlabel("turn")
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(f"user + reference answer tokens ({source} tokenizer), every dialogue of each dataset")
    fig.legend(loc="outside right center", frameon=False, title="dataset (dialogues at turn 1)")
    return fig


# -- Fig. 2 / 5 / 6 --------------------------------------------------------------------------
def compact(value: float) -> str:
    """Short bar labels so neighbouring totals never collide: 880, 6.9k, 15k, 1.2M."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            short = value / scale
            return f"{short:.0f}{suffix}" if abs(short) >= 10 else f"{short:.1f}{suffix}"
    return f"{value:.0f}"


def _text_inches(cfg: Any, lines: int) -> float:
    return lines * cfg.figures.font_size * LINE_SPACING / POINTS_PER_INCH


def _bar_height(cfg: Any, labels: list[str], bars_per_label: int = 1, text_lines: int = 0) -> float:
    """Height scale of a horizontal bar panel, one row per label: every row is tall enough for
    its label as ``wrap`` breaks it (two-line labels of neighbouring rows used to overlap), and
    ``text_lines`` of titles and notes above the plot get their own room instead of squeezing it."""
    lines = max((wrap(lb).count("\n") + 1 for lb in labels), default=1)
    row = max(ROW_HEIGHT * bars_per_label, _text_inches(cfg, lines) + LABEL_GAP)
    height = max(MIN_PLOT_HEIGHT, row * len(labels) + AXIS_MARGIN) + _text_inches(cfg, text_lines)
    return height / cfg.figures.panel_height


def min_n(knobs: Any) -> int:
    """Fewest units a bar (and a CI) needs: ``report.stats.min_n``, the stats default without knobs."""
    from somabench.stats import DEFAULT_MIN_N

    return int(getattr(knobs, "min_n", DEFAULT_MIN_N)) if knobs is not None else DEFAULT_MIN_N


def _interval(groups: list[np.ndarray], knobs: Any, *identity: Any) -> tuple[float, float]:
    """(lo, hi) of the mean of the groups' means with the tables' estimator
    (:func:`somabench.stats.average_ci`: each group resampled independently, its own stream);
    NaN where there is no interval (too few units, no spread)."""
    from somabench.stats import average_ci, cell_seed

    ci = average_ci(groups, n_boot=knobs.n_boot, seed=cell_seed(knobs.seed, *identity),
                    confidence=knobs.confidence, method=knobs.method, min_n=knobs.min_n)
    return (ci.lo, ci.hi) if ci.lo is not None and ci.hi is not None else (np.nan, np.nan)


def ci_words(knobs: Any) -> str:
    """``95 % CI (studentized bootstrap (bootstrap-t))``: how a figure names its whiskers."""
    from somabench.stats import describe

    return f"{knobs.confidence:.0%} CI ({describe(knobs.method)})"


def few_words(knobs: Any, what: str = "value") -> str:
    """The figure note for cells drawn as dots."""
    return f"dots: each dialogue's {what} where a cell has < {min_n(knobs)} dialogues (no bar, no CI; | = mean)"


def _totals(frame: pd.DataFrame, stacks: list[str]) -> pd.DataFrame:
    return frame.assign(_total=frame[stacks].fillna(0.0).sum(axis=1))


def _total_ci(frame: pd.DataFrame, labels: list[str], stacks: list[str], knobs: Any) -> np.ndarray | None:
    """Per label: CI of the total (sum of the stacks) per dialogue; with several datasets, of the
    mean of the dataset means (the Avg column's estimator: each dataset's dialogues resampled
    independently). Rows: lo, hi; NaN without an interval."""
    if knobs is None or "dataset" not in frame:
        return None
    totals = _totals(frame, stacks)
    out = np.full((2, len(labels)), np.nan)
    for i, label in enumerate(labels):
        part = totals[totals["label"] == label]
        groups = [g["_total"].to_numpy(dtype=float) for _, g in part.groupby("dataset")]
        if groups:
            out[:, i] = _interval(groups, knobs, "tokens total", label, *sorted(part["dataset"].unique()))
    return out


def _few(frame: pd.DataFrame, labels: list[str], stacks: list[str], knobs: Any) -> dict[str, np.ndarray]:
    """Labels with fewer than ``min_n`` dialogues in some dataset -> their dialogue totals
    (drawn as dots, not as a bar whose length suggests a settled mean)."""
    totals = _totals(frame, stacks)
    out = {}
    for label in labels:
        part = totals[totals["label"] == label]
        if len(part) and part.groupby("dataset").size().min() < min_n(knobs):
            out[label] = part["_total"].to_numpy(dtype=float)
    return out


def _dots(ax: Any, y: float, values: np.ndarray, mean: float, color: Any, width: float = BAR_WIDTH) -> None:
    """Individual values as dots around row ``y`` (spread over the ``width`` a bar would
    take) and the mean as a tick: the figure of a cell too small for a bar."""
    offsets = np.linspace(-width / 4, width / 4, len(values)) if len(values) > 1 else np.zeros(len(values))
    ax.scatter(values, y + offsets, s=DOT_SIZE, color=color, edgecolor="black", linewidth=0.5, zorder=3)
    ax.plot([mean, mean], [y - width / 2, y + width / 2], color="black", linewidth=1.5, zorder=4)


def _stacked(ax: Any, frame: pd.DataFrame, labels: list[str], stacks: list[str], cfg: Any,
             unit_fmt: str | None, ci: np.ndarray | None = None,
             dots: dict[str, np.ndarray] | None = None) -> list[Any]:
    """Horizontal stacked bars, one row per label (top = first), total printed at the bar end;
    ``ci`` (rows lo, hi) draws whiskers on the totals. Labels in ``dots`` get no bar: their
    dialogue totals as dots and the mean total as a tick."""
    colors = dict(cfg.figures.stack_colors)
    dots = dots or {}
    means = frame.groupby("label")[stacks].mean().reindex(labels)
    y = np.arange(len(labels))
    barred = np.array([lb not in dots for lb in labels])
    left = np.zeros(len(labels))
    handles = []
    for stack in stacks:
        values = means[stack].fillna(0.0).to_numpy()
        ax.barh(y[barred], values[barred], left=left[barred], color=colors.get(stack), label=stack,
                height=BAR_WIDTH)
        handles.append(Patch(facecolor=colors.get(stack), label=stack))  # also when no bar is drawn
        left += values
    ends = left.copy()  # where each total's label goes: past the bar, its whisker or its dots
    for i, label in enumerate(labels):
        if label in dots:
            _dots(ax, y[i], dots[label], left[i], "lightgrey")
            ends[i] = max(left[i], float(np.max(dots[label])))
    if ci is not None and np.isfinite(ci).any():
        err = np.vstack([np.clip(left - ci[0], 0, None), np.clip(ci[1] - left, 0, None)])
        ax.errorbar(left, y, xerr=np.nan_to_num(err), fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
        ends = np.maximum(ends, np.nan_to_num(ci[1], nan=0.0))
    top = ends.max() if len(ends) else 0
    for yi, total, end in zip(y, left, ends, strict=True):
        ax.text(end + top * TOTAL_LABEL_OFFSET, yi, compact(total) if unit_fmt is None else format(total, unit_fmt),
                ha="left", va="center", fontsize=cfg.figures.font_size - 2)
    ax.set_yticks(y, [wrap(lb) for lb in labels])
    ax.invert_yaxis()
    ax.set_xlim(0, top * (1 + TOP_HEADROOM) if top > 0 else 1)
    return handles


def tokens_per_dialogue_figure(dialogues: pd.DataFrame, cfg: Any, family: str, by_dataset: bool,
                               prices: dict[str, Any] | None = None, knobs: Any = None) -> Any:
    """Fig. 2 (mean over datasets) or Fig. 5/6 (one panel per dataset): tokens per dialogue per
    method, stacked F / G / compressor+router / adaptation / training (horizontal bars). With
    ``prices``: USD per dialogue, with a note wherever a method is cheaper despite more tokens."""
    frame = dialogues[dialogues["family"] == family] if not dialogues.empty else dialogues
    if frame.empty:
        raise Skip(f"no dialogue records for family {family}")
    subtitle = ""
    notes: list[str] = []
    if prices is not None:
        if not prices:
            raise Skip(f"no model.prices in the run config of family {family}")
        frame, unpriced = cost_stacks(frame, prices)
        per = int(cfg.cost_per_dialogues)
        frame[list(STACKS)] = frame[list(STACKS)] * per
        xlabel, unit_fmt = f"USD per {per:,} dialogues", f".{cfg.tables.decimals_cost}f"
        subtitle = f"prices: {prices.get('label', 'from config')}"
        if unpriced:
            subtitle += f"; NOT priced: {', '.join(unpriced)}"
        tokens = token_stacks(dialogues[dialogues["family"] == family])
        tokens["tokens_all"] = tokens[list(STACKS)].sum(axis=1)
        joined = frame.assign(tokens_all=tokens["tokens_all"])
        notes = rank_inversions(joined, "label", "tokens_all", "usd_total")
    else:
        frame = token_stacks(frame)
        xlabel, unit_fmt = "tokens per dialogue", None
    stacks = [s for s in STACKS if (frame[s].fillna(0) != 0).any()] or list(STACKS[:1])
    labels = order_labels(cfg, frame)
    if knobs is not None:
        subtitle = "; ".join(filter(None, [subtitle, f"whiskers: {ci_words(knobs)} of the total"]))
    few_all = _few(frame, labels, stacks, knobs)
    if few_all:
        subtitle = "\n".join(filter(None, [subtitle, few_words(knobs, "total")]))
    datasets = order_datasets(cfg, frame["dataset"].unique().tolist())
    what = "Cost" if prices is not None else "Tokens per dialogue"
    text_lines = len(notes) + 2 + subtitle.count("\n") + bool(subtitle)  # notes, the title and its subtitle
    if by_dataset:
        fig, axes = _figure(cfg, len(datasets),
                            height_scale=_bar_height(cfg, labels, text_lines=text_lines))
        for ax, name in zip(axes, datasets, strict=True):
            part = frame[frame["dataset"] == name]
            shown = [lb for lb in labels if lb in set(part["label"])]
            few = _few(part, shown, stacks, knobs)
            handles = _stacked(ax, part, shown, stacks, cfg, unit_fmt, _total_ci(part, shown, stacks, knobs), few)
            ax.set_title(f"{dataset_name(cfg, name)} ({n_text(part.groupby('label').size())} dialogues)")
            ax.set_xlabel(xlabel)
        fig.suptitle(f"{what} by dataset ({family})" + (f"\n{subtitle}" if subtitle else ""))
    else:
        per_dataset = frame.groupby(["label", "dataset"])[stacks].mean().reset_index()
        coverage = per_dataset.groupby("label")["dataset"].nunique()
        partial = {lb for lb in labels if coverage.get(lb, 0) < len(datasets)}
        starred = {lb: f"{lb}*" if lb in partial else lb for lb in labels}
        per_dataset["label"] = per_dataset["label"].map(starred)
        fig, (ax,) = _figure(cfg, extra_width=cfg.figures.panel_width * LEGEND_PANEL_SHARE,
                             height_scale=_bar_height(cfg, [f"{lb}*" for lb in labels],
                                                      text_lines=text_lines))
        few = {starred[lb]: v for lb, v in _few(frame, labels, stacks, knobs).items()}
        handles = _stacked(ax, per_dataset, [starred[lb] for lb in labels], stacks, cfg, unit_fmt,
                           _total_ci(frame, labels, stacks, knobs), few)
        ax.set_xlabel(xlabel)
        n = frame.groupby("label").size()
        title = (f"{what} ({family}; mean over {len(datasets)} dataset{'s' if len(datasets) != 1 else ''}; "
                 f"{n_text(n)} dialogues per method)")
        if partial:
            subtitle = "; ".join(filter(None, [subtitle, "* fewer datasets than the others"]))
        ax.set_title(title + (f"\n{subtitle}" if subtitle else ""))
    if notes:  # above the plot: constrained layout keeps it clear of the axes and the legend
        fig.suptitle("Note: " + "\n".join(notes), fontsize=cfg.figures.font_size - 1, color="firebrick")
    if len(few_all) < len(labels):  # the stack colours mean something only where a bar is drawn
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


def _errors(stats: pd.DataFrame) -> np.ndarray | None:
    """Asymmetric error bars (mean - lo, hi - mean) from CI columns, or None without them."""
    if "lo" not in stats or stats["lo"].isna().all():
        return None
    return np.vstack([(stats["mean"] - stats["lo"]).to_numpy(dtype=float),
                      (stats["hi"] - stats["mean"]).to_numpy(dtype=float)])


def _method_panels(cfg: Any, stats: pd.DataFrame, values: list[tuple[str, str]], xlabel: str,
                   bounded: float | None, title: str, knobs: Any) -> Any:
    """One panel per dataset, one horizontal bar per method (its own colour) with CI error bars
    and n in the method's label; ``values`` = (column prefix, legend name) pairs drawn side by
    side, the first hatched and light (e.g. generation vs end-to-end throughput). ``bounded``
    fixes the x axis to [0, bounded] (bounded scores start at 0)."""
    labels = order_labels(cfg, stats)
    datasets = order_datasets(cfg, stats["dataset"].unique().tolist())
    colors = label_colors(cfg, labels, stats)
    widest = stats.groupby("label")["n"].max()  # the tick label says n: wrap what is drawn
    fig, axes = _figure(cfg, len(datasets), height_scale=_bar_height(
        cfg, [f"{lb} (n={int(widest[lb])})" for lb in labels], len(values),
        text_lines=2 + bool((stats["n"] < min_n(knobs)).any())))
    height = BAR_WIDTH / len(values)
    styles: list[dict[str, Any]] = [{"alpha": 1.0, "hatch": None}] if len(values) == 1 else \
        [{"alpha": LIGHT_ALPHA, "hatch": "///"}, *[{"alpha": 1.0, "hatch": None}] * (len(values) - 1)]
    for ax, name in zip(axes, datasets, strict=True):
        part = stats[stats["dataset"] == name].set_index("label")
        shown = [lb for lb in labels if lb in part.index]
        part = part.reindex(shown)
        y = np.arange(len(shown))
        barred = (part["n"] >= min_n(knobs)).to_numpy()
        for i, ((prefix, _), style) in enumerate(zip(values, styles, strict=True)):
            cols = part[[f"{prefix}mean", f"{prefix}lo", f"{prefix}hi"]].rename(
                columns=lambda c, p=prefix: c[len(p):])
            offset = (i - (len(values) - 1) / 2) * height
            bars = cols[barred]
            ax.barh(y[barred] + offset, bars["mean"].to_numpy(dtype=float), height=height,
                    xerr=_errors(bars), capsize=2, alpha=style["alpha"], hatch=style["hatch"],
                    color=[colors[lb] for lb in bars.index], edgecolor=[colors[lb] for lb in bars.index],
                    error_kw={"elinewidth": 0.8})
            for j in np.flatnonzero(~barred):  # too few dialogues for a bar: the dialogues themselves
                label = shown[j]
                _dots(ax, y[j] + offset, np.asarray(part[f"{prefix}values"].iloc[j], dtype=float),
                      float(cols["mean"].iloc[j]), colors[label], height)
        his = part[[f"{p}hi" for p, _ in values]].to_numpy(dtype=float)
        highest = [max(v, default=np.nan) for p, _ in values for v in part[f"{p}values"]]
        his = np.append(his.ravel(), highest)
        top = float(np.nanmax(his)) if np.isfinite(his).any() else 1.0
        ax.set_xlim(0, bounded if bounded is not None else top * (1 + TOP_HEADROOM))
        ax.set_yticks(y, [wrap(f"{lb} (n={int(n)})") for lb, n in zip(shown, part["n"], strict=True)])
        ax.invert_yaxis()
        ax.set_title(dataset_name(cfg, name))
        ax.set_xlabel(xlabel)
    ci = ci_words(knobs) if knobs is not None else "std"
    few = f"\n{few_words(knobs)}" if (stats["n"] < min_n(knobs)).any() else ""
    fig.suptitle(f"{title}\nbars: mean over dialogues, whiskers: {ci}; n = dialogues{few}")
    if len(values) > 1:
        handles = [Patch(facecolor="grey", alpha=style["alpha"], hatch=style["hatch"], label=legend)
                   for (_, legend), style in zip(values, styles, strict=True)]
        fig.legend(handles=handles, loc="outside lower center", ncol=len(values), frameon=False)
    return fig


def throughput_figure(turns: pd.DataFrame, cfg: Any, family: str, dialogues: pd.DataFrame | None = None,
                      knobs: Any = None) -> Any:
    """Fig. 7 / 8: generation (light) and end-to-end (solid) throughput per method and dataset,
    mean [CI] over dialogues of each dialogue's throughput."""
    if turns.empty:
        raise Skip("no turn records")
    per_dialogue = dialogue_throughput(turns[turns["family"] == family], DIALOGUE, dialogues).dropna(subset=["tps"])
    if per_dialogue.empty:
        raise Skip(f"no turn with generation seconds > 0 for family {family}")
    gen = cell_stats(per_dialogue, ["label", "method", "dataset"], "tps", knobs)
    e2e = cell_stats(per_dialogue, ["label", "method", "dataset"], "tps_e2e", knobs)
    stats = gen.merge(e2e, on=["label", "method", "dataset"], suffixes=("", "_e2e"))
    stats = stats.rename(columns={c: f"gen_{c}" for c in ("mean", "std", "lo", "hi", "values")})
    stats = stats.rename(columns={f"{c}_e2e": f"e2e_{c}" for c in ("mean", "std", "lo", "hi", "values")})
    return _method_panels(cfg, stats, [("gen_", "generation only"),
                                       ("e2e_", "end to end (compress, route, gate, adaptation)")],
                          "completion tokens / s", None, f"Throughput ({family})", knobs)


# -- Fig. 3 / 9 ------------------------------------------------------------------------------
def cell_stats(frame: pd.DataFrame, keys: list[str], value: str, knobs: Any = None) -> pd.DataFrame:
    """Per cell: mean, std, n, the values and (with ``knobs``, ``report.stats``) the CI of the
    tables (:func:`somabench.stats.mean_ci`, a stream per cell from its keys; no CI below
    ``min_n`` or without spread: lo/hi NaN)."""
    rows = []
    for key, group in frame.groupby(keys):
        key = key if isinstance(key, tuple) else (key,)
        mean, std, n = mean_std(group[value])
        lo = hi = None
        if knobs is not None and n:
            lo, hi = _interval([group[value].dropna().to_numpy(dtype=float)], knobs, value, *key)
        rows.append({**dict(zip(keys, key, strict=True)), "mean": mean, "std": std, "n": n, "lo": lo, "hi": hi,
                     "values": tuple(group[value].dropna().astype(float))})
    return pd.DataFrame(rows, columns=[*keys, "mean", "std", "n", "lo", "hi", "values"])


def ablation_figure(similarity: pd.DataFrame, cfg: Any, family: str, knobs: Any = None) -> Any:
    """Fig. 3 / 9: similarity of SOMA and its ablations per dataset, mean [CI] over dialogues,
    on a 0–100 axis (small differences must not look large)."""
    wanted = list(cfg.ablation.methods)
    frame = similarity[(similarity["family"] == family) & similarity["method"].isin(wanted)] \
        if not similarity.empty else similarity
    present = sorted(set(frame["method"])) if not frame.empty else []
    if len(present) < 2:
        missing = [m for m in wanted if m not in present]
        raise Skip(f"needs similarity scores for at least two of {wanted} (family {family}); "
                   f"missing: {', '.join(missing)}")
    stats = cell_stats(frame, ["label", "method", "dataset"], "similarity", knobs)
    return _method_panels(cfg, stats, [("", "similarity")], "similarity to Original (%)", PERCENT,
                          f"Ablation ({family})", knobs)


# -- Fig. 10 ---------------------------------------------------------------------------------
def ability_frame(scores: pd.DataFrame, cfg: Any, panel: str | None = None) -> pd.DataFrame:
    """Per (family, label, ability): ability score (0–scale) per dialogue of ONE panel (default:
    the only one), through ``somabench.metrics.score_per_dialogue``."""
    prefix = str(cfg.ability_prefix)
    columns = ["family", "label", "method", "ability", "run_key", "dialogue_id", "score"]
    if scores.empty:
        return pd.DataFrame(columns=columns)
    metrics = sorted(m for m in set(score_metric(scores)) if m.startswith(prefix))
    if panel is None:
        names = panels(scores)
        if len(names) > 1:
            raise ValueError(f"scores hold panels {names}: name one")
        panel = names[0] if names else None
    parts = []
    for metric in metrics if panel else []:
        per = score_per_dialogue(scores, panel=str(panel), metric=metric,
                                 by=["family", "label", "method", "run_key", "dialogue_id"],
                                 scale=float(cfg.ability_scale), value="score")
        if not per.empty:
            parts.append(per.assign(ability=metric.removeprefix(prefix)))
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]


def abilities_figure(scores: pd.DataFrame, cfg: Any, family: str, panel: str | None = None) -> Any:
    """Fig. 10: MT-Bench-101 ability profile per method (radar; bars below 3 abilities)."""
    if panel is None and len(panels(scores)) > 1:
        raise Skip("scores of several panels: draw one figure per panel")
    frame = ability_frame(scores, cfg, panel)
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
        ax.set_title(f"Ability profile ({family}{f', panel {panel}' if panel else ''}; score 0–{scale:g}; "
                     f"{n_text(stats['n'])} dialogues)",
                     pad=TITLE_PAD)
        fig.legend(handles, labels, loc="outside right center", frameon=False)
        return fig
    ax.set_title(f"Ability profile ({family}{f', panel {panel}' if panel else ''}; score 0–{scale:g}; "
                     f"{n_text(stats['n'])} dialogues)",
                 pad=TITLE_PAD)
    _legend_below(fig, handles, labels, cfg)
    return fig


# -- Fig. 11 / 12 ----------------------------------------------------------------------------
def warm_window_points(similarity: pd.DataFrame, windows: dict[str, float], cfg: Any, family: str,
                       knobs: Any = None) -> pd.DataFrame:
    """Similarity (mean ± std over dialogues) per dataset and warm window W.

    ``windows`` maps run_key -> W (see :func:`somabench.report.build.warm_windows`).
    """
    if similarity.empty:
        return pd.DataFrame(columns=["dataset", "W", "mean", "std", "n"])
    frame = similarity[(similarity["family"] == family) & (similarity["method"] == cfg.warm_window.method)].copy()
    frame["W"] = frame["run_key"].map(windows)
    frame = frame.dropna(subset=["W"])
    return cell_stats(frame, ["dataset", "W"], "similarity", knobs)


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
        errors = _errors(part) if "lo" in part else None
        line = ax.errorbar(part["W"], part["mean"], yerr=errors, marker="o", markersize=MARKER, capsize=2,
                           label=f"{dataset_name(cfg, name)} ({n_text(part['n'])})").lines[0]
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


# -- per turn, split by who served it -------------------------------------------------------------
SERVED: dict[str, dict[str, Any]] = {"F": {"linestyle": "-", "marker": "o"},
                                     "G": {"linestyle": "--", "marker": "s"}}
"""Line style per serving model: a turn served by F (the original model) or by G (the cheap one)."""
TURN_KEYS = ["run_key", "label", "method", "family", "dataset", "dialogue_id"]


def served_role(served_by: pd.Series) -> pd.Series:
    """The model that answered a turn: ``served_by`` up to its first ``+`` (``G+lora`` -> G)."""
    return served_by.astype(str).str.split("+").str[0]


def served_turn_values(scores: pd.DataFrame, turns: pd.DataFrame, *, panel: str, metric: str) -> pd.DataFrame:
    """Per (dialogue, turn): the metric % (:func:`somabench.metrics.score_per_turn`) and who
    served the turn (``served``: F / G), from the turn records (score lines written before
    they carried ``served_by`` have none). Turns without a record are dropped."""
    from somabench.metrics import score_per_turn

    columns = [*TURN_KEYS, "turn", "value", "served"]
    per = score_per_turn(scores, panel=panel, metric=metric, by=TURN_KEYS, value="value")
    if per.empty or turns.empty or "served_by" not in turns:
        return pd.DataFrame(columns=columns)
    served = turns[["run_key", "dialogue_id", "turn", "served_by"]].drop_duplicates(["run_key", "dialogue_id", "turn"])
    per = per.merge(served, on=["run_key", "dialogue_id", "turn"], how="inner")
    return per.assign(served=served_role(per["served_by"]))[columns]


def served_turn_points(values: pd.DataFrame, knobs: Any = None) -> pd.DataFrame:
    """Per (label, method, dataset, turn, served): mean [CI] over the dialogues whose turn was
    served by that model (:func:`cell_stats`, the tables' estimator); turn is 1-based."""
    frame = values.assign(turn=values["turn"].astype(int) + 1)
    return cell_stats(frame, ["label", "method", "dataset", "turn", "served"], "value", knobs)


def served_turn_figure(points: pd.DataFrame, cfg: Any, title: str, ylabel: str, knobs: Any = None,
                       bounded: float | None = PERCENT) -> Any:
    """A metric per turn index with one line per (method, serving model): F-served turns solid,
    G-served turns dashed, so what happens after a switch is not averaged away by the turns
    F still serves. Whiskers: CI over dialogues; hollow markers: fewer than ``min_n``
    dialogues (no CI). Below: share of each turn's dialogues served by G."""
    from matplotlib.lines import Line2D

    if points.empty:
        raise Skip("no scored turn with a turn record (served_by)")
    datasets = order_datasets(cfg, points["dataset"].unique().tolist())
    _style(cfg)
    fig, axes = plt.subplots(2, len(datasets), squeeze=False, sharex="col", layout="constrained",
                             height_ratios=[3, 1], figsize=(cfg.figures.panel_width * len(datasets),
                                                            cfg.figures.panel_height * 4 / 3))
    labels = order_labels(cfg, points)
    colors = label_colors(cfg, labels, points)
    servers = [s for s in SERVED if s in set(points["served"])] + sorted(set(points["served"]) - set(SERVED))
    lines = [(lb, s) for lb in labels for s in servers]
    for j, dataset in enumerate(datasets):
        top, bottom = axes[0][j], axes[1][j]
        part = points[points["dataset"] == dataset]
        for k, (label, server) in enumerate(lines):
            line = part[(part["label"] == label) & (part["served"] == server)].sort_values("turn")
            if line.empty:
                continue
            style = SERVED.get(server, {"linestyle": ":", "marker": "^"})
            x = line["turn"] + (k - (len(lines) - 1) / 2) * min(DODGE, MAX_DODGE / len(lines))
            err = _errors(line.assign(lo=line["lo"].astype(float), hi=line["hi"].astype(float)))
            top.errorbar(x, line["mean"], yerr=None if err is None else np.nan_to_num(err), color=colors[label],
                         linestyle=style["linestyle"], marker=style["marker"], markersize=MARKER + 1, capsize=2,
                         linewidth=1)
            few = line["n"] < min_n(knobs)
            top.scatter(x[few], line["mean"][few], s=DOT_SIZE, facecolor="white", edgecolor=colors[label],
                        marker=style["marker"], zorder=3)
        share = part.pivot_table(index=["label", "turn"], columns="served", values="n", aggfunc="sum", fill_value=0)
        for label in labels:
            if label not in share.index.get_level_values("label"):
                continue
            rows = share.loc[label]
            g = rows["G"] if "G" in rows else pd.Series(0, index=rows.index)
            bottom.plot(rows.index, PERCENT * g / rows.sum(axis=1), color=colors[label], marker="o",
                        markersize=MARKER)
        if bounded is not None:
            top.set_ylim(0, bounded)
        top.set_ylabel(ylabel)
        top.set_title(f"{dataset_name(cfg, dataset)} ({n_text(part.groupby(['label', 'turn'])['n'].sum())} "
                      f"dialogues per turn)")
        bottom.set_ylim(0, PERCENT)
        bottom.set_ylabel("served by G %")
        bottom.set_xlabel("turn")
        bottom.set_xticks(sorted(part["turn"].unique()))
    ci = ci_words(knobs) if knobs is not None else "no CI"
    fig.suptitle(f"{title}\nsolid: turns served by F, dashed: by G; whiskers: {ci}\n"
                 f"hollow: < {min_n(knobs)} dialogues (no CI)")
    handles: list[Any] = [Line2D([], [], color=colors[lb], label=lb) for lb in labels]
    handles += [Line2D([], [], color="black", label=f"served by {s}", **SERVED.get(s, {})) for s in servers]
    _legend_below(fig, handles, [h.get_label() for h in handles], cfg)
    return fig
