"""The run-directory contract, in one place: file names, the typed ``run.json`` header
(:class:`RunHeader`, built by :func:`build_header`, read by :func:`read_header`), statuses,
timestamps, the config hash, the one JSONL reader, the one reference resolver and
:func:`list_runs`.

Why one owner: the task writes a run dir; the sweep, the re-judge CLI, the judge panel, the
report and W&B read it. Each used to declare its own ``"run.json"``, its own timestamp format
and its own list of "keys that do not change the output"; the lists disagreed, so a rerun with
only ``cache.enabled=false`` or a new timeout got a new config hash and refused to resume.
Likewise three JSONL readers disagreed about a damaged line and two reference resolvers about
where a moved reference is (as inspect_ai's ``log/_file.py``: one module owns the log file and
everyone reads through it; the header is typed, versioned and keeps a failed run's traceback).

This module is at the foundation: it imports only ``somabench.errors``, so any layer may use
it. No other module opens ``run.json`` or parses a run's JSONL by hand.

A run directory (``<paths.output_root>/<task_name>/<run_name>``) holds:

* ``run.json`` (:data:`RUN_HEADER`): status, config hash, resolved config, git, packages,
  models, the reference, and on failure the error and its traceback (:class:`RunHeader`);
* ``records.jsonl`` / ``dialogues.jsonl``: one line per served turn / finished dialogue;
* ``errors.jsonl``: dialogues that failed (retried on the next run);
* ``scores.jsonl`` + ``judge.json``: the judge panel's lines and header;
* ``summary.csv`` / ``summary.md``: the run summary printed at the end.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from somabench.errors import RunDirConflict, RunFileError

log = logging.getLogger(__name__)

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
HEADER_VERSION = 2
"""``run.json`` layout version. 1: headers written before the field existed (no
``header_version``, no ``traceback``; a few bench headers without ``status``); they are
upgraded on read (:func:`upgrade_header`), never rewritten in place."""
TEST_DOUBLE_KEY = "test_double"
"""Key of a backend's ``describe()`` naming the test double it is or talks to."""
PACKAGES: tuple[str, ...] = (
    "somabench", "torch", "transformers", "peft", "sentence-transformers", "hydra-core",
    "omegaconf", "openai", "numpy", "pandas", "vllm", "llmlingua", "routellm", "wandb")
"""Distributions whose versions every header records (None when not installed)."""
GIT_TIMEOUT_S = 10


@dataclass
class RunHeader:
    """``run.json``: what produced a run dir and how it ended. Typed so that every writer
    writes the same keys and every reader gets them checked (status from :data:`RunStatus`)."""

    status: RunStatus
    """:data:`RunStatus`: ``started``, ``running``, then ``success`` or ``error``."""
    config_hash: str | None = None
    """:func:`config_hash` of ``config``: a resume with another hash is refused."""
    config: dict[str, Any] = field(default_factory=dict)
    """The resolved config (plain containers)."""
    started: str | None = None
    updated: str | None = None
    git: dict[str, Any] = field(default_factory=dict)
    """``commit`` and ``dirty`` of the checkout that ran."""
    packages: dict[str, str | None] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    """Per role, the backend's ``describe()`` (engine, model, resolved dtype), written as soon
    as each model is built, so even a killed run tells the next one what it served with."""
    test_doubles: list[str] = field(default_factory=list)
    """``"<role>: <what>"`` for each model that is a test double (:func:`doubles_in`)."""
    reference_dir: str | None = None
    reference_key: str | None = None
    seconds: float | None = None
    error: str | None = None
    """``<ExceptionType>: <message>`` of a failed run."""
    traceback: str | None = None
    """The formatted traceback of a failed run (None for headers before version 2)."""
    metrics: dict[str, Any] | None = None
    objective: float | None = None
    """The sweep's objective for this job (``somabench.sweep.objective_of``)."""
    extra: dict[str, Any] = field(default_factory=dict, metadata={"on_disk": False})
    """Keys this version does not know (kept, written back as they were at the top level)."""
    header_version: int = HEADER_VERSION

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**self.extra, **data}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = RUN_HEADER) -> RunHeader:
        """A header from its JSON (``source`` names the file in errors); old ones upgraded."""
        data = upgrade_header(dict(data), source)
        known = {f.name for f in fields(cls)} - {"extra"}
        header = cls(**{k: v for k, v in data.items() if k in known})
        header.extra = {k: v for k, v in data.items() if k not in known}
        return header


def upgrade_header(data: dict[str, Any], source: str = RUN_HEADER) -> dict[str, Any]:
    """Bring a ``run.json`` written by an older somabench up to :data:`HEADER_VERSION`."""
    version = data.get("header_version", 1)
    if not isinstance(version, int) or version > HEADER_VERSION:
        raise RunFileError(f"{source}: header_version {version!r} is newer than this somabench "
                           f"reads ({HEADER_VERSION}); upgrade somabench to read it")
    if version == 1:
        # bench runs wrote a header without a status: nothing says the run finished
        data.setdefault("status", "started")
        data["test_doubles"] = data.get("test_doubles") or doubles_in(data.get("models"))
    if data.get("status") not in RUN_STATUSES:
        raise RunFileError(f"{source}: status {data.get('status')!r} is not one of "
                           f"{', '.join(RUN_STATUSES)}")
    data["header_version"] = HEADER_VERSION
    return data


