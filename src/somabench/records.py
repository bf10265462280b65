"""Typed per-turn and per-dialogue records, and the append-only JSONL store that resumes.

Why: every number in a table must be traceable to one turn line; a killed run must resume
without redoing or duplicating a finished dialogue. A dialogue's turn lines and its dialogue
line are appended in one write; a dialogue counts as finished only once its line is in
``dialogues.jsonl``, so a crash between the two files is repaired on the next start.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, get_args

from somabench.rundir import DIALOGUES_FILE, TURNS_FILE, read_jsonl_rows

log = logging.getLogger(__name__)
R = TypeVar("R", "TurnRecord", "DialogueRecord")

SCHEMA_VERSION = 1  # bump on rename/removal/meaning change and add a migration below
TurnStatus = Literal["ok", "api_error", "skipped"]
"""How a turn's model call ended (STYLE 5.8): ``ok``, ``api_error`` (the call failed; see
``error``), ``skipped`` (nothing was generated)."""

JudgeStatus = Literal["ok", "unparsed", "truncated", "api_error", "skipped"]
"""How a judge's score line (``scores.jsonl``) ended: ``ok`` (a valid score), ``unparsed``
(the reply held no valid score; see ``raw``), ``truncated`` (cut off by the judge's token
limit with no valid score), ``api_error`` (the call failed), ``skipped`` (nothing to judge)."""
JUDGE_STATUSES: tuple[JudgeStatus, ...] = get_args(JudgeStatus)
JUDGE_OK: JudgeStatus = "ok"
JUDGE_UNPARSED: JudgeStatus = "unparsed"
JUDGE_TRUNCATED: JudgeStatus = "truncated"
JUDGE_API_ERROR: JudgeStatus = "api_error"
JUDGE_SKIPPED: JudgeStatus = "skipped"
JUDGE_FINAL: tuple[JudgeStatus, ...] = (JUDGE_OK, JUDGE_UNPARSED)
"""Outcomes a rerun keeps (and a judge cache stores); the others are judged again."""

ENCODER_ROLE = "encoder"
RESTORED_SECONDS = "restored"
"""``TurnRecord.seconds`` key: wall seconds of work a method restored from a cache instead of
doing it in this turn (an adapter-cache hit restores the training's measured seconds). Latency
and end-to-end throughput count them as spent, as a request-cache hit counts at the times
recorded when it was generated, so a run that reuses another's work reports what the work costs."""
"""Token role of the phi sentence encoder (MiniLM) a switching method runs for its gate, drift
monitor, summary and Eq. 4 gaps; counted as adaptation tokens (docs/reports.md)."""


@dataclass
class Usage:
    """Tokens one model (or compressor/router) spent; ``None`` when a backend cannot count."""

    prompt: int | None = None
    """Prompt tokens sent (the whole prompt, cached or not)."""
    completion: int | None = None
    cached_prompt: int | None = None
    """Of ``prompt``, tokens read from a KV/prefix cache (not prefilled; billed at a cached-input
    price where one is set). ``None``: the backend cannot tell."""

    @property
    def total(self) -> int | None:
        if self.prompt is None and self.completion is None:
            return None
        return (self.prompt or 0) + (self.completion or 0)

    @property
    def computed_prompt(self) -> int | None:
        """Prompt tokens prefilled (sent minus read from cache); None when either is unknown."""
        if self.prompt is None or self.cached_prompt is None:
            return None
        return self.prompt - self.cached_prompt

    def __add__(self, other: Usage) -> Usage:
        def add(a: int | None, b: int | None) -> int | None:
            return None if a is None and b is None else (a or 0) + (b or 0)

        # A cached count is known for the sum only when every part that sent prompt tokens
        # knows its own (else computed_prompt would count unknown parts as prefilled).
        unknown = any(u.prompt and u.cached_prompt is None for u in (self, other))
        cached = None if unknown else add(self.cached_prompt, other.cached_prompt)
        return Usage(add(self.prompt, other.prompt), add(self.completion, other.completion),
                     cached)


@dataclass
class TurnRecord:
    """One served turn of one dialogue by one method."""

    run_id: str
    """Run directory name; identifies the job that wrote the line."""
    dialogue_id: str
    """Dataset id of the dialogue."""
    dataset: str
    """Dataset name (config ``dataset.name``)."""
    turn: int
    """0-based turn index within the dialogue."""
    method: str
    """Method name as registered (labels offline stand-ins, e.g. ``routellm_offline_random``)."""
    served_by: str
    """Who produced ``response``: ``F``, ``G`` (or ``G+lora``) as decided by the method."""
    model_id: str
    """Model id of the backend that answered."""
    user: str
    """The user query of this turn."""
    response: str
    """The text the user received."""
    rendered_prompt: str
    """Exactly what the answering model saw, after its chat template."""
    prompt_hash: str
    """sha256 of ``rendered_prompt`` (first 16 hex digits)."""
    tokens: dict[str, Usage] = field(default_factory=dict)
    """Tokens per model for this turn: keys ``F``, ``G``, ``compressor``, ``router``."""
    seconds: dict[str, float] = field(default_factory=dict)
    """``generate`` (latency of the call that answered), ``generate_share`` (its share of a
    batched call), plus method-specific stages (``compress``, ``route``, ``gate``...)."""
    throughput_tps: float | None = None
    """Completion tokens / generate_share seconds, as measured when the answer was made."""
    cached: bool = False
    """True if the answer came from the request cache (seconds are the original ones)."""
    status: TurnStatus = "ok"
    """``ok`` | ``api_error`` | ``skipped`` (:data:`TurnStatus`)."""
    error: str | None = None
    """Error text when status is not ok."""
    reference_turn_ref: str | None = None
    """``<reference run id>/<dialogue_id>/<turn>`` of the Original's answer for this turn."""
    history_mode: str = "own"
    """``own`` (the method's earlier answers) or ``reference`` (the Original's)."""
    gate: dict[str, Any] | None = None
    """Gate state: score, threshold, hits, switched, rollback (methods that switch)."""
    context: dict[str, Any] | None = None
    """What context the answerer got: summary_tokens, verbatim_turns, compressed_tokens..."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Method-specific details (router score, compression rate ...)."""
    batch_size: int = 1
    """How many dialogues shared the generate call that produced this answer."""
    config_hash: str = ""
    """Hash of the resolved config that produced the run (``somabench.rundir.config_hash``)."""
    seed: int | None = None
    """The run's root ``seed``."""
    schema_version: int = SCHEMA_VERSION
    """Record layout version (:data:`SCHEMA_VERSION`); older lines are migrated on read."""
    kind: str = "turn"
    """Line type in mixed streams: always ``turn``."""

    USAGE_FIELDS: ClassVar[tuple[str, ...]] = ("tokens",)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TurnRecord:
        return _from_json(cls, data)


@dataclass
class DialogueRecord:
    """What a dialogue cost as a whole, including adaptation work that serves no turn."""

    run_id: str
    """Run directory name; identifies the job that wrote the line (as in its turn lines)."""
    dialogue_id: str
    """Dataset id of the dialogue."""
    dataset: str
    """Dataset name (config ``dataset.name``)."""
    method: str
    """Method name as configured (``method.name``)."""
    n_turns: int
    """Turns served (= turn lines of this dialogue in ``records.jsonl``)."""
    tokens: dict[str, Usage] = field(default_factory=dict)
    """Sum over turns plus adaptation (``F``, ``G``, ``compressor``, ``router``)."""
    adaptation: dict[str, Any] = field(default_factory=dict)
    """Adaptation cost split by stage (steps, seconds, F tokens on mined prompts ...)."""
    adaptation_tokens: dict[str, Usage] = field(default_factory=dict)
    """Tokens spent on adaptation only (already included in ``tokens``)."""
    train_tokens: dict[str, dict[str, int]] = field(default_factory=dict)
    """Training compute per model as token counts, e.g. ``{"G": {"forward": n, "backward": n}}``:
    positions processed by the forward / backward passes of SOMA's mining and LoRA and of
    History-FT's LoRA (not in ``tokens``, which counts inference). Per stage in
    ``adaptation["train_tokens_by_stage"]``. Empty for methods that do not train."""
    seconds: dict[str, float] = field(default_factory=dict)
    """``wall`` for the dialogue, ``generate``, ``adapt``..."""
    n_errors: int = 0
    """Turns whose status is not ``ok``."""
    config_hash: str = ""
    """Hash of the resolved config that produced the run (``somabench.rundir.config_hash``)."""
    seed: int | None = None
    """The run's root ``seed``."""
    machine: dict[str, Any] = field(default_factory=dict)
    """The machine's state when the dialogue ended: ``load_avg`` (1/5/15-minute load averages)
    and ``torch_threads`` (torch's CPU threads; None where torch was not in use).
    On a shared CPU the load moves latency more than the method does, so latency tables print
    it beside their percentiles. Empty in lines written before the field existed."""
    schema_version: int = SCHEMA_VERSION
    """Record layout version (:data:`SCHEMA_VERSION`); older lines are migrated on read."""
    kind: str = "dialogue"
    """Line type in mixed streams: always ``dialogue``."""

    USAGE_FIELDS: ClassVar[tuple[str, ...]] = ("tokens", "adaptation_tokens")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DialogueRecord:
        return _from_json(cls, data)


def _from_json(cls: type[R], data: dict[str, Any]) -> R:
    """A record from its JSON line: migrated, ``Usage`` maps rebuilt, unknown keys dropped."""
    data = migrate(dict(data))
    for key in cls.USAGE_FIELDS:
        data[key] = {k: Usage(**v) for k, v in (data.get(key) or {}).items()}
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Bring a record written by an older schema version up to SCHEMA_VERSION."""
    version = data.get("schema_version", SCHEMA_VERSION)
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"record schema_version {version} is newer than this somabench ({SCHEMA_VERSION}); "
            "upgrade somabench to read it."
        )
    data["schema_version"] = SCHEMA_VERSION
    return data


def atomic_write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace ``path`` with ``rows`` as JSONL in one atomic rename (never a half file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class RecordStore:
    """Append-only store of one run's records with resume and repair."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.turns_path = self.run_dir / TURNS_FILE
        self.dialogues_path = self.run_dir / DIALOGUES_FILE
        self._finished: set[str] = set()
        self._repair()

    def _repair(self) -> None:
        """Drop torn lines and turn lines of dialogues that never finished."""
        dialogues, torn_d = read_jsonl_rows(self.dialogues_path)
        seen: set[str] = set()
        unique_dialogues = []
        for row in dialogues:
            if row["dialogue_id"] not in seen:
                seen.add(row["dialogue_id"])
                unique_dialogues.append(row)
        turns, torn_t = read_jsonl_rows(self.turns_path)
        kept, keys = [], set()
        for row in turns:
            key = (row["dialogue_id"], row["turn"])
            if row["dialogue_id"] in seen and key not in keys:
                keys.add(key)
                kept.append(row)
        dropped = len(turns) - len(kept)
        if torn_d or len(unique_dialogues) != len(dialogues):
            atomic_write_jsonl(self.dialogues_path, unique_dialogues)
        if torn_t or dropped:
            atomic_write_jsonl(self.turns_path, kept)
        if torn_d or torn_t or dropped:
            log.warning(
                "repaired %s: dropped %d turn line(s) of unfinished dialogues%s",
                self.run_dir, dropped, " and a torn line" if (torn_d or torn_t) else "",
            )
        self._finished = seen

    @property
    def finished(self) -> set[str]:
        return set(self._finished)

    def append_dialogue(self, turns: list[TurnRecord], dialogue: DialogueRecord) -> None:
        """Append one finished dialogue: turn lines first, then its dialogue line."""
        if dialogue.dialogue_id in self._finished:
            raise ValueError(f"dialogue {dialogue.dialogue_id} is already in {self.run_dir}")
        payload = "".join(json.dumps(t.to_json(), ensure_ascii=False) + "\n" for t in turns)
        for path, text in (
            (self.turns_path, payload),
            (self.dialogues_path, json.dumps(dialogue.to_json(), ensure_ascii=False) + "\n"),
        ):
            with path.open("a", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        self._finished.add(dialogue.dialogue_id)

    def turns(self) -> list[TurnRecord]:
        rows, _ = read_jsonl_rows(self.turns_path)
        return [TurnRecord.from_json(r) for r in rows]

    def dialogues(self) -> list[DialogueRecord]:
        rows, _ = read_jsonl_rows(self.dialogues_path)
        return [DialogueRecord.from_json(r) for r in rows]


def post_switch_flags(turns: list[TurnRecord]) -> list[bool]:
    """post_switch per turn of one dialogue (sorted by turn): G serves after the gate switched,
    until a rollback. Methods without a gate never switch. The one rule the judges (score
    lines' ``post_switch``) and the dialogue viewer share."""
    switched, flags = False, []
    for rec in turns:
        gate = rec.gate or {}
        if gate.get("rollback"):
            switched = False
        if gate.get("switched"):
            switched = True
        flags.append(bool(switched and str(rec.served_by).startswith("G")))
    return flags


FLAT_EXPANDED = ("tokens", "seconds")
"""Nested record fields spread over columns in :func:`flat_row` (``tokens.F.prompt``,
``seconds.generate``); every other nested field becomes one JSON text column."""


def flat_row(row: dict[str, Any]) -> dict[str, Any]:
    """A record's JSON as one flat CSV row that ``pd.read_csv`` reads as is: token counts and
    seconds as their own columns, other nested values (gate, context, extra) as JSON text
    (``json.loads`` gives them back), never a Python repr."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key in FLAT_EXPANDED and isinstance(value, dict):
            for sub, inner in value.items():
                if isinstance(inner, dict):
                    out.update({f"{key}.{sub}.{k}": v for k, v in inner.items()})
                else:
                    out[f"{key}.{sub}"] = inner
        elif isinstance(value, (dict, list)):
            out[key] = json.dumps(value, ensure_ascii=False, sort_keys=True)
        else:
            out[key] = value
    return out


def load_turns(run_dir: str | Path) -> list[TurnRecord]:
    """Read a run's turn records (read-only; no repair)."""
    rows, _ = read_jsonl_rows(Path(run_dir) / TURNS_FILE)
    return [TurnRecord.from_json(r) for r in rows]


def load_dialogues(run_dir: str | Path) -> list[DialogueRecord]:
    rows, _ = read_jsonl_rows(Path(run_dir) / DIALOGUES_FILE)
    return [DialogueRecord.from_json(r) for r in rows]
