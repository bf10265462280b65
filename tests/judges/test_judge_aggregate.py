"""Aggregation math against hand-computed values."""

from __future__ import annotations

import math

import pytest

from somabench.judges.aggregate import (
    agreement_table,
    krippendorff_alpha_interval,
    metrics_from,
    scores_frame,
    similarity_table,
)

N = None


def test_alpha_hand_computed_two_judges_three_turns() -> None:
    # values 1,2 | 3,3 | 2,4 (n = 6 pairable values)
    # D_o = (1/6) * [2*(1-2)^2 + 0 + 2*(2-4)^2] / (2-1) = 10/6
    # D_e = sum over ordered pairs of all 6 values / (6*5): mean 2.5, SS = 5.5,
    #       ordered-pair sum = 2*6*5.5 = 66 -> 66/30 = 2.2
    # alpha = 1 - (10/6)/2.2 = 1 - 25/33 = 8/33
    assert krippendorff_alpha_interval([(1, 2), (3, 3), (2, 4)]) == pytest.approx(8 / 33)


def test_alpha_krippendorff_2011_published_example() -> None:
    # Krippendorff (2011) "Computing Krippendorff's Alpha-Reliability", 4 coders x 12 units
    # with missing values; the paper reports alpha_interval = 0.849.
    a = [1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N]
    b = [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3]
    c = [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N]
    d = [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N]
    assert krippendorff_alpha_interval(list(zip(a, b, c, d, strict=True))) == pytest.approx(0.849, abs=5e-4)


def test_alpha_edge_cases() -> None:
    assert krippendorff_alpha_interval([(1, 1), (2, 2)]) == pytest.approx(1.0)
    assert math.isnan(krippendorff_alpha_interval([(3, 3), (3, 3)]))  # no variance: undefined
    assert math.isnan(krippendorff_alpha_interval([(1, N), (N, 2)]))  # nothing pairable
    assert krippendorff_alpha_interval([(1, 2), (3, 3), (2, 4), (5, N)]) == pytest.approx(8 / 33)


def line(d: str, t: int, judge: str, status: str, norm: float | None,
         post: bool = False, metric: str = "similarity") -> dict:
    return {"run_id": "r", "dialogue_id": d, "turn": t, "judge": judge, "judge_kind": "llm",
            "judge_model": f"m-{judge}", "metric": metric, "status": status,
            "score_norm": norm, "post_switch": post}


ROWS = [
    # dialogue A: turn 0 (pre-switch): j1 0.8, j2 0.6 -> 0.7; turn 1 (post): j1 1.0, j2 unparsed -> 1.0
    line("A", 0, "j1", "ok", 0.8), line("A", 0, "j2", "ok", 0.6),
    line("A", 1, "j1", "ok", 1.0, True), line("A", 1, "j2", "unparsed", None, True),
    # dialogue B: turn 0: j1 0.2, j2 0.4 -> 0.3; turn 1 (post): j1 api_error, j2 0.5 -> 0.5
    line("B", 0, "j1", "ok", 0.2), line("B", 0, "j2", "ok", 0.4),
    line("B", 1, "j1", "api_error", None, True), line("B", 1, "j2", "ok", 0.5, True),
]


