"""The judge panel: turn a run directory into ``scores.jsonl`` + ``judge_summary.{csv,md}``.

Why one place: the main CLI (after generation) and ``python -m somabench judge`` (re-judging)
must judge the same way. Steps: build one item per served turn (with the Original's answer
from the run's reference dir and the dialogue before it), check every answer, reference and
judge endpoint before spending a call (STYLE rule 11), log the call count and output path,
judge (remote judges concurrently, local models one at a time), append each line as soon as
it exists (a crash loses nothing; a rerun judges only what is missing or failed), compact,
aggregate and return the objective (panel similarity %, all turns).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from somabench.config import to_dict
from somabench.errors import RunFileError
from somabench.judges.base import (
    FINAL_STATUSES,
    Judge,
    JudgeError,
    JudgeItem,
    ScoreLine,
    Verdict,
    row_key,
    unit_key,
)
from somabench.judges.prompting import JudgePrompt, load_prompt
from somabench.records import (
    JUDGE_API_ERROR,
    JUDGE_OK,
    JUDGE_SKIPPED,
    JUDGE_STATUSES,
    JUDGE_UNPARSED,
    TurnRecord,
    atomic_write_jsonl,
    load_turns,
    post_switch_flags,
)
from somabench.rundir import (
    JUDGE_HEADER,
    SCORES_FILE,
    TRANSPORT_KEYS,
    TURNS_FILE,
    now,
    read_header,
    read_json,
    read_jsonl,
    resolve_reference,
    write_json_atomic,
)

log = logging.getLogger(__name__)

JUDGE_CACHE_NAMESPACE = "judge"  # the judges' rows in the shared sqlite request cache
PANEL_KEYS = ("name", "label", "prompts", "prompt_settings", "judges", "objective",
              "parse_retries", *TRANSPORT_KEYS, "preflight", "preflight_timeout",
              "abort_after_consecutive_errors", "fail_on_error", "store_messages", "cache")


# -- reading a run -----------------------------------------------------------------------------
def reference_dir_of(run_dir: Path, cfg: DictConfig | None = None) -> Path | None:
    """The run's Original reference dir (:func:`somabench.rundir.resolve_reference`), with
    ``cfg``'s own reference dir as the last candidate."""
    derived = None
    if cfg is not None:
        try:
            from somabench.reference import reference_dir

            derived = reference_dir(cfg)
        except Exception:  # noqa: BLE001 - best effort; the caller reports a missing reference
            log.debug("could not derive the reference dir", exc_info=True)
    return resolve_reference(run_dir, read_header(run_dir), derived)


def build_items(run_dir: Path, reference_dir: Path | None) -> list[JudgeItem]:
    """One item per served turn, with the Original's answer and the dialogue before it."""
    turns = load_turns(run_dir)
    reference: dict[tuple[str, int], str] = {}
    if reference_dir is not None and (reference_dir / TURNS_FILE).exists():
        for rec in load_turns(reference_dir):
            if rec.status == "ok":
                reference[(rec.dialogue_id, rec.turn)] = rec.response
    by_dialogue: dict[str, list[TurnRecord]] = defaultdict(list)
    for rec in turns:
        by_dialogue[rec.dialogue_id].append(rec)
    items = []
    for dialogue_id in sorted(by_dialogue):
        records = sorted(by_dialogue[dialogue_id], key=lambda r: r.turn)
        flags = post_switch_flags(records)
        context: list[tuple[str, str]] = []
        for rec, post_switch in zip(records, flags, strict=True):
            ref = reference.get((rec.dialogue_id, rec.turn))
            if ref is not None and rec.reference_turn_ref and reference_dir is not None:
                ref_key = rec.reference_turn_ref.split("/", 1)[0]
                if ref_key != reference_dir.name:
                    log.warning("turn %s/%s points at reference %s, not %s; not judged against it",
                                rec.dialogue_id, rec.turn, ref_key, reference_dir.name)
                    ref = None
            items.append(JudgeItem(
                run_id=rec.run_id, dialogue_id=rec.dialogue_id, dataset=rec.dataset, turn=rec.turn,
                method=rec.method, served_by=rec.served_by, question=rec.user,
                candidate=rec.response, reference=ref, context=list(context),
                post_switch=post_switch, reference_turn_ref=rec.reference_turn_ref,
                record_status=rec.status, record_error=rec.error,
            ))
            shown = reference.get((rec.dialogue_id, rec.turn), rec.response) \
                if rec.history_mode == "reference" else rec.response
            context.append((rec.user, shown))
    return items


