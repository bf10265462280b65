"""Theory knobs vs the paper's formulas (Sec. 4, App. E), incl. the Cor. 3 sign correction."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from somabench.commands import theory as theory_command
from somabench.soma import theory


def test_cor3_sign_corrected() -> None:
    # delta=.05, theta=pi/4, r_act=2: log(.05)/log(1 - sin(pi/4)) = 2.9957/1.2279 = 2.4397
    bound = theory.n_candidates_bound(0.05, math.pi / 4, 2)
    assert bound == pytest.approx(math.log(0.05) / math.log(1 - math.sqrt(0.5)))
    assert bound > 0  # the printed form log(1/delta)/log(1-x) would be negative
    assert theory.n_candidates(0.05, math.pi / 4, 2) == 3
    # M meets Thm. 3's coverage >= 1 - delta, M - 1 does not
    assert theory.coverage_probability(3, math.pi / 4, 2) >= 0.95
    assert theory.coverage_probability(2, math.pi / 4, 2) < 0.95
    # r_act = 3, theta = pi/3: p = sin^2 = .75 -> log(.05)/log(.25) = 2.16 -> 3
    assert theory.n_candidates(0.05, math.pi / 3, 3) == 3
    assert theory.n_candidates(0.05, math.pi / 2, 5) == 1  # the cap is the whole sphere
    with pytest.raises(ValueError):
        theory.n_candidates(1.5, 0.5, 2)


def test_lemma1_cor4_and_thm2() -> None:
    assert theory.w_eff_bound(0.05, 0.8) == pytest.approx(2 * math.log(40) / 0.64)
    assert theory.warm_start_error(0.05, theory.w_eff_bound(0.05, 0.8)) == pytest.approx(0.8)
    expected = 2 * 0.01 / 0.0144 * math.log(20) + 2 / (3 * 0.12) * math.log(20)
    assert theory.b_eff_bound(0.05, 0.12, 0.1) == pytest.approx(expected)
    assert theory.b_eff_bound(0.05, 0.12, 0.1, b=2.0) == pytest.approx(
        expected + 2 / (3 * 0.12) * math.log(20))
    knobs = theory.knobs(0.05, math.pi / 4, 2, 0.8, 0.12, 0.1)
    assert (knobs["M"], knobs["W_eff"], knobs["B_eff"]) == (3, 12, 21)
    assert knobs["decision_error"] == pytest.approx(0.92) and knobs["confidence"] == 0.9
    assert theory.effective_size(10, [0.25, 0.25]) == pytest.approx(10 / 2)
    assert theory.directional_suboptimality(2.0, math.pi / 6) == pytest.approx(0.5)


def test_cli_prints_the_knobs(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--delta", "0.05", "--theta", str(math.pi / 4), "--r-act", "2", "--eta", "0.8",
            "--epsilon", "0.12", "--sigma-delta", "0.1"]
    assert theory_command.main(args) == 0
    out = capsys.readouterr().out
    assert "M      = 3" in out and "W_eff  = 12" in out and "|B|_eff = 21" in out
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-m", "somabench", "theory", *args], cwd=root,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "|B|_eff = 21" in run.stdout
