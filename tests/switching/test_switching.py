"""The shared switch controller: calibration, consecutive hits, the Cor. 1 acceptance test,
no oracle (decisions on seen turns only), payoff with an explicit hint, drift rollback."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf

from somabench.config import compose
from somabench.switching.acceptance import AcceptanceConfig, batch_size, estimate_sigma
from somabench.switching.controller import SwitchConfig, SwitchController
from somabench.switching.gate import conservative_quantile, cross_turn_scores


def switch_cfg(**over: Any) -> SwitchConfig:
    base = OmegaConf.to_container(compose(["method=soma"]).method.switch, resolve=True)
    for dotted, value in over.items():
        node = base
        *path, last = dotted.split("__")
        for part in path:
            node = node[part]
        node[last] = value
    return SwitchConfig.from_cfg(base)


def unit(*xs: float) -> np.ndarray:
    v = np.asarray(xs, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_conservative_quantile_by_hand() -> None:
    scores = [0.1, 0.5, 0.3, 0.2, 0.4]  # sorted: .1 .2 .3 .4 .5
    # alpha=0.4: k = ceil(6 * 0.6) = 4 -> 0.4 ; alpha=0.2: k = ceil(4.8) = 5 -> 0.5
    assert conservative_quantile(scores, 0.4) == 0.4
    assert conservative_quantile(scores, 0.2) == 0.5
    # alpha=0.1: k = ceil(5.4) = 6 > 5 -> too few scores
    assert conservative_quantile(scores, 0.1) is None
    assert conservative_quantile([], 0.5) is None


def test_cross_turn_scores_by_hand() -> None:
    ref = [np.array([unit(1, 0)]), np.array([unit(0, 1), unit(1, 1)])]
    cand = [np.array([unit(1, 1)]), np.array([unit(1, 0)])]
    got = sorted(round(x, 6) for x in cross_turn_scores(ref, cand))
    r = round(1 / math.sqrt(2), 6)
    # ref0 x ref1: (1,0).(0,1)=0, (1,0).(1,1)/sqrt2=r ; cand0 x ref1: (1,1)/sqrt2 . (0,1)=r,
    # (1,1).(1,1)/2 = 1 ; cand1 x ref0: 1. Never same-turn pairs, never cand x cand.
    assert got == sorted([0.0, r, r, 1.0, 1.0])


def test_calibration_limits_false_switches_on_a_synthetic_stream() -> None:
    """Null scores (unrelated answers) must switch at most `rate` of the time."""
    cfg = switch_cfg(gate__min_threshold=-1.0, gate__max_threshold=1.0)
    ctl = SwitchController(cfg)
    rate, m = cfg.gate.false_switch_rate, cfg.gate.consecutive_hits
    rng = np.random.default_rng(0)
    false_switches = trials = 0
    true_switches = 0
    for _ in range(300):
        state = ctl.new_state()
        warm_null = list(rng.beta(2, 5, size=60))  # null cosines seen on the warm window
        ctl.calibrate(state, warm_null)
        assert state.calibration["method"] == "null_quantile"
        for _ in range(100):  # independent m-turn gate attempts under H0
            s = ctl.new_state()
            s.threshold = state.threshold
            trials += 1
            false_switches += any(ctl.score_gate(s, t, float(x))
                                  for t, x in enumerate(rng.beta(2, 5, size=m)))
            s = ctl.new_state()
            s.threshold = state.threshold
            true_switches += any(ctl.score_gate(s, t, float(x))
                                 for t, x in enumerate(rng.beta(9, 2, size=m)))
    assert false_switches / trials <= rate * 1.2  # finite-sample slack of the plug-in quantile
    assert true_switches / trials > 0.9  # and the gate still passes aligned answers


def test_threshold_clipped_and_fallbacks() -> None:
    ctl = SwitchController(switch_cfg())
    state = ctl.new_state()
    assert ctl.calibrate(state, [0.01, 0.02] * 30) == pytest.approx(0.3)  # min_threshold clip
    ctl = SwitchController(switch_cfg(gate__fallback="max_null"))
    state = ctl.new_state()
    assert ctl.calibrate(state, [0.41, 0.62, 0.55], null_turn_pairs=1) == pytest.approx(0.62)
    assert state.calibration["method"] == "max_null"
    assert state.calibration["per_hit_bound"] == pytest.approx(0.25)
    assert state.calibration["false_switch_bound"] == pytest.approx(0.25 ** 2)  # m = 2
    assert state.calibration["null_turn_pairs"] == 1
    ctl = SwitchController(switch_cfg(gate__fallback="max_threshold"))
    state = ctl.new_state()
    assert ctl.calibrate(state, [0.41, 0.62, 0.55]) == pytest.approx(0.95)
    ctl = SwitchController(switch_cfg(gate__threshold=0.7))
    state = ctl.new_state()
    assert ctl.calibrate(state, []) == pytest.approx(0.7)


def test_consecutive_hits_and_one_time_switch() -> None:
    ctl = SwitchController(switch_cfg(gate__threshold=0.5))
    state = ctl.new_state()
    ctl.calibrate(state, [])
    assert not ctl.score_gate(state, 2, 0.9)
    assert not ctl.score_gate(state, 3, 0.4)  # a miss resets the run
    assert state.hits == 0
    assert not ctl.score_gate(state, 4, 0.6)
    assert ctl.score_gate(state, 5, 0.51)
    assert state.switched and state.switch_turn == 5
    assert not ctl.score_gate(state, 6, 0.99)  # one-time: never switches again
    assert not ctl.score_gate(state, 7, None) and state.switch_turn == 5


# -- Cor. 1 / Thm. 2 -----------------------------------------------------------------------------
def acc_cfg(**over: Any) -> AcceptanceConfig:
    base = {"enabled": True, "required": True, "epsilon": 0.2, "delta": 0.05, "sigma_delta": "auto",
            "sigma_prior": 0.1, "b": 0.5, "batch": "auto", "min_batch": 1, "max_batch": 24}
    return AcceptanceConfig.from_cfg({**base, **over})


def test_batch_size_from_estimated_sigma_by_hand() -> None:
    cfg = acc_cfg()
    sigma, source = estimate_sigma([0.1, 0.3], cfg)
    assert source == "warm" and sigma == pytest.approx(math.sqrt(0.02))  # std ddof=1
    # Thm. 2: 2 s^2/eps^2 log(1/delta) + 2b/(3 eps) log(1/delta)
    #       = 2 * .02 / .04 * 2.9957 + 2 * .5 / .6 * 2.9957 = 2.9957 + 4.9929 = 7.989 -> 8
    batch, bound = batch_size(cfg, sigma)
    assert bound == pytest.approx(math.log(20) * (1 + 1 / 0.6)) and batch == 8
    assert estimate_sigma([0.4], cfg) == (0.1, "prior")  # one sample: no std, the prior
    assert estimate_sigma([0.1, 0.3], acc_cfg(sigma_delta=0.05)) == (0.05, "config")
    assert batch_size(acc_cfg(min_batch=9), sigma)[0] == 9  # clipped to App. B.2's range
    assert batch_size(acc_cfg(max_batch=6), sigma)[0] == 6
    assert batch_size(acc_cfg(batch=3), sigma) == (3, pytest.approx(bound))  # fixed |B|
    # the paper's main-text setting: eps = .12, b = 1 needs >= 17 contexts whatever sigma is
    assert batch_size(acc_cfg(epsilon=0.12, b=1.0), 0.0)[0] == 17


def test_switch_needs_both_the_cosine_gate_and_delta() -> None:
    ctl = SwitchController(switch_cfg(gate__threshold=0.5, acceptance__epsilon=0.1,
                                      acceptance__batch=3))
    state = ctl.new_state(adapts=True)
    ctl.calibrate(state, [])
    ctl.size_acceptance(state, applicable=True, warm_deltas=[0.2, 0.4])
    assert state.acceptance.batch == 3 and state.acceptance.sigma == pytest.approx(math.sqrt(.02))
    # hits on turns 2, 3 (m = 2 reached) but only 2 of |B| = 3 contexts: no switch yet
    assert not ctl.score_gate(state, 2, 0.9, gap_old=0.5, gap_new=0.1)
    assert not ctl.score_gate(state, 3, 0.9, gap_old=0.4, gap_new=0.1)
    assert state.hits == 2 and state.accepted is None
    # third context: Delta = mean(.5,.4,.3) - mean(.1,.1,.25) = .4 - .15 = .25 >= .1 -> switch
    assert ctl.score_gate(state, 4, 0.75, gap_old=0.3, gap_new=0.25)
    assert state.acceptance.delta == pytest.approx(0.25) and state.switch_turn == 4
    assert state.acceptance.turns == [2, 3, 4]

    # Delta below epsilon blocks the switch although every cosine hits
    state = ctl.new_state(adapts=True)
    ctl.calibrate(state, [])
    ctl.size_acceptance(state, applicable=True, warm_deltas=[])
    for t in range(2, 8):
        assert not ctl.score_gate(state, t, 0.95, gap_old=0.2, gap_new=0.15)  # Delta = .05
    assert state.accepted is False and not state.switched
    # Delta passes but the cosine misses: no switch either
    state = ctl.new_state(adapts=True)
    ctl.calibrate(state, [])
    ctl.size_acceptance(state, applicable=True, warm_deltas=[])
    for t in range(2, 8):
        assert not ctl.score_gate(state, t, 0.3, gap_old=0.9, gap_new=0.1)
    assert state.accepted is True and not state.switched


def test_acceptance_recorded_but_not_required() -> None:
    ctl = SwitchController(switch_cfg(gate__threshold=0.5, acceptance__batch=2,
                                      acceptance__required=False))
    state = ctl.new_state(adapts=True)
    ctl.calibrate(state, [])
    ctl.size_acceptance(state, applicable=True, warm_deltas=[])
    assert not ctl.score_gate(state, 2, 0.9, gap_old=0.1, gap_new=0.5)
    assert ctl.score_gate(state, 3, 0.9, gap_old=0.1, gap_new=0.5)  # Delta = -.4, not required
    record = state.acceptance.record(ctl.cfg.acceptance)
    assert record["Delta"] == pytest.approx(-0.4) and record["passed"] is False
    assert record["required"] is False


def test_no_adaptation_means_acceptance_not_applicable() -> None:
    ctl = SwitchController(switch_cfg(gate__threshold=0.5, acceptance__batch=6))
    state = ctl.new_state(adapts=False)
    ctl.calibrate(state, [])
    ctl.size_acceptance(state, applicable=False, warm_deltas=[])
    assert not ctl.score_gate(state, 2, 0.9)
    assert ctl.score_gate(state, 3, 0.9)  # the cosine gate alone decides
    assert state.acceptance.record(ctl.cfg.acceptance)["applicable"] is False


# -- no oracle -----------------------------------------------------------------------------------
def test_decisions_never_read_the_dialogue_length() -> None:
    ctl = SwitchController(switch_cfg(gate__threshold=0.5, acceptance__batch=2))  # W=2, m=2
    state = ctl.new_state()  # no hint: nothing is known about the remaining turns
    assert state.phase == "warm" and state.expected_turns is None
    assert [ctl.route(state, t).phase for t in (0, 1)] == ["warm", "warm"]
    ctl.calibrate(state, [])
    # however late, a gate turn stays a gate turn (a deployment cannot know it is the last)
    assert all(ctl.route(state, t).phase == "gate" for t in (2, 3, 50))


def test_expected_turns_hint_skips_what_cannot_pay_off() -> None:
    ctl = SwitchController(switch_cfg(gate__threshold=0.5, acceptance__batch=3))
    # W + max(m, |B|) + 1 = 2 + 3 + 1 = 6 for a method that adapts, 2 + 2 + 1 = 5 otherwise
    assert ctl.new_state(5, "oracle", adapts=True).phase == "too_short"
    assert "oracle" in ctl.new_state(5, "oracle", adapts=True).reason
    assert ctl.new_state(5, "oracle", adapts=False).phase == "warm"
    state = ctl.new_state(7, "config", adapts=True)
    ctl.calibrate(state, [])
    ctl.size_acceptance(state, applicable=True, warm_deltas=[])
    assert ctl.route(state, 2).phase == "gate"  # turns 2,3,4 fill B, G from 5
    ctl.score_gate(state, 2, 0.1, gap_old=0.5, gap_new=0.1)
    assert ctl.route(state, 3).phase == "gate"  # 3, 4 more -> G from 5 < 7
    ctl.score_gate(state, 3, 0.1, gap_old=0.5, gap_new=0.1)
    assert ctl.route(state, 4).phase == "gate"  # needs 2 hits: 4, 5 -> G from 6 < 7
    ctl.score_gate(state, 4, 0.1, gap_old=0.5, gap_new=0.1)
    route = ctl.route(state, 5)  # 5, 6 -> G from 7 = expected: no payoff
    assert route.phase == "no_payoff" and route.role == "F" and "config" in route.reason


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="expected_turns"):
        switch_cfg(expected_turns=0)
    with pytest.raises(ValueError, match="batch"):
        switch_cfg(acceptance__batch=0)
    with pytest.raises(ValueError, match="fallback"):
        switch_cfg(gate__fallback="nope")
    assert switch_cfg(expected_turns="oracle").expected_turns == "oracle"


# -- drift (numbers only; the real encoder: test_switching_drift.py) ----------------------------
def run_monitor(ctl: SwitchController, state: Any, queries: list[np.ndarray],
                switch_after: int) -> list[str]:
    """Route + observe each turn like SwitchingMethod does; answers echo the query's topic."""
    phases = []
    for t, q in enumerate(queries):
        route = ctl.route(state, t)
        phases.append(route.phase)
        if route.phase == "rollback":
            ctl.rolled_back(state, t)
        sim = ctl.drift_similarity(state, t, q)
        if route.phase == "gate":
            ctl.score_gate(state, t, 0.9 if t >= switch_after - 1 else 0.0)
        ctl.observe_drift(state, t, q, q, sim)
    return phases


