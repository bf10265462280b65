"""Find runs (an outputs dir, a multirun sweep dir, or a W&B group) and load them as frames.

Why: tables and figures must not care where the runs came from. Every run dir holds
``records.jsonl`` + ``dialogues.jsonl`` (+ ``run.json``, ``scores.jsonl``); a W&B run carries
the same files as an artifact, so both sources end up as the same :class:`ReportData`.
Runs are identified by their directory relative to the source (``run_id`` in the records is
the run name, which repeats across sweep jobs).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from somabench.errors import ConfigError, RunFileError
from somabench.metrics import (
    dialogue_frame,
    mark_missing,
    score_frame,
    split_current,
    superseded_note,
    turn_frame,
)
from somabench.records import load_dialogues, load_turns
from somabench.rundir import (
    JUDGE_HEADER,
    REFERENCE_META,
    RUN_HEADER,
    SCORES_FILE,
    TURNS_FILE,
    RunHeader,
    find_run_dirs,
    is_non_output,
    read_header,
    read_json,
    read_jsonl,
    resolve_reference,
)
from somabench.testing import report_warnings

log = logging.getLogger(__name__)

ARTIFACT_TYPE = "run-records"    # W&B artifact type holding a run dir's files
WANDB_PREFIX = "wandb:"
ORIGINAL = "original"            # the method every other one is compared to


@dataclass
class RunInfo:
    """One run directory and what it is."""

    key: str
    """Directory relative to the source root: the id shown in tables."""
    path: Path
    kind: str
    """``run`` (a job) or ``reference`` (the shared Original run)."""
    method: str
    dataset: str
    family: str
    config: dict[str, Any]
    status: str | None = None
    task_name: str | None = None
    reference_dir: Path | None = None
    header: RunHeader | None = None
    """The run's ``run.json`` (None for a reference or a headerless run)."""
    label: str = ""
    """Row label: the method's display name plus the config keys that set it apart, if any."""
    variant: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReportData:
    """Everything a report needs, as frames keyed by ``run_key``."""

    source: str
    runs: list[RunInfo]
    turns: pd.DataFrame
    dialogues: pd.DataFrame
    scores: pd.DataFrame
    warnings: list[str] = field(default_factory=list)

    def run(self, key: str) -> RunInfo:
        return next(r for r in self.runs if r.key == key)

    def families(self) -> list[str]:
        return sorted({r.family for r in self.runs})

    def experiment(self) -> str:
        """task_name shared by the runs, else the source's last path part."""
        names = {r.task_name for r in self.runs if r.kind == "run" and r.task_name}
        if len(names) == 1:
            return names.pop()
        return Path(self.source.removeprefix(WANDB_PREFIX)).name or "report"

    def prices(self, family: str) -> dict[str, Any]:
        """``model.prices`` of the family's runs (the first run that has them)."""
        for run in self.runs:
            prices = (run.config.get("model") or {}).get("prices")
            if run.family == family and prices:
                return dict(prices)
        return {}

    def runs_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"run_key": r.key, "kind": r.kind, "method": r.method, "label": r.label,
                              "dataset": r.dataset, "family": r.family, "status": r.status,
                              "task_name": r.task_name, **{f"variant:{k}": v for k, v in r.variant.items()}}
                             for r in self.runs])


# -- locating runs -----------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    """A judge or reference header; an unreadable one is treated as empty (with a warning)."""
    try:
        return read_json(path) or {}
    except RunFileError as exc:
        log.warning("%s; treating as empty", exc)
        return {}


def _read_header(run_dir: Path) -> RunHeader | None:
    try:
        return read_header(run_dir)
    except RunFileError as exc:
        log.warning("%s; treating the run as headerless", exc)
        return None


def flatten_config(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten_config(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): json.dumps(data, sort_keys=True) if isinstance(data, list) else data}


