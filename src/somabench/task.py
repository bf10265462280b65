"""One Hydra job: generate -> judge -> summarize, with a run header and a safe ``finally``.

Why a wrapper: a failed job in a multirun must be reported and not kill the sweep, W&B must be
closed per job, and every run directory must say what produced it (``run.json``, whose format
``somabench.rundir`` owns). The task returns the run's metrics; the caller (the CLI, a sweep,
an Optuna search) picks its objective from them (``somabench.sweep.search_objective``), as
lightning-hydra-template's ``train.py`` returns ``metric_dict``.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig, OmegaConf

from somabench.errors import ConfigError, RunDirConflict, RunFailedError
from somabench.methods import history_mode
from somabench.records import load_dialogues, load_turns
from somabench.registry import load_builtin, methods
from somabench.rundir import (
    ERRORS_FILE,
    JUDGE_HEADER,
    SUMMARY_CSV,
    SUMMARY_MD,
    RunStatus,
    build_header,
    read_header,
    read_json,
    record_models,
    served_anything,
)
from somabench.rundir import write_header as write_header_file
from somabench.testing import warning as test_double_warning
from somabench.validate import validate

log = logging.getLogger(__name__)

# summary.csv column -> metric name usable as ``optimized_metric`` (STYLE 5.1: area/name).
SUMMARY_METRICS = {
    "total_tokens/dlg": "tokens/total_per_dialogue",
    "total_tokens_incl_training/dlg": "tokens/total_incl_training_per_dialogue",
    "F_tokens/dlg": "tokens/F_per_dialogue",
    "G_tokens/dlg": "tokens/G_per_dialogue",
    "adapt_tokens/dlg": "tokens/adapt_per_dialogue",
    "served_by_G_%": "served/G_pct",
    "throughput_tok/s": "speed/tps",
    "wall_s/dlg": "speed/wall_s_per_dialogue",
}
JUDGE_METRIC = "objective"  # the panel's objective metric, all turns: similarity % (sim/judge_mean)
# for LLM/embedding panels, accuracy % (accuracy/judge_mean) for judge=task; the panel's own
# metrics keep their area keys next to it


def run_dir_of(cfg: DictConfig) -> Path:
    """The Hydra job's output dir (or paths.output_root/... when called without Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path(cfg.paths.output_root) / cfg.task_name / cfg.run_name


def dtype_guard(run_dir: Path, recorded: dict[str, Any]) -> Callable[[str, Any], None]:
    """``RunContext.on_build`` hook: a resumed run loads each model in the dtype its finished
    dialogues were served in. ``dtype: auto`` resolves per machine (bf16 on avx512_bf16 / AMX /
    GPU, else fp32) while the config hash holds ``auto``, so without this a run started on one
    machine and resumed on another would mix bf16 and fp32 answers in one set of records."""

    def check(role: str, backend: Any) -> None:
        before = (recorded.get(role) or {}).get("dtype")
        info = backend.describe() if hasattr(backend, "describe") else {}
        current = info.get("dtype")
        if before and current and before != current and served_anything(run_dir):
            raise RunDirConflict(
                f"{run_dir} holds dialogues served with {role} in {before} (run.json "
                f"models.{role}.dtype); here {role} loads in {current} "
                f"({info.get('dtype_reason') or 'configured'}). Resuming would mix {before} and "
                f"{current} answers in one run: resume it on a machine that resolves to {before}, "
                f"or start a new run (run_name=... or task_name=...).")

    return check


def models_recorder(run_dir: Path, ctx: Any) -> Callable[[str, Any], None]:
    """``RunContext.on_build`` hook: ``run.json`` names each model (engine, resolved dtype) as
    soon as it is built, so even a killed run tells the next one what it was served with."""

    def record(role: str, backend: Any) -> None:
        record_models(run_dir, ctx.describe_models())

    return record


