"""Config values are checked before work (somabench/validate.py): every knob of conf/method,
conf/judge and conf/dataset has a rule, the shipped configs pass, and a bad value is one
``error:`` line naming the key, from a run (before any model loads) and from ``plan``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from somabench.config import compose, conf_dir
from somabench.errors import ConfigError
from somabench.validate import GROUPS, Int, Num, OneOf, problems, validate, walk

FAMILIES = ("tiny", "llama")  # per-family files add or change knobs (conf/method/family/)
BAD_STEPS = "method.mining.steps=-3"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def composed(group: str, option: str, family: str):  # noqa: ANN201 - a DictConfig
    extra = ["dataset.path=x.jsonl"] if (group, option) == ("dataset", "custom") else []
    return compose([f"{group}={option}", f"model={family}", *extra])


@pytest.mark.parametrize("group", GROUPS)
def test_every_knob_in_conf_has_a_rule_and_the_shipped_values_pass(group: str) -> None:
    uncovered, bad = set(), []
    for option in options(group):
        for family in FAMILIES:
            cfg = composed(group, option, family)
            bad += [f"{option}/{family}: {p}" for p in problems(cfg)]
            tree = OmegaConf.to_container(cfg[group], resolve=True)
            uncovered |= {f"{group}.{path}" for path, _, rule in walk(group, tree) if rule is None}
    assert not uncovered, f"add rules to somabench/validate.py for {sorted(uncovered)}"
    assert not bad, bad


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_passes(experiment: str) -> None:
    assert problems(compose([f"experiment={experiment}"])) == []


@pytest.mark.parametrize(("override", "key", "allowed"), [
    (BAD_STEPS, "method.mining.steps=-3", "an integer >= 1"),
    ("method.mining.lr=0", "method.mining.lr=0", "a number > 0"),
    ("method.mining.steps=2.5", "method.mining.steps=2.5", "an integer >= 1"),
    ("method.switch.gate.threshold=automatic", "method.switch.gate.threshold='automatic'",
     "a number in [-1, 1] or auto"),
    ("method.lora.lr_schedule=cosin", "method.lora.lr_schedule='cosin'",
     "one of cosine, constant. Did you mean 'cosine'?"),
    ("method.switch.acceptance.delta=1", "method.switch.acceptance.delta=1", "a number in (0, 1)"),
    ("method.switch.drift.enabled=1", "method.switch.drift.enabled=1", "true or false"),
])
def test_a_bad_soma_value_names_the_key_and_what_it_accepts(override: str, key: str,
                                                            allowed: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(compose(["method=soma", override]))
    assert str(err.value) == f"{key}: expected {allowed}"


def test_judge_and_dataset_values_are_checked_too() -> None:
    found = problems(compose(["judge=paper", "judge.concurrency=0", "judge.judges.gpt_oss.kind=lm",
                              "dataset=remedi", "dataset.loader=bundle", "dataset.max_turns=0"]))
    assert "judge.concurrency=0: expected an integer >= 1" in found
    assert any(p.startswith("judge.judges.gpt_oss.kind='lm': expected one of ") and "llm" in p
               for p in found), found
    assert any(p.startswith("dataset.loader='bundle'") and "Did you mean 'bundled'?" in p
               for p in found), found
    assert "dataset.max_turns=0: expected an integer >= 1 or null" in found


def test_values_that_contradict_each_other_are_named_together() -> None:
    found = problems(compose(["method=soma", "method.switch.acceptance.min_batch=9",
                              "method.switch.acceptance.max_batch=4"]))
    assert found == ["method.switch.acceptance.min_batch=9 must be <= "
                     "method.switch.acceptance.max_batch=4"]


def test_rules_refuse_booleans_as_numbers_and_keep_open_bounds() -> None:
    assert Num(0, 1).problem(True) is not None
    assert Num(0, 1, lo_open=True).problem(0) is not None and Num(0, 1).problem(0) is None
    assert Int(1, null=True).problem(None) is None and Int(1).problem(None) is not None
    assert OneOf(("a",)).problem(True) is not None


def test_the_schema_lists_the_values_the_code_accepts() -> None:
    """The enums are written out in validate.py (it must not import torch); here they are
    compared with the constants the code checks against."""
    from somabench import validate as v
    from somabench.backends.kv_press import PRESSES
    from somabench.data.formats import FORMATS
    from somabench.data.hub import ON_UNCONVERTIBLE
    from somabench.dtype import ALIASES
    from somabench.soma.method import MINED_INPUTS
    from somabench.switching.acceptance import BATCH_SOURCES
    from somabench.switching.gate import FALLBACKS
    from somabench.switching.lora import BATCHING, METRICS

    assert set(v.KV_PRESSES) == set(PRESSES)
    assert set(v.DATASET_FORMATS) == set(FORMATS)
    assert set(v.ON_UNCONVERTIBLE) == set(ON_UNCONVERTIBLE)
    assert set(v.DTYPES) == set(ALIASES)
    assert set(v.BATCH_SOURCES) == set(BATCH_SOURCES)
    assert set(v.BATCHING.values) == set(BATCHING) and set(v.LORA_METRICS) == set(METRICS)
    assert set(v.MINED_INPUTS) == set(MINED_INPUTS) and set(v.GATE_FALLBACKS) == set(FALLBACKS)


def test_run_task_refuses_a_bad_value_before_any_model_or_data_loads(
        monkeypatch: pytest.MonkeyPatch, tiny_cfg_overrides: list[str]) -> None:
    """``run_task`` is what sweeps and tune call (they skip the CLI's preflight)."""
    import somabench.backends
    import somabench.data
    import somabench.runner
    from somabench.task import run_dir_of, run_task

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("loaded before the config was checked")

    monkeypatch.setattr(somabench.backends, "build_backend", must_not_run)
    monkeypatch.setattr(somabench.runner, "ensure_reference", must_not_run)
    monkeypatch.setattr(somabench.data, "load_dialogues", must_not_run)
    cfg = compose([*tiny_cfg_overrides, "method=soma", BAD_STEPS])
    with pytest.raises(ConfigError, match=r"^method\.mining\.steps=-3: expected an integer >= 1$"):
        run_task(cfg)
    assert not run_dir_of(cfg).exists()  # no run.json for a config that never started


def somabench(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, "-m", "somabench", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300, env=env)


def test_the_cli_and_plan_give_the_same_one_line_error(tmp_path: Path) -> None:
    private = [f"paths.output_root={tmp_path / 'outputs'}",
               f"cache.path={tmp_path / 'cache' / 'requests.sqlite'}"]
    run = somabench(["method=soma", BAD_STEPS, *private], tmp_path)
    plan = somabench(["plan", "method=soma", BAD_STEPS], tmp_path)
    line = "error: method.mining.steps=-3: expected an integer >= 1"
    assert (run.returncode, run.stderr.strip()) == (2, line), run.stderr
    assert (plan.returncode, plan.stderr.strip()) == (2, line), plan.stderr
    assert not (tmp_path / "outputs").exists()  # nothing started: no run dir, no model


def test_plan_checks_every_job_of_a_sweep(capsys: pytest.CaptureFixture[str]) -> None:
    from somabench.commands.plan import main as plan_main

    assert plan_main(["method=soma", "method.mining.steps=5,-3"]) == 2
    assert capsys.readouterr().err.strip() == ("error: method.mining.steps=-3: expected an "
                                               "integer >= 1")
