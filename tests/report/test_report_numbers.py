"""Derived numbers used by reports (somabench.metrics), checked against hand-computed values."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from tests.report.report_fixtures import PRICES

from somabench.metrics import (
    cost_stacks,
    dialogue_throughput,
    excluded_counts,
    mean_std,
    relative_tokens_per_turn,
    run_metrics,
    score_frame,
    score_metric,
    similarity_per_dialogue,
    similarity_per_turn,
    token_stacks,
)
from somabench.report.collect import load_local


def _rows(spec):
    """spec: (dialogue, turn, judge, status, score_norm)."""
    return score_frame([{"run_id": "r", "dialogue_id": d, "turn": t, "panel": "p", "judge": j, "status": s,
                         "score_norm": v, "prompt_id": "similarity_v1", "metric": "similarity",
                         "post_switch": False} for d, t, j, s, v in spec])


def test_similarity_means_judges_per_turn_then_turns_and_skips_non_ok():
    scores = _rows([
        ("a", 0, "j1", "ok", 0.8), ("a", 0, "j2", "ok", 0.6),        # turn 0: 0.7
        ("a", 1, "j1", "ok", 0.5), ("a", 1, "j2", "unparsed", None),  # turn 1: 0.5 (j2 excluded)
        ("b", 0, "j1", "api_error", None), ("b", 0, "j2", "ok", 0.9),  # turn 0: 0.9
        ("b", 1, "j1", "skipped", None), ("b", 1, "j2", "skipped", None),  # turn 1: no ok score
    ])
    per_dialogue = similarity_per_dialogue(scores, ["dialogue_id"], panel="p").set_index("dialogue_id")
    assert per_dialogue.loc["a", "similarity"] == pytest.approx(60.0)  # (0.7 + 0.5) / 2 * 100
    assert per_dialogue.loc["b", "similarity"] == pytest.approx(90.0)
    assert per_dialogue.loc["a", "n_turns"] == 2 and per_dialogue.loc["b", "n_turns"] == 1
    assert excluded_counts(scores) == {"api_error": 1, "skipped": 2, "unparsed": 1}
    per_turn = similarity_per_turn(scores, ["dialogue_id"], panel="p").set_index(["dialogue_id", "turn"])
    assert per_turn.loc[("a", 0), "similarity"] == pytest.approx(70.0)
    assert per_turn.loc[("a", 0), "n_judges"] == 2
    assert bool(per_turn.loc[("a", 1), "partial"]) and not bool(per_turn.loc[("a", 0), "partial"])
    assert per_dialogue.loc["a", "partial_turns"] == 1 and per_dialogue.loc["b", "partial_turns"] == 1
    with pytest.raises(ValueError, match="panel"):
        similarity_per_dialogue(scores, ["dialogue_id"], panel="")
    assert similarity_per_dialogue(scores, ["dialogue_id"], panel="other").empty  # never another panel's


def test_mean_std_is_sample_std_like_the_paper_avg_column():
    # Paper Table 1, Surrogate row: 79.2 82.7 74.3 70.8 66.2 77.5 -> Avg 75.1 ± 5.98
    mean, std, n = mean_std(pd.Series([79.2, 82.7, 74.3, 70.8, 66.2, 77.5]))
    assert (round(mean, 1), round(std, 2), n) == (75.1, 5.98, 6)
    assert mean_std(pd.Series([3.0])) == (3.0, None, 1)
    assert mean_std(pd.Series([], dtype=float)) == (None, None, 0)


def test_score_metric_prefers_metric_and_falls_back_to_prompt_id():
    frame = pd.DataFrame({"prompt_id": ["similarity_v1", "ability_memory_v2", "embedding_cosine_v1"],
                          "metric": ["similarity", None, "similarity"]})
    assert score_metric(frame).tolist() == ["similarity", "ability_memory", "similarity"]
    assert score_metric(frame.drop(columns=["metric"])).tolist()[2] == "embedding_cosine"


def test_relative_tokens_per_turn_from_the_original(outputs, report_cfg):
    data = load_local(outputs, report_cfg)
    rel = relative_tokens_per_turn(data.turns[data.turns["method"] == "original"])
    math_rel = rel[rel["dataset"] == "mathmt"].set_index("turn")["relative"]
    # content = completion + user words x (answer tokens per word = 40 / 20 = 2): 36, 18, 14
    assert math_rel.tolist() == pytest.approx([1.0, 18 / 36, 14 / 36])
    assert rel[rel["dataset"] == "mtbench"]["relative"].tolist() == pytest.approx([1.0, 1.0])


def test_token_and_cost_stacks_by_hand(outputs, report_cfg):
    data = load_local(outputs, report_cfg)
    soma = data.dialogues[(data.dialogues["label"] == "SOMA") & (data.dialogues["dataset"] == "mathmt")]
    d1 = token_stacks(soma).set_index("dialogue_id").loc["d1"]
    # turn 0 by F: 30 + 10; turns 1-2 by G: 2 x (50 + 10); adaptation F 150 + G 30
    assert (d1["F"], d1["G"], d1["compressor+router"], d1["adaptation"]) == (40, 120, 0, 180)
    assert d1[["F", "G", "compressor+router", "adaptation"]].sum() == d1["tokens_total"] == 340
    cost, unpriced = cost_stacks(soma, PRICES)
    c1 = cost.set_index("dialogue_id").loc["d1"]
    assert c1["F"] == pytest.approx((30 * 0.10 + 10 * 0.10) / 1e6)
    assert c1["G"] == pytest.approx((100 * 0.02 + 20 * 0.02) / 1e6)
    assert c1["adaptation"] == pytest.approx((100 * 0.10 + 50 * 0.10 + 30 * 0.02) / 1e6)
    assert c1["usd_total"] == pytest.approx(22.0e-6)
    assert unpriced == []
    _, unpriced = cost_stacks(soma, {"F": PRICES["F"]})
    assert unpriced == ["G"]  # G tokens exist but have no price: named, never priced as 0


def test_dialogue_throughput(outputs, report_cfg):
    data = load_local(outputs, report_cfg)
    tps = dialogue_throughput(data.turns, ["label", "dataset", "dialogue_id"]).set_index(
        ["label", "dataset", "dialogue_id"])["tps"]
    assert tps[("Original", "mathmt", "d1")] == pytest.approx(40 / 1.5)  # 20+10+10 tokens / 3 x 0.5 s
    assert tps[("Surrogate", "mtbench", "m1")] == pytest.approx(20.0)


def test_run_metrics_keys_and_values(outputs):
    from somabench.records import load_dialogues, load_turns

    run_dir = outputs / "tiny_exp" / "tiny" / "mathmt" / "soma"
    scores = score_frame(pd.read_json(run_dir / "scores.jsonl", lines=True).to_dict("records"))
    out = run_metrics(load_dialogues(run_dir), load_turns(run_dir), scores, panel="p1")
    assert out["sim/judge_mean"] == pytest.approx((260 / 3 + 90) / 2)  # 86.67 and 90.0
    assert out["sim/excluded"] == 1
    assert out["sim/judge_mean_post_switch"] == pytest.approx(82.5)
    assert out["tokens/total"] == pytest.approx(360.0)
    assert out["speed/tps"] == pytest.approx(20.0) and out["speed/tps_e2e"] == pytest.approx(20.0)
    assert out["panel/p1/sim/judge_mean"] == out["sim/judge_mean"]
    assert out["turns/served_by_g"] == pytest.approx(4 / 6)
    assert not any(isinstance(v, float) and math.isnan(v) for v in out.values())
