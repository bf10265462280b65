"""Offline panels: the embedding proxy (real all-MiniLM-L6-v2) and local hf judges (real tiny
models) on run directories; item building (post-switch, context, skips)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import open_dict
from tests.judges.conftest import base_overrides

from somabench.config import compose
from somabench.judges.panel import SCORES_FILE, build_items, judge_run

SWITCH = {"switched": True, "score": 0.9}
NO_SWITCH = {"switched": False, "score": 0.1}


def scores(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / SCORES_FILE).read_text().splitlines()]


def test_items_post_switch_context_and_references(make_run) -> None:
    run_dir = make_run(
        answers={"d1": ["a0", "a1", "a2", "a3"], "d2": ["b0", "b1"]},
        references={"d1": ["r0", "r1", "r2", "r3"], "d2": ["s0", "s1"]},
        method="soma",
        gates={"d1": [NO_SWITCH, SWITCH, None, {"switched": True, "rollback": True}],
               "d2": [NO_SWITCH, NO_SWITCH]},
        served={"d1": ["F", "G", "G+lora", "F"], "d2": ["F", "F"]},
    )
    items = {(i.dialogue_id, i.turn): i for i in build_items(run_dir, run_dir.parents[3]
                                                              / "references" / "mathmt-tiny-testref")}
    # G serves after the switch (gate None later still counts); a rollback to F ends it
    assert [items[("d1", t)].post_switch for t in range(4)] == [False, True, True, False]
    assert not any(items[("d2", t)].post_switch for t in range(2))
    assert items[("d1", 2)].reference == "r2" and items[("d1", 2)].candidate == "a2"
    assert items[("d1", 2)].context == [
        ("question 0 of d1: what is 0+0?", "a0"), ("question 1 of d1: what is 1+1?", "a1")]


def test_embedding_panel_scores_a_run(tmp_path: Path, make_run) -> None:
    run_dir = make_run(
        answers={"d1": ["The answer is 4.", "It is twelve."], "d2": ["Paris", "boom"]},
        references={"d1": ["2 + 2 = 4", "3 x 4 = 12"], "d2": ["The capital is Paris."]},
        statuses={"d2": ["ok", "api_error"]},
        gates={"d1": [NO_SWITCH, SWITCH]},
    )
    cfg = compose(base_overrides(tmp_path) + ["judge=embedding"])
    objective = judge_run(cfg, run_dir)
    rows = {(r["dialogue_id"], r["turn"]): r for r in scores(run_dir)}
    assert len(rows) == 4
    skipped = rows[("d2", 1)]
    assert skipped["status"] == "skipped" and "api_error" in skipped["error"]
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == 3 and all(r["judge_kind"] == "embedding-proxy" for r in ok)
    assert all(r["prompt_id"] == "embedding_cosine_v1" and r["metric"] == "similarity" for r in ok)
    assert rows[("d1", 1)]["post_switch"] is True and rows[("d1", 0)]["post_switch"] is False
    # the number is the cosine of the real encoder's unit vectors
    from sentence_transformers import SentenceTransformer

    from somabench import assets

    model = SentenceTransformer(str(assets.resolve("all-minilm-l6-v2")), device="cpu")
    vecs = model.encode(["The answer is 4.", "2 + 2 = 4"], normalize_embeddings=True)
    assert rows[("d1", 0)]["score"] == pytest.approx(float(np.dot(vecs[0], vecs[1])), abs=1e-4)
    d1 = (rows[("d1", 0)]["score_norm"] + rows[("d1", 1)]["score_norm"]) / 2
    assert objective == pytest.approx(100 * (d1 + rows[("d2", 0)]["score_norm"]) / 2, abs=1e-3)
    md = (run_dir / "judge_summary.md").read_text()
    assert "embedding-proxy" in md and "post_switch" in md


def test_missing_reference_is_skipped_not_scored(tmp_path: Path, make_run) -> None:
    run_dir = make_run(answers={"d1": ["x", "y"]}, references={"d1": ["only turn 0"]})
    judge_run(compose(base_overrides(tmp_path) + ["judge=embedding"]), run_dir)
    rows = {r["turn"]: r for r in scores(run_dir)}
    assert rows[0]["status"] == "ok"
    assert rows[1]["status"] == "skipped" and "no Original answer" in rows[1]["error"]
    assert rows[1]["score"] is None


def local_cfg(tmp_path: Path, judges: list[str]):  # noqa: ANN201
    cfg = compose(base_overrides(tmp_path) + ["judge=local"])
    with open_dict(cfg):
        cfg.judge.judges = {k: v for k, v in cfg.judge.judges.items() if k in judges}
    return cfg


@pytest.mark.slow
def test_local_smollm2_judge_in_process(tmp_path: Path, make_run) -> None:
    """A real local model as judge: it either gives a valid number or is recorded unparsed
    (SmolLM2-135M usually rambles), with exact token counts; a rerun is fully cached."""
    run_dir = make_run(answers={"d1": ["4"]}, references={"d1": ["4"]})
    cfg = local_cfg(tmp_path, ["smollm2_135m"])
    judge_run(cfg, run_dir)
    [row] = scores(run_dir)
    assert row["judge_kind"] == "local" and row["status"] in ("ok", "unparsed", "truncated")
    assert row["finish_reason"] in ("stop", "length") and row["max_tokens"] is not None
    assert row["raw"] is not None and row["tokens"]["prompt"] > 200
    assert row["attempts"] in (1, 2) and not row["cached"]
    (run_dir / SCORES_FILE).unlink()
    judge_run(cfg, run_dir)
    [again] = scores(run_dir)
    if row["status"] == "truncated":  # cut off by max_tokens: never cached, asked again (greedy: same)
        assert not again["cached"] and again["raw"] == row["raw"] and again["status"] == "truncated"
    else:
        assert again["cached"] and again["attempts"] == 0 and again["raw"] == row["raw"]


def test_preflight_names_a_missing_local_model_before_any_work(tmp_path: Path, make_run) -> None:
    from somabench.judges.base import JudgeError

    run_dir = make_run(answers={"d1": ["4"]}, references={"d1": ["4"]})
    cfg = compose(base_overrides(tmp_path) + ["judge=local",
                                              f"paths.cache_dir={tmp_path / 'no-models'}"])
    with pytest.raises(JudgeError, match="python -m somabench assets fetch"):
        judge_run(cfg, run_dir)
    assert not (run_dir / SCORES_FILE).exists()


def test_panel_config_errors_are_explicit(tmp_path: Path, make_run) -> None:
    from somabench.judges.base import JudgeError

    run_dir = make_run(answers={"d1": ["4"]}, references={"d1": ["4"]})
    cfg = compose(base_overrides(tmp_path) + ["judge=embedding"])
    with open_dict(cfg):
        cfg.judge.concurency = 3
    with pytest.raises(JudgeError, match="unknown key"):
        judge_run(cfg, run_dir)
    cfg = compose(base_overrides(tmp_path) + ["judge=embedding"])
    with open_dict(cfg):
        cfg.judge.judges.minilm.kind = "rouge"
    with pytest.raises(JudgeError, match=r"kind=.rouge. must be one of embedding \| llm \| local"):
        judge_run(cfg, run_dir)