# -- writing -----------------------------------------------------------------------------------
class ScoreWriter:
    """Appends score lines as they finish (thread-safe); ``compact`` keeps the last per unit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fh = path.open("a", encoding="utf-8")

    def write(self, line: ScoreLine) -> None:
        self.write_row(line.to_json())

    def write_row(self, row: dict[str, Any]) -> None:
        text = json.dumps(row, ensure_ascii=False) + "\n"
        with self._lock:
            self._fh.write(text)
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()


def compact(path: Path) -> list[dict[str, Any]]:
    """Rewrite ``scores.jsonl`` atomically with one line per unit (the latest), sorted."""
    latest: dict[tuple, dict[str, Any]] = {}
    for row in read_jsonl(path):
        latest[row_key(row)] = row
    rows = [latest[k] for k in sorted(latest, key=lambda k: (k[0], k[1], k[2], k[3], k[5], k[6], k[4]))]
    atomic_write_jsonl(path, rows)
    return rows


def _wants_more_retries(old: dict[str, Any], judge: Judge) -> bool:
    """An ``unparsed`` line made with fewer parse retries than the judge now allows is asked
    again (``judge.parse_retries`` was raised since)."""
    allowed = getattr(judge, "parse_retries", None)
    made = old.get("parse_retries")
    return old.get("status") == JUDGE_UNPARSED and allowed is not None and (made is None or int(made) < int(allowed))


# -- the panel ---------------------------------------------------------------------------------
class Panel:
    """A configured set of judges and prompts (one ``conf/judge/<name>.yaml``)."""

    def __init__(self, cfg: dict[str, Any], cache_dir: str | None, progress: bool = False) -> None:
        unknown = sorted(set(cfg) - set(PANEL_KEYS))
        if unknown:
            raise JudgeError(f"judge config has unknown key(s) {unknown}; known: {PANEL_KEYS}")
        if not cfg.get("judges"):
            raise JudgeError(f"judge={cfg.get('name')} lists no judges (judge.judges is empty)")
        self.cfg = cfg
        self.name = str(cfg["name"])
        self.cache_dir = cache_dir
        self.progress = progress
        self.prompts = [load_prompt(p) for p in cfg["prompts"]]
        self.objective = str(cfg["objective"])
        self.cache = None
        cache_cfg = cfg.get("cache") or {}
        if cache_cfg.get("enabled"):
            from somabench.cache import SqliteCache

            self.cache = SqliteCache(cache_cfg["path"], namespace=JUDGE_CACHE_NAMESPACE)
        self._reused = 0
        self.judges: list[Judge] = [self._build(name, dict(spec))
                                    for name, spec in cfg["judges"].items()]
        self.fingerprint_spec = {j.name: {"kind": j.kind, "model": j.model,
                                          "prompts": {p.id: p.sha for p in self.prompts_for(j)}}
                                 for j in self.judges}
        self.fingerprint = panel_fingerprint(self.fingerprint_spec)

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> Panel:
        from somabench.config import progress_enabled

        judge_cfg = to_dict(cfg.judge)
        return cls(judge_cfg, cache_dir=str(cfg.paths.cache_dir), progress=progress_enabled(cfg))

    def _build(self, name: str, spec: dict[str, Any]) -> Judge:
        from somabench.registry import judge_kinds

        kind = spec.get("kind")
        kinds = judge_kinds.names()
        if kind not in judge_kinds:
            raise JudgeError(f"judge.judges.{name}.kind='{kind}' must be one of {' | '.join(kinds)}")
        factory = judge_kinds.get(str(kind))
        return factory(name, spec, self.cfg, self.cache, self.cache_dir)

    def prompts_for(self, judge: Judge) -> list[JudgePrompt]:
        spec_prompts = self.cfg["judges"][judge.name].get("prompts")
        prompts = [load_prompt(p) for p in spec_prompts] if spec_prompts else self.prompts
        chosen = [p for p in prompts if judge.supports(p)]
        for p in prompts:
            if p not in chosen:
                log.info("judge %s (%s) does not run prompt %s (%s prompts are for other kinds)",
                         judge.name, judge.kind, p.id, p.kind)
        return chosen

    def settings_for(self, prompt: JudgePrompt) -> dict[str, Any]:
        settings = (self.cfg.get("prompt_settings") or {}).get(prompt.kind)
        if settings is None and prompt.kind != "embedding":
            raise JudgeError(f"no judge.prompt_settings.{prompt.kind} (max_tokens, "
                             f"context_turns) for prompt {prompt.id}")
        return dict(settings or {})

    def close(self) -> None:
        for judge in self.judges:
            judge.close()
        if self.cache is not None:
            self.cache.close()

    # -- running -------------------------------------------------------------------------------
    def run(self, run_dir: Path, reference_dir: Path | None = None) -> dict[str, Any]:
        """Judge ``run_dir``; returns the summary metrics. Raises JudgeError after writing what
        it could when judging failed more than ``fail_on_error`` allows."""
        run_dir = Path(run_dir)
        if not (run_dir / TURNS_FILE).exists():
            raise JudgeError(f"{run_dir} has no records.jsonl: not a somabench run dir (or the "
                             f"run served no dialogue yet)")
        reference_dir = Path(reference_dir) if reference_dir else reference_dir_of(run_dir)
        items = build_items(run_dir, reference_dir)
        scores_path = run_dir / SCORES_FILE
        existing = self._finished_units(scores_path)
        plan, skipped = self._plan(items, existing, reference_dir)
        n_calls = sum(len(units) for _, units in plan)
        judges_line = ", ".join(f"{j.name} ({j.kind}: {j.model})" for j, _ in plan)
        log.info("judge=%s: %d turn(s) x %d judge(s): %d unit(s) to judge, %d already in %s, "
                 "%d skipped (nothing to judge) | judges: %s | output: %s", self.name,
                 len(items), len(self.judges), n_calls, self._reused, scores_path.name,
                 len(skipped), judges_line, scores_path)
        if self.cfg.get("preflight", True):
            for judge, units in plan:
                if units:
                    judge.preflight()
        writer = ScoreWriter(scores_path)
        started = time.perf_counter()
        try:
            for line in skipped:
                writer.write(line)
            for row in self._carried:
                writer.write_row(row)
            remote = [(j, u) for j, u in plan if j.kind == "llm" and u]
            sequential = [(j, u) for j, u in plan if j.kind != "llm" and u]
            if remote:
                with ThreadPoolExecutor(max_workers=len(remote),
                                        thread_name_prefix="judge-panel") as pool:
                    for future in [pool.submit(self._run_judge, j, u, writer) for j, u in remote]:
                        future.result()
            for judge, units in sequential:
                try:
                    self._run_judge(judge, units, writer)
                finally:
                    judge.close()
        finally:
            writer.close()
        seconds = time.perf_counter() - started
        rows = compact(scores_path)
        from somabench.judges.aggregate import write_summary

        panel_rows = [r for r in rows if r.get("panel") == self.name
                      and r.get("panel_fingerprint") == self.fingerprint]
        fingerprints = {**self._recorded_fingerprints(run_dir), self.name: self.fingerprint}
        metrics = write_summary(run_dir, rows, panel=self.name, objective=self.objective,
                                fingerprints=fingerprints)
        counts = Counter((r["judge"], r["status"]) for r in panel_rows)
        self._write_header(run_dir, reference_dir, metrics, counts, seconds, n_calls)
        if self.cache is not None:
            log.info("%s", self.cache.stats())
        self._log_counts(counts)
        self._check_failures(panel_rows, scores_path, run_dir)
        return metrics

    def _finished_units(self, path: Path) -> dict[tuple, dict[str, Any]]:
        """Final lines by unit key (fingerprint included), plus, under ``(unit key without
        the fingerprint, request_key)``, final lines of any version of this panel: a judge the
        panel change did not touch made exactly that request before (same model, prompt and
        messages), so its line is carried over to the new fingerprint instead of paying for
        the call again."""
        done: dict[tuple, dict[str, Any]] = {}
        for row in read_jsonl(path):
            key = row_key(row)
            if row.get("status") in FINAL_STATUSES:
                done[key] = row
                if row.get("request_key"):
                    done[("any-version", key[0], *key[2:], row["request_key"])] = row
            else:
                done.pop(key, None)
        return done

    @staticmethod
    def _recorded_fingerprints(run_dir: Path) -> dict[str, str]:
        """panel -> fingerprint of its latest judging, from ``judge.json``."""
        try:
            panels = (read_json(run_dir / JUDGE_HEADER) or {}).get("panels") or {}
        except RunFileError:
            return {}
        return {name: head["fingerprint"] for name, head in panels.items()
                if isinstance(head, dict) and head.get("fingerprint")}

    def _plan(self, items: list[JudgeItem], existing: dict[tuple, dict[str, Any]],
              reference_dir: Path | None) -> tuple[list[tuple[Judge, list[tuple]]], list[ScoreLine]]:
        """Units still to judge per judge, plus skipped lines (nothing to judge)."""
        plan, skipped = [], []
        self._reused = 0
        self._carried: list[dict[str, Any]] = []
        for judge in self.judges:
            units = []
            for prompt in self.prompts_for(judge):
                settings = self.settings_for(prompt)
                for item in items:
                    key = unit_key(item.run_id, item.dialogue_id, item.turn, judge.name, prompt.id,
                                   self.name, self.fingerprint)
                    old = existing.get(key)
                    reason = None
                    if item.record_status != "ok":
                        reason = f"the turn itself has status {item.record_status}: {item.record_error}"
                    elif "reference" in prompt.requires and item.reference is None:
                        where = reference_dir or "(none found: no recorded or derived dir holds records)"
                        reason = (f"no Original answer for this turn in the reference dir "
                                  f"{where} (generate it, or judge with a reference-free prompt)")
                    if reason:
                        skipped.append(self._line(item, judge, prompt, Verdict(
                            status=JUDGE_SKIPPED, error=reason)))
                        continue
                    request = judge.request_key(item, prompt, settings)
                    earlier = existing.get(("any-version", key[0], *key[2:], request))
                    if old and old.get("request_key") == request and not _wants_more_retries(old, judge):
                        self._reused += 1  # judged before with exactly this request
                    elif earlier and not _wants_more_retries(earlier, judge):
                        self._carried.append({**earlier, "panel_fingerprint": self.fingerprint,
                                              "cached": True})
                        self._reused += 1  # an older panel version made exactly this request
                    else:
                        units.append((item, prompt, settings))
            plan.append((judge, units))
        return plan, skipped

    def _run_judge(self, judge: Judge, units: list[tuple], writer: ScoreWriter) -> None:
        from tqdm.auto import tqdm

        judge.prepare([u[0] for u in units])
        bar = tqdm(total=len(units), desc=f"judge {judge.name}", leave=False,
                   disable=not self.progress, dynamic_ncols=True)

        def one(unit: tuple) -> ScoreLine:
            item, prompt, settings = unit
            return self._line(item, judge, prompt, judge.judge(item, prompt, settings))

        try:
            if judge.concurrency > 1:
                with ThreadPoolExecutor(max_workers=judge.concurrency,
                                        thread_name_prefix=f"judge-{judge.name}") as pool:
                    for future in as_completed([pool.submit(one, u) for u in units]):
                        writer.write(future.result())
                        bar.update(1)
            else:
                for unit in units:
                    writer.write(one(unit))
                    bar.update(1)
        finally:
            bar.close()

    def _line(self, item: JudgeItem, judge: Judge, prompt: JudgePrompt, v: Verdict) -> ScoreLine:
        ok = v.status == JUDGE_OK and v.score is not None
        return ScoreLine(
            run_id=item.run_id, dialogue_id=item.dialogue_id, dataset=item.dataset, turn=item.turn,
            method=item.method, panel=self.name, judge=judge.name, judge_model=judge.model,
            judge_kind=judge.kind, prompt_id=prompt.id, prompt_sha=prompt.sha, metric=prompt.name,
            status=v.status, score=v.score if ok else None,
            score_norm=round(prompt.normalize(v.score), 6) if ok and v.score is not None else None,
            score_range=[prompt.lo, prompt.hi], raw=v.raw, error=v.error, attempts=v.attempts,
            retries=list(v.retries), post_switch=item.post_switch, served_by=item.served_by,
            cached=v.cached, seconds=round(v.seconds, 6) if v.seconds is not None else None,
            tokens={"prompt": v.prompt_tokens, "completion": v.completion_tokens},
            request_key=v.request_key, reference_turn_ref=item.reference_turn_ref,
            messages=v.messages if self.cfg.get("store_messages", True) else None,
            finish_reason=v.finish_reason, max_tokens=_budget(judge, prompt, settings_of(self, prompt)),
            parse_retries=v.parse_retries, panel_fingerprint=self.fingerprint,
        )

    def _write_header(self, run_dir: Path, reference_dir: Path | None, metrics: dict[str, Any],
                      counts: Counter, seconds: float, n_calls: int) -> None:
        """``judge.json``: this panel's header at the top level (the latest judging) and every
        panel's under ``panels`` (a run dir judged by several panels keeps all of them)."""
        try:
            previous = (read_json(run_dir / JUDGE_HEADER) or {}).get("panels") or {}
        except RunFileError:
            previous = {}
        header = {
            "panel": self.name, "label": self.cfg.get("label"), "fingerprint": self.fingerprint,
            "fingerprint_of": self.fingerprint_spec,
            "judges": {j.name: {"kind": j.kind, "model": j.model, "endpoint": j.endpoint()}
                       for j in self.judges},
            "prompts": {p.id: p.sha for p in self.prompts}, "reference_dir": str(reference_dir),
            "units_judged_now": n_calls, "seconds": round(seconds, 3),
            "status_counts": {f"{j}/{s}": n for (j, s), n in sorted(counts.items())},
            "metrics": metrics, "updated": now(),
        }
        header["panels"] = {**previous, self.name: {k: v for k, v in header.items()}}
        write_json_atomic(run_dir / JUDGE_HEADER, header)

    def _log_counts(self, counts: Counter) -> None:
        for judge in self.judges:
            parts = {s: counts.get((judge.name, s), 0) for s in JUDGE_STATUSES}
            log.info("judge %s: %s", judge.name, ", ".join(f"{n} {s}" for s, n in parts.items()))

    def _check_failures(self, rows: list[dict[str, Any]], scores_path: Path, run_dir: Path) -> None:
        tolerated = float(self.cfg["fail_on_error"])
        problems = []
        for judge in self.judges:
            mine = [r for r in rows if r["judge"] == judge.name and r["status"] != JUDGE_SKIPPED]
            failed = [r for r in mine if r["status"] == JUDGE_API_ERROR]
            if mine and len(failed) / len(mine) > tolerated:
                problems.append(f"judge '{judge.name}' ({judge.endpoint() or judge.model}): "
                                f"{len(failed)} of {len(mine)} call(s) failed; first error: "
                                f"{failed[0]['error']}")
        if problems:
            raise JudgeError(
                "judging failed (more than judge.fail_on_error="
                f"{tolerated:g} of the calls):\n  " + "\n  ".join(problems) +
                f"\nEvery finished judgment is kept in {scores_path}; the run's records are "
                f"untouched. Fix the endpoint, then rerun `python -m somabench judge {run_dir} "
                f"judge={self.name}`: only the failed lines are judged again.")


