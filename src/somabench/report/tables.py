"""The one table module: a long frame (one row per unit, e.g. per dialogue) -> md / LaTeX / CSV.

Why one module: every table in results/ (and ``judge_summary.md``, the run summary) must look
the same and say the same things — the direction of the metric (↑/↓), the mean with its 95 %
bootstrap CI over units (``somabench.stats``), the best cell per column in bold, how many units
each cell has, how many rows were excluded (and why), cells resting on fewer judges than the
panel has, and which runs the numbers came from. The idea follows lm-eval's ``make_table``
(STYLE.md rule 15). A cell below ``report.stats.min_n`` dialogues, or whose values are all
equal, prints its n and values instead of an interval (a percentile "CI" of two values is
the pair itself, not a 95 % interval); the footnote names the interval method and the
minimum n. :func:`frame_markdown` (``somabench.metrics``, below the report) renders a plain frame the same way.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from somabench.metrics import MISSING_CELL, mean_std
from somabench.stats import (
    DEFAULT_METHOD,
    DEFAULT_MIN_N,
    EQUAL,
    SMALL_N,
    average_ci,
    cell_seed,
    describe,
    fmt_p,
    mean_ci,
)

log = logging.getLogger(__name__)

AVG = "Avg"
UP, DOWN = "↑", "↓"
DASH = MISSING_CELL
PARTIAL = "†"  # cell with turns judged by fewer judges than the panel has


class Cell(NamedTuple):
    """One table cell: mean, sample std and n over units, its CI, and a flag/text override."""

    mean: float | None
    std: float | None
    n: int
    lo: float | None = None
    hi: float | None = None
    flag: str = ""
    text: str | None = None
    """Pre-rendered text (paired-comparison cells); the numbers stay in the CSV."""
    reason: str | None = None
    """Why the cell has no interval (``somabench.stats.SMALL_N`` / ``EQUAL``; None: it has one)."""
    values: tuple[float, ...] = ()
    """The unit values of a cell with fewer than ``min_n`` units (printed instead of a CI)."""


def baseline_names(stats_cfg: Any) -> list[str]:
    """``report.stats.baseline`` as a list: one method name, or several in order of preference."""
    value = stats_cfg.baseline
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def baseline_method(stats_cfg: Any, methods: Any) -> str | None:
    """The paired tables' baseline: the first ``report.stats.baseline`` name among ``methods``
    (a report without SOMA's default variant still pairs with the SOMA variant it has)."""
    present = {str(m) for m in methods}
    return next((name for name in baseline_names(stats_cfg) if name in present), None)


@dataclass(frozen=True)
class StatsKnobs:
    """``report.stats`` (conf/report/default.yaml): how CIs are computed."""

    n_boot: int
    seed: int
    confidence: float
    method: str = DEFAULT_METHOD
    """Interval method, a key of ``somabench.stats.INTERVALS``."""
    min_n: int = DEFAULT_MIN_N
    """Fewer units than this: no interval, the values are printed."""

    @classmethod
    def from_cfg(cls, cfg: Any) -> StatsKnobs:
        return cls(int(cfg.n_boot), int(cfg.seed), float(cfg.confidence),
                   str(cfg.get("method", DEFAULT_METHOD)), int(cfg.get("min_n", DEFAULT_MIN_N)))

    def describe(self) -> str:
        """The footnote's words for the interval: level, method, resamples, minimum n."""
        return (f"{self.confidence:.0%} CI: {describe(self.method, self.n_boot)}; no CI below "
                f"n = {self.min_n} (the values are printed) or when all values are equal")


@dataclass
class Table:
    """An aggregated table: cells of mean ± std (n) with the metadata every table must show."""

    title: str
    metric: str
    """Name of the value with its unit, e.g. ``Similarity %``."""
    higher_is_better: bool
    rows: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], Cell]
    """(row, column) -> Cell(mean, std, n, lo, hi, flag). Missing cells are absent."""
    decimals_mean: int
    decimals_std: int
    excluded: dict[str, int] = field(default_factory=dict)
    """Rows left out of the aggregate, by reason (e.g. judge status ``unparsed``)."""
    run_ids: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unit_name: str = "dialogues"
    confidence: float | None = None
    """CI level of the cells (None: no CI, cells show mean ± std)."""
    interval: str | None = None
    """How the CIs were computed (:meth:`StatsKnobs.describe`), for the footnote."""
    bold_best: bool = True
    describe: str | None = None
    """Replaces the footer's first line (what a cell is) for tables of another kind."""

    # -- derived -------------------------------------------------------------------------
    @property
    def arrow(self) -> str:
        return UP if self.higher_is_better else DOWN

    def best(self) -> dict[str, set[str]]:
        """Rows holding the best mean per column (ties all count), compared at display precision."""
        out: dict[str, set[str]] = {}
        if not self.bold_best:
            return {col: set() for col in self.columns}
        for col in self.columns:
            vals = {r: round(c.mean, self.decimals_mean) for r in self.rows
                    if (c := self.cells.get((r, col))) and c.mean is not None}
            if len(vals) < 2:
                out[col] = set()
                continue
            target = max(vals.values()) if self.higher_is_better else min(vals.values())
            out[col] = {r for r, v in vals.items() if v == target}
        return out

    def n_range(self) -> tuple[int, int]:
        ns = [c.n for (r, col), c in self.cells.items() if col != AVG]
        return (min(ns), max(ns)) if ns else (0, 0)

    def _fmt(self, cell: Cell | None, latex: bool = False) -> str:
        if cell is not None and cell.text is not None:
            return cell.text
        if cell is None or cell.mean is None:
            return DASH if not latex else "--"
        dm = self.decimals_mean
        if self.confidence is not None and cell.lo is not None and cell.hi is not None:
            text = f"{cell.mean:.{dm}f} [{cell.lo:.{dm}f}, {cell.hi:.{dm}f}]"
        elif self.confidence is not None and cell.reason is not None:
            text = f"{cell.mean:.{dm}f} ({no_interval_text(cell, dm)})"
        else:
            pm = r" $\pm$ " if latex else " ± "
            std = cell.std
            std_text = format(std, f".{self.decimals_std}f") if std is not None and not math.isnan(std) else (
                "--" if latex else DASH)
            text = f"{cell.mean:.{dm}f}{pm}{std_text}"
        return text + (cell.flag if not latex else cell.flag.replace(PARTIAL, r"$^\dagger$"))

    def footer(self) -> list[str]:
        """The lines every rendering carries: n, exclusions, runs, notes."""
        lo, hi = self.n_range()
        n_text = f"{lo}" if lo == hi else f"{lo}–{hi}"
        if self.confidence is not None:
            what = (f"mean [{self.interval or f'{self.confidence:.0%} CI'}] over {self.unit_name} "
                    f"(somabench.stats)")
        else:
            what = f"mean ± std over {self.unit_name} (sample std)"
        lines = [self.describe or (f"{self.metric} {self.arrow}: {what}; best per column in bold; "
                                   f"{self.unit_name} per cell: n = {n_text} (per cell, and the std, "
                                   f"in the CSV).")]
        if AVG in self.columns:
            lines.append(f"{AVG}: mean of the row's column means" + (
                f" with a CI from resampling the {self.unit_name} of each column independently (no CI "
                f"when a column is below the minimum n)" if self.confidence is not None
                else " ± std of the column means") + f"; {DASH} when a column is missing.")
        if any(c.flag == PARTIAL for c in self.cells.values()):
            lines.append(f"{PARTIAL}: some turns of the cell were judged by fewer judges than the panel "
                         f"has (see the CSV's partial_turns).")
        if self.excluded:
            total = sum(self.excluded.values())
            parts = ", ".join(f"{v} {k}" for k, v in sorted(self.excluded.items()))
            lines.append(f"Excluded rows: {total} ({parts}).")
        else:
            lines.append("Excluded rows: 0.")
        lines.extend(self.notes)
        if self.run_ids:
            lines.append("Runs: " + ", ".join(self.run_ids) + ".")
        return lines

    # -- renderings --------------------------------------------------------------------
    def to_markdown(self) -> str:
        best = self.best()
        header = [f"{self.metric} {self.arrow}", *self.columns]
        lines = [f"**{self.title}**", "", "| " + " | ".join(header) + " |",
                 "|" + "|".join([":---"] + ["---:"] * len(self.columns)) + "|"]
        for row in self.rows:
            cells = []
            for col in self.columns:
                text = self._fmt(self.cells.get((row, col)))
                cells.append(f"**{text}**" if row in best[col] else text)
            lines.append("| " + " | ".join([row, *cells]) + " |")
        lines.append("")
        lines.extend(f"<sub>{line}</sub>  " for line in self.footer())
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        best = self.best()
        spec = "l" + "c" * len(self.columns)
        header = " & ".join([_tex(f"{self.metric}") + f" ${_tex_arrow(self.higher_is_better)}$",
                             *(_tex(c) for c in self.columns)])
        body = []
        for row in self.rows:
            cells = []
            for col in self.columns:
                text = self._fmt(self.cells.get((row, col)), latex=True)
                cells.append(rf"\textbf{{{text}}}" if row in best[col] else text)
            body.append(" & ".join([_tex(row), *cells]) + r" \\")
        notes = " ".join(_tex(line) for line in self.footer())
        return "\n".join([
            r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(self.title)}}}",
            r"\resizebox{\linewidth}{!}{%", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
            header + r" \\", r"\midrule", *body, r"\bottomrule", r"\end{tabular}}",
            rf"\par\smallskip\footnotesize {notes}", r"\end{table}", ""])

    def to_frame(self) -> pd.DataFrame:
        """Long form: one row per cell with mean, std, n and whether it is the column's best."""
        best = self.best()
        rows = []
        for row in self.rows:
            for col in self.columns:
                cell = self.cells.get((row, col))
                if cell is None:
                    continue
                rows.append({"row": row, "column": col, "mean": cell.mean, "std": cell.std, "n": cell.n,
                             "ci_lo": cell.lo, "ci_hi": cell.hi, "best": row in best[col],
                             "flag": cell.flag, "text": cell.text, "no_ci": cell.reason})
        return pd.DataFrame(rows, columns=["row", "column", "mean", "std", "n", "ci_lo", "ci_hi", "best",
                                           "flag", "text", "no_ci"])

    def to_csv(self) -> str:
        """Long CSV, one row per cell, with no comment lines: ``pd.read_csv`` reads it as is.
        Title, metric and footer are in the ``.meta.json`` sidecar (:meth:`meta`)."""
        return self.to_frame().to_csv(index=False)

    def meta(self) -> dict[str, Any]:
        """The sidecar of the CSV: what the table is, how its cells were computed."""
        return {"title": self.title, "metric": self.metric, "higher_is_better": self.higher_is_better,
                "footer": list(self.footer()), "run_ids": list(self.run_ids)}

    def write(self, out_dir: Path, stem: str) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for ext, text in (("md", self.to_markdown()), ("tex", self.to_latex()), ("csv", self.to_csv()),
                          ("meta.json", json.dumps(self.meta(), indent=2, ensure_ascii=False) + "\n")):
            path = out_dir / f"{stem}.{ext}"
            path.write_text(text, encoding="utf-8")
            paths.append(path)
        return paths


