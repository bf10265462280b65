"""A results folder rebuilds itself: the report built from ``<results>/runs`` (slim copies of
the run dirs, report/export.py) writes the same tables as the report built from the outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from somabench.report.build import build_report
from somabench.report.collect import load_local


def _tables(out: Path) -> dict[str, str]:
    """Every table's CSV and markdown text, keyed by file name (source paths left out)."""
    files = {}
    for path in sorted([*out.glob("*.csv"), *out.glob("*.md")]):
        if path.name in ("runs.csv", "README.md"):
            continue
        files[path.name] = path.read_text(encoding="utf-8")
    return files


def test_results_folder_rebuilds_every_table(outputs, report_cfg, tmp_path) -> None:
    first = tmp_path / "results"
    build_report(load_local(outputs / "tiny_exp", report_cfg), report_cfg, first)
    runs = first / "runs"
    manifest = json.loads((runs / "MANIFEST.json").read_text())
    assert "rendered_prompt (emptied)" in manifest["dropped"]["records.jsonl"]
    # the references moved with the runs and are found by key, not by the original path
    assert (runs / "references").is_dir()
    header = json.loads(next(runs.rglob("run.json")).read_text())
    assert header["reference_dir"].startswith("references/")
    rows = [json.loads(x) for x in next(runs.rglob("records.jsonl")).read_text().splitlines()]
    assert rows and all(r["rendered_prompt"] == "" for r in rows)

    second = tmp_path / "rebuilt"
    rebuilt = load_local(runs, report_cfg)
    assert {r.kind for r in rebuilt.runs} == {"run", "reference"}
    build_report(rebuilt, report_cfg, second)
    a, b = _tables(first), _tables(second)
    assert a.keys() == b.keys() and len(a) >= 15
    for name in a:
        assert a[name] == b[name], name
    pd.testing.assert_frame_equal(pd.read_csv(first / "data" / "dialogues.csv").drop(columns=["run_id"], errors="ignore"),
                                  pd.read_csv(second / "data" / "dialogues.csv").drop(columns=["run_id"], errors="ignore"))
    # results.json: every table's cells with n and interval, each run's config and versions
    results = json.loads((first / "results.json").read_text())
    cell = next(c for c in results["tables"]["table1_similarity_tiny_p1"]["cells"]
                if c["row"] == "SOMA" and c["column"] == "MATH")
    assert cell["n"] == 2 and cell["mean"] == pytest.approx(88.333, abs=1e-3)
    assert "footer" in results["tables"]["table1_similarity_tiny_p1"]["meta"]
    assert any(r["kind"] == "run" and r["config"] for r in results["runs"].values())
    # the dialogue viewer reads the results folder too: every turn, the Original's answers
    from somabench.view import collect, write_view

    page = write_view([first])
    view = collect([first])
    n_turns = sum(len(turns) for turns in view.dialogues.values())
    assert n_turns == 10 and page.name == "view.html"  # 2 x 3 MATH + 2 x 2 MT-Bench turns
    assert all(t.original for turns in view.dialogues.values() for t in turns.values())
    # the rebuild reads its own folder and does not copy it again
    assert not (second / "runs").exists() or (second / "runs" / "MANIFEST.json").exists()
