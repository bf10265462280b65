"""One panel, one version: re-judging a run under the same panel name after its judges changed
reports the new panel's number only, flags the mix, and never pays twice for a finished call.

Judges are real LLM judges over HTTP against scripted loopback servers (fixed replies), so the
expected numbers are known by hand: the old judge says 0.9, the new one 0.5.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.helpers.servers import serve_in_thread, server_stats
from tests.judges.conftest import panel_cfg

from somabench.config import compose
from somabench.judges.panel import SCORES_FILE, judge_run
from somabench.report.collect import load_local, run_scores

ANSWERS = {"d1": ["four", "twelve"], "d2": ["six", "ten"]}
REFS = {"d1": ["4", "12"], "d2": ["6", "10"]}


def _judge(server, name: str) -> dict:  # noqa: ANN001
    return {name: {"kind": "llm", "model": server.model_id, "base_url": server.base_url,
                   "api_key_env": None}}


def _calls(server) -> int:  # noqa: ANN001
    return int(server_stats(server)["chat_requests"])


def _lines(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / SCORES_FILE).read_text().splitlines()]


def test_rejudge_same_panel_name_with_changed_judge_reports_new_judge_only(tmp_path: Path, make_run) -> None:
    run_dir = make_run(answers=ANSWERS, references=REFS)
    with serve_in_thread(default=_reply("0.9")) as old, serve_in_thread(default=_reply("0.5")) as new:
        assert judge_run(panel_cfg(tmp_path, judges=_judge(old, "old")), run_dir) == pytest.approx(90.0)
        first = {r["panel_fingerprint"] for r in _lines(run_dir)}
        # same panel name (paper), the judge replaced: 50, not (90 + 50) / 2 = 70
        objective = judge_run(panel_cfg(tmp_path, judges=_judge(new, "new")), run_dir)
        assert objective == pytest.approx(50.0)
        assert _calls(new) == 4
        # resume: nothing of the current version is judged again
        assert judge_run(panel_cfg(tmp_path, judges=_judge(new, "new")), run_dir) == pytest.approx(50.0)
        assert _calls(new) == 4 and _calls(old) == 4
    lines = _lines(run_dir)
    assert len(lines) == 8 and {r["panel"] for r in lines} == {"paper"}  # old lines kept for audit
    fingerprints = {r["panel_fingerprint"] for r in lines}
    assert len(fingerprints) == 2 and len(first) == 1 and first < fingerprints
    header = json.loads((run_dir / "judge.json").read_text())
    assert header["panels"]["paper"]["fingerprint"] == header["fingerprint"] not in first
    assert set(header["fingerprint_of"]) == {"new"}
    # the run's own summary: the new judge only, and the mix is said
    summary = (run_dir / "judge_summary.csv").read_text()
    assert "old" not in summary.split("\n", 1)[1] and "50.0" in (run_dir / "judge_summary.md").read_text()
    assert "NOT aggregated" in (run_dir / "judge_summary.md").read_text()
    # the report's loader: current lines only, the earlier version named in its warnings
    current, superseded = run_scores(run_dir)
    assert set(current["judge"]) == {"new"} and current["score_norm"].tolist() == [0.5] * 4
    assert superseded["n_lines"].tolist() == [4]
    data = load_local(run_dir.parents[3], compose().report)
    assert set(data.scores["judge"]) == {"new"}
    assert any("several versions" in w and "NOT aggregated" in w for w in data.warnings)
    # `somabench ls runs` says it too
    from somabench.runs_list import run_lines

    listed = run_lines(run_dir)
    assert "panels: paper" in listed[0] and any("WARNING" in x and "NOT aggregated" in x for x in listed)


def test_adding_a_judge_carries_the_unchanged_judges_lines_over(tmp_path: Path, make_run) -> None:
    """The fingerprint changes when a judge joins; the judge already there made exactly the same
    requests before, so its lines move to the new version without a call."""
    run_dir = make_run(answers=ANSWERS, references=REFS)
    with serve_in_thread(default=_reply("0.9")) as old, serve_in_thread(default=_reply("0.5")) as new:
        cfg = panel_cfg(tmp_path, judges=_judge(old, "old"))
        with_cache_off(cfg)
        judge_run(cfg, run_dir)
        both = panel_cfg(tmp_path, judges={**_judge(old, "old"), **_judge(new, "new")})
        with_cache_off(both)
        assert judge_run(both, run_dir) == pytest.approx(70.0)  # one version, two judges: 0.9 and 0.5
        assert _calls(old) == 4 and _calls(new) == 4
    current, superseded = run_scores(run_dir)
    assert sorted(current["judge"].unique()) == ["new", "old"] and len(current) == 8
    assert superseded["n_lines"].tolist() == [4]  # the first version's lines, kept apart


def test_lines_without_a_panel_are_kept_apart(tmp_path: Path, make_run) -> None:
    run_dir = make_run(answers=ANSWERS, references=REFS)
    with serve_in_thread(default=_reply("0.5")) as server:
        judge_run(panel_cfg(tmp_path, judges=_judge(server, "j")), run_dir)
    legacy = {**_lines(run_dir)[0], "score_norm": 1.0}
    for key in ("panel", "panel_fingerprint"):
        legacy.pop(key)
    with (run_dir / SCORES_FILE).open("a") as fh:
        fh.write(json.dumps(legacy) + "\n")
    current, _ = run_scores(run_dir)
    assert sorted(current["panel"].unique()) == ["paper", "unnamed"]
    assert current.loc[current["panel"] == "paper", "score_norm"].tolist() == [0.5] * 4


def test_mixed_versions_are_refused_by_the_aggregate() -> None:
    from somabench.metrics import score_frame, score_per_dialogue

    rows = [{"run_id": "r", "dialogue_id": "d", "turn": 0, "panel": "p", "panel_fingerprint": fp,
             "judge": j, "prompt_id": "similarity_v1", "status": "ok", "score_norm": s}
            for fp, j, s in (("a", "old", 0.9), ("b", "new", 0.5))]
    with pytest.raises(ValueError, match="several versions"):
        score_per_dialogue(score_frame(rows), panel="p", metric="similarity", by=["run_id", "dialogue_id"])


def _reply(text: str):  # noqa: ANN202
    from somabench.testing.scripted import Behavior

    return Behavior.reply(text)


def with_cache_off(cfg) -> None:  # noqa: ANN001
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.judge.cache = {"enabled": False}