def panel_fingerprint(spec: dict[str, Any]) -> str:
    """12 hex digits of sha256 over the panel's judges (name, kind, model) and each judge's
    prompts (id and file hash): what makes two judgings of a run comparable. Transport
    settings (timeouts, concurrency) are left out: they do not change a verdict."""
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def settings_of(panel: Panel, prompt: JudgePrompt) -> dict[str, Any]:
    try:
        return panel.settings_for(prompt)
    except JudgeError:
        return {}


def _budget(judge: Judge, prompt: JudgePrompt, settings: dict[str, Any]) -> int | None:
    """The reply token budget a judge has for a prompt (its own ``max_tokens`` first)."""
    budget = getattr(judge, "max_tokens_for", None)
    if callable(budget):
        return budget(settings)
    value = settings.get("max_tokens")
    return int(value) if value is not None else None


def judge_run(cfg: DictConfig, run_dir: str | Path, reference_dir: str | Path | None = None) -> float | None:
    """Judge one run dir with ``cfg.judge``; returns the objective (panel similarity %, all
    turns, mean over dialogues) or ``None`` when no turn could be scored."""
    run_dir = Path(run_dir)
    ref = Path(reference_dir) if reference_dir else reference_dir_of(run_dir, cfg)
    panel = Panel.from_cfg(cfg)
    try:
        metrics = panel.run(run_dir, ref)
    finally:
        panel.close()
    objective = metrics.get("objective")
    if objective is None:
        log.warning("judge=%s scored no turn of %s; objective is None", panel.name, run_dir)
    return objective