def make_table(frame: pd.DataFrame, *, value: str, row: str, column: str, title: str, metric: str,
               higher_is_better: bool, decimals_mean: int, decimals_std: int,
               row_order: list[str] | None = None, column_order: list[str] | None = None,
               average: bool = True, excluded: dict[str, int] | None = None,
               run_col: str | None = "run_key", notes: list[str] | None = None,
               unit_name: str = "dialogues", stats: StatsKnobs | None = None,
               partial_col: str | None = None) -> Table:
    """Aggregate a long frame into a :class:`Table`.

    ``frame`` holds one row per unit (a dialogue, usually) with the ``row`` label, the
    ``column`` label and the ``value``; rows with a missing value are not units. Each cell is
    the mean over its units with sample std, and with ``stats`` a CI (``somabench.stats``,
    method ``stats.method``; each cell resamples with its own stream seeded from ``stats.seed``
    and the cell's identity, so tables are reproducible and cells independent). ``average``
    adds an Avg column: the mean of the row's column means (the paper's Avg), only when the row
    has every column; its CI resamples each column's units independently
    (:func:`somabench.stats.average_ci`). ``partial_col`` (e.g. ``partial_turns``) flags cells
    whose units have a non-zero count there with :data:`PARTIAL`.
    """
    data = frame.dropna(subset=[value])
    rows = _ordered(data[row].unique().tolist(), row_order)
    cols = _ordered(data[column].unique().tolist(), column_order)
    cells: dict[tuple[str, str], Cell] = {}
    samples: dict[tuple[str, str], np.ndarray] = {}
    knob: dict[str, Any] = ({"n_boot": stats.n_boot, "confidence": stats.confidence, "method": stats.method,
             "min_n": stats.min_n} if stats is not None else {})
    for (r, c), group in data.groupby([row, column], sort=False):
        mean, std, n = mean_std(group[value])
        lo = hi = reason = None
        values: tuple[float, ...] = ()
        if stats is not None and n:
            samples[(r, c)] = group[value].astype(float).to_numpy()
            ci = mean_ci(samples[(r, c)], seed=cell_seed(stats.seed, title, metric, r, c), **knob)
            lo, hi, reason, values = ci.lo, ci.hi, ci.reason, ci.values
        flag = PARTIAL if partial_col and partial_col in group and group[partial_col].fillna(0).sum() > 0 else ""
        cells[(r, c)] = Cell(mean, std, n, lo, hi, flag, reason=reason, values=values)
    if average and len(cols) > 1:
        for r in rows:
            means = [cells[(r, c)].mean for c in cols if (r, c) in cells]
            if len(means) == len(cols):
                mean, std, n = mean_std(pd.Series(means))
                lo = hi = reason = None
                if stats is not None:
                    ci = average_ci([samples[(r, c)] for c in cols],
                                    seed=cell_seed(stats.seed, title, metric, r, AVG), **knob)
                    lo, hi, reason = ci.lo, ci.hi, ci.reason
                cells[(r, AVG)] = Cell(mean, std, n, lo, hi, reason=reason)
        cols = [*cols, AVG]
    run_ids = sorted(data[run_col].astype(str).unique().tolist()) if run_col and run_col in data else []
    return Table(title=title, metric=metric, higher_is_better=higher_is_better, rows=rows, columns=cols,
                 cells=cells, decimals_mean=decimals_mean, decimals_std=decimals_std,
                 excluded=dict(excluded or {}), run_ids=run_ids, notes=list(notes or []),
                 unit_name=unit_name, confidence=stats.confidence if stats is not None else None,
                 interval=stats.describe() if stats is not None else None)


