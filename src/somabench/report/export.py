"""Slim copies of a report's run dirs under ``<results>/runs/``: the folder rebuilds itself.

Why: a committed table is only auditable if the numbers under it are committed too. Every
table, figure, README count and the dialogue viewer read run dirs (records, dialogue records,
score lines with their panel fingerprint, run.json, judge.json, the Original's reference), so
the results folder keeps those, minus what is large and derivable:

* ``records.jsonl``: ``rendered_prompt`` emptied (the chat template applied to messages the
  record keeps: the user turn, the context summary, who served);
* ``scores.jsonl``: the judge request ``messages`` dropped (the prompt file hash is in the
  panel fingerprint; the verdict, its raw output and reason stay);
* references: only the dialogues the report's runs served.

``python -m somabench report results/<study>/runs --out <dir>`` rebuilds every table from the
folder alone (tests/report/test_report_rebuild.py diffs the rebuild against the original), and
``python -m somabench view results/<study>/runs`` renders its dialogues.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from somabench.rundir import (
    DIALOGUES_FILE,
    JUDGE_HEADER,
    REFERENCE_META,
    SCORES_FILE,
    TURNS_FILE,
    read_jsonl_rows,
    write_header,
)

RUNS_DIR = "runs"
MANIFEST = "MANIFEST.json"
DROPPED = {TURNS_FILE: ["rendered_prompt (emptied)"], SCORES_FILE: ["messages"]}


def _lines(path: Path) -> list[dict[str, Any]]:
    """The run's lines, read like the report reads them (a torn last line of a killed run
    is left out, as it was there)."""
    return read_jsonl_rows(path)[0]


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows),
                    encoding="utf-8")


def _slim_turn(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "rendered_prompt": ""} if row.get("kind", "turn") == "turn" else row


def _slim_score(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "messages"}


def export_runs(data: Any, out_dir: Path) -> Path | None:
    """Write ``<out_dir>/runs/`` for the report's runs; None when the report was built from
    that folder itself (nothing to copy)."""
    dest_root = out_dir / RUNS_DIR
    if any(dest_root.resolve() in (r.path.resolve(), *r.path.resolve().parents) for r in data.runs):
        return None
    if dest_root.exists():
        shutil.rmtree(dest_root)
    used: dict[str, set[str]] = {}
    if not data.dialogues.empty:
        for key, part in data.dialogues.groupby("run_key"):
            used[str(key)] = set(part["dialogue_id"].astype(str))
    refs_used: dict[Path, set[str]] = {}
    for run in data.runs:
        if run.kind == "run" and run.reference_dir is not None:
            refs_used.setdefault(run.reference_dir.resolve(), set()).update(used.get(run.key, set()))
    for run in data.runs:
        src = run.path
        if run.kind == "reference":
            dest = dest_root / "references" / src.name
            keep = refs_used.get(src.resolve(), set()) | used.get(run.key, set())
        else:
            dest = dest_root / run.key
            keep = None
        dest.mkdir(parents=True, exist_ok=True)
        for name in (JUDGE_HEADER, REFERENCE_META):
            if (src / name).exists():
                shutil.copyfile(src / name, dest / name)
        header = run.header
        if header is not None:
            if run.reference_dir is not None:  # found by key next to the copies, not on this disk
                header = replace(header, reference_dir=f"references/{run.reference_dir.name}")
            write_header(dest, header)
        turns = [_slim_turn(r) for r in _lines(src / TURNS_FILE)]
        dialogues = _lines(src / DIALOGUES_FILE)
        if keep is not None:
            turns = [r for r in turns if str(r.get("dialogue_id")) in keep]
            dialogues = [r for r in dialogues if str(r.get("dialogue_id")) in keep]
        _write(dest / TURNS_FILE, turns)
        _write(dest / DIALOGUES_FILE, dialogues)
        scores = _lines(src / SCORES_FILE)
        if scores:
            _write(dest / SCORES_FILE, [_slim_score(r) for r in scores])
    (dest_root / MANIFEST).write_text(json.dumps({
        "what": "slim copies of the run dirs this report was built from (somabench.report.export)",
        "dropped": DROPPED, "runs": sorted(r.key for r in data.runs if r.kind == "run"),
        "rebuild": "python -m somabench report <this folder> --out <dir>",
    }, indent=2) + "\n", encoding="utf-8")
    return dest_root


__all__ = ["RUNS_DIR", "export_runs"]


RESULTS_JSON = "results.json"


def write_results_json(data: Any, out_dir: Path) -> Path:
    """``results.json``: the study in one file, in the spirit of lm-evaluation-harness's output:
    per run its config hash, config, package versions and git commit; per table every cell
    (mean, n, interval or why there is none) with the table's title, metric and footnote."""
    import pandas as pd

    runs = {}
    for run in data.runs:
        header = run.header
        runs[run.key] = {"kind": run.kind, "method": run.method, "dataset": run.dataset,
                         "family": run.family, "status": run.status,
                         "config_hash": header.config_hash if header else None,
                         "git": header.git if header else None,
                         "packages": header.packages if header else None, "config": run.config}
    tables = {}
    for meta_path in sorted(out_dir.glob("*.meta.json")):
        stem = meta_path.name.removesuffix(".meta.json")
        csv = out_dir / f"{stem}.csv"
        if not csv.exists():
            continue
        frame = pd.read_csv(csv)
        cells = json.loads(frame.to_json(orient="records"))
        tables[stem] = {"meta": json.loads(meta_path.read_text(encoding="utf-8")), "cells": cells}
    path = out_dir / RESULTS_JSON
    path.write_text(json.dumps({"source": data.source, "experiment": data.experiment(),
                                "runs": runs, "tables": tables}, indent=1, ensure_ascii=False,
                               default=str) + "\n", encoding="utf-8")
    return path
