"""Experiments, searches, launchers and multiruns (issue 8).

Fast: every experiment / hparams_search / launcher config composes and follows STYLE 1 + 5.5;
the search space is the paper's App. B.2 ranges on real SOMA keys; the search objective is
hand-computed; a sweep whose jobs fail goes on and reports them.
Slow (real tiny models, subprocess multiruns): a 2x2 joblib sweep generates the Original once
per dataset and a rerun makes no model call; two Optuna trials in two invocations land in one
sqlite study; ``experiment=glob(*)`` with ``debug=smoke`` runs every experiment file.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from somabench.config import conf_dir
from somabench.sweep import (
    FAILURES_FILE,
    STATUS_FILE,
    search_objective,
    sqlite_path,
    sweep_summary,
    trial_seed,
)
from somabench.task import run_metrics

ROOT = Path(__file__).resolve().parents[1]
CONF = conf_dir()
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
SEARCHES = sorted(p.stem for p in (CONF / "hparams_search").glob("*.yaml"))
LAUNCHERS = sorted(p.stem for p in (CONF / "hydra" / "launcher").glob("*.yaml"))
# The plugin each launcher config builds on (skipped with this reason when not installed).
LAUNCHER_PLUGINS = {
    "parallel": ("hydra_plugins.hydra_joblib_launcher", "pip install hydra-joblib-launcher"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "pip install hydra-submitit-launcher"),
    "ray_cluster": ("hydra_plugins.hydra_ray_launcher", "pip install hydra-ray-launcher"),
}
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
    "method.switch.acceptance.epsilon": ("float", (0.05, 0.12)),  # Cor. 1 / Thm. 2
    "method.switch.acceptance.batch": ("int", (6, 24)),  # |B|
    "method.switch.gate.consecutive_hits": ("choice", [2, 3]),  # m (Sec. 5)
    "method.soft_prompt.n_candidates": ("choice", [3, 4, 5]),
}


def compose_full(overrides: list[str]):  # noqa: ANN201 - DictConfig with the hydra node
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}


def somabench(args: list[str], timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "somabench", *args], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=timeout)


def private_paths(tmp_path: Path) -> list[str]:
    return [f"paths.output_root={tmp_path / 'outputs'}",
            f"cache.path={tmp_path / 'cache' / 'requests.sqlite'}", "progress=false"]


def header_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# -- fast: configs ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_follows_style_and_composes(name: str) -> None:
    path = CONF / "experiment" / f"{name}.yaml"
    lines = header_lines(path)
    assert lines[0] == "# @package _global_", f"{path}: first line must be '# @package _global_'"
    assert lines[1].startswith("# python -m somabench") and f"experiment={name}" in lines[1], \
        f"{path}: the first comment must be the exact command that runs it"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    for entry in raw.get("defaults", []):
        assert isinstance(entry, dict) and all(k.startswith("override /") for k in entry), \
            f"{path}: defaults may hold only 'override /group: option' lines, got {entry}"
    cfg = compose_full([f"experiment={name}"])
    assert cfg.task_name == name, "task_name = the experiment's name (its outputs folder)"
    # Every method / dataset the sweep names exists as a config file.
    params = cfg.hydra.sweeper.get("params") or {}
    for group in ("method", "dataset"):
        for option in str(params.get(group, "")).split(","):
            if option:
                assert (CONF / group / f"{option}.yaml").exists(), \
                    f"{path}: hydra.sweeper.params.{group} names '{option}', no conf/{group}/{option}.yaml"


@pytest.mark.parametrize("name", SEARCHES)
def test_search_config_composes_with_optuna_sqlite_and_fixed_seed(name: str, tmp_path: Path) -> None:
    path = CONF / "hparams_search" / f"{name}.yaml"
    lines = header_lines(path)
    assert lines[0] == "# @package _global_"
    assert lines[1].startswith("# python -m somabench") and f"hparams_search={name}" in lines[1]
    cfg = compose_full([f"hparams_search={name}", f"paths.output_root={tmp_path}"])
    sweeper = cfg.hydra.sweeper
    assert "optuna" in sweeper._target_.lower()
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.optimized_metric and cfg.token_penalty is not None
    assert sweeper.direction == "maximize"
    assert isinstance(sweeper.sampler.seed, int), "the sampler seed must be fixed"
    assert sweeper.study_name
    db = sqlite_path(sweeper.storage)
    assert db is not None and db.is_relative_to(tmp_path), "the study lives in sqlite under paths"
    # Every searched key exists in the composed SOMA config (a typo would fail every trial).
    for key in sweeper.params:
        assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", \
            f"{path}: searched key {key} is not in the composed config"


def test_paper_search_space_is_app_b2() -> None:
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
    from optuna.distributions import (
        CategoricalDistribution,
        IntUniformDistribution,
        LogUniformDistribution,
        UniformDistribution,
    )

    cfg = compose_full(["hparams_search=soma_optuna"])
    params = cfg.hydra.sweeper.params
    assert set(params) == set(PAPER_RANGES)
    space, fixed = create_params_from_overrides([f"{k}={v}" for k, v in params.items()])
    assert not fixed
    for key, (kind, expected) in PAPER_RANGES.items():
        dist = space[key]
        if kind == "choice":
            assert isinstance(dist, CategoricalDistribution) and list(dist.choices) == expected, key
        elif kind == "int":
            assert isinstance(dist, IntUniformDistribution), key
            assert (dist.low, dist.high) == expected, f"{key}: Optuna's range(a,b) includes b"
        else:
            cls = LogUniformDistribution if kind == "log" else UniformDistribution
            assert isinstance(dist, cls), key
            assert math.isclose(dist.low, expected[0]) and math.isclose(dist.high, expected[1]), key


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_config_composes(name: str) -> None:
    module, install = LAUNCHER_PLUGINS[name]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"hydra/launcher={name} needs {module} ({install}); not installed here")
    cfg = compose_full([f"hydra/launcher={name}"])
    assert cfg.hydra.launcher._target_.startswith(module)


def test_every_launcher_config_has_a_known_plugin() -> None:
    assert set(LAUNCHERS) == set(LAUNCHER_PLUGINS)


# -- fast: the search objective, hand-computed -----------------------------------------------
def write_run(run_dir: Path, judge_metrics: dict, tokens: float) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "judge.json").write_text(json.dumps({"metrics": judge_metrics}))
    (run_dir / "summary.csv").write_text(
        "method,dataset,dialogues,total_tokens/dlg,served_by_G_%\n"
        f"soma,mathmt,2,{tokens},50.0\n")


def test_objective_is_the_judge_value_without_a_search(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"judge": {"name": "embedding"}})
    assert search_objective(cfg, run_metrics(tmp_path, 81.5)) == 81.5
    assert search_objective(cfg, run_metrics(tmp_path, None)) is None


def test_objective_subtracts_the_token_penalty(tmp_path: Path) -> None:
    write_run(tmp_path / "run", {"objective": 80.0, "sim/judge_mean": 80.0,
                                 "sim/judge_mean_post_switch": 70.0}, tokens=1500.0)
    cfg = OmegaConf.create({"judge": {"name": "embedding"}, "optimized_metric": "sim/judge_mean",
                            "token_penalty": 0.002})
    assert search_objective(cfg, run_metrics(tmp_path / "run", 80.0)) == pytest.approx(80.0 - 0.002 * 1500.0)
    cfg.optimized_metric = "sim/judge_mean_post_switch"
    cfg.token_penalty = 0.0
    assert search_objective(cfg, run_metrics(tmp_path / "run", 80.0)) == pytest.approx(70.0)
    cfg.optimized_metric = "served/G_pct"
    assert search_objective(cfg, run_metrics(tmp_path / "run", 80.0)) == pytest.approx(50.0)


def test_objective_errors_name_the_key(tmp_path: Path) -> None:
    write_run(tmp_path / "run", {"objective": 80.0, "sim/judge_mean": 80.0}, tokens=10.0)
    cfg = OmegaConf.create({"judge": {"name": "none"}, "optimized_metric": "sim/judge_maen",
                            "token_penalty": 0.0})
    with pytest.raises(KeyError, match=r"optimized_metric=sim/judge_maen.*sim/judge_mean"):
        search_objective(cfg, run_metrics(tmp_path / "run", 80.0))
    cfg.optimized_metric = "objective"  # the panel's objective metric, whatever its area
    with pytest.raises(RuntimeError, match="needs a judge"):
        search_objective(cfg, run_metrics(tmp_path / "run2", None))


def test_trial_seeds_differ_per_trial_and_repeat_per_study() -> None:
    assert trial_seed(1234, 0) == trial_seed(1234, 0)
    assert len({trial_seed(1234, n) for n in range(50)}) == 50


def test_resumed_study_does_not_repeat_suggestions(tmp_path: Path) -> None:
    import optuna

    from somabench.sweep import TrialSeededTPESampler

    storage = f"sqlite:///{tmp_path / 'study.sqlite'}"
    suggested = []
    for _ in range(2):  # two invocations, each with a fresh sampler of the same seed
        study = optuna.create_study(study_name="s", storage=storage, load_if_exists=True,
                                    sampler=TrialSeededTPESampler(seed=7, n_startup_trials=10),
                                    direction="maximize")
        trial = study.ask()
        suggested.append(trial.suggest_float("x", 0.0, 1.0))
        study.tell(trial, suggested[-1])
    assert suggested[0] != suggested[1]
    fresh = optuna.create_study(sampler=TrialSeededTPESampler(seed=7, n_startup_trials=10))
    assert fresh.ask().suggest_float("x", 0.0, 1.0) == suggested[0]  # reproducible per seed


# -- fast: a failing sweep goes on and reports -----------------------------------------------
@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_failed_jobs_do_not_stop_the_sweep_and_are_reported(launcher: str, tmp_path: Path) -> None:
    # Job 1 raises DatasetError (unknown task); job 2 raises ConfigError (empty shard): both are
    # attempted, both are listed with their error, and the command exits non-zero. submitit's
    # local executor runs each job in its own process, as on SLURM (no cluster needed).
    if launcher != "basic" and importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        pytest.skip("hydra/launcher=submitit_local needs hydra-submitit-launcher (.[sweeps])")
    out = somabench(["-m", f"hydra/launcher={launcher}", "method=surrogate", "dataset=mathmt",
                     "dataset.tiny=true", "dataset.tasks=[zzz],null", "shard=7/8", "judge=none",
                     *private_paths(tmp_path)], timeout=300)
    assert out.returncode != 0, out.stdout + out.stderr
    sweep_dir = tmp_path / "outputs" / "run" / "multirun"
    status = json.loads((sweep_dir / STATUS_FILE).read_text())
    assert status["jobs"] == 2 and status["failed"] == 2, status
    errors = sorted(row["error"] for row in status["rows"])
    assert "ConfigError" in errors[0] and "selected no dialogues" in errors[0]
    assert "DatasetError" in errors[1] and "zzz" in errors[1]
    for row in status["rows"]:
        header = json.loads((sweep_dir / row["job"] / "run.json").read_text())
        assert header["status"] == "error" and header["error"] == row["error"]
    assert len((sweep_dir / FAILURES_FILE).read_text().splitlines()) == 2
    assert "2 of 2 sweep job(s) failed" in out.stderr


def test_status_keeps_the_jobs_of_earlier_invocations_apart(tmp_path: Path) -> None:
    """Running one more method into a sweep dir: its status lists that job (the exit code's
    business) and the jobs already there under earlier_jobs, instead of dropping them."""
    def job(name: str, status: str, updated: str) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps(
            {"status": status, "error": None, "seconds": 1.0, "objective": None,
             "updated": updated}))

    job("method=original", "success", "2026-11-30T11:00:00")
    job("method=surrogate", "error", "2026-11-30T12:00:00")
    job("method=soma", "success", "2026-11-30T15:00:00")
    summary = sweep_summary(tmp_path, started="2026-11-30T13:00:00")
    assert [r["job"] for r in summary["rows"]] == ["method=soma"]
    assert (summary["jobs"], summary["failed"]) == (1, 0)  # an old failure is not this run's
    earlier = {r["job"]: r["status"] for r in summary["earlier_jobs"]}
    assert earlier == {"method=original": "success", "method=surrogate": "error"}


# -- slow: real multiruns on the tiny family -------------------------------------------------
def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent for p in sweep_dir.rglob("run.json"))


def job_logs(sweep_dir: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(sweep_dir.rglob("*.log")))


@pytest.mark.slow
def test_joblib_2x2_multirun_shares_the_reference_and_reruns_for_free(tmp_path: Path) -> None:
    args = ["-m", "method=original,surrogate", "dataset=mathmt,mtbench", "dataset.tiny=true",
            "limit=1", "dataset.truncate_turns=2", "generation.max_new_tokens=8",
            "judge=embedding", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            *private_paths(tmp_path)]
    first = somabench(args, timeout=1800)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    sweep_dir = tmp_path / "outputs" / "run" / "multirun"
    jobs = job_dirs(sweep_dir)
    assert len(jobs) == 4
    for job in jobs:
        header = json.loads((job / "run.json").read_text())
        assert header["status"] == "success", (job, header.get("error"))
        assert header["objective"] is not None  # embedding proxy similarity
    status = json.loads((sweep_dir / STATUS_FILE).read_text())
    assert (status["jobs"], status["success"]) == (4, 4)
    # The Original reference: one dir per dataset, generated by exactly one job each.
    refs = sorted(p for p in (tmp_path / "outputs" / "references").iterdir() if p.is_dir())
    assert [p.name.split("-")[0] for p in refs] == ["mathmt", "mtbench"]
    for ref in refs:
        assert len((ref / "dialogues.jsonl").read_text().splitlines()) == 1
    logs = job_logs(sweep_dir)
    assert len(re.findall(r"reference: generating the Original", logs)) == 2, "once per dataset"
    records = {job: (job / "records.jsonl").read_text() for job in jobs}

    # The same command again: every job resumes, finds every dialogue finished, calls nothing.
    for log_file in sweep_dir.rglob("*.log"):
        log_file.unlink()
    second = somabench(args, timeout=1800)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    logs = job_logs(sweep_dir)
    assert "reference: generating" not in logs
    stats = re.findall(r"cache\[requests\]: (\d+) hits / (\d+) misses", logs)
    assert len(stats) == 4 and all(s == ("0", "0") for s in stats), stats  # no request at all
    assert not re.search(r"\[somabench\.backends\.\w+\]\[INFO\] loaded ", logs), "F/G never loaded"
    for job in jobs:
        assert (job / "records.jsonl").read_text() == records[job]
        assert json.loads((job / "judge.json").read_text())["units_judged_now"] == 0


@pytest.mark.slow
def test_optuna_two_trials_resume_one_sqlite_study(tmp_path: Path) -> None:
    import optuna

    # SOMA trials on one 2-turn dialogue (too short to switch: the trial exercises the search,
    # the objective and resume; SOMA's adaptation has its own tests in tests/soma/).
    args = ["hparams_search=soma_optuna_tiny", "hydra.sweeper.n_trials=1", "limit=1",
            "dataset=mathmt", "dataset.tiny=true", "dataset.truncate_turns=2",
            "generation.max_new_tokens=8", *private_paths(tmp_path)]
    for invocation in range(2):
        out = somabench(args, timeout=1800)
        assert out.returncode == 0, (invocation, out.stdout[-3000:] + out.stderr[-3000:])
    cfg = compose_full(["hparams_search=soma_optuna_tiny", f"paths.output_root={tmp_path / 'outputs'}"])
    storage = str(cfg.hydra.sweeper.storage)
    assert sqlite_path(storage).exists()
    study = optuna.load_study(study_name=str(cfg.hydra.sweeper.study_name), storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 2, "the second invocation added its trial to the same study"
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(0.0 <= t.value <= 100.0 for t in trials)  # embedding-proxy similarity %
    assert trials[0].params != trials[1].params, "a resumed study must not repeat a suggestion"
    runs = sorted((tmp_path / "outputs" / "soma_optuna_tiny" / "optuna").rglob("run.json"))
    assert len(runs) == 2
    for run in runs:
        header = json.loads(run.read_text())
        assert header["status"] == "success"
        assert header["config"]["method"]["name"] == "soma"


@pytest.mark.slow
def test_every_experiment_runs_in_smoke_mode(tmp_path: Path) -> None:
    """STYLE 1 / 5.12: a multirun over experiment=glob(*) with debug=smoke executes every file."""
    out = somabench(["-m", "experiment=glob(*)", "debug=smoke", *private_paths(tmp_path)],
                    timeout=3600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    status = json.loads((tmp_path / "outputs" / "debug" / "multirun" / STATUS_FILE).read_text())
    assert status["jobs"] == len(EXPERIMENTS) and status["failed"] == 0, status
