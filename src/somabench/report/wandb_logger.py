"""W&B logging for one Hydra job (``logger=wandb``): one W&B run per job, closed in a ``finally``.

Why: a multirun logs one W&B run per job only if each job finishes its run (lightning-hydra-
template#289), so ``start`` finishes any previous run and ``finish`` is called by
``somabench.task.run_task`` in its ``finally``. What is logged: the resolved config with
secrets removed, per-turn and per-dialogue records as tables, summary metrics (``area/name``),
a per-turn figure, and the run dir's record files as a ``run-records`` artifact so that
``python -m somabench report wandb:<entity>/<project>/<group>`` rebuilds the same report.
Offline by default (``conf/logger/wandb.yaml``); ``wandb sync <dir>`` uploads later.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from somabench.records import load_dialogues, load_turns
from somabench.rundir import (
    DIALOGUES_FILE,
    REFERENCE_META,
    REFERENCE_SUBDIR,
    RUN_HEADER,
    SCORES_FILE,
    SUMMARY_CSV,
    TURNS_FILE,
    read_header,
    resolve_reference,
)

log = logging.getLogger(__name__)

REDACTED = "<redacted>"
# Config keys whose values are secrets (a key named ``*_env`` holds a variable *name*: kept).
SECRET_KEY = re.compile(r"(^|_)(api_key|apikey|secret|password|passwd|token|auth|authorization)$", re.IGNORECASE)
# Environment variables whose values are treated as secrets wherever they appear in a config.
SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD)", re.IGNORECASE)
MIN_SECRET_LEN = 8  # shorter env values are flags/ids, not credentials; redacting them would garble configs
ARTIFACT_FILES = (TURNS_FILE, DIALOGUES_FILE, SCORES_FILE, RUN_HEADER, SUMMARY_CSV)


def scrub(config: Any, env: dict[str, str] | None = None) -> Any:
    """A copy of ``config`` without secrets: values of secret-named keys are redacted, and so is
    any string containing the value of an environment variable named by a ``*_env`` key or
    whose name looks like a credential (``*_API_KEY``, ``HF_TOKEN`` ...)."""
    env = dict(os.environ if env is None else env)
    secret_values: set[str] = {v for k, v in env.items() if SECRET_ENV.search(k) and len(v) >= MIN_SECRET_LEN}

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if str(key).endswith("_env") and isinstance(value, str) and env.get(value):
                    secret_values.add(env[value])
                collect(value)
        elif isinstance(node, list):
            for item in node:
                collect(item)

    def clean(node: Any, key: str = "") -> Any:
        if isinstance(node, dict):
            return {k: clean(v, str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [clean(v, key) for v in node]
        if node is not None and not key.endswith("_env") and SECRET_KEY.search(key):
            return REDACTED
        if isinstance(node, str) and any(secret in node for secret in secret_values):
            return REDACTED
        return node

    collect(config)
    return clean(config)


def _run_name(cfg: DictConfig, run_dir: Path) -> str:
    """The run dir relative to the output root: unique per job, also inside a multirun."""
    try:
        return str(run_dir.resolve().relative_to(Path(cfg.paths.output_root).resolve()))
    except ValueError:
        return str(cfg.run_name)


class WandbLogger:
    """One W&B run for one job."""

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        import wandb

        lcfg = cfg.logger
        self.cfg = cfg
        self.run_dir = run_dir
        config = scrub(OmegaConf.to_container(cfg, resolve=True))
        settings: dict[str, Any] = {"save_code": False, "console": str(lcfg.get("console", "off"))}
        key_env = lcfg.get("api_key_env")
        if lcfg.mode == "online" and key_env and os.environ.get(key_env):
            settings["api_key"] = os.environ[key_env]  # passed to wandb only, never stored
        wandb_dir = lcfg.get("dir") or os.environ.get("WANDB_DIR") or str(run_dir)
        Path(wandb_dir).mkdir(parents=True, exist_ok=True)
        tags = [str(cfg.method.name), str(cfg.dataset.name), str(cfg.model.family), *map(str, cfg.get("tags") or [])]
        self.run = wandb.init(
            project=lcfg.project, entity=lcfg.get("entity"), group=str(lcfg.group), job_type=str(lcfg.job_type),
            name=_run_name(cfg, run_dir), tags=list(dict.fromkeys(tags)), config=config, dir=wandb_dir,
            mode=lcfg.mode, reinit="finish_previous", settings=wandb.Settings(**settings))
        log.info("W&B run %s (%s mode) in %s", self.run.id, lcfg.mode, wandb_dir)

    def log_results(self) -> None:
        """Tables, summary metrics and figure of the finished job. A logging failure is logged
        as an error and does not fail a job whose records are safely on disk."""
        try:
            self._log_results()
        except Exception as exc:  # noqa: BLE001 - W&B must never cost a finished run
            log.error("W&B logging failed for %s (%s: %s); the records are on disk — rebuild the "
                      "comparison with python -m somabench report %s", self.run_dir, type(exc).__name__,
                      exc, self.run_dir)

    def _log_results(self) -> None:
        import wandb

        from somabench.latency import latency_metrics
        from somabench.metrics import panels, run_metrics, similarity_per_turn
        from somabench.report.collect import run_scores

        turns = load_turns(self.run_dir)
        dialogues = load_dialogues(self.run_dir)
        panel = str(self.cfg.judge.name) if self.cfg.get("judge") else None
        scores, _ = run_scores(self.run_dir)  # each panel's current version only
        report = self.cfg.report
        metric = str(report.similarity_metric)
        # the run's own panel (judge.name), through the same aggregate as the report and summary
        shown = panel if panel in panels(scores, metric) else None
        per_turn_sim = similarity_per_turn(scores, ["dialogue_id"], panel=shown, metric=metric) \
            if shown else None

        turn_rows = [_turn_row(t) for t in turns]
        frame = pd.DataFrame(turn_rows)
        if per_turn_sim is not None and not per_turn_sim.empty and not frame.empty:
            frame = frame.merge(per_turn_sim[["dialogue_id", "turn", "similarity"]], on=["dialogue_id", "turn"],
                                how="left")
        payload: dict[str, Any] = {}
        if not frame.empty:
            payload["records/turns"] = wandb.Table(dataframe=frame)
        if dialogues:
            payload["records/dialogues"] = wandb.Table(dataframe=pd.DataFrame([_dialogue_row(d) for d in dialogues]))
        if not scores.empty:
            payload["records/scores"] = wandb.Table(dataframe=scores.drop(columns=["raw"], errors="ignore")
                                                    .astype(str))
        figure = self._figure(turns, per_turn_sim)
        if figure is not None:
            payload["figures/per_turn"] = wandb.Image(figure)
        if payload:
            self.run.log(payload)
        metrics = run_metrics(dialogues, turns, scores, panel=panel)
        metrics.update(latency_metrics(turns))  # latency/ttft_s_median ... as in summary.csv
        self.run.summary.update({k: v for k, v in metrics.items() if v is not None})

    def _figure(self, turns: list[Any], per_turn_sim: pd.DataFrame | None) -> Any:
        import matplotlib

        matplotlib.use("Agg")  # a job draws to files only
        import matplotlib.pyplot as plt

        from somabench.metrics import turn_frame
        from somabench.report.figures import Skip, per_turn_figure

        try:
            fig = per_turn_figure(turn_frame(turns), per_turn_sim, self.cfg.report,
                                  f"{self.cfg.method.name} on {self.cfg.dataset.name} ({self.cfg.model.family})")
        except Skip:
            return None
        from io import BytesIO

        from PIL import Image

        buffer = BytesIO()
        fig.savefig(buffer, format="png", dpi=self.cfg.report.figures.dpi, bbox_inches="tight")
        plt.close(fig)
        buffer.seek(0)
        return Image.open(buffer)

    def _log_artifact(self) -> None:
        """The run dir's record files (+ its reference's) for ``somabench.report wandb:...``."""
        import wandb

        from somabench.report.collect import ARTIFACT_TYPE

        artifact = wandb.Artifact(f"records-{self.run.id}", type=ARTIFACT_TYPE,
                                  metadata={"run_dir": str(self.run_dir)})
        for name, content in artifact_contents(self.run_dir).items():
            if isinstance(content, Path):
                artifact.add_file(str(content), name=name)
            else:
                with artifact.new_file(name, mode="w", encoding="utf-8") as fh:
                    fh.write(content)
        self.run.log_artifact(artifact)

    def finish(self, status: str) -> None:
        """Log the records artifact (with the final run.json) and close the run; called from
        the job's ``finally``, so a failed job closes its run too."""
        try:
            self.run.summary["run/status"] = status
            if (self.run_dir / TURNS_FILE).exists():
                self._log_artifact()
        except Exception as exc:  # noqa: BLE001 - closing the run matters more
            log.error("W&B artifact for %s not logged (%s: %s)", self.run_dir, type(exc).__name__, exc)
        finally:
            self.run.finish(exit_code=0 if status == "success" else 1)


