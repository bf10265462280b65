"""The study view (report/study.py) on the hand-made fixture: G's share, the cost ratio and
the adapted-vs-unadapted comparison on the turns G served, computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from somabench.report.build import build_report
from somabench.report.collect import load_local


def test_study_table_by_hand(outputs, report_cfg, tmp_path) -> None:
    out = tmp_path / "r"
    result = build_report(load_local(outputs / "tiny_exp", report_cfg), report_cfg, out)
    written = {a.name for a in result.written}
    assert {"study_tiny_p1", "study_quality_cost_tiny_p1"} <= written
    table = pd.read_csv(out / "study_tiny_p1.csv").set_index(["dataset", "method"])
    soma = table.loc[("mathmt", "SOMA")]
    # SOMA's fixture switches at turn 1 of 3: G serves 2 of 3 turns in both sessions
    assert soma["n"] == 2 and soma["G share %"].startswith("66.7")
    # G turns: SOMA d1 (80 + 80)/2 = 80 vs Surrogate (50 + 80)/2 = 65; d2 (80 + 90)/2 = 85 vs
    # (60 + 80)/2 = 70: +15 in both sessions; n = 2 < min_n: no CI, sign-flip p = 2/4
    assert soma["G turns: adapted vs Surrogate (Δ sim., paired)"].startswith(
        "+15.0 (no CI), sign-flip p 0.5 (n=2 sessions, 4 turns)")
    assert table.loc[("mathmt", "Surrogate"), "G share %"].startswith("100.0")
    assert table.loc[("mathmt", "Original"), "similarity %"].startswith("100.0")
    # tokens vs Original: Surrogate d1 = 3 x 10 completion + 3 x 50 prompt = 180, d2 = 3 x (10 + 70)
    # = 240 -> 210; Original = (30+20) + (60+10) + (90+10) = 220 per session -> 0.95x
    assert table.loc[("mathmt", "Surrogate"), "tokens vs Original"] == "0.95x"
    sessions = pd.read_csv(out / "study_sessions_tiny_p1.csv")
    assert set(sessions.columns) >= {"g_share", "switched", "tokens", "usd", "similarity"}
    assert (out / "study_quality_cost_tiny_p1.png").stat().st_size > 0


@pytest.mark.parametrize("served", [["F", "G", "G+summary"], ["F", "F", "F"]])
def test_served_shares(served: list[str]) -> None:
    from somabench.report.study import served_shares

    turns = pd.DataFrame({"run_key": "r", "label": "L", "method": "m", "dataset": "d",
                          "dialogue_id": "x", "turn": range(3), "served_by": served})
    row = served_shares(turns).iloc[0]
    expected = sum(s.split("+")[0] == "G" for s in served)
    assert row["g_turns"] == expected and row["g_share"] == pytest.approx(100 * expected / 3)


def test_diagnostics_table_reads_the_switch_records() -> None:
    from types import SimpleNamespace

    from somabench.report.study import diagnostics_table

    adaptation = {"lora_heldout_turns": [2], "adapter_cache": {"hit": True},
                  "switch": {"switch_turn": 5, "threshold": 0.61, "gate_scores": [0.7, 0.8],
                             "acceptance": {"applicable": True, "contexts": "mined_holdout",
                                            "batch": 2, "batch_capped": False, "Delta": -0.1,
                                            "passed": False, "required": False, "gate_closed": False,
                                            "Delta_future_turns": 0.05,
                                            "warm_deltas": [0.3, 0.1, -0.2]}}}
    skipped = {"switch": {"acceptance": {"applicable": False}}}  # History-Prefix: no test
    frame = pd.DataFrame({"family": "f", "label": ["SOMA", "History-Prefix"], "dataset": "d",
                          "dialogue_id": ["x", "x"], "adaptation": [adaptation, skipped]})
    row = diagnostics_table(SimpleNamespace(dialogues=frame), "f").iloc[0]
    assert row["switch_turn"] == 5 and row["gate_scores"] == "0.70 0.80"
    # warm turns 0, 1 trained (mean .2), turn 2 held out (-.2)
    assert row["Delta_warm_trained"] == pytest.approx(0.2) and row["Delta_warm_heldout"] == pytest.approx(-0.2)
    assert row["Delta_B"] == -0.1 and row["Delta_future_turns"] == 0.05 and row["adapter_cache_hit"]
    assert len(diagnostics_table(SimpleNamespace(dialogues=frame), "f")) == 1


def test_the_quality_cost_whisker_is_the_study_tables_interval(report_cfg) -> None:
    """One interval per quantity: the figure's similarity whisker is the table's cell (same
    values, same random stream), not a second draw that differs in its last digits."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np

    from somabench.report.study import quality_cost_figure, summary_table
    from somabench.report.tables import StatsKnobs

    rng = np.random.default_rng(0)
    sims = np.clip(100 - rng.exponential(8, 12), 0, 100)  # skewed near the ceiling, like SOMA's
    rows = [{"dataset": "remedi", "method": "original", "label": "Original", "dialogue_id": f"d{i}",
             "g_share": 0.0, "switched": False, "has_switch": False, "tokens": 1000.0, "usd": np.nan, "similarity": 100.0}
            for i in range(12)]
    rows += [{"dataset": "remedi", "method": "soma", "label": "SOMA", "dialogue_id": f"d{i}",
              "g_share": 10.0, "switched": True, "has_switch": True, "tokens": 14000.0 + 50 * i, "usd": np.nan,
              "similarity": float(s)} for i, s in enumerate(sims)]
    sessions = pd.DataFrame(rows)
    knobs = StatsKnobs.from_cfg(report_cfg.stats)
    table = summary_table(sessions, pd.DataFrame(), knobs, n_perm=200, roles={})
    cell = table.set_index("method").loc["SOMA", "similarity %"]
    fig = quality_cost_figure(sessions, {}, report_cfg, "embedding", knobs)
    soma = [c for c in fig.axes[0].containers if c.lines[0].get_ydata()[0] < 100][0]
    whisker = soma.lines[2][1].get_segments()[0][:, 1]  # the y error bar: (lo, hi)
    assert cell == f"{sims.mean():.1f} [{whisker.min():.1f}, {whisker.max():.1f}]"