def _excluded(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _label_variants(runs: list[RunInfo], names: dict[str, str], pool_keys: list[str]) -> None:
    """Label runs; runs of one method on one dataset whose configs differ get the differing
    keys in their label (e.g. a warm-window sweep), so they are never pooled silently."""
    skip = list(pool_keys)
    groups: dict[tuple[str, str, str], list[RunInfo]] = {}
    for run in runs:
        run.label = names.get(run.method, run.method)
        if run.kind == "run":
            groups.setdefault((run.family, run.method, run.dataset), []).append(run)
    for group in groups.values():
        flat = {r.key: {k: v for k, v in flatten_config(r.config).items()
                        if not is_non_output(k) and not _excluded(k, skip)}
                for r in group}
        keys = sorted({k for f in flat.values() for k in f})
        differing = [k for k in keys if len({json.dumps(f.get(k), default=str) for f in flat.values()}) > 1]
        for run in group:
            run.variant = {k: flat[run.key].get(k) for k in differing}
            if differing:
                parts = ", ".join(f"{k.removeprefix('method.')}={flat[run.key].get(k)}" for k in differing)
                run.label = f"{run.label} ({parts})"


def label_problem(method: str, method_cfg: dict[str, Any]) -> str | None:
    """Why a run's config must not carry its method's name (``Method.label_problem``, the check
    the method makes at construction), or None. Records written before a guard existed, or
    edited by hand, are caught here too (label guards both ways: runtime and report)."""
    from somabench.registry import load_builtin, methods

    try:
        load_builtin()
        cls = methods.get(method)
    except Exception:  # noqa: BLE001 - an unknown or unimportable method has no guard here
        return None
    guard = getattr(cls, "label_problem", None)
    if guard is None or not method_cfg:
        return None
    try:
        return guard(method_cfg)
    except Exception as exc:  # noqa: BLE001 - a config the guard cannot read is suspicious
        return f"label check failed ({type(exc).__name__}: {exc})"


def _guard_labels(runs: list[RunInfo], warnings: list[str]) -> None:
    for run in runs:
        if run.kind != "run":
            continue
        problem = label_problem(run.method, run.config.get("method") or {})
        if problem:
            run.label = f"{run.method} (config does not match its name)"
            message = f"{run.key}: relabelled '{run.label}': {problem}"
            warnings.append(message)
            log.warning(message)


def _run_info(run_dir: Path, root: Path, turns: list[Any]) -> RunInfo | None:
    header = _read_header(run_dir)
    config = header.config if header is not None else {}
    try:
        key = str(run_dir.resolve().relative_to(root.resolve())) or "."
    except ValueError:  # a reference outside the source root: <references dir>/<key>
        key = f"{run_dir.parent.name}/{run_dir.name}"
    first = turns[0] if turns else None
    if header is not None:
        return RunInfo(key=key, path=run_dir, kind="run",
                       method=(config.get("method") or {}).get("name") or (first.method if first else "?"),
                       dataset=(config.get("dataset") or {}).get("name") or (first.dataset if first else "?"),
                       family=(config.get("model") or {}).get("family") or "?", config=config,
                       status=header.status, task_name=config.get("task_name"),
                       reference_dir=resolve_reference(run_dir, header), header=header)
    meta = _read_json(run_dir / REFERENCE_META)
    if first is None:
        return None
    if meta or first.method == ORIGINAL:
        ref_key = meta.get("key") or run_dir.name
        # reference keys are "<dataset>-<family>-<digest>" (somabench.reference.reference_key)
        parts = ref_key.rsplit("-", 1)[0].split("-", 1)
        family = parts[1] if len(parts) == 2 else "?"
        return RunInfo(key=key, path=run_dir, kind="reference", method=ORIGINAL, dataset=first.dataset,
                       family=family, config={"model": {"F": meta.get("config")}}, status="success")
    log.warning("%s has records but no %s; family unknown", run_dir, RUN_HEADER)
    return RunInfo(key=key, path=run_dir, kind="run", method=first.method, dataset=first.dataset,
                   family="?", config={})


def run_scores(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One run's score lines of each panel's current version (``judge.json`` records the
    fingerprint of each panel's latest judging), and a summary of the lines of earlier
    versions (``somabench.metrics.split_current``): kept on disk, never aggregated."""
    rows = read_jsonl(run_dir / SCORES_FILE)
    judged = _read_json(run_dir / JUDGE_HEADER)
    recorded = {name: head.get("fingerprint") for name, head in (judged.get("panels") or {}).items()
                if isinstance(head, dict) and head.get("fingerprint")}
    return split_current(score_frame(rows), recorded)


def load_local(root: str | Path, report_cfg: Any, source: str | None = None) -> ReportData:
    """Load every run under ``root`` (an outputs dir, one experiment, a sweep dir or one run)."""
    root = Path(root)
    if not root.exists():
        raise ConfigError(f"{root} does not exist; pass an outputs dir, a multirun sweep dir "
                         f"or wandb:<entity>/<project>/<group>")
    warnings: list[str] = []
    runs: list[RunInfo] = []
    records: dict[str, tuple[list[Any], list[Any]]] = {}
    pending = list(find_run_dirs(root))
    seen: set[Path] = set()
    while pending:
        run_dir = pending.pop(0)
        if run_dir.resolve() in seen:
            continue
        seen.add(run_dir.resolve())
        turns, dialogues = load_turns(run_dir), load_dialogues(run_dir)
        info = _run_info(run_dir, root, turns)
        if info is None:
            continue
        if report_cfg.get("finished_only") and info.kind == "run" and info.status != "success":
            message = (f"{info.key}: left out, its run is not finished (status {info.status}, "
                       f"{len(dialogues)} dialogue(s) so far; report.finished_only=true)")
            warnings.append(message)
            log.warning("%s", message)
            continue
        runs.append(info)
        records[info.key] = (turns, dialogues)
        if info.reference_dir is not None and info.reference_dir.resolve() not in seen:
            pending.append(info.reference_dir)
    if not runs:
        raise ConfigError(f"no run directories (with {TURNS_FILE}) under {root}")
    _label_variants(runs, dict(report_cfg.methods), list(report_cfg.pool_keys))
    _guard_labels(runs, warnings)
    for message in report_warnings(runs):  # runs on test doubles (somabench.testing) are flagged
        log.warning("%s", message)
        warnings.insert(0, message)
    turns_f, dialogues_f, scores_f = _frames(runs, records, warnings)
    return ReportData(source=source or str(root), runs=runs, turns=turns_f, dialogues=dialogues_f,
                      scores=scores_f, warnings=warnings)


def _frames(runs: list[RunInfo], records: dict[str, tuple[list[Any], list[Any]]],
            warnings: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    explicit_original = {(r.family, r.dataset) for r in runs if r.kind == "run" and r.method == ORIGINAL}
    used_by: dict[str, set[str]] = {}
    for run in runs:
        if run.kind == "run" and run.reference_dir is not None:
            ref = next((r for r in runs if r.path.resolve() == run.reference_dir.resolve()), None)
            if ref is not None:
                ref.family = run.family if ref.family == "?" else ref.family
                used_by.setdefault(ref.key, set()).update(d.dialogue_id for d in records[run.key][1])
    turn_parts, dialogue_parts, score_parts = [], [], []
    for run in runs:
        turns, dialogues = records[run.key]
        if run.kind == "reference":
            if (run.family, run.dataset) in explicit_original:
                continue  # an explicit Original run of the same family/dataset is shown instead
            if run.key in used_by:  # only the dialogues the compared runs served
                keep = used_by[run.key]
                turns = [t for t in turns if t.dialogue_id in keep]
                dialogues = [d for d in dialogues if d.dialogue_id in keep]
        tags = {"run_key": run.key, "label": run.label, "family": run.family, "kind": run.kind}
        if turns:
            part = turn_frame(turns).assign(**tags)
            turn_parts.append(part)
        if dialogues:
            dialogue_parts.append(dialogue_frame(dialogues).assign(
                **tags, adaptation=[d.adaptation for d in dialogues]))
        if run.kind == "run":
            frame, superseded = run_scores(run.path)
            for note in superseded_note(superseded, where=f"{run.key}: "):
                warnings.append(note)
                log.warning(note)
            if not frame.empty:
                frame = frame.assign(**tags, dataset=run.dataset, method=run.method)
                finished = {d.dialogue_id for d in dialogues}
                score_parts.append(frame[frame["dialogue_id"].isin(finished)])
    turns_f = pd.concat(turn_parts, ignore_index=True) if turn_parts else pd.DataFrame()
    dialogues_f = pd.concat(dialogue_parts, ignore_index=True) if dialogue_parts else pd.DataFrame()
    dialogues_f = mark_missing(dialogues_f, turns_f, ["run_key", "dialogue_id"])
    scores_f = pd.concat(score_parts, ignore_index=True) if score_parts else score_frame([])
    if not dialogues_f.empty:
        dup = dialogues_f.duplicated(["family", "label", "dataset", "dialogue_id"], keep="first")
        if dup.any():
            dropped = dialogues_f[dup]
            from_runs = dropped[dropped["kind"] == "run"]
            if not from_runs.empty:  # copies of the shared reference are expected, runs are not
                message = (f"{len(from_runs)} dialogue(s) appear in more than one run with the same "
                           f"label (runs {', '.join(sorted(from_runs['run_key'].unique()))}); "
                           f"kept the first copy")
                warnings.append(message)
                log.warning(message)
            drop_keys = set(zip(dropped["run_key"], dropped["dialogue_id"], strict=True))
            for frame in (dialogues_f, turns_f, scores_f):
                if frame.empty:
                    continue
                mask = [(k, d) in drop_keys for k, d in zip(frame["run_key"], frame["dialogue_id"], strict=True)]
                frame.drop(frame.index[mask], inplace=True)
    return turns_f, dialogues_f, scores_f


# -- W&B ------------------------------------------------------------------------------------
def parse_wandb_source(source: str) -> tuple[str, str, str | None]:
    """``wandb:entity/project[/group]`` -> (entity, project, group)."""
    parts = source.removeprefix(WANDB_PREFIX).strip("/").split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ConfigError(f"W&B source '{source}' must look like wandb:<entity>/<project>/<group> "
                         f"(group optional)")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def load_wandb(source: str, report_cfg: Any, download_dir: Path) -> ReportData:
    """Download each run's records artifact of a W&B project/group and load them like local runs."""
    import wandb

    entity, project, group = parse_wandb_source(source)
    api = wandb.Api()
    filters = {"group": group} if group else {}
    count = 0
    for run in api.runs(f"{entity}/{project}", filters=filters):
        for artifact in run.logged_artifacts():
            if artifact.type == ARTIFACT_TYPE:
                artifact.download(root=str(download_dir / run.id))
                count += 1
    if not count:
        raise ConfigError(f"no '{ARTIFACT_TYPE}' artifacts in {entity}/{project}"
                         f"{'/' + group if group else ''}; were the runs logged with logger=wandb and synced?")
    log.info("downloaded %d run artifact(s) from %s to %s", count, source, download_dir)
    return load_local(download_dir, report_cfg, source=source)


def load(source: str, report_cfg: Any, download_dir: Path | None = None) -> ReportData:
    """Local path or ``wandb:entity/project/group``."""
    if source.startswith(WANDB_PREFIX):
        if download_dir is None:
            raise ValueError("a W&B source needs a download_dir")
        return load_wandb(source, report_cfg, download_dir)
    return load_local(source, report_cfg)
