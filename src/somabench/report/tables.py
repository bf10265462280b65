"""One table function: a long frame (one row per unit, e.g. per dialogue) -> md / LaTeX / CSV.

Why one function: every table in results/ must look the same and say the same things —
the direction of the metric (↑/↓), mean ± std over units, the best cell per column in bold,
how many units each cell has, how many rows were excluded (and why), and which runs the
numbers came from. The idea follows lm-eval's ``make_table`` (STYLE.md rule 15).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from somabench.metrics import mean_std

log = logging.getLogger(__name__)

AVG = "Avg"
UP, DOWN = "↑", "↓"
DASH = "–"


@dataclass
class Table:
    """An aggregated table: cells of mean ± std (n) with the metadata every table must show."""

    title: str
    metric: str
    """Name of the value with its unit, e.g. ``Similarity %``."""
    higher_is_better: bool
    rows: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], tuple[float | None, float | None, int]]
    """(row, column) -> (mean, std, n). Missing cells are absent."""
    decimals_mean: int
    decimals_std: int
    excluded: dict[str, int] = field(default_factory=dict)
    """Rows left out of the aggregate, by reason (e.g. judge status ``unparsed``)."""
    run_ids: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unit_name: str = "dialogues"

    # -- derived -------------------------------------------------------------------------
    @property
    def arrow(self) -> str:
        return UP if self.higher_is_better else DOWN

    def best(self) -> dict[str, set[str]]:
        """Rows holding the best mean per column (ties all count), compared at display precision."""
        out: dict[str, set[str]] = {}
        for col in self.columns:
            vals = {r: round(c[0], self.decimals_mean) for r in self.rows
                    if (c := self.cells.get((r, col))) and c[0] is not None}
            if len(vals) < 2:
                out[col] = set()
                continue
            target = max(vals.values()) if self.higher_is_better else min(vals.values())
            out[col] = {r for r, v in vals.items() if v == target}
        return out

    def n_range(self) -> tuple[int, int]:
        ns = [c[2] for (r, col), c in self.cells.items() if col != AVG]
        return (min(ns), max(ns)) if ns else (0, 0)

    def _fmt(self, cell: tuple[float | None, float | None, int] | None, latex: bool = False) -> str:
        if cell is None or cell[0] is None:
            return DASH if not latex else "--"
        mean, std, _ = cell
        pm = r" $\pm$ " if latex else " ± "
        std_text = format(std, f".{self.decimals_std}f") if std is not None and not math.isnan(std) else (
            "--" if latex else DASH)
        return f"{mean:.{self.decimals_mean}f}{pm}{std_text}"

    def footer(self) -> list[str]:
        """The lines every rendering carries: n, exclusions, runs, notes."""
        lo, hi = self.n_range()
        n_text = f"{lo}" if lo == hi else f"{lo}–{hi}"
        lines = [f"{self.metric} {self.arrow}: mean ± std over {self.unit_name} (sample std); "
                 f"best per column in bold; {self.unit_name} per cell: n = {n_text} (per cell in the CSV)."]
        if AVG in self.columns:
            lines.append(f"{AVG}: mean ± std of the row's column means; {DASH} when a column is missing.")
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
                rows.append({"row": row, "column": col, "mean": cell[0], "std": cell[1], "n": cell[2],
                             "best": row in best[col]})
        return pd.DataFrame(rows, columns=["row", "column", "mean", "std", "n", "best"])

    def to_csv(self) -> str:
        """Long CSV preceded by ``#`` lines (title, footer); read with ``pd.read_csv(comment="#")``."""
        head = [f"# {self.title}", f"# metric: {self.metric} ({'higher' if self.higher_is_better else 'lower'} is better)"]
        head += [f"# {line}" for line in self.footer()]
        return "\n".join(head) + "\n" + self.to_frame().to_csv(index=False)

    def write(self, out_dir: Path, stem: str) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for ext, text in (("md", self.to_markdown()), ("tex", self.to_latex()), ("csv", self.to_csv())):
            path = out_dir / f"{stem}.{ext}"
            path.write_text(text, encoding="utf-8")
            paths.append(path)
        return paths


def make_table(frame: pd.DataFrame, *, value: str, row: str, column: str, title: str, metric: str,
               higher_is_better: bool, decimals_mean: int, decimals_std: int,
               row_order: list[str] | None = None, column_order: list[str] | None = None,
               average: bool = True, excluded: dict[str, int] | None = None,
               run_col: str | None = "run_key", notes: list[str] | None = None,
               unit_name: str = "dialogues") -> Table:
    """Aggregate a long frame into a :class:`Table`.

    ``frame`` holds one row per unit (a dialogue, usually) with the ``row`` label, the
    ``column`` label and the ``value``; rows with a missing value are not units. Each cell is
    mean ± sample std over its units. ``average`` adds an Avg column: mean ± std over the
    row's column means (the paper's Avg), only when the row has every column.
    """
    data = frame.dropna(subset=[value])
    rows = _ordered(data[row].unique().tolist(), row_order)
    cols = _ordered(data[column].unique().tolist(), column_order)
    cells: dict[tuple[str, str], tuple[float | None, float | None, int]] = {}
    for (r, c), group in data.groupby([row, column], sort=False):
        cells[(r, c)] = mean_std(group[value])
    if average and len(cols) > 1:
        for r in rows:
            means = [cells[(r, c)][0] for c in cols if (r, c) in cells]
            if len(means) == len(cols):
                cells[(r, AVG)] = mean_std(pd.Series(means))
        cols = [*cols, AVG]
    run_ids = sorted(data[run_col].astype(str).unique().tolist()) if run_col and run_col in data else []
    return Table(title=title, metric=metric, higher_is_better=higher_is_better, rows=rows, columns=cols,
                 cells=cells, decimals_mean=decimals_mean, decimals_std=decimals_std,
                 excluded=dict(excluded or {}), run_ids=run_ids, notes=list(notes or []),
                 unit_name=unit_name)


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
    csv_head = "".join(f"# {t.title}: " + " ".join(t.footer()) + "\n" for t in tables.values())
    csv = csv_head + (pd.concat(frames).to_csv(index=False) if frames else "")
    paths = []
    for ext, text in (("md", md), ("tex", tex), ("csv", csv)):
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