def no_interval_text(cell: Cell, decimals: int) -> str:
    """What a cell without an interval prints after its mean: its n and values (few units),
    ``all n equal`` (no spread), or why an Avg has none."""
    if cell.reason == SMALL_N and cell.values:
        return f"n={cell.n}: " + ", ".join(f"{v:.{decimals}f}" for v in cell.values)
    if cell.reason == SMALL_N:
        return "no CI: a column is below the minimum n"
    if cell.reason == EQUAL:
        return "all equal"
    return f"no CI: {cell.reason}"


def paired_text(r: Any, decimals: int) -> str:
    """A paired-comparison cell (a :class:`somabench.stats.Paired` or a row of
    ``compare_to_baseline``): ``Δ [CI], p (n)`` with the p dual to the CI, or, without an
    interval, the differences (few pairs) and the exact sign-flip p ("~": Monte Carlo)."""
    dm = decimals
    if r.lo is not None and not pd.isna(r.lo):
        return f"{r.diff:+.{dm}f} [{r.lo:+.{dm}f}, {r.hi:+.{dm}f}], p {fmt_p(r.p)} (n={r.n})"
    flip = f"sign-flip p {fmt_p(r.p_sign_flip)}{'' if r.exact else '~'}"
    if r.reason == SMALL_N and len(r.values):
        return f"{r.diff:+.{dm}f} (n={r.n}: " + ", ".join(f"{v:+.{dm}f}" for v in r.values) + f"; {flip})"
    return f"{r.diff:+.{dm}f} (all {r.n} differences equal; {flip})"


