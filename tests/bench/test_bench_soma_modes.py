"""conf/bench/soma.yaml's modes: the llama.cpp-F variant is the reference scenario plus F's engine."""

from __future__ import annotations

from omegaconf import OmegaConf

from somabench.bench.soma import MODES, load_settings, mode_settings


def test_llamacpp_variant_extends_the_reference_settings() -> None:
    settings, extra = load_settings(["bench.reference_settings.dialogues=2", "seed=3"])
    assert extra == ["seed=3"]
    ref, _ = mode_settings(settings, "reference_settings")
    fast, missing = mode_settings(settings, "reference_settings_llamacpp_f")
    assert list(fast.overrides) == [*ref.overrides, "model.F.backend=llamacpp"]
    assert fast.dialogues == 2 and fast.goal_s == ref.goal_s
    assert missing is None or "llama_cpp is not installed" in missing
    assert {key for key, _ in MODES.values()} <= set(settings)


def test_a_missing_engine_skips_the_mode_with_its_reason() -> None:
    settings = OmegaConf.create({"a": {"overrides": ["x=1"], "dialogues": 1},
                                 "b": {"like": "a", "needs": "no_such_module_xyz",
                                       "overrides": ["y=2"]}})
    node, missing = mode_settings(settings, "b")
    assert list(node.overrides) == ["x=1", "y=2"]
    assert missing is not None and "no_such_module_xyz is not installed" in missing
