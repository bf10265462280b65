"""``judge=task`` end to end on real tiny runs (tiny models, 1 MATH session, 2 turns):

1. a Surrogate run on an MR dialogue with the embedding proxy: the shared Original reference
   now holds that dialogue only;
2. a Surrogate run on a MATH session with ``judge=none``, re-judged with
   ``python -m somabench judge <run dir> judge=task``: the reference is completed with the
   session (every agreement line has the Original's answer);
3. the Original on the same session judged right after generation: F agrees with itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from somabench.commands.rejudge import main as judge_main
from somabench.config import compose
from somabench.judges.panel import SCORES_FILE
from somabench.task import run_task


def _overrides(overrides: list[str], tasks: str, method: str, judge: str) -> list[str]:
    return [o for o in overrides if not o.startswith("judge=")] + [
        "dataset.tiny=true", f"dataset.tasks=[{tasks}]", "generation.max_new_tokens=24",
        f"method={method}", f"judge={judge}"]


def _run(overrides: list[str]) -> Path:
    cfg = compose(overrides)
    run_task(cfg)
    return Path(cfg.paths.output_root) / cfg.task_name / cfg.run_name


def _scores(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / SCORES_FILE).read_text().splitlines()]


@pytest.mark.slow
def test_task_panel_on_tiny_math_runs(tmp_path: Path, tiny_cfg_overrides, tiny_assets,
                                      capsys: pytest.CaptureFixture) -> None:
    _run(_overrides(tiny_cfg_overrides, "MR", "surrogate", "embedding"))

    run_dir = _run(_overrides(tiny_cfg_overrides, "math", "surrogate", "none") +
                   [f"task_name=math_{tmp_path.name}"])
    assert judge_main([str(run_dir), "judge=task"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "answer_agreement" in out
    rows = _scores(run_dir)
    assert len(rows) == 4 and all(r["served_by"] == "G" for r in rows)
    assert all(r["status"] in ("ok", "unparsed", "skipped") for r in rows)
    assert not any("no Original answer" in (r["error"] or "") for r in rows)  # reference completed
    assert all(json.loads(r["raw"])["target"] for r in rows if r["status"] == "ok")

    run_dir = _run(_overrides(tiny_cfg_overrides, "math", "original", "task"))
    rows = _scores(run_dir)
    assert {(r["metric"], r["turn"]) for r in rows} == {
        (m, t) for m in ("accuracy", "answer_agreement") for t in (0, 1)}
    assert all(r["panel"] == "task" and r["served_by"] == "F" for r in rows)
    accuracy = [r for r in rows if r["metric"] == "accuracy"]
    assert all(r["status"] in ("ok", "unparsed") for r in accuracy)  # gold exists for both turns
    assert all((r["score"] is None) == (r["status"] != "ok") for r in accuracy)
    agreement = [r for r in rows if r["metric"] == "answer_agreement" and r["status"] == "ok"]
    assert all(r["score"] == 1.0 for r in agreement)  # F vs itself