def test_a_press_is_paired_with_its_control_by_hand(report_cfg) -> None:
    """report.controls: kvpress_* against kvpress_control, paired by session. By hand: the press
    is 10, 20, 30, 40, 50 points below the control in five sessions -> Δ = -30 (n = 5, CI
    printed); the control itself and the Original get no pair."""
    from somabench.report.study import CONTROL_COLUMN, control_of, summary_table
    from somabench.report.tables import StatsKnobs

    controls = dict(report_cfg.controls)
    assert control_of("kvpress_snapkv_50", controls) == "kvpress_control"
    assert control_of("kvpress_control", controls) is None and control_of("soma", controls) is None
    base = [90.0, 85.0, 95.0, 80.0, 92.0]
    rows = []
    for method, label, sims in (("kvpress_control", "control", base),
                                ("kvpress_snapkv_50", "SnapKV 50", [b - d for b, d in
                                                                    zip(base, (10, 20, 30, 40, 50), strict=True)]),
                                ("original", "Original", [100.0] * 5)):
        rows += [{"dataset": "remedi", "method": method, "label": label, "dialogue_id": f"d{i}",
                  "g_share": 0.0, "switched": False, "has_switch": False, "tokens": 1000.0,
                  "usd": np.nan, "similarity": s} for i, s in enumerate(sims)]
    knobs = StatsKnobs.from_cfg(report_cfg.stats)
    table = summary_table(pd.DataFrame(rows), pd.DataFrame(), knobs, n_perm=200, roles={},
                          controls=controls).set_index("method")
    cell = table.loc["SnapKV 50", CONTROL_COLUMN]
    assert cell.startswith("-30.0 [") and "(n=5 sessions, vs kvpress_control)" in cell
    # p is the interval's dual (as in every paired cell): the CI excludes 0, so p < 0.05
    hi = float(cell.split(", ")[1].split("]")[0])
    p_value = float(cell.split(", p ")[1].split(" ")[0])
    assert hi < 0 and p_value < 0.05
    assert table.loc["control", CONTROL_COLUMN] == "–" and table.loc["Original", CONTROL_COLUMN] == "–"
    # without any controlled method the column is not there at all
    alone = summary_table(pd.DataFrame(rows[10:]), pd.DataFrame(), knobs, n_perm=200, roles={},
                          controls=controls)
    assert CONTROL_COLUMN not in alone.columns


def test_a_bootstrap_p_of_zero_prints_its_resolution() -> None:
    from types import SimpleNamespace

    from somabench.report.study import _paired_text

    pair = SimpleNamespace(diff=-13.9, lo=-18.2, hi=-9.9, p=0.0, n=30)
    assert _paired_text(pair, "sessions", 20000) == "-13.9 [-18.2, -9.9], p < 5e-05 (n=30 sessions)"
    pair.p = 0.0439
    assert _paired_text(pair, "sessions", 20000).endswith("p 0.0439 (n=30 sessions)")
