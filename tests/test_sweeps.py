"""Experiments, searches, launchers and multiruns (issue 8).

Fast: every experiment / hparams_search / launcher config composes and follows STYLE 1 + 5.5;
the search space is the paper's App. B.2 ranges on real SOMA keys; the search objective is
hand-computed; a sweep whose jobs fail goes on and reports them.
Slow (real tiny models, subprocess multiruns): a 2x2 joblib sweep generates the Original once
per dataset and a rerun makes no model call; ``experiment=glob(*)`` with ``debug=smoke`` runs every experiment file.
"""

from __future__ import annotations

import importlib.util
import json
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
    JOBS_FILE,
    STATUS_FILE,
    search_objective,
    sweep_summary,
)
from somabench.task import run_metrics

ROOT = Path(__file__).resolve().parents[1]
CONF = conf_dir()
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
LAUNCHERS = sorted(p.stem for p in (CONF / "hydra" / "launcher").glob("*.yaml"))
# The plugin each launcher config builds on (skipped with this reason when not installed).
LAUNCHER_PLUGINS = {
    "parallel": ("hydra_plugins.hydra_joblib_launcher", "pip install hydra-joblib-launcher"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "pip install hydra-submitit-launcher"),
    "ray_cluster": ("hydra_plugins.hydra_ray_launcher", "pip install hydra-ray-launcher"),
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
        "method,dataset,dialogues,total_tokens/dlg,total_tokens_incl_training/dlg,served_by_G_%\n"
        f"soma,mathmt,2,{tokens / 4},{tokens},50.0\n")  # the penalty counts training tokens too


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
    noted = [json.loads(line) for line in (sweep_dir / JOBS_FILE).read_text().splitlines()]
    assert sorted(n["job"] for n in noted) == sorted(r["job"] for r in status["rows"])
    assert len({n["invocation"] for n in noted}) == 1  # the jobs' processes inherited it
    assert "2 of 2 sweep job(s) failed" in out.stderr


def test_status_keeps_the_jobs_of_earlier_invocations_apart(tmp_path: Path) -> None:
    """Running one more method into a sweep dir: its status lists that job (the exit code's
    business) and the jobs already there under other_jobs, instead of dropping them."""
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
    earlier = {r["job"]: r["status"] for r in summary["other_jobs"]}
    assert earlier == {"method=original": "success", "method=surrogate": "error"}


def test_a_sweep_beside_it_in_the_same_dir_is_not_its_failure(tmp_path: Path) -> None:
    """Two sweeps into one sweep dir at once (e.g. two single-thread processes): each counts the
    jobs it noted starting; the other's running job is listed apart, not failed. Found when a
    SnapKV sweep ended and reported the StreamingLLM sweep's running job as its failure."""
    for name, status in (("method=kvpress_snapkv_50", "success"),
                         ("method=kvpress_streaming_llm_50", "running")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps(
            {"status": status, "error": None, "updated": "2026-12-07T20:50:00"}))
    (tmp_path / JOBS_FILE).write_text(
        json.dumps({"invocation": "a", "job": "method=kvpress_streaming_llm_50"}) + "\n"
        + json.dumps({"invocation": "b", "job": "method=kvpress_snapkv_50"}) + "\n")
    summary = sweep_summary(tmp_path, started="2026-12-07T20:40:00", invocation="b")
    assert [r["job"] for r in summary["rows"]] == ["method=kvpress_snapkv_50"]
    assert (summary["jobs"], summary["failed"]) == (1, 0)
    assert [r["job"] for r in summary["other_jobs"]] == ["method=kvpress_streaming_llm_50"]
    # an invocation that noted nothing (or no invocation): the run.json times decide, as before
    assert sweep_summary(tmp_path, started="2026-12-07T20:40:00", invocation="c")["jobs"] == 2


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
def test_every_experiment_runs_in_smoke_mode(tmp_path: Path) -> None:
    """STYLE 1 / 5.12: a multirun over experiment=glob(*) with debug=smoke executes every file."""
    out = somabench(["-m", "experiment=glob(*)", "debug=smoke", *private_paths(tmp_path)],
                    timeout=3600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    status = json.loads((tmp_path / "outputs" / "debug" / "multirun" / STATUS_FILE).read_text())
    assert status["jobs"] == len(EXPERIMENTS) and status["failed"] == 0, status


def test_a_job_hands_its_logger_to_the_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``run_job`` starts the job's logger (W&B) through ``run_task(cfg, start_logger)``: the task
    never imports the report package, and the logger still sees every job and its status."""
    from somabench.config import compose
    from somabench.report import wandb_logger
    from somabench.sweep import run_job

    calls: list[tuple[str, object]] = []

    class Recorder:
        def log_results(self) -> None:
            calls.append(("log_results", None))

        def finish(self, status: str) -> None:
            calls.append(("finish", status))

    def start(cfg, run_dir):  # noqa: ANN001, ANN202 - stands in for wandb_logger.start
        calls.append(("start", Path(run_dir).name))
        return Recorder()

    monkeypatch.setattr(wandb_logger, "start", start)
    cfg = compose(["method=original", "model.F.backend=testing.fake", "model.G.backend=testing.fake",
                   "judge=none", "progress=false", "limit=1", f"paths.output_root={tmp_path / 'out'}",
                   f"cache.path={tmp_path / 'cache.sqlite'}"])
    run_job(cfg)
    assert [name for name, _ in calls] == ["start", "log_results", "finish"]
    assert calls[-1] == ("finish", "success")