def write_header(run_dir: Path, cfg: DictConfig, status: RunStatus, **changes: Any) -> None:
    """Write ``run.json`` (built by :func:`somabench.rundir.build_header`) at ``status``."""
    config = OmegaConf.to_container(cfg, resolve=True)
    plain = {str(k): v for k, v in config.items()} if isinstance(config, dict) else {}
    header = build_header(run_dir, plain, status, **changes)
    if header.test_doubles and status in ("success", "error"):
        log.warning("%s", test_double_warning(str(run_dir), header.test_doubles))
    write_header_file(run_dir, header)


def run_metrics(run_dir: Path, judged: float | None) -> dict[str, Any]:
    """Metrics of one finished job: the judge's (``objective``, ``sim/...``, ``accuracy/...``) and
    the run summary's."""
    metrics: dict[str, Any] = {JUDGE_METRIC: judged}
    stored_header = read_json(run_dir / JUDGE_HEADER)
    if stored_header is not None:
        stored = stored_header.get("metrics") or {}
        metrics.update({k: v for k, v in stored.items() if k != "objective"})
        metrics[JUDGE_METRIC] = judged if judged is not None else stored.get("objective")
    summary = run_dir / SUMMARY_CSV
    if summary.exists():
        import pandas as pd

        table = pd.read_csv(summary)
        if len(table) == 1:
            for column, name in SUMMARY_METRICS.items():
                if column in table.columns:
                    value = table[column].iloc[0]
                    metrics[name] = None if pd.isna(value) else float(value)
    return metrics


class RunLogger(Protocol):
    """An experiment logger for one job (W&B: ``somabench.report.wandb_logger``)."""

    def log_results(self) -> None:
        """Log the finished run's records and metrics."""
        ...

    def finish(self, status: str) -> None:
        """Close the logger's run with the job's status (called in the task's ``finally``)."""
        ...


StartLogger = Callable[[DictConfig, Path], RunLogger | None]
"""Starts a job's logger, or returns None when ``cfg.logger`` asks for none."""


