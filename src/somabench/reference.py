"""The shared Original reference: one Original run per (F, dataset, generation settings),
generated once and read by every method, the judge panel, the re-judge CLI and the report.

Why its own module: the reference is a contract between the runner (which generates it), the
judges (which score against it) and the report (which labels it). The judges and the report
need only :func:`reference_key` and the directory layout, never the runner.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from somabench.config import to_dict
from somabench.rundir import ERRORS_FILE, REFERENCE_META, TRANSPORT_KEYS, write_json_atomic

if TYPE_CHECKING:
    from somabench.data import Dialogue
    from somabench.runner import RunContext

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
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_reference(cfg: DictConfig, ctx: RunContext, dialogues: list[Dialogue],
                     progress: bool) -> tuple[dict[str, list[str]], str, Path]:
    """Generate (or resume) the Original run for these dialogues and return its answers,
    its key and its directory."""
    from somabench.backends.base import BackendError
    from somabench.records import RecordStore, load_turns
    from somabench.registry import methods
    from somabench.runner import Runner

    key = reference_key(cfg)
    ref_dir = Path(cfg.paths.reference_root) / key
    with locked(ref_dir.parent / f".{key}.lock"):
        store = RecordStore(ref_dir)
        missing = [d for d in dialogues if d.id not in store.finished]
        if missing:
            log.info("reference: generating the Original for %d dialogue(s) in %s", len(missing), ref_dir)
            original = methods.get("original")(OmegaConf.create({"name": "original"}), ctx)
            runner = Runner(cfg, ctx, original, store, run_id=f"reference/{key}", reference=None,
                            reference_key=None, history_mode="own")
            counts = runner.serve(missing, int(cfg.batch_size), progress)
            if counts["errored"]:
                raise BackendError(f"the Original reference failed for {counts['errored']} "
                                   f"dialogue(s); see {ref_dir / ERRORS_FILE}")
            meta = ref_dir / REFERENCE_META
            if not meta.exists():
                write_json_atomic(meta, {"key": key, "config": OmegaConf.to_container(
                    cfg.model.F, resolve=True), "dataset": cfg.dataset.name})
    answers: dict[str, list[str]] = {}
    for record in sorted(load_turns(ref_dir), key=lambda r: (r.dialogue_id, r.turn)):
        answers.setdefault(record.dialogue_id, []).append(record.response)
    return answers, key, ref_dir


__all__ = ["SELECTION_KEYS", "ensure_reference", "locked", "reference_dir", "reference_key"]
