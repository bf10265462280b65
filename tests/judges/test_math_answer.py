"""The ``math_answer`` judge kind in the ordinary panel (``judge=task``), on written run dirs:
accuracy vs gold, agreement vs the Original, skipped turns without gold, replies without a
final answer graded wrong (and recorded as not found), math-verify's second opinion on every
line, and agreement of F with itself = 100 %."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from somabench.config import compose
from somabench.judges.panel import SCORES_FILE, judge_run

from .conftest import base_overrides, write_run

MATH_ID = "mathmt-math500-counting_probability-02"  # bundled tiny: gold 12, 448/15625, 28
MR_ID = "mathmt-mtb101-MR-449"  # MT-Bench-101 MR dialogue: no gold answers


def _cfg(tmp_path: Path):
    return compose(base_overrides(tmp_path) + ["judge=task", "dataset.tiny=true"])


def _rows(run_dir: Path) -> dict[tuple[str, str, int], dict]:
    rows = [json.loads(x) for x in (run_dir / SCORES_FILE).read_text().splitlines()]
    return {(r["metric"], r["dialogue_id"], r["turn"]): r for r in rows}


def test_task_panel_scores_accuracy_and_agreement(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    run_dir = write_run(
        tmp_path, cfg=cfg,
        answers={MATH_ID: [r"So at most \boxed{12} points.", "I cannot solve this.",
                           r"The answer is $\frac{448}{15625}$.", r"\boxed{27}"],
                 MR_ID: ["15 paths", "28 segments"]},
        references={MATH_ID: ["The answer is 12.", r"\boxed{\frac{448}{15625}}",
                              "Not sure at all.", r"\boxed{27}"],
                    MR_ID: ["15", "28"]},
        served={MATH_ID: ["F", "G", "G", "G"], MR_ID: ["G", "G"]})
    objective = judge_run(cfg, run_dir)
    rows = _rows(run_dir)
    acc = {t: rows[("accuracy", MATH_ID, t)] for t in range(4)}
    assert [acc[t]["status"] for t in range(4)] == ["ok", "ok", "ok", "ok"]
    # turn 1 has no final answer: wrong; turn 2's gold is 28 (the method repeated turn 1's)
    assert [acc[t]["score"] for t in range(4)] == [1.0, 0.0, 0.0, 0.0]
    raws = {t: json.loads(acc[t]["raw"]) for t in range(4)}
    assert [raws[t]["found"] for t in range(4)] == [True, False, True, True]
    assert raws[1]["answer"] is None and "no final answer" in raws[1]["note"]
    assert [raws[t]["correct"] for t in range(4)] == [True, False, False, False]
    # the second opinion: math-verify on the same replies and golds
    assert [raws[t]["correct_math_verify"] for t in range(4)] == [True, False, False, False]
    assert raws[0]["math_verify_answer"] == "12" and raws[1]["math_verify_answer"] is None
    assert acc[0]["served_by"] == "F" and acc[0]["judge_kind"] == "math-answer"
    agree = {t: rows[("answer_agreement", MATH_ID, t)] for t in range(4)}
    assert [agree[t]["status"] for t in range(4)] == ["ok", "ok", "skipped", "ok"]
    assert [agree[t]["score"] for t in (0, 1, 3)] == [1.0, 0.0, 1.0]  # 3: same wrong answer as F
    assert json.loads(agree[3]["raw"])["correct_math_verify"] is True
    assert "Original's reply has no extractable final answer" in agree[2]["error"]
    for metric in ("accuracy", "answer_agreement"):
        for t in (0, 1):
            line = rows[(metric, MR_ID, t)]
            assert line["status"] == "skipped" and "no gold answers" in line["error"]
            assert line["score"] is None
    # objective = accuracy %: dialogue mean over the 4 graded turns (1, 0, 0, 0): no answer is wrong
    assert objective == pytest.approx(25.0, abs=1e-6)


def test_agreement_of_f_with_itself_is_100(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    replies = [r"\boxed{12}", r"we get $\boxed{\dfrac{448}{15625}}$", "so 27 in total",
               r"The final answer is $x=5$."]
    run_dir = write_run(tmp_path, cfg=cfg, method="original", answers={MATH_ID: replies},
                        references={MATH_ID: replies}, served={MATH_ID: ["F"] * 4})
    judge_run(cfg, run_dir)
    rows = _rows(run_dir)
    agree = [rows[("answer_agreement", MATH_ID, t)] for t in range(4)]
    assert all(r["status"] == "ok" and r["score"] == 1.0 for r in agree)
    accuracy = [rows[("accuracy", MATH_ID, t)]["score"] for t in range(4)]
    assert accuracy == [1.0, 1.0, 0.0, 0.0]


def test_dataset_without_gold_skips_with_reason(tmp_path: Path) -> None:
    from somabench.judges.math_answer import load_gold

    gold, reason = load_gold({"name": "mtbench", "gold_answers": None})
    assert gold == {} and "declares no gold answers" in reason
    cfg = compose(["dataset=mathmt", "dataset.tiny=true"])
    gold, reason = load_gold(dict(cfg.dataset))
    assert reason is None and gold[MATH_ID][:3] == ["12", r"\frac{448}{15625}", "28"]
    assert MR_ID not in gold


def test_run_made_before_gold_answers_were_declared(tmp_path: Path) -> None:
    """The run's dataset config lacks ``gold_answers``: the judge reads it from conf/dataset."""
    from omegaconf import open_dict

    cfg = _cfg(tmp_path)
    with open_dict(cfg):
        del cfg.dataset["gold_answers"]
    run_dir = write_run(tmp_path, cfg=cfg, answers={MATH_ID: [r"\boxed{12}"]},
                        references={MATH_ID: ["12"]})
    judge_run(cfg, run_dir)
    rows = _rows(run_dir)
    assert rows[("accuracy", MATH_ID, 0)]["score"] == 1.0


def test_without_last_number_fallback_a_cut_off_reply_is_wrong_and_not_found(tmp_path: Path) -> None:
    from omegaconf import open_dict

    cfg = _cfg(tmp_path)
    with open_dict(cfg):
        cfg.judge.judges.answer.last_number_fallback = False
    run_dir = write_run(tmp_path, cfg=cfg, answers={MATH_ID: ["Each pair meets in 2 points, so"]},
                        references={MATH_ID: [r"\boxed{12}"]})
    judge_run(cfg, run_dir)
    line = _rows(run_dir)[("accuracy", MATH_ID, 0)]
    assert line["status"] == "ok" and line["score"] == 0.0
    raw = json.loads(line["raw"])
    assert raw["found"] is False and "last_number_fallback is off" in raw["note"]


def test_gold_answers_declaration_changes_no_run_hash_or_reference() -> None:
    """Runs and references made before mathmt declared gold answers still resume and share."""
    from omegaconf import open_dict

    from somabench.reference import reference_key
    from somabench.rundir import config_hash

    cfg = compose(["dataset=mathmt"])
    older = cfg.copy()
    with open_dict(older):
        del older.dataset["gold_answers"]
    assert config_hash(cfg) == config_hash(older)
    assert reference_key(cfg) == reference_key(older)