def test_similarity_table_hand_computed() -> None:
    df = scores_frame([{**r, "panel": "p"} for r in ROWS])
    sim = similarity_table(df, panel="p").set_index(["subset", "judge"])
    panel = sim.loc[("all", "panel:p")]
    # A: (0.7 + 1.0)/2 = 0.85, B: (0.3 + 0.5)/2 = 0.4 -> mean 62.5 %, sample std of 85, 40
    assert panel.sim_pct_mean == pytest.approx(62.5)
    assert panel.sim_pct_std == pytest.approx(math.sqrt(((85 - 62.5) ** 2 + (40 - 62.5) ** 2) / 1))
    assert (panel.n_dialogues, panel.n_turns, panel.n_ok, panel.excluded) == (2, 4, 6, 2)
    assert panel.partial_turns == 2  # A/1 and B/1 were scored by one of the two judges
    post = sim.loc[("post_switch", "panel:p")]
    assert post.sim_pct_mean == pytest.approx(75.0)  # A 1.0, B 0.5
    j2 = sim.loc[("all", "j2")]
    # j2: A (0.6) -> 60, B (0.4+0.5)/2 -> 45
    assert j2.sim_pct_mean == pytest.approx(52.5)
    assert j2.unparsed_share == pytest.approx(1 / 4)  # 1 unparsed of 4 replies
    j1 = sim.loc[("all", "j1")]
    assert j1.unparsed_share == 0 and j1.api_error_share == pytest.approx(1 / 4)
    metrics = metrics_from(df, "p", "similarity")
    assert metrics["objective"] == pytest.approx(62.5)
    assert metrics["sim/judge_mean_post_switch"] == pytest.approx(75.0)
    assert metrics["judge/unparsed_share/j2/similarity"] == pytest.approx(0.25)


def test_agreement_table() -> None:
    rows = [line(d, 0, j, "ok", v) for d, vals in
            {"A": (0.1, 0.2), "B": (0.5, 0.4), "C": (0.9, 1.0), "D": (0.3, 0.3)}.items()
            for j, v in zip(("j1", "j2"), vals, strict=True)]
    agree = agreement_table(scores_frame([{**r, "panel": "p"} for r in rows]), "p").set_index("judges")
    pair = agree.loc["j1 vs j2"]
    assert pair.n_units == 4 and pair.spearman == pytest.approx(1.0)
    assert 0.9 < pair.pearson <= 1.0
    expected = krippendorff_alpha_interval([(0.1, 0.2), (0.5, 0.4), (0.9, 1.0), (0.3, 0.3)])
    assert agree.loc["all (j1, j2)"].krippendorff_alpha_interval == pytest.approx(expected)


def test_empty_scores_give_empty_tables_and_no_objective() -> None:
    df = scores_frame([])
    assert similarity_table(df, "p").empty and agreement_table(df).empty
    assert metrics_from(df, "p", "similarity")["objective"] is None


def test_two_panels_are_never_mixed_and_coverage_is_reported() -> None:
    from somabench.judges.aggregate import coverage_table

    other = [{**r, "panel": "q", "score_norm": 0.0 if r["status"] == "ok" else None} for r in ROWS]
    df = scores_frame([*[{**r, "panel": "p"} for r in ROWS], *other])
    assert metrics_from(df, "p", "similarity")["objective"] == pytest.approx(62.5)
    assert metrics_from(df, "q", "similarity")["objective"] == pytest.approx(0.0)
    cov = coverage_table(df, "p").iloc[0]
    assert (cov.judges_configured, cov.turns, cov.turns_2_judges, cov.turns_1_judges) == (2, 4, 2, 2)


def test_task_panel_metrics_keep_their_own_area_and_objective() -> None:
    """judge=task: accuracy is reported as accuracy/..., never under sim/..., and is the objective."""
    from somabench.judges.aggregate import metrics_from, scores_frame

    rows = [{"run_id": "r", "dialogue_id": d, "turn": t, "panel": "task", "judge": "answer",
             "judge_kind": "math_answer", "metric": metric, "status": "ok", "score_norm": score,
             "post_switch": False}
            for d, scores in (("a", (1.0, 0.0)), ("b", (1.0, 1.0)))
            for t, score in enumerate(scores)
            for metric in ("accuracy", "answer_agreement")]
    out = metrics_from(scores_frame(rows), "task", "accuracy")
    assert "sim/judge_mean" not in out
    assert out["accuracy/judge_mean"] == pytest.approx(75.0)  # dialogues 50 % and 100 %
    assert out["objective"] == out["accuracy/judge_mean"]
    assert "answer_agreement/judge_mean" in out
