"""Tables: the one table function, and the report's tables against hand-computed numbers.

Hand computation for the fixture (tests/report/report_fixtures.py), similarity % per dialogue
= mean over turns of the mean over judges of ok score_norm × 100:

  MATH  Surrogate d1: (0.7, 0.5 [j2 unparsed], 0.8) -> 66.67   d2: (0.5, 0.6, 0.8) -> 63.33
        -> 65.0 ± 2.36
        SOMA      d1: (1.0, 0.8, 0.8) -> 86.67   d2: (1.0, 0.8, 0.9 [j2 api_error]) -> 90.0
        -> 88.3 ± 2.36;  post-switch (turns 1-2): 80.0, 85.0 -> 82.5 ± 3.54
        SOMA w/o ADL 70.0, 80.0 -> 75.0 ± 7.07
  MT-Bench Surrogate m1: (0.7, 0.6) -> 65.0   m2: (0.7, 0.9) -> 80.0 -> 72.5 ± 10.61
        SOMA      m1: (1.0, 0.8) -> 90.0   m2: (1.0, 0.7) -> 85.0 -> 87.5 ± 3.54
  Avg   Surrogate (65.0, 72.5) -> 68.75 ± 5.30; SOMA (88.33, 87.5) -> 87.92 ± 0.59; w/o ADL: –
"""

from __future__ import annotations

import io
import math

import pandas as pd
import pytest
from tests.report.report_fixtures import build_outputs

from somabench.report.build import build_report
from somabench.report.collect import load_local
from somabench.report.tables import AVG, make_table


def _cells(path) -> pd.DataFrame:
    return pd.read_csv(path).set_index(["row", "column"])