def artifact_contents(run_dir: Path) -> dict[str, Path | str]:
    """What the ``run-records`` artifact holds, by name: the run's record files (run.json with a
    scrubbed config, as text) and its Original reference under ``reference/``. A download of it
    is a run dir that ``somabench.report.collect`` reads like a local one."""
    out: dict[str, Path | str] = {}
    header = read_header(run_dir)
    for name in ARTIFACT_FILES:
        path = run_dir / name
        if not path.exists():
            continue
        if name == RUN_HEADER and header is not None:  # it holds the resolved config: scrub it
            out[name] = json.dumps({**header.to_json(), "config": scrub(header.config)}, indent=2,
                                   default=str)
        else:
            out[name] = path
    ref = resolve_reference(run_dir, header) if header is not None else None
    if ref is not None:
        for name in (TURNS_FILE, DIALOGUES_FILE, REFERENCE_META):
            if (ref / name).exists():
                out[f"{REFERENCE_SUBDIR}/{name}"] = ref / name
    return out


def start(cfg: DictConfig, run_dir: Path) -> WandbLogger | None:
    """A W&B run for this job when ``logger=wandb``, else None."""
    if cfg.logger.name != "wandb" or cfg.logger.get("mode") == "disabled":
        return None
    return WandbLogger(cfg, run_dir)


