"""The lines of ``somabench ls runs [dir ...]`` (somabench.commands.ls): the run dirs under a folder, one line each, with what a
reader must know before trusting their numbers (status, dialogues, judge panels, and a panel
judged by several versions, whose older lines are kept but never aggregated)."""

from __future__ import annotations

from pathlib import Path

from somabench.metrics import superseded_note
from somabench.rundir import RunEntry, list_runs

NO_STATUS = "-"  # a shared reference (or records without a run.json)
REFERENCE_METHOD = "reference"


def run_line(entry: RunEntry, panels: list[str]) -> str:
    """The one line ``ls runs`` prints for a run dir."""
    config = entry.header.config if entry.header is not None else {}
    status = entry.header.status if entry.header is not None else NO_STATUS
    method = (config.get("method") or {}).get("name") or REFERENCE_METHOD
    dataset = (config.get("dataset") or {}).get("name") or "?"
    return (f"{entry.path}  {status}  {method} on {dataset}: {entry.n_dialogues} dialogue(s)"
            f"; panels: {', '.join(panels) or 'none'}")


def run_lines(root: Path) -> list[str]:
    from somabench.report.collect import run_scores

    lines = []
    for entry in list_runs(root):
        scores, superseded = run_scores(entry.path)
        panels = sorted(scores["panel"].astype(str).unique()) if not scores.empty else []
        lines.append(run_line(entry, panels))
        lines += [f"  WARNING: {note}" for note in superseded_note(superseded)]
    return lines

