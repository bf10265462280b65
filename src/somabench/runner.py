"""The one loop over dialogues and turns that every method runs in.

Why: methods only decide who answers and with what context (``Method.plan``); everything
else (batching across dialogues, generation, token accounting, records, resume) happens here once.
The shared Original reference lives in ``somabench.reference``; the run-dir contract (file
names, config hash) in ``somabench.rundir``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from somabench.backends import build_backend
from somabench.backends.base import Backend, BackendError, Completion, GenerationConfig, sha16
from somabench.cache import CachedBackend, SqliteCache
from somabench.config import to_dict
from somabench.dtype import dialogue_machine
from somabench.latency import queue_of_call, queue_of_planned, turn_timing
from somabench.methods import HistoryMode, Method, Session, TurnPlan, usage_of
from somabench.records import RESTORED_SECONDS, DialogueRecord, RecordStore, TurnRecord, Usage
from somabench.rundir import (
    ERRORS_FILE,
    MODEL_ROLES,
    REFERENCE_META,
    config_hash,
    write_json_atomic,
)

if TYPE_CHECKING:  # a type name only
    from somabench.data import Dialogue

log = logging.getLogger(__name__)

ROLES = MODEL_ROLES


class RunContext:
    """Lazily built backends (cached) and the phi encoder, shared by a run's methods."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.gen = GenerationConfig.from_cfg(to_dict(cfg.generation))
        self.cache = SqliteCache(cfg.cache.path) if cfg.cache.enabled else None
        self._raw: dict[str, Any] = {}
        self._wrapped: dict[str, Any] = {}
        self._encoder: Any = None
        self._shared: dict[str, Any] = {}
        self.on_build: list[Callable[[str, Any], None]] = []
        """Called with (role, backend) when a role's backend is built, before its first use
        (the task's context-window preflight, ``somabench.data.preflight.on_build``)."""

    def raw(self, role: str) -> Any:
        """The underlying backend (white-box access for SOMA: tokenizer, model, embeddings)."""
        if role not in self._raw:
            if role not in ROLES:
                raise KeyError(f"unknown model role {role!r}; roles: {ROLES}")
            other = next((r for r in self._raw if self.model_spec(r) == self.model_spec(role)), None)
            self._raw[role] = self._raw[other] if other else build_backend(
                role, self.model_spec(role), cache_dir=self.cfg.paths.cache_dir)
            for hook in self.on_build:
                hook(role, self._raw[role])
        return self._raw[role]

    def model_spec(self, role: str) -> dict[str, Any]:
        """``model.<role>`` with the method's ``model_overrides.<role>`` on top (how a method such
        as original_prefix_cache asks for a backend setting: conf/method/*.yaml)."""
        spec = to_dict(self.cfg.model[role])
        method = self.cfg.get("method")
        extra = (method.get("model_overrides") or {}).get(role) if method is not None else None
        if extra:
            spec.update(to_dict(extra))
        return spec

    def backend(self, role: str) -> Backend:
        """The role's backend behind the request cache (if enabled)."""
        if role not in self._wrapped:
            raw = self.raw(role)
            self._wrapped[role] = CachedBackend(raw, self.cache) if self.cache else raw
        return self._wrapped[role]

    def encoder(self) -> Any:
        """phi: the sentence encoder (all-MiniLM-L6-v2 by default) used by gates/summaries."""
        if self._encoder is None:
            from somabench.encoder import build_encoder

            self._encoder = build_encoder(self.cfg.model.encoder, cache_dir=self.cfg.paths.cache_dir)
        return self._encoder

    def shared(self, key: str, build: Callable[[], Any] | None = None) -> Any:
        """A run-scoped object under ``key``: built by ``build`` on first use, then the same
        object for every dialogue, closed (its ``close()``) when the run ends; None when absent
        and no ``build`` is given (e.g. the G_serve engine, ``switching/vllm_serving.py``)."""
        if key not in self._shared and build is not None:
            self._shared[key] = build()
        return self._shared.get(key)

    def describe_models(self) -> dict[str, Any]:
        """run.json ``models.<role>``: engine, model and resolved dtype + reason of each role
        loaded so far (a role the method never used is absent)."""
        return {role: b.describe() if hasattr(b, "describe") else b.fingerprint()
                for role, b in self._raw.items()}

    def close(self) -> None:
        """Stop what backends started for this job (e.g. a llama.cpp server): it ends with the run."""
        for backend in {id(b): b for b in self._raw.values()}.values():
            if callable(getattr(backend, "close", None)):
                backend.close()
        for item in self._shared.values():
            if callable(getattr(item, "close", None)):
                item.close()

    def cache_stats(self) -> str:
        return self.cache.stats() if self.cache else "cache: disabled"


