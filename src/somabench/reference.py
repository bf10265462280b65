"""The shared Original reference: one Original run per (F, dataset, generation settings),
generated once and read by every method, the judge panel, the re-judge CLI and the report.

Why its own module: the reference is a contract between the runner (which generates it:
``somabench.runner.ensure_reference``), the judges (which score against it) and the report
(which labels it). They need only :func:`reference_key` and the directory layout, so this
module imports nothing of the runner.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig

from somabench.config import to_dict
from somabench.locks import file_lock
from somabench.rundir import TRANSPORT_KEYS

log = logging.getLogger(__name__)

SELECTION_KEYS = ("sample", "min_turns", "max_turns", "tasks", "context_dependent_only",
                  "context_dependent_tasks", "negative_control_tasks")
"""``dataset.*`` keys that pick which dialogues are served, not what they say."""


def reference_key(cfg: DictConfig) -> str:
    """``<dataset>-<family>-<digest>``: one reference per (F, dataset, generation settings);
    transport knobs and dialogue selection stay out of the digest."""
    data = {
        "F": to_dict(cfg.model.F),
        "dataset": to_dict(cfg.dataset),
        "generation": to_dict(cfg.generation),
    }
    for transport in TRANSPORT_KEYS:
        data["F"].pop(transport, None)
    for selection in SELECTION_KEYS:
        data["dataset"].pop(selection, None)
    data["dataset"].pop("gold_answers", None)  # grading metadata (judge=task), not generation
    if data["F"].get("backend") == "hf":  # dtype: auto -> what this machine runs (bf16 != fp32)
        from somabench.dtype import resolve

        data["F"]["dtype"] = resolve(str(data["F"].get("dtype", "auto")),
                                     str(data["F"].get("device", "cpu")), cfg.paths.cache_dir).name
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
    return f"{cfg.dataset.name}-{cfg.model.family}-{digest[:10]}"


def reference_dir(cfg: DictConfig) -> Path:
    """Where the reference of this config lives (it may not exist yet)."""
    return Path(cfg.paths.reference_root) / reference_key(cfg)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Process lock so parallel sweep jobs generate a shared reference once."""
    with file_lock(path):
        yield


__all__ = ["SELECTION_KEYS", "locked", "reference_dir", "reference_key"]