def paired_note(knobs: StatsKnobs, n_perm: int, baseline: str) -> list[str]:
    """Footnote of a paired table: what Δ, the CI and the two p-values are."""
    return [f"Cell: mean difference (method − {baseline}) over the dialogues both served "
            f"[{knobs.describe()}], two-sided p dual to that CI (the CI excludes 0 exactly when "
            f"p <= {1 - knobs.confidence:.2f}), n = paired dialogues.",
            f"Without a CI: the differences and a two-sided sign-flip permutation p (exact over all "
            f"2^n sign patterns; ~ marks a Monte Carlo estimate with {n_perm} patterns); with n "
            f"pairs it cannot be below 2/2^n.",
            "somabench.stats.paired_comparison; each cell resamples with its own stream derived from "
            "report.stats.seed."]


def write_tables(tables: dict[str, Table], out_dir: Path, stem: str, key_name: str) -> list[Path]:
    """Several tables of one kind (e.g. one per judge) in one md / tex / csv triple."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = "\n".join(t.to_markdown() for t in tables.values())
    tex = "\n".join(t.to_latex() for t in tables.values())
    frames = []
    for key, table in tables.items():
        part = table.to_frame()
        part.insert(0, key_name, key)
        frames.append(part)
    csv = pd.concat(frames).to_csv(index=False) if frames else ""
    meta = {str(key): table.meta() for key, table in tables.items()}
    paths = []
    for ext, text in (("md", md), ("tex", tex), ("csv", csv),
                      ("meta.json", json.dumps(meta, indent=2, ensure_ascii=False) + "\n")):
        path = out_dir / f"{stem}.{ext}"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def _ordered(values: list[Any], order: list[str] | None) -> list[Any]:
    order = list(order or [])
    known = [v for v in order if v in values]
    return known + sorted((v for v in values if v not in order), key=str)


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
                "±": r"$\pm$", "–": "--", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "×": r"$\times$"}


def _tex(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))


def _tex_arrow(up: bool) -> str:
    return r"\uparrow" if up else r"\downarrow"
