"""``judge=task`` end to end on a real tiny run (tiny models, 1 MATH session, 2 turns): the
Original judged right after generation (``python -m somabench`` path; F agrees with itself on
every turn it answered), then a Surrogate run re-judged with ``python -m somabench.judge``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from somabench.config import compose
from somabench.judge import main as judge_main
from somabench.judges.panel import SCORES_FILE
from somabench.task import run_task


def _math_overrides(overrides: list[str]) -> list[str]:
    return [o for o in overrides if not o.startswith("judge=")] + [
        "dataset.tiny=true", "dataset.tasks=[math]", "generation.max_new_tokens=24"]


def _scores(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / SCORES_FILE).read_text().splitlines()]


@pytest.mark.slow
def test_task_panel_on_tiny_math_run(tmp_path: Path, tiny_cfg_overrides, tiny_assets,
                                     capsys: pytest.CaptureFixture) -> None:
    cfg = compose(_math_overrides(tiny_cfg_overrides) + ["method=original", "judge=task"])
    run_task(cfg)
    run_dir = Path(cfg.paths.output_root) / cfg.task_name / cfg.run_name
    rows = _scores(run_dir)
    assert {(r["metric"], r["turn"]) for r in rows} == {
        (m, t) for m in ("accuracy", "answer_agreement") for t in (0, 1)}
    assert all(r["panel"] == "task" and r["served_by"] == "F" for r in rows)
    accuracy = [r for r in rows if r["metric"] == "accuracy"]
    assert all(r["status"] in ("ok", "unparsed") for r in accuracy)  # gold exists for both turns
    assert all((r["score"] is None) == (r["status"] != "ok") for r in accuracy)
    agreement = [r for r in rows if r["metric"] == "answer_agreement" and r["status"] == "ok"]
    assert all(r["score"] == 1.0 for r in agreement)  # F vs itself

    cfg = compose(_math_overrides(tiny_cfg_overrides) + ["method=surrogate", "judge=none"])
    run_task(cfg)
    run_dir = Path(cfg.paths.output_root) / cfg.task_name / cfg.run_name
    assert judge_main([str(run_dir), "judge=task"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "answer_agreement" in out
    rows = _scores(run_dir)
    assert len(rows) == 4 and all(r["served_by"] == "G" for r in rows)
    assert all(r["status"] in ("ok", "unparsed", "skipped") for r in rows)
    assert all(json.loads(r["raw"])["target"] for r in rows if r["status"] == "ok")
