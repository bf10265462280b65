"""Multirun glue: one failed job never kills a sweep, every sweep ends with a status file, and
a search (``somabench tune``) gets the objective it was told to optimize.

Why: with Hydra's basic sweeper an exception in one job aborts the sweep once the batch ends,
showing only the first error, and ``SystemExit`` (a bad config found at run time) stops it at
once (lightning-hydra-template #535: a crashed sweep cannot be resumed). Here a failed job is
logged with its error in its ``run.json`` (status ``error``), the sweep goes on, and at the end
``<sweep dir>/sweep_status.json`` lists every job of this invocation (and, apart, the sweep
dir's jobs from earlier invocations); the command exits non-zero if any of this one failed.
Re-running the same command is the resume (records resume per dialogue, so finished jobs make
no model calls). Optuna searches are not Hydra sweeps: ``somabench tune`` runs them
(``somabench.tune``) and calls :func:`objective_of` per trial.
"""

from __future__ import annotations

import json
import logging
import math
import os
import traceback
import uuid
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from somabench.errors import ConfigError, RunFileError
from somabench.rundir import (
    RUN_HEADER,
    append_jsonl,
    header_dirs,
    now,
    read_header,
    read_jsonl,
    update_header,
)
from somabench.task import JUDGE_METRIC, RunLogger, run_dir_of, run_task

log = logging.getLogger(__name__)

STATUS_FILE = "sweep_status.json"
PENALTY_TOKENS = "tokens/total_incl_training_per_dialogue"  # what token_penalty multiplies
FAILURES_FILE = "sweep_failures.jsonl"  # one line per failed job (appended by the job itself)
JOBS_FILE = "sweep_jobs.jsonl"  # one line per job start: which invocation ran which job dir
INVOCATION_ENV = "SOMABENCH_SWEEP_INVOCATION"
"""Set by :class:`SweepStatus` at the start of a multirun; its job processes (joblib, submitit)
inherit it and note their job dir under it, so two sweeps writing into one sweep dir at once
(two single-thread processes on two cores, docs/results.md) each report only their own jobs."""


def _hydra_cfg() -> Any | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get()
    except ValueError:  # not under Hydra (tests, notebooks)
        return None


def in_multirun() -> bool:
    from hydra.types import RunMode

    hc = _hydra_cfg()
    return hc is not None and hc.mode == RunMode.MULTIRUN


def refuse_search(cfg: DictConfig) -> None:
    """An ``hparams_search`` config holds a search, which ``somabench tune`` runs: as a plain
    run it would silently be one job with the default values."""
    if cfg.get("search") is not None:
        raise ConfigError("this config holds an Optuna search (search: from hparams_search=...); "
                          "run it with `python -m somabench tune hparams_search=<name> [overrides]`"
                          " (docs/sweeps.md)")


def start_logger(cfg: DictConfig, run_dir: Path) -> RunLogger | None:
    """The job's experiment logger (W&B when ``logger=wandb``, else None), handed to
    ``run_task`` so that the task itself never imports the report package."""
    from somabench.report.wandb_logger import start

    return start(cfg, run_dir)


def run_job(cfg: DictConfig) -> float | None:
    """The Hydra task: ``run_task`` then the objective it is asked for (recorded in
    ``run.json``). A single run raises; inside a multirun a failure is logged and recorded,
    then swallowed (the sweep goes on; the status file and exit code report it)."""
    refuse_search(cfg)
    if not in_multirun():
        return objective_of(cfg, run_dir_of(cfg), run_task(cfg, start_logger))
    try:
        return objective_of(cfg, run_dir_of(cfg), run_task(cfg, start_logger))
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - SystemExit included: it must not end the sweep
        run_dir = run_dir_of(cfg)
        log.exception("job failed (%s: %s); recorded in %s; the sweep goes on", type(exc).__name__,
                      exc, run_dir / RUN_HEADER)
        _note_failure(run_dir, f"{type(exc).__name__}: {exc}")
        return None


