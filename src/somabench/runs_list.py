"""The lines of ``somabench ls runs [dir ...]`` (somabench.commands.ls): the run dirs under a folder, one line each, with what a
reader must know before trusting their numbers (status, dialogues, judge panels, and a panel
judged by several versions, whose older lines are kept but never aggregated)."""

from __future__ import annotations

from pathlib import Path

from somabench.metrics import superseded_note
from somabench.rundir import DIALOGUES_FILE, read_header


def run_lines(root: Path) -> list[str]:
    from somabench.report.collect import find_run_dirs, run_scores

    lines = []
    for run_dir in find_run_dirs(root):
        header = read_header(run_dir) or {}
        config = header.get("config") or {}
        dialogues = run_dir / DIALOGUES_FILE
        n = sum(1 for line in dialogues.read_text(encoding="utf-8").splitlines() if line.strip()) \
            if dialogues.exists() else 0
        scores, superseded = run_scores(run_dir)
        panels = sorted(scores["panel"].astype(str).unique()) if not scores.empty else []
        method = (config.get("method") or {}).get("name") or "reference"
        dataset = (config.get("dataset") or {}).get("name") or "?"
        lines.append(f"{run_dir}  {header.get('status', '-')}  {method} on {dataset}: {n} dialogue(s)"
                     f"; panels: {', '.join(panels) or 'none'}")
        lines += [f"  WARNING: {note}" for note in superseded_note(superseded)]
    return lines