def _turn_row(t: Any) -> dict[str, Any]:
    """A flat, W&B-table-friendly view of a TurnRecord (the full record is in the artifact)."""
    from somabench.metrics import turn_seconds_e2e

    row: dict[str, Any] = {"dialogue_id": t.dialogue_id, "turn": t.turn, "method": t.method,
                           "served_by": t.served_by, "status": t.status, "cached": t.cached,
                           "user": t.user, "response": t.response, "history_mode": t.history_mode,
                           "generate_s": t.seconds.get("generate"), "throughput_tps": t.throughput_tps,
                           "plan_s": t.seconds.get("plan"), "e2e_s": turn_seconds_e2e(t.seconds),
                           "batch_size": t.batch_size, "error": t.error or ""}
    for role in ("F", "G", "compressor", "router"):
        usage = t.tokens.get(role)
        row[f"{role}_prompt"] = usage.prompt if usage else None
        row[f"{role}_completion"] = usage.completion if usage else None
    row.update({f"{k}_s": t.seconds.get(k) for k in ("ttft", "tpot", "latency")})  # somabench.latency
    gate = t.gate or {}
    row["gate_score"] = gate.get("score")
    row["switched"] = gate.get("switched")
    row["rollback"] = gate.get("rollback")
    return row


def _dialogue_row(d: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"dialogue_id": d.dialogue_id, "n_turns": d.n_turns, "n_errors": d.n_errors,
                           "wall_s": d.seconds.get("wall"), "adapt_s": d.seconds.get("adapt")}
    for role, usage in d.tokens.items():
        row[f"{role}_tokens"] = usage.total
    for role, usage in d.adaptation_tokens.items():
        row[f"adapt_{role}_tokens"] = usage.total
    row["adaptation"] = json.dumps(d.adaptation, default=str)
    return row