def _note_failure(run_dir: Path, error: str) -> None:
    """Append the failure to the sweep's failure list (also when run.json was never written,
    e.g. a run dir that holds another config)."""
    hc = _hydra_cfg()
    if hc is None:
        return
    sweep_dir = Path(hc.sweep.dir)
    line = {"job": str(run_dir.relative_to(sweep_dir)) if run_dir.is_relative_to(sweep_dir)
            else str(run_dir), "status": "error", "error": error,
            "updated": now()}
    append_jsonl(sweep_dir / FAILURES_FILE, line)


# -- end-of-sweep status -------------------------------------------------------------------
def job_status(sweep_dir: Path, since: str | None = None) -> list[dict[str, Any]]:
    """One row per job dir under ``sweep_dir`` (run.json updated at/after ``since``)."""
    rows: list[dict[str, Any]] = []
    for run_dir in header_dirs(sweep_dir):
        job = str(run_dir.relative_to(sweep_dir))
        try:
            header = read_header(run_dir)
        except RunFileError as exc:
            rows.append({"job": job, "status": "unreadable", "error": str(exc)})
            continue
        if header is None or (since is not None and str(header.updated or "") < since):
            continue
        rows.append({"job": job, "status": header.status, "error": header.error,
                     "seconds": header.seconds, "objective": header.objective,
                     "updated": header.updated})
    # Failures noted by the jobs themselves; they win over a run.json the job never updated.
    failures = read_jsonl(sweep_dir / FAILURES_FILE)
    if failures:
        by_job = {r["job"]: r for r in rows}
        for line in failures:
            if since is not None and str(line.get("updated", "")) < since:
                continue
            row = by_job.setdefault(line["job"], {"job": line["job"]})
            row.update({"status": "error", "error": row.get("error") or line["error"],
                        "updated": line["updated"]})
        rows = sorted(by_job.values(), key=lambda r: r["job"])
    return rows


def invocation_jobs(sweep_dir: Path, invocation: str | None) -> set[str] | None:
    """The job dirs ``invocation`` started (:data:`JOBS_FILE`); None where it noted none (a
    launcher whose jobs do not inherit the environment): then run.json times decide."""
    if invocation is None:
        return None
    jobs = {str(line["job"]) for line in read_jsonl(sweep_dir / JOBS_FILE)
            if line.get("invocation") == invocation}
    return jobs or None


def sweep_summary(sweep_dir: Path, started: str | None,
                  invocation: str | None = None) -> dict[str, Any]:
    """The status file's content: this invocation's jobs (``rows``; they decide the exit code)
    and, under ``other_jobs``, the other job dirs of the same sweep dir as their run.json
    says, so running one more method into a sweep dir does not hide the ones already there.
    This invocation's jobs are the ones it noted starting (:func:`invocation_jobs`), else the
    ones whose run.json changed since it started: a sweep running beside it into the same dir
    must not have its running jobs reported as this one's failures."""
    ours = invocation_jobs(sweep_dir, invocation)
    rows = [r for r in job_status(sweep_dir, since=started) if ours is None or r["job"] in ours]
    mine = {r["job"] for r in rows}
    earlier = [r for r in job_status(sweep_dir) if r["job"] not in mine]
    failed = [r for r in rows if r["status"] != "success"]
    return {"sweep_dir": str(sweep_dir), "started": started, "finished": now(),
            "jobs": len(rows), "success": len(rows) - len(failed), "failed": len(failed),
            "rows": rows, "other_jobs": earlier}