def doubles_in(models: Mapping[str, Any] | None) -> list[str]:
    """``"<role>: <what>"`` for each entry of a header's ``models`` that is a test double."""
    return [f"{role}: {info[TEST_DOUBLE_KEY]}" for role, info in sorted((models or {}).items())
            if isinstance(info, Mapping) and info.get(TEST_DOUBLE_KEY)]


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON header (``judge.json``, ``reference.json``); None if absent; a corrupt one
    raises :class:`RunFileError` naming the file."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RunFileError(f"{path} is unreadable ({exc})") from exc
    if not isinstance(data, dict):
        raise RunFileError(f"{path} holds {type(data).__name__}, not a JSON object")
    return data


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Replace ``path`` in one rename, so a reader never sees half a header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def header_dirs(root: Path) -> list[Path]:
    """Every directory under ``root`` (itself included) holding a ``run.json``, sorted."""
    return sorted(path.parent for path in Path(root).rglob(RUN_HEADER))


def has_header(run_dir: Path) -> bool:
    """True when ``run_dir`` holds a ``run.json`` (a run, not a shared reference)."""
    return (Path(run_dir) / RUN_HEADER).exists()


def read_header(run_dir: Path) -> RunHeader | None:
    """``run_dir/run.json``, typed and upgraded, or None when the directory holds no run yet;
    a corrupt or too new header raises :class:`RunFileError`."""
    path = Path(run_dir) / RUN_HEADER
    data = read_json(path)
    return None if data is None else RunHeader.from_json(data, str(path))


def write_header(run_dir: Path, header: RunHeader) -> None:
    """Write ``run_dir/run.json`` atomically."""
    if header.status not in RUN_STATUSES:
        raise ValueError(f"run.json status {header.status!r} is not one of {RUN_STATUSES}")
    header.header_version = HEADER_VERSION
    write_json_atomic(Path(run_dir) / RUN_HEADER, header.to_json())


def update_header(run_dir: Path, **changes: Any) -> RunHeader | None:
    """Set fields of an existing ``run.json`` (e.g. the sweep's objective); None (nothing
    written) when the directory holds no header."""
    header = read_header(run_dir)
    if header is None:
        return None
    _assign(header, changes)
    header.updated = now()
    write_header(run_dir, header)
    return header


def _assign(header: RunHeader, changes: Mapping[str, Any]) -> None:
    known = {f.name for f in fields(RunHeader)} - {"extra", "header_version"}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"run.json has no field(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(known))}")
    for key, value in changes.items():
        setattr(header, key, value)


def git_state() -> dict[str, Any]:
    """The checkout's commit and whether it had uncommitted changes (None when unknown)."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=GIT_TIMEOUT_S).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "-C", str(root), "status", "--porcelain"],
                                    capture_output=True, text=True,
                                    timeout=GIT_TIMEOUT_S).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"commit": commit, "dirty": dirty}


def package_versions() -> dict[str, str | None]:
    """Installed versions of :data:`PACKAGES`."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def claim_run_dir(run_dir: Path, current: str) -> RunHeader | None:
    """The header to start from. A dir holding another config is refused, unless that run
    failed before serving a dialogue (nothing to protect): then the new config takes it over."""
    header = read_header(run_dir)
    if header is None or not header.config_hash or header.config_hash == current:
        return header
    if header.status == "error" and not served_anything(run_dir):
        log.warning("%s held a run (config %s) that failed before serving anything (%s); "
                    "this config (%s) takes the directory over", run_dir, header.config_hash,
                    header.error, current)
        return None
    raise RunDirConflict(
        f"{run_dir} already holds a run with a different config (hash {header.config_hash}, "
        f"now {current}). Resuming would mix results. Use another run name (run_name=... or "
        f"task_name=...) or delete that directory.")


def build_header(run_dir: Path, config: dict[str, Any], status: RunStatus,
                 **changes: Any) -> RunHeader:
    """The header a job writes at ``status``: status, config hash, git, packages, resolved
    ``config`` (plain dict), test doubles, plus ``changes``. ``started`` claims the directory
    (:func:`claim_run_dir`); later statuses update the header already there."""
    current = config_hash(config)
    before = claim_run_dir(run_dir, current) if status == "started" else read_header(run_dir)
    header = before or RunHeader(status=status)
    _assign(header, {"status": status, "config_hash": current, "git": git_state(),
                     "packages": package_versions(), "config": config, **changes})
    header.updated = now()
    header.started = header.started or header.updated
    header.test_doubles = doubles_in(header.models)  # never silent: reports flag them
    return header


