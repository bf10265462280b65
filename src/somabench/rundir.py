"""The run-directory contract, in one place: file names, the ``run.json`` header, statuses,
timestamps and the config hash.

Why one owner: the task writes a run dir; the sweep, the re-judge CLI, the judge panel, the
report and W&B read it. Each used to declare its own ``"run.json"``, its own timestamp format
and its own list of "keys that do not change the output"; the lists disagreed, so a rerun with
only ``cache.enabled=false`` or a new timeout got a new config hash and refused to resume.

This module is a leaf: it imports nothing from somabench, so any layer may use it.

A run directory (``<paths.output_root>/<task_name>/<run_name>``) holds:

* ``run.json`` (:data:`RUN_HEADER`): status, config hash, resolved config, git, packages;
* ``records.jsonl`` / ``dialogues.jsonl``: one line per served turn / finished dialogue;
* ``errors.jsonl``: dialogues that failed (retried on the next run);
* ``scores.jsonl`` + ``judge.json``: the judge panel's lines and header;
* ``summary.csv`` / ``summary.md``: the run summary printed at the end.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

# -- file names ------------------------------------------------------------------------------
RUN_HEADER = "run.json"
TURNS_FILE = "records.jsonl"
DIALOGUES_FILE = "dialogues.jsonl"
ERRORS_FILE = "errors.jsonl"
SCORES_FILE = "scores.jsonl"
JUDGE_HEADER = "judge.json"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
REFERENCE_META = "reference.json"  # in a shared Original reference dir (somabench.reference)

# -- statuses ----------------------------------------------------------------------------------
RunStatus = Literal["started", "running", "success", "error"]
"""``run.json`` ``status``: ``started`` (header written, nothing loaded yet), ``running``
(data and reference ready, serving), then ``success`` or ``error``."""
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)

# -- timestamps --------------------------------------------------------------------------------
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"  # local time, ISO 8601 without zone; sorts as text


def now() -> str:
    """The current time in :data:`TIME_FORMAT` (every header and score line uses it)."""
    return time.strftime(TIME_FORMAT)


# -- keys that never change what a run produces -----------------------------------------------
NON_OUTPUT_KEYS: tuple[str, ...] = (
    "paths", "hydra", "logger", "progress", "judge", "report", "task_name", "run_name", "tags",
    "limit", "shard", "batch_size", "fail_on_error", "cache", "optimized_metric",
    "token_penalty",
)
"""Top-level config keys outside the config hash: bookkeeping, selection (``limit``/``shard``
pick dialogues, they do not change answers), the request cache (a cached answer is the same
answer), judging and reporting (they read records, never write them)."""
TRANSPORT_KEYS: tuple[str, ...] = ("timeout", "max_retries", "concurrency", "backoff_initial",
                                   "backoff_max", "backoff_jitter")
"""Per-endpoint transport knobs (``model.<role>.*``, ``judge.*``): how a request travels,
never what it asks."""
MODEL_ROLES: tuple[str, ...] = ("F", "G")
DIRNAME_KEPT: tuple[str, ...] = ("shard", "run_name")
"""Non-output keys that still name a sweep subdir: two shards (or two run names) swept in one
multirun must not share one record file."""
CONFIG_GROUPS: tuple[str, ...] = ("paths", "hydra", "logger", "judge", "report", "cache")
"""Non-output keys that are groups: a sweep subdir name excludes their leaves one by one."""


def is_non_output(key: str) -> bool:
    """True when the dotted config ``key`` never changes a run's records."""
    parts = key.lstrip("+~").split(".")
    if parts[0] in NON_OUTPUT_KEYS:
        return True
    if len(parts) >= 2 and parts[0] == "model" and parts[1] == "prices":
        return True  # prices turn tokens into USD in reports; they never change an answer
    if parts[:2] == ["dataset", "gold_answers"]:
        return True  # where graders (judge=task) find gold answers; never shown to a model
    return (len(parts) == 3 and parts[0] == "model" and parts[1] in MODEL_ROLES
            and parts[2] in TRANSPORT_KEYS)


def dirname_exclude_keys() -> list[str]:
    """The override keys a sweep subdir name must leave out (``conf/hydra/default.yaml``
    ``exclude_keys`` must equal this; a test checks it). Hydra matches override keys exactly,
    so groups are spelled out leaf by leaf."""
    scalars = [k for k in NON_OUTPUT_KEYS if k not in CONFIG_GROUPS and k not in DIRNAME_KEPT]
    paths = [f"paths.{k}" for k in ("root_dir", "output_root", "reference_root", "results_dir",
                                    "cache_dir")]
    transport = [f"model.{r}.{k}" for r in MODEL_ROLES for k in TRANSPORT_KEYS]
    return [*scalars, *paths, "cache.enabled", "cache.path", *transport,
            "hydra.launcher.n_jobs"]


def output_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved config (plain dict) without the keys of :func:`is_non_output`."""
    data = {k: v for k, v in config.items() if not is_non_output(str(k))}
    model = data.get("model")
    if isinstance(model, Mapping):
        model = {k: v for k, v in model.items() if not is_non_output(f"model.{k}")}
        for role in MODEL_ROLES:
            if isinstance(model.get(role), Mapping):
                model[role] = {k: v for k, v in model[role].items() if k not in TRANSPORT_KEYS}
        data["model"] = model
    dataset = data.get("dataset")
    if isinstance(dataset, Mapping):
        data["dataset"] = {k: v for k, v in dataset.items() if not is_non_output(f"dataset.{k}")}
    return data


def config_hash(cfg: Any) -> str:
    """Hash of the resolved config minus non-output keys: equal hash = same records.

    ``cfg`` is a DictConfig or a plain mapping (e.g. ``run.json``'s ``config``)."""
    import hashlib

    if not isinstance(cfg, dict):
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(cfg, resolve=True)
    blob = json.dumps(output_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# -- the run header ----------------------------------------------------------------------------
def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON header (``run.json``, ``judge.json``, ``reference.json``); None if absent."""
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Replace ``path`` in one rename, so a reader never sees half a header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_header(run_dir: Path) -> dict[str, Any] | None:
    """``run_dir/run.json`` as a dict, or None when the directory holds no run yet."""
    return read_json(Path(run_dir) / RUN_HEADER)


def write_header(run_dir: Path, header: Mapping[str, Any]) -> None:
    """Write ``run_dir/run.json`` atomically."""
    status = header.get("status")
    if status not in RUN_STATUSES:
        raise ValueError(f"run.json status {status!r} is not one of {RUN_STATUSES}")
    write_json_atomic(Path(run_dir) / RUN_HEADER, header)


def update_header(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into an existing ``run.json`` (e.g. the sweep's objective)."""
    header = read_header(run_dir) or {}
    header.update(fields, updated=now())
    write_header(run_dir, header)
    return header


def served_anything(run_dir: Path) -> bool:
    """True once a dialogue finished in ``run_dir`` (its records are then worth protecting)."""
    path = Path(run_dir) / DIALOGUES_FILE
    return path.exists() and path.stat().st_size > 0


__all__ = [
    "DIALOGUES_FILE", "ERRORS_FILE", "JUDGE_HEADER", "NON_OUTPUT_KEYS", "REFERENCE_META",
    "RUN_HEADER", "RUN_STATUSES", "RunStatus", "SCORES_FILE", "SUMMARY_CSV", "SUMMARY_MD",
    "TIME_FORMAT", "TRANSPORT_KEYS", "TURNS_FILE", "config_hash", "dirname_exclude_keys",
    "is_non_output", "now", "output_config", "read_header", "served_anything", "update_header",
    "write_header",
    "write_json_atomic",
]
