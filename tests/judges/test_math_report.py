"""Report of ``judge=task`` scores (issue 16): accuracy and agreement tables with CIs, the
Original's ceiling row, paired comparisons vs SOMA, answer-found share, the agreement of the two
graders (MATH equivalence and math-verify) in every table with the disagreements listed, and the
per-turn figure, built by the report hook from three written runs (Original, Surrogate, SOMA)
judged by the panel. A reply without a final answer counts 0 (the Original's "no idea")."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import open_dict

from somabench.config import compose
from somabench.judges.panel import judge_run

from .conftest import base_overrides, write_run

A = "mathmt-math500-counting_probability-02"  # gold: 12, 448/15625, 28, 1/3
B = "mathmt-math500-precalculus-06"  # gold: 1, 11 sqrt5 + 11, -41, 1 - 12i
GOLD = {A: ["12", r"\frac{448}{15625}", "28", r"\frac{1}{3}"],
        B: ["1", r"11 \sqrt{5} + 11", "-41", "1 - 12i"]}
ORIGINAL = {d: [rf"\boxed{{{g}}}" for g in GOLD[d][:3]] + ["no idea"] for d in GOLD}
# A turn 2: the last box is 28, but math-verify reads the first (27): the graders disagree
SURROGATE = {A: ["12", "1", r"First guess \boxed{27}, but correcting: \boxed{28}.", "3"],  # 1, 0, 1, 0 -> 50 %
             B: ["2", "no answer", "-41", "so 1-12i"]}  # 0, 0 (none found), 1, 0 (last number -12) -> 25 %
SOMA = {A: [*ORIGINAL[A][:2], "27", "1/3"],  # 1, 1, 0, 1 -> 75 %
        B: [*ORIGINAL[B][:2], "-41", r"\boxed{1-12i}"]}  # 1, 1, 1, 1 -> 100 %
SWITCH = [None, None, {"switched": True}, None]  # SOMA's G serves turns 2 and 3 after the switch


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from somabench.report.accuracy import add_task_artifacts
    from somabench.report.build import EXTRA_ARTIFACTS, ReportResult
    from somabench.report.collect import load_local

    tmp = tmp_path_factory.mktemp("math_report")
    cfg = compose(base_overrides(tmp) + ["judge=task", "dataset.tiny=true"])
    for method, answers, served, gates in (
            ("original", ORIGINAL, ["F"] * 4, [None] * 4),
            ("surrogate", SURROGATE, ["G"] * 4, [None] * 4),
            ("soma", SOMA, ["F", "F", "G", "G"], SWITCH)):
        run_cfg = cfg.copy()
        with open_dict(run_cfg):
            run_cfg.method.name = method
        run_dir = write_run(tmp, cfg=run_cfg, method=method, answers=answers,
                            references=ORIGINAL if method == "original" else {},
                            served={d: served for d in GOLD}, gates={d: gates for d in GOLD})
        judge_run(run_cfg, run_dir)
    report_cfg = compose(["report=default"]).report
    out = tmp / "report"
    # the hook build_report calls for every family (the rest of the report is not under test)
    assert "somabench.report.accuracy:add_task_artifacts" in EXTRA_ARTIFACTS
    result = ReportResult(out_dir=out)
    add_task_artifacts(result, load_local(tmp / "outputs" / "run", report_cfg), report_cfg,
                       "tiny", "tiny", out)
    assert not result.skipped, result.skipped
    return out


def _cells(path: Path) -> dict[str, dict]:
    frame = pd.read_csv(path)
    return {r["row"]: r for r in frame.to_dict("records")}


def test_accuracy_table_has_ceiling_row_and_cis(report: Path) -> None:
    cells = _cells(report / "accuracy_tiny_task.csv")
    assert cells["Original"]["mean"] == pytest.approx(75.0)  # the ceiling row; "no idea" is 0
    assert cells["Surrogate"]["mean"] == pytest.approx((50.0 + 25.0) / 2)
    assert cells["SOMA"]["mean"] == pytest.approx((75.0 + 100.0) / 2)
    assert all(c["n"] == 2 for c in cells.values())
    lo, hi = cells["SOMA"]["ci_lo"], cells["SOMA"]["ci_hi"]  # no CI when n is below the minimum
    assert (math.isnan(lo) and math.isnan(hi)) or 75.0 <= lo <= hi <= 100.0
    md = (report / "accuracy_tiny_task.md").read_text()
    assert "95% " in md and "CI" in md and "ceiling" in md and "Excluded rows: 0." in md


def test_post_switch_tables_use_somas_post_switch_turns_for_every_method(report: Path) -> None:
    cells = _cells(report / "accuracy_post_switch_tiny_task.csv")
    # turns 2-3: Original (A: 1, 0; B: 1, 0: "no idea" is wrong), Surrogate (A: 1, 0; B: 1, 0),
    # SOMA (A: 0, 1; B: 1, 1)
    assert cells["Original"]["mean"] == pytest.approx(50.0)
    assert cells["Surrogate"]["mean"] == pytest.approx(50.0)
    assert cells["SOMA"]["mean"] == pytest.approx(75.0)
    assert "the turns SOMA served after its switch" in \
        (report / "accuracy_post_switch_tiny_task.md").read_text()


def test_agreement_table_original_is_100_and_paired_vs_soma(report: Path) -> None:
    cells = _cells(report / "answer_agreement_tiny_task.csv")
    assert cells["Original"]["mean"] == pytest.approx(100.0)  # F vs itself
    paired = (report / "answer_agreement_vs_soma_tiny_task.md").read_text()
    assert "Surrogate" in paired and "Original" in paired and "p " in paired
    paired_acc = pd.read_csv(report / "accuracy_vs_soma_tiny_task.csv")
    surrogate = paired_acc[(paired_acc["row"] == "Surrogate") & (paired_acc["column"] == "MATH")]
    assert surrogate["diff"].iloc[0] == pytest.approx((50.0 - 75.0 + 25.0 - 100.0) / 2)


def test_answer_found_and_per_turn_figure(report: Path) -> None:
    found = _cells(report / "answer_found_tiny_task.csv")
    assert found["Original"]["mean"] == pytest.approx(75.0)  # "no idea" on turn 3, both dialogues
    assert found["Surrogate"]["mean"] == pytest.approx((100.0 + 75.0) / 2)
    assert (report / "fig_accuracy_per_turn_tiny_task.png").exists()
    points = pd.read_csv(report / "fig_accuracy_per_turn_tiny_task.csv")
    soma = points[points["label"] == "SOMA"].set_index("turn")
    assert soma.loc[3, "mean"] == pytest.approx(50.0) and soma.loc[3, "g_share"] == 100.0
    assert soma.loc[1, "g_share"] == 0.0


TABLES = ["accuracy_tiny_task", "accuracy_post_switch_tiny_task", "answer_agreement_tiny_task",
          "answer_agreement_post_switch_tiny_task", "answer_found_tiny_task"]
PAIRED = ["accuracy_vs_soma_tiny_task", "accuracy_post_switch_vs_soma_tiny_task",
          "answer_agreement_vs_soma_tiny_task", "answer_agreement_post_switch_vs_soma_tiny_task"]


def test_every_accuracy_table_states_grader_agreement(report: Path) -> None:
    """23 of 24 accuracy lines agree (Surrogate's two-box reply is the exception)."""
    acc = (report / "accuracy_tiny_task.md").read_text()
    assert ("agree on 95.8 % of 24 graded turns (Original 100.0 % (n=8), Surrogate 87.5 % (n=8), "
            "SOMA 100.0 % (n=8)); 1 disagreement(s) in grader_disagreements_tiny_task.csv") in acc
    assert "Final answer found" in acc and "Surrogate 87.5 % (n=8)" in acc
    for name in [*TABLES, *PAIRED]:
        for ext in ("md", "tex"):
            text = (report / f"{name}.{ext}").read_text()
            assert "math-verify" in text and "agree on" in text, (name, ext)
    # post-switch: only turns 2-3, where the disagreement (turn 2) lies
    post = (report / "accuracy_post_switch_tiny_task.md").read_text()
    assert "agree on 91.7 % of 12 graded turns" in post


def test_disagreements_are_listed_and_agreement_tabled(report: Path) -> None:
    rows = pd.read_csv(report / "grader_disagreements_tiny_task.csv",
                       dtype={"answer": str, "target": str, "math_verify_answer": str})
    assert list(rows["metric"]) == ["accuracy", "answer_agreement"]
    assert set(rows["label"]) == {"Surrogate"} and set(rows["turn"]) == {2}
    assert set(rows["dialogue_id"]) == {A} and list(rows["answer"]) == ["28", "28"]
    assert list(rows["grader_a_math_equiv"]) == [True, True]
    assert list(rows["grader_b_math_verify"]) == [False, False]
    assert list(rows["target"]) == ["28", "28"]
    cells = _cells(report / "grader_agreement_tiny_task.csv")
    assert cells["Original"]["mean"] == pytest.approx(100.0)
    # Surrogate: A 5 of 7 lines agree (4 accuracy + 3 agreement: the Original's turn 3 has no
    # answer to agree with; turn 2 differs on both), B 7 of 7
    assert cells["Surrogate"]["mean"] == pytest.approx((500 / 7 + 100.0) / 2)
