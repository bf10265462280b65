"""One Hydra job: generate -> judge -> summarize, with a run header and a safe ``finally``.

Why a wrapper: a failed job in a multirun must be reported and not kill the sweep, W&B must be
closed per job, and every run directory must say what produced it (``run.json``).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from somabench.records import RecordStore, load_dialogues, load_turns
from somabench.registry import load_builtin, methods

log = logging.getLogger(__name__)

RUN_HEADER = "run.json"
PACKAGES = ("somabench", "torch", "transformers", "peft", "sentence-transformers", "hydra-core",
            "omegaconf", "openai", "numpy", "pandas", "vllm", "llmlingua", "routellm", "wandb")


def run_dir_of(cfg: DictConfig) -> Path:
    """The Hydra job's output dir (or paths.output_root/... when called without Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path(cfg.paths.output_root) / cfg.task_name / cfg.run_name


def git_state() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "-C", str(root), "status", "--porcelain"],
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"commit": commit, "dirty": dirty}


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def write_header(run_dir: Path, cfg: DictConfig, status: str, **extra: Any) -> None:
    from somabench.runner import config_hash

    path = run_dir / RUN_HEADER
    header = json.loads(path.read_text()) if path.exists() else {}
    previous = header.get("config_hash")
    current = config_hash(cfg)
    if previous and previous != current and status == "started":
        raise SystemExit(
            f"error: {run_dir} already holds a run with a different config (hash {previous}, now "
            f"{current}). Resuming would mix results. Use another run name (run_name=... or "
            f"task_name=...) or delete that directory."
        )
    header.update({
        "status": status, "config_hash": current, "git": git_state(),
        "packages": package_versions(), "config": OmegaConf.to_container(cfg, resolve=True),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra,
    })
    header.setdefault("started", header["updated"])
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(header, indent=2, default=str))
    tmp.replace(path)


def run_task(cfg: DictConfig) -> float | None:
    """Generate, judge and summarize one (method, dataset, model) job; returns the objective."""
    from somabench.runner import RunContext, Runner, ensure_reference, progress_enabled

    load_builtin()
    run_dir = run_dir_of(cfg)
    write_header(run_dir, cfg, "started")
    started = time.perf_counter()
    ctx = None
    status = "error"
    objective = None
    error = None
    wandb_run = None
    try:
        from somabench.report.wandb_logger import start as start_wandb

        wandb_run = start_wandb(cfg, run_dir)  # None unless logger=wandb
        from somabench.data import load_dialogues as load_data

        dialogues = load_data(cfg.dataset, limit=cfg.limit, seed=int(cfg.seed), shard=cfg.shard)
        if not dialogues:
            raise SystemExit(f"error: dataset '{cfg.dataset.name}' selected no dialogues "
                             f"(limit={cfg.limit}, shard={cfg.shard}); loosen the filters")
        method_cls = methods.get(cfg.method.name)
        ctx = RunContext(cfg)
        progress = progress_enabled(cfg)
        log.info("run dir %s | %s on %s (%d dialogues) | model=%s", run_dir, cfg.method.name,
                 cfg.dataset.name, len(dialogues), cfg.model.family)
        needs_ref = (method_cls.needs_reference or cfg.history == "reference"
                     or cfg.judge.name != "none")
        reference, ref_key, ref_dir = (None, None, None)
        if needs_ref:
            reference, ref_key, ref_dir = ensure_reference(cfg, ctx, dialogues, progress)
        write_header(run_dir, cfg, "running", reference_dir=str(ref_dir) if ref_dir else None,
                     reference_key=ref_key)
        method = method_cls(cfg.method, ctx)
        store = RecordStore(run_dir)
        runner = Runner(cfg, ctx, method, store, run_id=str(cfg.run_name), reference=reference,
                        reference_key=ref_key, history_mode=str(cfg.history))
        counts = runner.serve(dialogues, int(cfg.batch_size), progress)
        log.info("%s", ctx.cache_stats())
        objective = _judge(cfg, run_dir)
        _summarize(cfg, run_dir, {d.id for d in dialogues})
        # hparams_search: optimized_metric minus token_penalty (no-op for plain runs)
        from somabench.sweep import search_objective

        objective = search_objective(cfg, run_dir, objective)
        if wandb_run is not None:
            wandb_run.log_results()
        failed_share = counts["errored"] / max(len(dialogues), 1)
        if failed_share > float(cfg.fail_on_error):
            raise RuntimeError(
                f"{counts['errored']} of {len(dialogues)} dialogue(s) failed (> fail_on_error="
                f"{cfg.fail_on_error}); details in {run_dir / 'errors.jsonl'}; rerun to retry them")
        status = "success"
        return objective
    except BaseException as exc:  # recorded in run.json (sweeps list failed jobs from it)
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        write_header(run_dir, cfg, status, seconds=round(time.perf_counter() - started, 2),
                     error=error, objective=objective)
        if wandb_run is not None:
            wandb_run.finish(status)
        if ctx is not None and ctx.cache is not None:
            ctx.cache.close()
        log.info("output dir: %s (status %s)", run_dir, status)


def _judge(cfg: DictConfig, run_dir: Path) -> float | None:
    if cfg.judge.name == "none":
        return None
    from somabench.registry import judges

    if "panel" not in judges:
        log.warning("judge=%s requested but the judge panel is not available", cfg.judge.name)
        return None
    return judges.get("panel")(cfg, run_dir)


def _summarize(cfg: DictConfig, run_dir: Path, selected: set[str]) -> None:
    from somabench.metrics import summary_table, to_markdown

    turns = [t for t in load_turns(run_dir) if t.dialogue_id in selected]
    dialogues = [d for d in load_dialogues(run_dir) if d.dialogue_id in selected]
    table = summary_table(dialogues, turns)
    table.to_csv(run_dir / "summary.csv", index=False)
    md = to_markdown(table)
    (run_dir / "summary.md").write_text(md)
    if cfg.logger.name == "csv":
        import pandas as pd

        pd.DataFrame([t.to_json() for t in turns]).to_csv(run_dir / "records.csv", index=False)
    # The CLI prints the summary (stdout is the user interface, logs go to the job log).
    print(f"\n{cfg.method.name} on {cfg.dataset.name} ({cfg.model.family}):\n{md}", flush=True)


__all__ = ["run_task"]
