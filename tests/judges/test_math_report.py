"""Report of ``judge=task`` scores (issue 16): accuracy and agreement tables with CIs, the
Original's ceiling row, paired comparisons vs SOMA, answer-found share and the per-turn figure,
built by the report hook from three written runs (Original, Surrogate, SOMA) judged by the panel."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from omegaconf import open_dict
from somabench.judges.panel import judge_run

from somabench.config import compose

from .conftest import base_overrides, write_run

A = "mathmt-math500-counting_probability-02"  # gold: 12, 448/15625, 28, 1/3
B = "mathmt-math500-precalculus-06"  # gold: 1, 11 sqrt5 + 11, -41, 1 - 12i
GOLD = {A: ["12", r"\frac{448}{15625}", "28", r"\frac{1}{3}"],
        B: ["1", r"11 \sqrt{5} + 11", "-41", "1 - 12i"]}
ORIGINAL = {d: [rf"\boxed{{{g}}}" for g in GOLD[d][:3]] + ["no idea"] for d in GOLD}
SURROGATE = {A: ["12", "1", "28", "3"],  # 1, 0, 1, 0 -> 50 %
             B: ["2", "no answer", "-41", "so 1-12i"]}  # 0, unparsed, 1, 0 (last number -12) -> 33.3 %
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
    frame = pd.read_csv(path, comment="#")
    return {r["row"]: r for r in frame.to_dict("records")}


def test_accuracy_table_has_ceiling_row_and_cis(report: Path) -> None:
    cells = _cells(report / "accuracy_tiny_task.csv")
    assert cells["Original"]["mean"] == pytest.approx(100.0)  # the ceiling row
    assert cells["Surrogate"]["mean"] == pytest.approx((50.0 + 100 / 3) / 2)
    assert cells["SOMA"]["mean"] == pytest.approx((75.0 + 100.0) / 2)
    assert all(c["n"] == 2 for c in cells.values())
    lo, hi = cells["SOMA"]["ci_lo"], cells["SOMA"]["ci_hi"]
    assert lo == pytest.approx(75.0) and hi == pytest.approx(100.0)  # bootstrap over 2 dialogues
    md = (report / "accuracy_tiny_task.md").read_text()
    assert "95% bootstrap CI" in md and "ceiling" in md and "Excluded rows: 3 (3 unparsed)" in md


def test_post_switch_tables_use_somas_post_switch_turns_for_every_method(report: Path) -> None:
    cells = _cells(report / "accuracy_post_switch_tiny_task.csv")
    # turns 2-3: Original (A: 1, unparsed; B: 1, unparsed), Surrogate (A: 1, 0; B: 1, 0),
    # SOMA (A: 0, 1; B: 1, 1)
    assert cells["Original"]["mean"] == pytest.approx(100.0)
    assert cells["Surrogate"]["mean"] == pytest.approx(50.0)
    assert cells["SOMA"]["mean"] == pytest.approx(75.0)
    assert "the turns SOMA served after its switch" in \
        (report / "accuracy_post_switch_tiny_task.md").read_text()


def test_agreement_table_original_is_100_and_paired_vs_soma(report: Path) -> None:
    cells = _cells(report / "answer_agreement_tiny_task.csv")
    assert cells["Original"]["mean"] == pytest.approx(100.0)  # F vs itself
    paired = (report / "answer_agreement_vs_soma_tiny_task.md").read_text()
    assert "Surrogate" in paired and "Original" in paired and "p " in paired
    paired_acc = pd.read_csv(report / "accuracy_vs_soma_tiny_task.csv", comment="#")
    surrogate = paired_acc[(paired_acc["row"] == "Surrogate") & (paired_acc["column"] == "MATH")]
    assert surrogate["diff"].iloc[0] == pytest.approx((50.0 - 75.0 + 100 / 3 - 100.0) / 2)


def test_answer_found_and_per_turn_figure(report: Path) -> None:
    found = _cells(report / "answer_found_tiny_task.csv")
    assert found["Original"]["mean"] == pytest.approx(75.0)  # "no idea" on turn 3, both dialogues
    assert found["Surrogate"]["mean"] == pytest.approx((100.0 + 75.0) / 2)
    assert (report / "fig_accuracy_per_turn_tiny_task.png").exists()
    points = pd.read_csv(report / "fig_accuracy_per_turn_tiny_task.csv")
    soma = points[points["label"] == "SOMA"].set_index("turn")
    assert soma.loc[3, "mean"] == pytest.approx(50.0) and soma.loc[3, "g_share"] == 100.0
    assert soma.loc[1, "g_share"] == 0.0
