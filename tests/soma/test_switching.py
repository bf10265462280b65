"""The shared switch controller: calibration, consecutive hits, payoff, drift rollback."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf

from somabench.config import compose
from somabench.soma.switching import (
    SwitchConfig,
    SwitchController,
    conservative_quantile,
    cross_turn_scores,
)


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
        state = ctl.new_state(n_turns=100)
        warm_null = list(rng.beta(2, 5, size=60))  # null cosines seen on the warm window
        ctl.calibrate(state, warm_null)
        assert state.calibration["method"] == "null_quantile"
        for _ in range(100):  # independent m-turn gate attempts under H0
            s = ctl.new_state(n_turns=100)
            s.threshold = state.threshold
            trials += 1
            false_switches += any(ctl.score_gate(s, t, float(x))
                                  for t, x in enumerate(rng.beta(2, 5, size=m)))
            s = ctl.new_state(n_turns=100)
            s.threshold = state.threshold
            true_switches += any(ctl.score_gate(s, t, float(x))
                                 for t, x in enumerate(rng.beta(9, 2, size=m)))
    assert false_switches / trials <= rate * 1.2  # finite-sample slack of the plug-in quantile
    assert true_switches / trials > 0.9  # and the gate still passes aligned answers


def test_threshold_clipped_and_fallbacks() -> None:
    ctl = SwitchController(switch_cfg())
    state = ctl.new_state(10)
    assert ctl.calibrate(state, [0.01, 0.02] * 30) == pytest.approx(0.3)  # min_threshold clip
    ctl = SwitchController(switch_cfg(gate__fallback="max_null"))
    state = ctl.new_state(10)
    assert ctl.calibrate(state, [0.41, 0.62, 0.55]) == pytest.approx(0.62)
    assert state.calibration["method"] == "max_null"
    assert state.calibration["per_hit_bound"] == pytest.approx(0.25)
    ctl = SwitchController(switch_cfg(gate__fallback="max_threshold"))
    state = ctl.new_state(10)
    assert ctl.calibrate(state, [0.41, 0.62, 0.55]) == pytest.approx(0.95)
    ctl = SwitchController(switch_cfg(gate__threshold=0.7))
    state = ctl.new_state(10)
    assert ctl.calibrate(state, []) == pytest.approx(0.7)


def test_consecutive_hits_and_one_time_switch() -> None:
    ctl = SwitchController(switch_cfg(gate__threshold=0.5))
    state = ctl.new_state(10)
    ctl.calibrate(state, [])
    assert not ctl.score_gate(state, 2, 0.9)
    assert not ctl.score_gate(state, 3, 0.4)  # a miss resets the run
    assert state.hits == 0
    assert not ctl.score_gate(state, 4, 0.6)
    assert ctl.score_gate(state, 5, 0.51)
    assert state.switched and state.switch_turn == 5
    assert not ctl.score_gate(state, 6, 0.99)  # one-time: never switches again
    assert not ctl.score_gate(state, 7, None) and state.switch_turn == 5


def test_routing_warm_gate_payoff_and_too_short() -> None:
    ctl = SwitchController(switch_cfg(gate__threshold=0.5))  # W=2, m=2
    assert ctl.new_state(4).phase == "too_short"  # needs W + m + 1 = 5
    state = ctl.new_state(5)
    assert [ctl.route(state, t).phase for t in (0, 1)] == ["warm", "warm"]
    ctl.calibrate(state, [])
    assert ctl.route(state, 2).phase == "gate"
    ctl.score_gate(state, 2, 0.1)
    # turn 3: even two hits (turns 3, 4) would leave no turn for G
    assert ctl.route(state, 3).phase == "no_payoff"
    assert ctl.route(state, 3).role == "F"


def test_drift_triggers_exactly_one_f_turn_then_g_continues() -> None:
    ctl = SwitchController(switch_cfg(gate__threshold=0.5, drift__window=2,
                                      drift__threshold=0.5, drift__recheck_turns=0))
    topic_a, topic_b = unit(1, 0, 0), unit(0, 1, 0)
    state = ctl.new_state(12)
    ctl.calibrate(state, [])
    ctl.set_anchor(state, [topic_a, topic_a])
    for t in (2, 3):
        assert ctl.route(state, t, topic_a).phase == "gate"
        ctl.score_gate(state, t, 0.9)
    assert state.switched
    phases = []
    queries = [topic_a, topic_a, topic_b, topic_b, topic_b, topic_b, topic_b, topic_b]
    for t, q in enumerate(queries, start=4):
        route = ctl.route(state, t, q)
        phases.append(route.phase)
        if route.phase == "rollback":
            ctl.rolled_back(state, t, state.queries[-2:])
    # turn 6 mixes a and b: cos(mean(a,b), a) = 0.707 >= 0.5; turn 7 (b, b) drifts
    assert phases.count("rollback") == 1
    assert phases == ["switched"] * 3 + ["rollback"] + ["switched"] * 4
    assert state.rollbacks == [7]


def test_recheck_catches_growing_divergence() -> None:
    ctl = SwitchController(switch_cfg(gate__threshold=0.5, drift__window=1,
                                      drift__threshold=0.0, drift__recheck_turns=2,
                                      drift__recheck_drop=0.3))
    state = ctl.new_state(12)
    ctl.calibrate(state, [])
    ctl.set_anchor(state, [unit(1, 0)])
    state.switch_turn, state.phase = 1, "switched"
    angles = [0.0, 0.3, 0.6, 0.9]  # cos falls 1, .955, .825, .62: drops of .17 then .34
    phases = [ctl.route(state, t, unit(math.cos(a), math.sin(a))).phase
              for t, a in enumerate(angles, start=2)]
    assert phases == ["switched", "switched", "switched", "rollback"]


def test_max_rollbacks_caps_rollbacks() -> None:
    ctl = SwitchController(switch_cfg(drift__threshold=0.9, drift__window=1,
                                      drift__max_rollbacks=1, drift__recheck_turns=0))
    state = ctl.new_state(12)
    ctl.set_anchor(state, [unit(1, 0)])
    state.switch_turn, state.phase = 1, "switched"
    first = ctl.route(state, 2, unit(0, 1))
    assert first.phase == "rollback"
    ctl.rolled_back(state, 2, [unit(1, 0)])
    assert ctl.route(state, 3, unit(0, 1)).phase == "switched"
