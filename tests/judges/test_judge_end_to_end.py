"""A tiny real run (tiny models, 1 dialogue, 2 turns) judged offline end to end: the embedding
proxy right after generation (``python -m somabench`` path), then a re-judge with the local
panel of three real offline models (``python -m somabench judge`` path)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from somabench.commands.rejudge import main as judge_main
from somabench.config import compose
from somabench.judges.panel import SCORES_FILE
from somabench.task import run_task


@pytest.mark.slow
def test_tiny_run_embedding_then_local_panel(tmp_path: Path, tiny_cfg_overrides, tiny_assets,
                                             local_judge_assets, capsys: pytest.CaptureFixture) -> None:
    cfg = compose([o for o in tiny_cfg_overrides if not o.startswith("judge=")]
                  + ["method=surrogate", "judge=embedding"])
    objective = run_task(cfg)["sim/judge_mean"]  # the task returns its metrics
    run_dir = Path(cfg.paths.output_root) / cfg.task_name / cfg.run_name
    rows = [json.loads(x) for x in (run_dir / SCORES_FILE).read_text().splitlines()]
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    assert objective == pytest.approx(100 * sum(r["score_norm"] for r in rows) / 2, abs=1e-3)

    assert judge_main([str(run_dir), "judge=local"]) == 0
    out = capsys.readouterr().out
    assert "panel:local" in out
    rows = [json.loads(x) for x in (run_dir / SCORES_FILE).read_text().splitlines()]
    local = [r for r in rows if r["panel"] == "local"]
    assert {r["judge"] for r in local} == {"qwen_coder_1_5b", "qwen_coder_0_5b", "smollm2_135m"}
    # unparsed or, when a reply hit max_tokens, truncated (bf16 and fp32 machines decode
    # differently): recorded with the reply, never scored
    assert len(local) == 6 and all(r["status"] in ("ok", "unparsed", "truncated") for r in local)
    assert all(r["raw"] is not None for r in local if r["status"] != "ok")
    assert all((r["score"] is None) == (r["status"] != "ok") for r in local)
    assert sum(r["status"] == "ok" for r in local) >= 2  # the Qwen judges follow the format
    # the embedding lines of the first panel are kept next to the local ones
    assert sum(r["panel"] == "embedding" for r in rows) == 2
    summary = (run_dir / "judge_summary.csv").read_text()
    assert "panel:local" in summary and "smollm2_135m" in summary