def run_task(cfg: DictConfig, start_logger: StartLogger | None = None) -> dict[str, Any]:
    """Generate, judge and summarize one (method, dataset, model) job; returns its metrics
    (``sim/judge_mean`` is None without a judge).

    ``start_logger`` is passed in by the caller (``somabench.sweep.run_job``), so the task does
    not import the report package the W&B logger lives in."""
    validate(cfg)  # every method/judge/dataset value, before any model loads
    from somabench.config import progress_enabled
    from somabench.records import RecordStore
    from somabench.runner import RunContext, Runner, ensure_reference

    load_builtin()
    run_dir = run_dir_of(cfg)
    before = read_header(run_dir)
    served_with = before.models if before is not None else {}
    write_header(run_dir, cfg, "started")
    started = time.perf_counter()
    ctx = None
    status: RunStatus = "error"
    metrics: dict[str, Any] | None = None
    error = None
    trace = None
    wandb_run = None
    try:
        wandb_run = start_logger(cfg, run_dir) if start_logger is not None else None
        from somabench.data import load_dialogues as load_data

        dialogues = load_data(cfg.dataset, limit=cfg.limit, seed=int(cfg.seed), shard=cfg.shard)
        if not dialogues:
            raise ConfigError(f"dataset '{cfg.dataset.name}' selected no dialogues "
                              f"(limit={cfg.limit}, shard={cfg.shard}); loosen the filters")
        method_cls = methods.get(cfg.method.name)
        ctx = RunContext(cfg)
        ctx.on_build.append(dtype_guard(run_dir, served_with))
        ctx.on_build.append(models_recorder(run_dir, ctx))
        from somabench.data.preflight import on_build  # every turn fits each model's window

        ctx.on_build.append(on_build(dialogues, max_new_tokens=ctx.gen.max_new_tokens))
        progress = progress_enabled(cfg)
        log.info("run dir %s | %s on %s (%d dialogues) | model=%s", run_dir, cfg.method.name,
                 cfg.dataset.name, len(dialogues), cfg.model.family)
        needs_ref = (method_cls.needs_reference or cfg.history == "reference"
                     or bool(cfg.judge.get("judges")))  # a panel scores against it
        reference, ref_key, ref_dir = (None, None, None)
        if needs_ref:
            with _stage("reference: the Original's answers"):
                reference, ref_key, ref_dir = ensure_reference(cfg, ctx, dialogues, progress)
        write_header(run_dir, cfg, "running", reference_dir=str(ref_dir) if ref_dir else None,
                     reference_key=ref_key)
        method = method_cls(cfg.method, ctx)
        store = RecordStore(run_dir)
        runner = Runner(cfg, ctx, method, store, run_id=str(cfg.run_name), reference=reference,
                        reference_key=ref_key, history_mode=history_mode(cfg.history))
        with _stage(f"serve: {cfg.method.name}"):
            counts = runner.serve(dialogues, int(cfg.batch_size), progress)
        log.info("%s", ctx.cache_stats())
        with _stage(f"judge: {cfg.judge.name}"):
            judged = _judge(cfg, run_dir)
        _summarize(cfg, run_dir, {d.id for d in dialogues})
        metrics = run_metrics(run_dir, judged)
        if wandb_run is not None:
            wandb_run.log_results()
        failed_share = counts["errored"] / max(len(dialogues), 1)
        if failed_share > float(cfg.fail_on_error):
            raise RunFailedError(
                f"{counts['errored']} of {len(dialogues)} dialogue(s) failed (> fail_on_error="
                f"{cfg.fail_on_error}); details in {run_dir / ERRORS_FILE}; rerun to retry them")
        status = "success"
        return metrics
    except BaseException as exc:  # recorded in run.json (sweeps list failed jobs from it)
        error = f"{type(exc).__name__}: {exc}"
        trace = traceback.format_exc()
        raise
    finally:
        write_header(run_dir, cfg, status, seconds=round(time.perf_counter() - started, 2),
                     error=error, traceback=trace, metrics=metrics,
                     models=ctx.describe_models() if ctx is not None else {})
        if wandb_run is not None:
            wandb_run.finish(status)
        if ctx is not None:
            ctx.close()
        if ctx is not None and ctx.cache is not None:
            ctx.cache.close()
        log.info("output dir: %s (status %s)", run_dir, status)


@contextlib.contextmanager
def _stage(name: str) -> Iterator[None]:
    """Per-stage seconds in the log: a long run always says what it is doing and what it did."""
    log.info("stage %s ...", name)
    started = time.perf_counter()
    try:
        yield
    finally:
        log.info("stage %s: %.1fs", name, time.perf_counter() - started)


def _judge(cfg: DictConfig, run_dir: Path) -> float | None:
    """The run's panel (``judge=<name>``, a ``somabench.registry.judge_panels`` entry)."""
    from somabench.registry import judge_panels

    return judge_panels.get(cfg.judge.name)(cfg, run_dir)


def _summarize(cfg: DictConfig, run_dir: Path, selected: set[str]) -> None:
    from somabench.metrics import summary_table, to_markdown

    turns = [t for t in load_turns(run_dir) if t.dialogue_id in selected]
    dialogues = [d for d in load_dialogues(run_dir) if d.dialogue_id in selected]
    table = summary_table(dialogues, turns)
    table.to_csv(run_dir / SUMMARY_CSV, index=False)
    md = to_markdown(table)
    (run_dir / SUMMARY_MD).write_text(md)
    if cfg.logger.name == "csv":
        import pandas as pd

        from somabench.records import flat_row

        pd.DataFrame([flat_row(t.to_json()) for t in turns]).to_csv(run_dir / "records.csv", index=False)
    # The CLI prints the summary (stdout is the user interface, logs go to the job log).
    print(f"\n{cfg.method.name} on {cfg.dataset.name} ({cfg.model.family}):\n{md}", flush=True)


__all__ = ["SUMMARY_METRICS", "RunLogger", "StartLogger", "run_dir_of", "run_metrics", "run_task",
           "write_header"]