@pytest.fixture(scope="module")
def report(report_cfg, tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    build_outputs(root / "outputs")
    out = root / "results"
    cfg = report_cfg.copy()
    cfg.figures.formats = ["png"]  # tables are under test here (test_report_cli checks every format)
    result = build_report(load_local(root / "outputs" / "tiny_exp", cfg), cfg, out)
    return out, result


def test_make_table_cells_avg_best_and_missing():
    frame = pd.DataFrame({
        "method": ["A", "A", "B", "B", "A", "A", "C"],
        "dataset": ["x", "x", "x", "x", "y", "y", "x"],
        "value": [1.0, 3.0, 4.0, 6.0, 10.0, 10.0, 5.0],
        "run_key": ["r1", "r1", "r2", "r2", "r3", "r3", "r4"],
    })
    table = make_table(frame, value="value", row="method", column="dataset", title="T", metric="Score",
                       higher_is_better=True, decimals_mean=1, decimals_std=2, row_order=["B", "A"],
                       excluded={"unparsed": 2})
    assert table.rows == ["B", "A", "C"]  # given order first, then the rest sorted
    assert table.columns == ["x", "y", AVG]
    assert table.cells[("A", "x")][:3] == pytest.approx((2.0, 2 ** 0.5, 2))
    assert table.cells[("B", "x")][:3] == pytest.approx((5.0, 2 ** 0.5, 2))
    assert table.cells[("A", "y")][:2] == (10.0, 0.0)
    assert table.cells[("A", AVG)][:3] == pytest.approx((6.0, 32 ** 0.5, 2))  # mean/std of 2.0 and 10.0
    assert ("B", AVG) not in table.cells  # B has no y: no Avg
    assert table.best() == {"x": {"B", "C"}, "y": set(), AVG: set()}  # tie at 5.0; single cells not bold
    md = table.to_markdown()
    assert "| B | **5.0 ± 1.41** | – | – |" in md
    assert "| C | **5.0 ± –** | – | – |" in md
    assert "Excluded rows: 2 (2 unparsed)." in md and "Runs: r1, r2, r3, r4." in md
    assert "Score ↑" in md
    lower = make_table(frame, value="value", row="method", column="dataset", title="T", metric="Score",
                       higher_is_better=False, decimals_mean=1, decimals_std=2)
    assert lower.best()["x"] == {"A"} and "Score ↓" in lower.to_markdown()


def test_latex_and_csv_renderings():
    frame = pd.DataFrame({"m": ["a_b", "a_b"], "d": ["50%", "50%"], "v": [1.0, 2.0], "run_key": ["k", "k"]})
    table = make_table(frame, value="v", row="m", column="d", title="T & U", metric="Sim %",
                       higher_is_better=True, decimals_mean=1, decimals_std=2)
    tex = table.to_latex()
    assert r"a\_b & 1.5 $\pm$ 0.71 \\" in tex
    assert r"Sim \% $\uparrow$ & 50\%" in tex and r"\caption{T \& U}" in tex
    assert "\\toprule" in tex and "\\bottomrule" in tex
    csv = pd.read_csv(io.StringIO(table.to_csv()))
    record = csv.to_dict("records")[0]
    assert {k: record[k] for k in ("row", "column", "mean", "n", "best")} == {
        "row": "a_b", "column": "50%", "mean": 1.5, "n": 2, "best": False}
    assert record["std"] == pytest.approx(0.7071, abs=1e-4) and math.isnan(record["ci_lo"])


def test_make_table_small_n_prints_values_not_an_interval():
    """Two dialogues per cell (below report.stats.min_n = 5): no interval, the values are
    printed; equal values never get a zero-width "interval"; a partial cell is flagged."""
    from somabench.report.tables import PARTIAL, StatsKnobs

    frame = pd.DataFrame({"m": ["A", "A", "A", "A"], "d": ["x", "x", "y", "y"], "v": [2.0, 4.0, 10.0, 10.0],
                          "partial_turns": [0, 1, 0, 0], "run_key": ["k"] * 4})
    table = make_table(frame, value="v", row="m", column="d", title="T", metric="S", higher_is_better=True,
                       decimals_mean=1, decimals_std=2, stats=StatsKnobs(4000, 0, 0.95),
                       partial_col="partial_turns")
    x, y, avg = (table.cells[("A", c)] for c in ("x", "y", AVG))
    assert (x.mean, x.lo, x.hi, x.flag, x.values) == (3.0, None, None, PARTIAL, (2.0, 4.0))
    assert (y.lo, y.hi, y.flag) == (None, None, "")
    assert avg.mean == 6.5 and avg.lo is None
    md = table.to_markdown()
    assert ("| A | 3.0 (n=2: 2.0, 4.0)† | 10.0 (n=2: 10.0, 10.0) | 6.5 (no CI: a column is below the "
            "minimum n) |") in md
    assert "studentized bootstrap (bootstrap-t), 4000 resamples; no CI below n = 5" in md
    assert "†: some turns" in md
    # min_n = 2 with the percentile bootstrap: two values give [min, max] (test_stats); equal
    # values still no interval; the Avg resamples x alone (y has no spread): (2|3|4 + 10) / 2
    table = make_table(frame, value="v", row="m", column="d", title="T", metric="S", higher_is_better=True,
                       decimals_mean=1, decimals_std=2,
                       stats=StatsKnobs(4000, 0, 0.95, method="percentile", min_n=2))
    assert "| A | 3.0 [2.0, 4.0] | 10.0 (all equal) | 6.5 [6.0, 7.0] |" in table.to_markdown()


def test_make_table_cells_have_their_own_streams_and_avg_resamples_independently():
    """Two columns with the same five values: with one shared seed their resamples were
    identical, so the Avg interval equalled each column's. Independent resamples of two
    columns make the Avg interval narrower by about sqrt(2), and it matches an independent
    per-dataset resample computed here by hand (percentile bootstrap, tolerance for the
    Monte Carlo error of 4000 draws)."""
    import numpy as np

    from somabench.report.tables import StatsKnobs

    values = [10.0, 20.0, 30.0, 60.0, 80.0]
    frame = pd.DataFrame({"m": ["A"] * 10, "d": ["x"] * 5 + ["y"] * 5, "v": values * 2, "run_key": ["k"] * 10})
    table = make_table(frame, value="v", row="m", column="d", title="T", metric="S", higher_is_better=True,
                       decimals_mean=1, decimals_std=2, stats=StatsKnobs(4000, 0, 0.95, method="percentile"))
    x, y, avg = (table.cells[("A", c)] for c in ("x", "y", AVG))
    rng = np.random.default_rng(123)
    arr = np.array(values)
    draws = (arr[rng.integers(0, 5, (200_000, 5))].mean(1) + arr[rng.integers(0, 5, (200_000, 5))].mean(1)) / 2
    lo, hi = np.quantile(draws, [0.025, 0.975])
    assert avg.lo == pytest.approx(lo, abs=1.5) and avg.hi == pytest.approx(hi, abs=1.5)
    assert (avg.hi - avg.lo) < 0.8 * (x.hi - x.lo)  # a tied resample would give the same width


def test_table1_matches_hand_computation(report):
    out, _ = report
    cells = _cells(out / "table1_similarity_tiny_p1.csv")
    expect = {("Surrogate", "MATH"): (65.0, 2.357), ("Surrogate", "MT-Bench"): (72.5, 10.607),
              ("SOMA", "MATH"): (88.333, 2.357), ("SOMA", "MT-Bench"): (87.5, 3.536),
              ("SOMA w/o ADL", "MATH"): (75.0, 7.071),
              ("Surrogate", AVG): (68.75, 5.303), ("SOMA", AVG): (87.917, 0.589)}
    for key, (mean, std) in expect.items():
        assert cells.loc[key, "mean"] == pytest.approx(mean, abs=1e-3), key
        assert cells.loc[key, "std"] == pytest.approx(std, abs=1e-3), key
        assert cells.loc[key, "n"] == 2
    assert ("SOMA w/o ADL", AVG) not in cells.index
    assert "Original" not in cells.index.get_level_values("row")  # the reference run is not judged
    assert set(cells[cells["best"]].index) == {("SOMA", "MATH"), ("SOMA", "MT-Bench"), ("SOMA", AVG)}
    # two dialogues per cell, below report.stats.min_n: no interval, the two values instead
    assert cells.loc[("SOMA", "MATH"), ["ci_lo", "ci_hi"]].isna().all()
    assert cells.loc[("SOMA", "MATH"), "no_ci"] == "small_n"
    md = (out / "table1_similarity_tiny_p1.md").read_text()
    assert ("| SOMA | **88.3 (n=2: 86.7, 90.0)†** | **87.5 (n=2: 90.0, 85.0)** | **87.9 (no CI: a column "
            "is below the minimum n)** |") in md
    assert "| Surrogate | 65.0 (n=2: 66.7, 63.3)† | 72.5 (n=2: 65.0, 80.0) | 68.8 (no CI: " in md
    assert "| SOMA w/o ADL | 75.0 (n=2: 70.0, 80.0) | – | – |" in md
    assert "Excluded rows: 2 (1 api_error, 1 unparsed)." in md
    assert "n = 2 (per cell, and the std, in the CSV)" in md
    assert "2 of 26 scored turns were scored by fewer judges than the panel has" in md
    assert ("Runs: tiny/mathmt/soma, tiny/mathmt/soma_wo_adl, tiny/mathmt/surrogate, tiny/mtbench/soma, "
            "tiny/mtbench/surrogate.") in md
    assert (out / "table1_similarity_tiny_p1.tex").read_text().count(r"\textbf") == 3


def test_paired_comparison_with_soma(report):
    out, _ = report
    paired = pd.read_csv(out / "table1_similarity_vs_soma_tiny_p1.csv").set_index(["row", "column"])
    # Surrogate - SOMA on MATH: d1 66.67 - 86.67 = -20, d2 63.33 - 90 = -26.67; 2 pairs -> sign-flip
    # p = 2/4 and no interval (below min_n): the old table printed [-26.7, -20.0] next to p 0.500
    row = paired.loc[("Surrogate", "MATH")]
    assert row["diff"] == pytest.approx(-70 / 3) and row["n"] == 2 and row["p_sign_flip"] == pytest.approx(0.5)
    assert math.isnan(row["ci_lo"]) and math.isnan(row["p"]) and row["no_ci"] == "small_n"
    pooled = paired.loc[("Surrogate", "All (paired on dataset, dialogue)")]
    assert pooled["n"] == 4 and pooled["p_sign_flip"] == pytest.approx(2 / 16)  # all four diffs negative
    md = (out / "table1_similarity_vs_soma_tiny_p1.md").read_text()
    assert "-23.3 (n=2: -20.0, -26.7; sign-flip p 0.500)" in md
    # pooled: MATH -20, -26.7 and MT-Bench 65 - 90 = -25, 80 - 85 = -5 -> mean -19.2
    assert "-19.2 (n=4: -20.0, -26.7, -25.0, -5.0; sign-flip p 0.125)" in md


def test_post_switch_and_per_judge_tables(report):
    out, _ = report
    post = _cells(out / "table1_similarity_post_switch_tiny_p1.csv")
    assert post.loc[("SOMA", "MATH"), "mean"] == pytest.approx(82.5)
    assert post.loc[("SOMA", "MT-Bench"), ["mean", "std"]].tolist() == pytest.approx([75.0, 7.0711], abs=1e-3)
    assert "Surrogate" not in post.index.get_level_values("row")  # never switched
    judge = pd.read_csv(out / "similarity_by_judge_tiny_p1.csv").set_index(["judge", "row", "column"])
    # j1 alone: Surrogate MATH d1 (0.8, 0.5, 0.9) -> 73.33, d2 (0.4, 0.6, 0.8) -> 60.0
    assert judge.loc[("j1", "Surrogate", "MATH"), "mean"] == pytest.approx(200 / 3)
    # j2 alone: d1 (0.6, -, 0.7) -> 65.0, d2 (0.6, 0.6, 0.8) -> 66.67
    assert judge.loc[("j2", "Surrogate", "MATH"), "mean"] == pytest.approx((65 + 200 / 3) / 2)
    md = (out / "similarity_by_judge_tiny_p1.md").read_text()
    assert "judge j1" in md and "judge j2" in md
    assert md.count("Excluded rows: 0.") == 1 and "Excluded rows: 2 (1 api_error, 1 unparsed)." in md


def test_efficiency_and_ability_tables(report):
    out, _ = report
    tokens = _cells(out / "tokens_per_dialogue_tiny.csv")
    assert tokens.loc[("Surrogate", "MATH"), ["mean", "std"]].tolist() == pytest.approx([210.0, 42.426], abs=1e-3)
    assert tokens.loc[("SOMA", "MATH"), ["mean", "std"]].tolist() == pytest.approx([360.0, 28.284], abs=1e-3)
    assert tokens.loc[("Original", "MATH"), "mean"] == 220  # reference: F 30+60+90 prompt + 40 completion
    assert bool(tokens.loc[("Surrogate", "MATH"), "best"])  # lower is better
    cost = _cells(out / "cost_per_dialogue_tiny.csv")
    assert cost.loc[("SOMA", "MATH"), "mean"] == pytest.approx((22.0 + 22.8) / 2 / 1000)  # USD per 1k dialogues
    tps = _cells(out / "throughput_tiny.csv")
    assert tps.loc[("Original", "MATH · gen"), "mean"] == pytest.approx(40 / 1.5)
    assert tps.loc[("Original", "MATH · e2e"), "mean"] == pytest.approx(40 / 1.5)  # no other stage
    abilities = _cells(out / "abilities_tiny_p1.csv")
    assert abilities.loc[("Surrogate", "memory"), ["mean", "std"]].tolist() == pytest.approx([6.0, 2 ** 0.5])
    assert abilities.loc[("SOMA", "reasoning"), ["mean", "std"]].tolist() == pytest.approx([7.0, 0.0])
    assert abilities.loc[("SOMA", AVG), "mean"] == pytest.approx((8.5 + 7.0 + 8.0) / 3)