def test_drift_hands_the_next_turn_to_f_then_g_continues() -> None:
    ctl = SwitchController(switch_cfg(gate__threshold=0.5, drift__window=2,
                                      drift__threshold=0.5, drift__recheck_turns=0))
    a, b = unit(1, 0, 0), unit(0, 1, 0)
    state = ctl.new_state()
    ctl.calibrate(state, [])
    phases = run_monitor(ctl, state, [a, a, a, a, a, a, b, b, b, b, b], switch_after=3)
    # switch at turn 3; turn 6 (b) mixes a, b: cos(mean(a, b), a) = .707 >= .5; turn 7 (b, b)
    # falls to 0 -> turn 8 is F's; the window restarts at turn 6 (the drifted queries)
    assert phases == ["warm", "warm", "gate", "gate", "switched", "switched", "switched",
                      "switched", "rollback", "switched", "switched"]
    assert state.rollbacks == [8] and state.drift.refreshes == [{"turn": 8, "window_from": 6}]


def test_recheck_can_fire_on_the_first_g_turn_of_a_short_dialogue() -> None:
    """History accrues from turn 1, so a falling trend seen during warm/gate turns counts."""
    ctl = SwitchController(switch_cfg(gate__threshold=0.5, drift__window=1,
                                      drift__threshold=0.0, drift__recheck_turns=2,
                                      drift__recheck_drop=0.3))
    angles = [0.0, 0.3, 0.9, 1.3, 1.3]  # similarities fall from turn 1 on
    state = ctl.new_state()
    ctl.calibrate(state, [])
    qs = [unit(math.cos(x), math.sin(x)) for x in angles]
    phases = run_monitor(ctl, state, qs, switch_after=3)
    assert phases == ["warm", "warm", "gate", "gate", "rollback"]


def test_no_rollback_before_the_switch_and_cap() -> None:
    ctl = SwitchController(switch_cfg(gate__threshold=0.5, drift__threshold=0.9,
                                      drift__window=1, drift__recheck_turns=0,
                                      drift__max_rollbacks=1))
    a, b = unit(1, 0), unit(0, 1)
    state = ctl.new_state()
    ctl.calibrate(state, [])
    # the drift at turn 2 (a gate turn) hands nothing to F: F serves it anyway; after the
    # switch (turn 3) it fires and turn 4 is F's; turn 5 (back to a) would fire again: capped
    phases = run_monitor(ctl, state, [a, a, b, b, b, a, a, b, b, b], switch_after=3)
    assert phases[:5] == ["warm", "warm", "gate", "gate", "rollback"]
    assert phases.count("rollback") == 1 and state.rollbacks == [4]