@dataclass
class _Live:
    """A dialogue being served: its session, the records so far and its timers."""

    session: Session
    turns: list[TurnRecord] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    error: str | None = None
    start_seconds: float = 0.0
    """Wall seconds of ``Method.start`` (calibration, per-dialogue setup): end-to-end cost."""


def _plan_seconds(started: float, plan: TurnPlan) -> float:
    """Wall seconds of ``Method.plan`` (compression, routing, gating, adaptation done while
    planning), without a generation the method made itself (counted as ``generate``)."""
    elapsed = time.perf_counter() - started
    if plan.completion is not None and not plan.completion.cached:
        elapsed -= plan.completion.seconds
    return round(max(elapsed, 0.0), 6)


class Runner:
    """Serves dialogues with one method and writes records to one run directory."""

    def __init__(self, cfg: DictConfig, ctx: RunContext, method: Method, store: RecordStore,
                 run_id: str, reference: dict[str, list[str]] | None, reference_key: str | None,
                 history_mode: HistoryMode) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.method = method
        self.store = store
        self.run_id = run_id
        self.reference = reference
        self.reference_key = reference_key
        self.history_mode = history_mode
        self.cfg_hash = config_hash(cfg)
        self.errors_path = store.run_dir / ERRORS_FILE

    def serve(self, dialogues: list[Any], batch_size: int, progress: bool = False) -> dict[str, int]:
        todo = [d for d in dialogues if d.id not in self.store.finished]
        skipped = len(dialogues) - len(todo)
        if skipped:
            log.info("resuming: %d of %d dialogue(s) already finished in %s", skipped,
                     len(dialogues), self.store.run_dir)
        size = batch_size if self.method.batchable else 1
        counts = {"done": 0, "errored": 0, "skipped_finished": skipped}
        outer = _bar(total=len(todo), desc=f"{self.method.name} dialogues", enabled=progress)
        for start in range(0, len(todo), size):
            for live in self._serve_batch(todo[start:start + size], progress):
                counts["errored" if live.error else "done"] += 1
                outer.update(1)
        outer.close()
        return counts

    def _serve_batch(self, batch: list[Any], progress: bool) -> Iterator[_Live]:
        lives = []
        for dialogue in batch:
            ref = self.reference.get(dialogue.id) if self.reference is not None else None
            session = Session(dialogue=dialogue, history_mode=self.history_mode, reference=ref)
            live = _Live(session)
            started = time.perf_counter()
            try:
                self.method.start(session)
            except BackendError as exc:
                live.error = f"start: {exc}"
            live.start_seconds = round(time.perf_counter() - started, 6)
            lives.append(live)
        n_turns = max(len(d.turns) for d in batch)
        inner = _bar(total=n_turns, desc=f"turns ({self.method.name})", enabled=progress, leave=False)
        batch_started = time.perf_counter()
        for turn in range(n_turns):
            active = [lv for lv in lives if turn < len(lv.session.dialogue.turns) and not lv.error]
            plans: list[tuple[_Live, TurnPlan]] = []
            step_started = time.perf_counter()  # every active dialogue sends its turn now
            restored = 0.0  # cached work of this step's plans, counted as if done now
            for live in active:
                try:
                    started = time.perf_counter()
                    plan = self.method.plan(live.session, turn)
                    plan.seconds["plan"] = _plan_seconds(started, plan)  # end-to-end throughput
                    restored += float(plan.seconds.get(RESTORED_SECONDS, 0.0))
                    if plan.completion is not None:  # answered while planning (latency)
                        plan.seconds["queue"] = round(restored + queue_of_planned(
                            step_started, time.perf_counter(), plan.completion), 6)
                    plans.append((live, plan))
                except BackendError as exc:
                    live.error = f"turn {turn}: {exc}"
            self._generate(plans, step_started, restored)
            for live, plan in plans:
                if live.error:
                    continue
                completion = plan.completion
                if completion is None:  # _generate answers every plan or raises
                    raise RuntimeError(f"turn {turn} of {live.session.id} has no answer")
                started = time.perf_counter()
                self.method.observe(live.session, turn, plan, completion)
                plan.seconds["observe"] = round(time.perf_counter() - started, 6)
                live.turns.append(self._turn_record(live.session, turn, plan, completion))
                self._advance_history(live.session, turn, completion.text)
            inner.update(1)
            _log_turn(self.method.name, turn, n_turns, plans, batch_started, progress)
            for live in [lv for lv in lives if lv.error is None and len(lv.session.dialogue.turns) == turn + 1]:
                yield self._finish(live)
        inner.close()
        for live in lives:
            if live.error:
                yield self._finish(live)

    def _generate(self, plans: list[tuple[_Live, TurnPlan]], step_started: float,
                  restored: float = 0.0) -> None:
        """Fill ``plan.completion`` for plans that need generation, batched per role. Every call
        waits for the step's planning, including the ``restored`` seconds of cached work
        (``records.RESTORED_SECONDS``) as if it had been done in this step."""
        for role in ROLES:
            group = [(lv, p) for lv, p in plans if p.completion is None and p.role == role]
            if not group:
                continue
            backend = self.ctx.backend(role)
            queue = round(restored + queue_of_call(step_started, time.perf_counter()), 6)
            for _, plan in group:
                plan.seconds["queue"] = queue
            try:
                completions = backend.chat_batch([p.messages for _, p in group], self.ctx.gen)
            except BackendError as exc:
                for live, _ in group:
                    live.error = f"{role}: {exc}"
                continue
            for (_, plan), completion in zip(group, completions, strict=True):
                plan.completion = completion

    def _advance_history(self, session: Session, turn: int, answer: str) -> None:
        session.own_answers.append(answer)
        if self.history_mode == "reference":
            if session.reference is None:
                raise RuntimeError("history=reference needs the Original reference run")
            shown = session.reference[turn]
        else:
            shown = answer
        session.history.append((session.user(turn), shown))

    def _turn_record(self, session: Session, turn: int, plan: TurnPlan,
                     completion: Completion) -> TurnRecord:
        tokens = {role: usage for role, usage in plan.tokens.items()}
        tokens[plan.role] = tokens.get(plan.role, Usage()) + usage_of(completion)
        share = completion.seconds_share
        seconds = {"generate": round(completion.seconds, 6), "generate_share": round(share, 6)}
        seconds.update(plan.seconds)
        seconds.update(turn_timing(seconds.get("queue"), completion))  # TTFT/TPOT/latency
        tps = (completion.completion_tokens / share
               if completion.completion_tokens is not None and share > 0 else None)
        ref = (f"{self.reference_key}/{session.id}/{turn}"
               if self.reference_key and session.reference is not None else None)
        return TurnRecord(
            run_id=self.run_id, dialogue_id=session.id, dataset=session.dialogue.dataset,
            turn=turn, method=self.method.name, served_by=plan.served_by or plan.role,
            model_id=completion.model_id, user=session.user(turn), response=completion.text,
            rendered_prompt=completion.rendered_prompt,
            prompt_hash=sha16(completion.rendered_prompt), tokens=tokens, seconds=seconds,
            throughput_tps=tps, cached=completion.cached, status=completion.status,
            error=completion.error, reference_turn_ref=ref, history_mode=self.history_mode,
            gate=plan.gate, context=plan.context, extra=plan.extra,
            batch_size=completion.batch_size, config_hash=self.cfg_hash, seed=self.cfg.seed,
        )

    def _finish(self, live: _Live) -> _Live:
        session = live.session
        self.method.finish(session)
        if live.error:
            entry = {"dialogue_id": session.id, "method": self.method.name, "error": live.error,
                     "turns_done": len(live.turns), "run_id": self.run_id,
                     "turns": [t.to_json() for t in live.turns]}
            with self.errors_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
            log.error("dialogue %s failed (%s); kept in %s, retried on the next run",
                      session.id, live.error, self.errors_path)
            return live
        tokens: dict[str, Usage] = {}
        for record in live.turns:
            for role, usage in record.tokens.items():
                tokens[role] = tokens.get(role, Usage()) + usage
        for role, usage in session.adaptation_tokens.items():
            tokens[role] = tokens.get(role, Usage()) + usage
        gen_seconds = sum(t.seconds.get("generate_share", 0.0) for t in live.turns)
        adapt_seconds = float(session.adaptation.get("seconds_total", 0.0))
        dialogue = DialogueRecord(
            run_id=self.run_id, dialogue_id=session.id, dataset=session.dialogue.dataset,
            method=self.method.name, n_turns=len(live.turns), tokens=tokens,
            adaptation=session.adaptation, adaptation_tokens=dict(session.adaptation_tokens),
            train_tokens={role: dict(c) for role, c in session.train_tokens.items()},
            seconds={"wall": round(time.perf_counter() - live.started, 6),
                     "generate": round(gen_seconds, 6), "adapt": round(adapt_seconds, 6),
                     "start": live.start_seconds},
            n_errors=sum(t.status != "ok" for t in live.turns), config_hash=self.cfg_hash,
            seed=self.cfg.seed, machine=dialogue_machine(),
        )
        self.store.append_dialogue(live.turns, dialogue)
        return live


