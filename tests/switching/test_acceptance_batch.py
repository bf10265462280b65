"""Issue 22: where the acceptance batch B comes from, the bounded gate, the turns a switch needs.

Hand-computed: Delta on a fixed held-out batch, the gate closing after k failed looks (F serves,
no G candidates), the future-turn diagnostic kept outside the test, W + max(m, |B|) + 1 for both
readings, config validation naming the key.
"""

from __future__ import annotations

from typing import Any

import pytest
from omegaconf import OmegaConf

from somabench.config import compose
from somabench.switching.acceptance import AcceptanceConfig
from somabench.switching.controller import SwitchConfig, SwitchController


def controller(**acceptance: Any) -> SwitchController:
    base = OmegaConf.to_container(compose(["method=soma"]).method.switch, resolve=True)
    base["gate"]["threshold"] = 0.5
    base["warm_window"] = 2
    base["gate"]["consecutive_hits"] = 2
    base["acceptance"].update({"epsilon": 0.1, **acceptance})
    return SwitchController(SwitchConfig.from_cfg(base))


def started(ctl: SwitchController) -> Any:
    state = ctl.new_state(adapts=True)
    ctl.calibrate(state, [])
    ctl.size_acceptance(state, applicable=True, warm_deltas=[0.1, 0.3])
    return state


def test_turns_needed_for_both_readings() -> None:
    # future turns: W + max(m, |B|) + 1 = 2 + max(2, 6) + 1 = 9; held-out: 2 + 2 + 1 = 5
    assert controller(batch=6).turns_needed(adapts=True) == 9
    assert controller(batch=6, batch_source="mined_holdout").turns_needed(adapts=True) == 5
    # a test that does not block, or no adaptation, needs only the gate
    assert controller(batch=6, required=False).turns_needed(adapts=True) == 5
    assert controller(batch=6).turns_needed(adapts=False) == 5


def test_mined_holdout_batch_decides_at_once_and_passes() -> None:
    ctl = controller(batch=2, batch_source="mined_holdout")
    state = started(ctl)
    acc = state.acceptance
    # Delta = mean(.6, .4) - mean(.3, .3) = .5 - .3 = .2 >= .1
    acc.set_fixed_batch(["0:1", "1:0"], gaps_old=[0.6, 0.4], gaps_new=[0.3, 0.3])
    assert acc.look(ctl.cfg.acceptance) is True and acc.failed_tests == 0
    assert acc.delta == pytest.approx(0.2) and acc.remaining() == 0
    # the gate needs only m = 2 cosine hits now; gate turns are a diagnostic, not B
    assert not ctl.score_gate(state, 2, 0.9, gap_old=0.5, gap_new=0.9)
    assert ctl.score_gate(state, 3, 0.9, gap_old=0.3, gap_new=0.5)
    assert state.switch_turn == 3 and acc.n == 2  # B unchanged by the gate turns
    record = acc.record(ctl.cfg.acceptance)
    assert record["contexts"] == "mined_holdout" and record["batch_labels"] == ["0:1", "1:0"]
    assert record["batch_turns"] == [-1, -1] and record["passed"] is True
    # future-turn Delta: mean(.5, .3) - mean(.9, .5) = .4 - .7 = -.3 (recorded, not tested)
    assert record["Delta_future_turns"] == pytest.approx(-0.3)
    assert record["future_turns_diagnostic"] == [[2, 0.5, 0.9], [3, 0.3, 0.5]]


def test_failed_fixed_batch_closes_the_gate() -> None:
    ctl = controller(batch=2, batch_source="mined_holdout")
    state = started(ctl)
    state.acceptance.set_fixed_batch(["0:0", "1:1"], gaps_old=[0.3, 0.3], gaps_new=[0.3, 0.25])
    assert state.acceptance.look(ctl.cfg.acceptance) is False  # Delta = .025 < .1
    route = ctl.route(state, 2)
    assert route.phase == "gate_closed" and route.role == "F" and "bounded gate" in route.reason
    assert state.acceptance.record(ctl.cfg.acceptance)["gate_closed"] is True
    # recorded, not required: the gate stays open and the cosine alone decides
    ctl = controller(batch=2, batch_source="mined_holdout", required=False)
    state = started(ctl)
    state.acceptance.set_fixed_batch(["0:0", "1:1"], gaps_old=[0.3, 0.3], gaps_new=[0.3, 0.25])
    state.acceptance.look(ctl.cfg.acceptance)
    assert ctl.route(state, 2).phase == "gate"
    assert not ctl.score_gate(state, 2, 0.9) and ctl.score_gate(state, 3, 0.9)


def test_future_turns_gate_closes_after_k_failed_looks() -> None:
    ctl = controller(batch=2, max_failed_tests=2)
    state = started(ctl)
    # turn 2: B incomplete (1 of 2), no look counts; Delta stays .0 < .1 afterwards
    assert not ctl.score_gate(state, 2, 0.9, gap_old=0.2, gap_new=0.2)
    assert state.acceptance.failed_tests == 0 and ctl.route(state, 3).phase == "gate"
    assert not ctl.score_gate(state, 3, 0.9, gap_old=0.2, gap_new=0.2)  # 1st failed look
    assert state.acceptance.failed_tests == 1 and ctl.route(state, 4).phase == "gate"
    assert not ctl.score_gate(state, 4, 0.9, gap_old=0.2, gap_new=0.2)  # 2nd: closed
    assert state.acceptance.failed_tests == 2 and ctl.route(state, 5).phase == "gate_closed"
    # unbounded (null): it keeps looking
    ctl = controller(batch=2)
    state = started(ctl)
    for t in range(2, 9):
        ctl.score_gate(state, t, 0.9, gap_old=0.2, gap_new=0.2)
    assert state.acceptance.failed_tests == 6 and ctl.route(state, 9).phase == "gate"


def test_holdout_size_is_capped_by_the_pool() -> None:
    cfg = controller(batch=6, batch_source="mined_holdout").cfg.acceptance
    assert cfg.holdout_size(10)[0::2] == (6, False)
    assert cfg.holdout_size(4)[0::2] == (4, True)
    auto = controller(batch="auto", batch_source="mined_holdout", epsilon=0.12).cfg.acceptance
    size, bound, capped = auto.holdout_size(40)
    # Thm. 2 at sigma_prior .1, eps .12, b 1, delta .05: 2(.01)/.0144 ln20 + 2/.36 ln20 = 20.8
    assert bound == pytest.approx(2 * 0.01 / 0.0144 * 2.995732 + 2 / 0.36 * 2.995732, rel=1e-5)
    assert size == 21 and not capped


@pytest.mark.parametrize(("over", "match"), [
    ({"batch_source": "next_turns"}, "batch_source='next_turns'"),
    ({"max_failed_tests": 0}, "max_failed_tests must be null or >= 1"),
    ({"positive_control": True}, "positive_control=true needs batch_source=mined_holdout"),
])
def test_config_errors_name_the_key(over: dict[str, Any], match: str) -> None:
    base = {"enabled": True, "required": True, "epsilon": 0.1, "delta": 0.05, "sigma_delta": "auto",
            "sigma_prior": 0.1, "b": 1.0, "batch": 2, "min_batch": 1, "max_batch": 24}
    with pytest.raises(ValueError, match=match):
        AcceptanceConfig.from_cfg({**base, **over})
