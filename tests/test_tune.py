"""``somabench tune``: Optuna (>= 4) ask-and-tell over the compose API, resumable after a kill.

Fast: the search configs compose and hold the paper's App. B.2 space; Hydra's sweep syntax maps
to the distributions the old Optuna sweeper used (``range`` includes its end); samplers are
seeded per trial number; one process per study; ``run`` refuses a search config; no pin keeps
SQLAlchemy below 2. End to end (subprocesses, the ``testing.fake`` backend, a tokens objective):
a 3-trial search killed with SIGKILL in its second trial, then resumed, ends with exactly 3
finished trials and never reruns a finished one.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomllib
from omegaconf import OmegaConf, open_dict

from somabench.config import compose, conf_dir
from somabench.errors import ConfigError
from somabench.sweep import refuse_search
from somabench.tune import Search, as_override, parse_space, study_lock, trial_seed

ROOT = Path(__file__).resolve().parents[1]
SEARCHES = sorted(p.stem for p in (conf_dir() / "hparams_search").glob("*.yaml"))
TEST_SEARCH = Path(__file__).parent / "helpers" / "tune_test_search.yaml"
# App. B.2 (paper ~line 434) -> conf/method/soma.yaml key: (kind, values or bounds).
PAPER_RANGES = {
    "method.soft_prompt.length": ("choice", [4, 8, 16, 32, 64]),
    "method.mining.lr": ("log", (1e-4, 5e-3)),
    "method.mining.weight_decay": ("float", (0.0, 1e-2)),
    "method.mining.grad_clip": ("float", (0.5, 1.0)),
    "method.neighbors.k": ("choice", [20, 50, 100]),
    "method.mining.top_m": ("choice", [50, 100, 200]),
    "method.mining.tau": ("float", (0.4, 1.2)),
    "method.mining.lambda_exp": ("float", (0.5, 2.0)),
    "method.mining.beta": ("float", (0.02, 0.15)),
    "method.lora.rank": ("choice", [4, 8, 16, 32]),
    "method.lora.alpha": ("choice", [4, 8, 16, 32]),
    "method.lora.lr": ("log", (5e-5, 2e-3)),
    "method.switch.warm_window": ("int", (5, 12)),
    "method.switch.acceptance.epsilon": ("float", (0.05, 0.12)),
    "method.switch.acceptance.batch": ("int", (6, 24)),
    "method.switch.gate.consecutive_hits": ("choice", [2, 3]),
    "method.soft_prompt.n_candidates": ("choice", [3, 4, 5]),
}


# -- fast: configs and the search space ------------------------------------------------------
@pytest.mark.parametrize("name", SEARCHES)
def test_search_config_composes_with_a_journal_and_a_fixed_seed(name: str, tmp_path: Path) -> None:
    lines = (conf_dir() / "hparams_search" / f"{name}.yaml").read_text().splitlines()
    assert lines[0] == "# @package _global_"
    assert lines[1].startswith("# python -m somabench tune") and f"hparams_search={name}" in lines[1]
    cfg = compose([f"hparams_search={name}", f"paths.output_root={tmp_path}"])
    search = Search.from_cfg(cfg, name)  # every searched key exists in the composed config
    assert cfg.optimized_metric and cfg.token_penalty is not None
    assert search.direction == "maximize" and isinstance(search.sampler["seed"], int)
    assert search.storage_file().is_relative_to(tmp_path), "the study lives under paths"
    assert search.storage_file().suffix == ".journal"


def test_paper_search_space_is_app_b2() -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    cfg = compose(["hparams_search=soma_optuna"])
    space, fixed = parse_space(OmegaConf.to_container(cfg.search.params))
    assert set(space) == set(PAPER_RANGES) and not fixed
    for key, (kind, expected) in PAPER_RANGES.items():
        dist = space[key]
        if kind == "choice":
            assert isinstance(dist, CategoricalDistribution) and list(dist.choices) == expected, key
        elif kind == "int":
            assert isinstance(dist, IntDistribution) and not dist.log, key
            assert (dist.low, dist.high) == expected, f"{key}: range(a,b) includes b"
        else:
            assert isinstance(dist, FloatDistribution) and dist.log == (kind == "log"), key
            assert math.isclose(dist.low, expected[0]) and math.isclose(dist.high, expected[1]), key


def test_tiny_search_overrides_only_what_it_says() -> None:
    tiny = compose(["hparams_search=soma_optuna_tiny"])
    space, _ = parse_space(OmegaConf.to_container(tiny.search.params))
    assert (space["method.switch.warm_window"].low, space["method.switch.warm_window"].high) == (1, 3)
    assert tiny.search.n_trials == 10 and tiny.search.sampler.kind == "tpe"
    assert tiny.model.family == "tiny" and tiny.judge.name == "embedding"


def test_sweep_syntax_mapping_and_errors() -> None:
    from optuna.distributions import FloatDistribution, IntDistribution

    space, fixed = parse_space({"a": "range(0, 10, 5)", "b": "range(0.0, 1.0, 0.25)",
                                "c": "interval(1, 4)", "d": "tag(log, interval(1, 100))",
                                "e": "7", "f": "choice(x, 'y z')"})
    assert space["a"] == IntDistribution(0, 10, step=5)
    assert space["b"] == FloatDistribution(0.0, 1.0, step=0.25)
    assert space["c"] == FloatDistribution(1.0, 4.0)  # Hydra's interval is always float
    assert space["d"] == FloatDistribution(1.0, 100.0, log=True)
    assert list(space["f"].choices) == ["x", "y z"]
    assert fixed == {"e": "7"}
    with pytest.raises(ConfigError, match=r"search.params.g: .*not a search space"):
        parse_space({"g": "glob(*)"})
    # values go back into overrides unchanged: floats exactly, strings quoted
    assert as_override("k", 0.1 + 0.2) == "k=0.30000000000000004"
    assert as_override("k", "y z") == 'k="y z"' and as_override("k", None) == "k=null"


def test_search_errors_name_the_key(tmp_path: Path) -> None:
    base = ["hparams_search=soma_optuna_tiny", f"paths.output_root={tmp_path}"]
    with pytest.raises(ConfigError, match="tune needs a search: pass hparams_search="):
        Search.from_cfg(compose([]), None)
    with pytest.raises(ConfigError, match="search.sampler.seed must be set"):
        Search.from_cfg(compose([*base, "search.sampler.seed=null"]), "x")
    with pytest.raises(ConfigError, match=r"search.params.method.lora.rnk: no such key"):
        typo = compose(base)
        with open_dict(typo):
            typo.search.params["method.lora.rnk"] = "choice(1,2)"  # a flat key, as in the yaml
        Search.from_cfg(typo, "x")
    with pytest.raises(ConfigError, match=r"search.sampler.kind='cmaes'"):
        Search.from_cfg(compose([*base, "search.sampler.kind=cmaes"]), "x")


def test_trial_samplers_are_seeded_by_number() -> None:
    import optuna

    cfg = compose(["hparams_search=soma_optuna_tiny"])
    search = Search.from_cfg(cfg, "soma_optuna_tiny")
    assert len({trial_seed(1234, n) for n in range(50)}) == 50

    def first_values(number: int) -> dict:
        study = optuna.create_study(direction="maximize")
        study.sampler = search.sampler_for(number)
        return study.ask(fixed_distributions=search.space).params

    assert first_values(0) == first_values(0)  # a fresh study replays the same suggestions
    assert first_values(0) != first_values(1)  # a resumed one (next number) does not repeat


def test_one_process_per_study(tmp_path: Path) -> None:
    search = Search.from_cfg(compose(["hparams_search=soma_optuna_tiny",
                                      f"paths.output_root={tmp_path}"]), "x")
    with study_lock(search):
        with pytest.raises(ConfigError, match=r"another `somabench tune` works on this study"):
            with study_lock(search):
                pass
    with study_lock(search):  # released on exit
        pass


def test_a_plain_run_refuses_a_search_config() -> None:
    with pytest.raises(ConfigError, match="somabench tune hparams_search="):
        refuse_search(compose(["hparams_search=soma_optuna_tiny"]))
    refuse_search(compose([]))  # an ordinary run passes


def test_no_pin_keeps_sqlalchemy_below_2() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    sweeps = " ".join(extras["sweeps"]).lower()
    assert "optuna>=4" in sweeps and "hydra-optuna-sweeper" not in sweeps
    assert "sqlalchemy>=2" in sweeps and "<2" not in sweeps and "alembic<" not in sweeps
    assert int(importlib.metadata.version("optuna").split(".")[0]) >= 4
    try:
        assert int(importlib.metadata.version("sqlalchemy").split(".")[0]) >= 2
    except importlib.metadata.PackageNotFoundError:
        pass


# -- end to end: kill mid-search, resume -----------------------------------------------------
def _conf_with_test_search(tmp_path: Path) -> Path:
    conf = tmp_path / "conf"
    shutil.copytree(conf_dir(), conf)
    shutil.copy(TEST_SEARCH, conf / "hparams_search" / "tune_test.yaml")
    return conf


def _tune(args: list[str], conf: Path) -> subprocess.Popen:
    env = {**os.environ, "SOMABENCH_CONF": str(conf), "HF_HUB_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    return subprocess.Popen([sys.executable, "-m", "somabench", "tune", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _trials(journal: Path) -> list:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if not journal.exists():
        return []
    storage = JournalStorage(JournalFileBackend(str(journal)))
    try:
        return optuna.load_study(study_name="tune_test", storage=storage).get_trials()
    except KeyError:  # the study is not created yet
        return []


def test_search_killed_mid_trial_resumes_to_exactly_n_trials(tmp_path: Path) -> None:
    from optuna.trial import TrialState

    from somabench.records import load_turns

    conf = _conf_with_test_search(tmp_path)
    outputs = tmp_path / "outputs"
    args = ["hparams_search=tune_test", f"paths.output_root={outputs}",
            f"cache.path={tmp_path / 'cache' / 'requests.sqlite'}",
            "model.F.delay_seconds=0.5"]  # 2 turns: >= 1 s per trial, time to kill it inside one
    journal = outputs / "tune_test" / "optuna" / "tune_test.journal"
    n_params = len(parse_space(OmegaConf.load(TEST_SEARCH).search.params)[0])
    first = _tune(args, conf)
    deadline = time.monotonic() + 240
    try:
        while True:  # kill as soon as trial 0 is complete and trial 1 is running
            trials = _trials(journal)
            states = [t.state for t in trials]
            # every value of trial 1 drawn (a kill between two suggestions is the other case,
            # tested below: such a trial is dropped, not resumed)
            if states[:1] == [TrialState.COMPLETE] and states[1:2] == [TrialState.RUNNING] \
                    and len(trials[1].params) == n_params:
                break
            assert first.poll() is None, first.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "trial 1 never started"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    killed = _trials(journal)
    assert [t.state for t in killed[:2]] == [TrialState.COMPLETE, TrialState.RUNNING]
    study_dir = outputs / "tune_test" / "optuna" / "tune_test"
    trial0 = study_dir / "trial_0000"
    before = (trial0 / "records.jsonl").read_bytes(), (trial0 / "run.json").read_bytes()

    second = _tune(args, conf)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out[-3000:]
    trials = _trials(journal)
    assert [t.number for t in trials] == [0, 1, 2], "exactly n_trials, none added for the kill"
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert trials[1].params == killed[1].params, "the interrupted trial kept its values"
    assert "trial 1 was interrupted" in out and "trial 0:" not in out, out[-3000:]
    # trial 0 was not run again: its records and header are byte for byte what they were
    assert ((trial0 / "records.jsonl").read_bytes(), (trial0 / "run.json").read_bytes()) == before
    for trial in trials:
        run_dir = Path(trial.user_attrs["run_dir"])
        header = json.loads((run_dir / "run.json").read_text())
        assert header["status"] == "success"
        assert header["test_doubles"] and header["config"]["generation"]["max_new_tokens"] == \
            trial.params["generation.max_new_tokens"]
        turns = load_turns(run_dir)
        assert sorted(t.turn for t in turns) == [0, 1], "each turn served once"
        assert header["objective"] == trial.value  # the tokens/dialogue the run measured
    results = OmegaConf.load(study_dir / "optimization_results.yaml")
    best = max(trials, key=lambda t: t.value)
    assert results.best_value == best.value and results.complete == 3
    assert (study_dir / "trials.csv").exists()

    third = _tune(args, conf)  # the same command once more: nothing left to do
    out, _ = third.communicate(timeout=120)
    assert third.returncode == 0 and len(_trials(journal)) == 3, out[-2000:]


def test_torn_journal_tail_is_cut_and_kept(tmp_path: Path) -> None:
    from somabench.tune import repair_journal

    path = tmp_path / "s.journal"
    good = b'{"op_code": 0}\n{"op_code": 1}\n'
    path.write_bytes(good + b'{"op_co')  # a write killed mid-line
    assert repair_journal(path) == len(b'{"op_co')
    assert path.read_bytes() == good and (tmp_path / "s.journal.torn").read_bytes() == b'{"op_co'
    assert repair_journal(path) == 0  # a clean file is left alone
    path.write_bytes(good + b"\x00\x00\n" + b'{"op_code": 2}\n')  # garbage, then more lines
    assert repair_journal(path) == len(b"\x00\x00\n" + b'{"op_code": 2}\n')
    assert path.read_bytes() == good


def test_trial_killed_between_suggestions_is_dropped_not_failed(tmp_path: Path) -> None:
    """A process killed after drawing some of a trial's values leaves it RUNNING with partial
    params: the next run marks it failed-and-interrupted, does not count it against
    max_failure_rate (0 here) nor as one of n_trials, and finishes the study."""
    import optuna
    from optuna.distributions import IntDistribution
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    conf = _conf_with_test_search(tmp_path)
    outputs = tmp_path / "outputs"
    journal = outputs / "tune_test" / "optuna" / "tune_test.journal"
    journal.parent.mkdir(parents=True)
    study = optuna.create_study(study_name="tune_test", direction="maximize",
                                storage=JournalStorage(JournalFileBackend(str(journal))))
    half = study.ask()  # the killed process: one of two values drawn, then nothing
    half.suggest_int("generation.max_new_tokens", 2, 40)
    assert isinstance(study.trials[0].distributions["generation.max_new_tokens"], IntDistribution)
    args = ["hparams_search=tune_test", f"paths.output_root={outputs}",
            f"cache.path={tmp_path / 'cache' / 'requests.sqlite'}"]
    proc = _tune(args, conf)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    trials = _trials(journal)
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["interrupted_before_values"]
    assert [t.state for t in trials[1:]] == [TrialState.COMPLETE] * 3