def _log_turn(method: str, turn: int, n_turns: int, plans: list[tuple[_Live, TurnPlan]],
              started: float, progress: bool) -> None:
    """One line per turn with the time left, at INFO unless bars show it on the same terminal
    as the log (so CI and ``make run | tee log`` keep it in the log)."""
    elapsed = time.perf_counter() - started
    served = ",".join(sorted({p.served_by or p.role for _, p in plans})) or "-"
    left = elapsed / (turn + 1) * (n_turns - turn - 1)
    log.log(logging.DEBUG if progress and sys.stdout.isatty() else logging.INFO,
            "%s: turn %d/%d of %d dialogue(s) done (served by %s), %.1fs so far, ~%.0fs left",
            method, turn + 1, n_turns, len(plans), served, elapsed, left)


def _bar(total: int, desc: str, enabled: bool, leave: bool = True) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=leave, disable=not enabled, dynamic_ncols=True)


def ensure_reference(cfg: DictConfig, ctx: RunContext, dialogues: list[Dialogue],
                     progress: bool) -> tuple[dict[str, list[str]], str, Path]:
    """Generate (or resume) the shared Original reference (``somabench.reference``) for these
    dialogues and return its answers, its key and its directory. It lives here because the
    runner is what generates it; the reference module stays below the runner."""
    from somabench.records import load_turns
    from somabench.reference import locked, reference_key
    from somabench.registry import methods

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
                write_json_atomic(meta, {"key": key, "config": to_dict(cfg.model.F),
                                        "dataset": cfg.dataset.name})
    answers: dict[str, list[str]] = {}
    for record in sorted(load_turns(ref_dir), key=lambda r: (r.dialogue_id, r.turn)):
        answers.setdefault(record.dialogue_id, []).append(record.response)
    return answers, key, ref_dir


__all__ = ["ROLES", "RunContext", "Runner", "ensure_reference"]