def record_models(run_dir: Path, models: Mapping[str, Any]) -> RunHeader:
    """Merge ``models`` (role -> ``describe()``) into ``run.json`` as each model is built."""
    header = read_header(run_dir) or RunHeader(status="started")
    header.models = {**header.models, **models}
    header.test_doubles = doubles_in(header.models)
    write_header(run_dir, header)
    return header


def served_anything(run_dir: Path) -> bool:
    """True once a dialogue finished in ``run_dir`` (its records are then worth protecting)."""
    path = Path(run_dir) / DIALOGUES_FILE
    return path.exists() and path.stat().st_size > 0


# -- the Original reference a run is judged against --------------------------------------------
REFERENCE_SUBDIR = "reference"
"""A reference bundled inside a run dir (a W&B records artifact, an exported report)."""
REFERENCES_DIR = "references"
"""The folder of shared references (``paths.reference_root``'s default name)."""


def resolve_reference(run_dir: Path, header: RunHeader | None,
                      derived: Path | None = None) -> Path | None:
    """Where a run's Original reference lives, or None: a reference bundled in the run dir,
    else the header's ``reference_dir`` (paths may be relative to the cwd the run started
    from, so also ``references/<reference_key>`` next to the run and up its parents), else
    ``derived`` (the current config's reference dir). Only a dir holding turn lines counts."""
    run_dir = Path(run_dir)
    candidates: list[Path] = [run_dir / REFERENCE_SUBDIR]
    if header is not None and header.reference_dir:
        recorded = Path(header.reference_dir)
        key = header.reference_key or recorded.name
        candidates += [recorded, *(p / REFERENCES_DIR / key for p in run_dir.resolve().parents)]
    if derived is not None:
        candidates.append(Path(derived))
    for candidate in candidates:
        if (candidate / TURNS_FILE).exists():
            return candidate.resolve()
    return None


# -- JSONL files -------------------------------------------------------------------------------
def read_jsonl_rows(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The rows of a JSONL file of a run dir and whether its last line was torn. The one rule:
    blank lines are skipped; a last line without its newline that does not parse is a write cut
    off by a crash (reported, not raised); any other bad line raises :class:`RunFileError`
    naming file and line."""
    rows: list[dict[str, Any]] = []
    torn = False
    if not path.exists():
        return rows, torn
    with path.open("r", encoding="utf-8") as fh:
        lines = fh.readlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines) and not line.endswith("\n"):
                torn = True
                continue
            raise RunFileError(f"{path}:{number}: corrupt record line ({exc})") from exc
    return rows, torn


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """:func:`read_jsonl_rows` for readers: a torn last line is dropped with a warning."""
    rows, torn = read_jsonl_rows(path)
    if torn:
        log.warning("%s: dropping a torn last line (crash mid-write)", path)
    return rows


def append_jsonl(path: Path, row: Mapping[str, Any]) -> None:
    """Append one line in one write (concurrent appenders never interleave within a line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


# -- listing runs ------------------------------------------------------------------------------
SKIPPED_PARTS = ("wandb",)
"""Folders never searched for runs (W&B's own copies of files)."""


def find_run_dirs(root: Path) -> list[Path]:
    """Every directory under ``root`` (itself included) holding records."""
    found = set()
    for name in (TURNS_FILE, DIALOGUES_FILE):
        for path in Path(root).rglob(name):
            if any(p in SKIPPED_PARTS for p in path.relative_to(root).parts[:-1]):
                continue
            found.add(path.parent)
    return sorted(found)


@dataclass
class RunEntry:
    """One run dir as ``somabench ls runs`` lists it."""

    path: Path
    header: RunHeader | None
    """None for a shared reference (or records without a header)."""
    n_dialogues: int


def list_runs(root: Path) -> list[RunEntry]:
    """The run dirs under ``root`` with their headers and finished-dialogue counts."""
    return [RunEntry(run_dir, read_header(run_dir), len(read_jsonl(run_dir / DIALOGUES_FILE)))
            for run_dir in find_run_dirs(root)]


__all__ = [
    "DIALOGUES_FILE", "ERRORS_FILE", "HEADER_VERSION", "JUDGE_HEADER", "NON_OUTPUT_KEYS",
    "REFERENCE_META", "REFERENCE_SUBDIR", "RUN_HEADER", "RUN_STATUSES", "RunEntry", "RunHeader",
    "RunStatus", "SCORES_FILE", "SUMMARY_CSV", "SUMMARY_MD", "TIME_FORMAT", "TRANSPORT_KEYS",
    "TURNS_FILE", "append_jsonl", "build_header", "claim_run_dir", "config_hash",
    "dirname_exclude_keys", "doubles_in", "find_run_dirs", "has_header", "header_dirs", "is_non_output",
    "list_runs", "now", "output_config", "read_header", "read_json", "read_jsonl",
    "read_jsonl_rows", "record_models", "resolve_reference", "served_anything", "update_header",
    "upgrade_header", "write_header", "write_json_atomic",
]