class SweepStatus(Callback):
    """Hydra callback: notes when a sweep starts and reports it at the end."""

    def __init__(self) -> None:
        self.started: str | None = None
        self.invocation: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = now()
        self.invocation = uuid.uuid4().hex
        os.environ[INVOCATION_ENV] = self.invocation

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """In the job's process: note the job dir under the invocation that launched it."""
        invocation = os.environ.get(INVOCATION_ENV)
        hydra = config.get("hydra")
        if invocation is None or hydra is None or not hydra.get("sweep"):
            return
        sweep_dir = Path(str(hydra.sweep.dir)).absolute()
        job_dir = Path(str(hydra.runtime.output_dir)).absolute()
        if job_dir.is_relative_to(sweep_dir):
            append_jsonl(sweep_dir / JOBS_FILE, {"invocation": invocation, "job": str(
                job_dir.relative_to(sweep_dir)), "started": now()})

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        summary = sweep_summary(sweep_dir, self.started, self.invocation)
        if os.environ.get(INVOCATION_ENV) == self.invocation:
            del os.environ[INVOCATION_ENV]
        rows = summary["rows"]
        failed = [r for r in rows if r["status"] != "success"]
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / STATUS_FILE).write_text(json.dumps(summary, indent=2, default=str),
                                             encoding="utf-8")
        log.info("sweep: %d job(s), %d succeeded, %d failed -> %s", len(rows),
                 summary["success"], len(failed), sweep_dir / STATUS_FILE)
        for row in failed:
            log.error("  failed job %s (status %s): %s", row["job"], row["status"], row["error"])
        if failed:
            # Raised past Hydra's callback guard on purpose: scripts must see a non-zero exit.
            raise SystemExit(
                f"error: {len(failed)} of {len(rows)} sweep job(s) failed; see "
                f"{sweep_dir / STATUS_FILE} and each job's run.json / log. Fix the cause and "
                f"rerun the same command: finished jobs are skipped, failed ones resume.")


# -- the search objective ------------------------------------------------------------------
def objective_of(cfg: DictConfig, run_dir: Path, metrics: dict[str, Any]) -> float | None:
    """The job's objective (:func:`search_objective`), recorded in its ``run.json``; a wrong
    ``optimized_metric`` marks the run failed."""
    try:
        objective = search_objective(cfg, metrics, run_dir)
    except (KeyError, RuntimeError) as exc:
        update_header(run_dir, status="error", error=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc())
        raise
    update_header(run_dir, objective=objective)
    return objective


def search_objective(cfg: DictConfig, metrics: dict[str, Any],
                     run_dir: Path | None = None) -> float | None:
    """The value returned to the sweeper, picked from the task's ``metrics``.

    Without ``optimized_metric`` (plain runs): the judge's objective, unchanged. With it (an
    ``hparams_search`` config): that metric minus ``token_penalty`` x total tokens per
    dialogue incl. training (the total the cost tables use: SOMA's training is most of its). A missing metric is an error naming the key to fix, never a sentinel number.
    """
    metric = cfg.get("optimized_metric")
    if metric is None:
        return metrics.get(JUDGE_METRIC)
    where = f" ({run_dir})" if run_dir is not None else ""
    if metric not in metrics:
        raise KeyError(
            f"optimized_metric={metric} is not a metric of this run{where}. Available: "
            f"{', '.join(sorted(metrics))}. Fix it in conf/hparams_search/ or override "
            f"optimized_metric={JUDGE_METRIC}")
    value = metrics[metric]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise RuntimeError(
            f"optimized_metric={metric} has no value{where} (judge={cfg.judge.name}: "
            f"no scored turn?). A search needs a judge: judge=embedding (proxy) or judge=paper")
    penalty = float(cfg.get("token_penalty") or 0.0)
    objective = float(value)
    if penalty:
        tokens = metrics.get(PENALTY_TOKENS)
        if tokens is None:
            raise RuntimeError(f"token_penalty={penalty} needs {PENALTY_TOKENS}, "
                               f"missing in the run summary{where}")
        objective -= penalty * tokens
        log.info("objective = %s %.4f - token_penalty %g x %.1f tokens/dialogue = %.4f",
                 metric, float(value), penalty, tokens, objective)
    else:
        log.info("objective = %s = %.4f", metric, objective)
    return objective
