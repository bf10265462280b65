"""What a judge receives (``JudgeItem``), what it writes (``ScoreLine``) and the judge interface.

Why one line type: the report module, the aggregation here and a human auditing a number all
read the same ``scores.jsonl`` line, which holds everything needed to check it (FastChat's
judgment lines): ids, judge and model, prompt id and hash, the messages sent, raw text, parsed
score, status, attempts, cache flag, time and tokens.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from somabench.records import JUDGE_FINAL, JUDGE_STATUSES, JudgeStatus
from somabench.rundir import now

SCORE_SCHEMA_VERSION = 1  # bump when a ScoreLine field is renamed/removed/changes meaning
STATUSES = JUDGE_STATUSES  # somabench.records.JudgeStatus
FINAL_STATUSES = JUDGE_FINAL  # a rerun keeps these; truncated, api_error and skipped are redone
TRUNCATED_FINISH = "length"  # OpenAI finish_reason of a reply cut off by the token limit
JUDGE_KINDS = ("llm", "local", "embedding-proxy")


@dataclass
class JudgeItem:
    """One served turn to judge, with the Original's answer and the dialogue before it."""

    run_id: str
    dialogue_id: str
    dataset: str
    turn: int
    method: str
    served_by: str
    question: str
    candidate: str
    reference: str | None
    """The Original's answer to this turn (``None`` when the reference run lacks it)."""
    context: list[tuple[str, str]]
    """All previous (user, assistant) exchanges as the method saw them (own or reference)."""
    post_switch: bool
    reference_turn_ref: str | None
    record_status: str = "ok"
    record_error: str | None = None


@dataclass
class ScoreLine:
    """One line of ``scores.jsonl``: one (turn, judge, prompt)."""

    run_id: str
    dialogue_id: str
    dataset: str
    turn: int
    method: str
    panel: str
    """Panel config name (``paper`` | ``local`` | ``embedding`` ...)."""
    judge: str
    """Judge name within the panel (config key, e.g. ``gpt_oss``)."""
    judge_model: str
    judge_kind: str
    """``llm`` (OpenAI-compatible endpoint) | ``local`` (in-process hf model) |
    ``embedding-proxy`` (cosine of sentence embeddings: a proxy, not a judge)."""
    prompt_id: str
    """Versioned prompt file id (``similarity_v1``)."""
    prompt_sha: str
    """Hash of the prompt file: changes if a prompt file was (wrongly) edited."""
    metric: str
    """What is measured: the prompt's ``name`` (``similarity``, ``ability_memory`` ...)."""
    status: JudgeStatus
    """``ok`` | ``unparsed`` (reply had no valid score; see ``raw``) | ``truncated`` (the reply
    was cut off by the judge's token limit, ``finish_reason`` ``length``, with no valid score:
    never cached as final, re-asked by the next run, e.g. with a larger ``max_tokens``) |
    ``api_error`` (the call failed; see ``error``) | ``skipped`` (nothing to judge)."""
    score: float | None
    """Parsed score in ``score_range``; ``None`` unless ok."""
    score_norm: float | None
    """``score`` mapped to [0, 1]; ``None`` unless ok."""
    score_range: list[float]
    raw: str | None
    """The judge's final reply text (for the embedding proxy: the cosine as text)."""
    error: str | None
    attempts: int
    """Calls made for this line now (transport retries + parse retries); 0 if cached."""
    retries: list[str]
    """One entry per failed attempt (transport error or unparsable reply)."""
    post_switch: bool
    """True for a turn served by G after the method's gate switched (False for methods that
    never switch)."""
    served_by: str
    cached: bool
    """True if the judgment came from the judge cache (seconds/tokens are the original ones)."""
    seconds: float | None
    tokens: dict[str, int | None]
    """``{"prompt": n, "completion": m}`` summed over attempts; ``None`` when not reported."""
    request_key: str | None
    """Cache key of the judge request (hash of judge fingerprint, prompt and messages)."""
    reference_turn_ref: str | None
    messages: list[dict[str, str]] | None = None
    """The messages sent to the judge (omitted when ``judge.store_messages=false``)."""
    finish_reason: str | None = None
    """The judge model's finish reason for the last reply (``stop``, ``length`` ...)."""
    max_tokens: int | None = None
    """The reply token budget the judge had (per judge, ``judge.judges.<j>.max_tokens``)."""
    parse_retries: int | None = None
    """Parse retries allowed when the line was made; an ``unparsed`` line made with fewer
    retries than the panel now allows is judged again."""
    panel_fingerprint: str | None = None
    """Hash of the panel's judges, models and prompt ids + hashes when the line was made
    (``somabench.judges.panel.panel_fingerprint``): a panel re-judged under the same name with
    another judge, model or prompt version gets a new fingerprint, and aggregates use only the
    lines of the current one (lines of older versions are kept for audit, never averaged in).
    ``None`` in lines written before fingerprints existed."""
    timestamp: str = field(default_factory=now)
    schema_version: int = SCORE_SCHEMA_VERSION
    kind: str = "score"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def unit_key(self) -> UnitKey:
        return unit_key(self.run_id, self.dialogue_id, self.turn, self.judge, self.prompt_id,
                        self.panel, self.panel_fingerprint)


UnitKey = tuple[str, str, str, str, int, str, str]


def unit_key(run_id: str, dialogue_id: str, turn: int, judge: str, prompt_id: str,
             panel: str | None, fingerprint: str | None = None) -> UnitKey:
    """Identity of a score line: a rerun replaces the line with the same key. The panel and
    its fingerprint are part of it, so re-judging a run with another panel, or with a changed
    version of the same panel, never overwrites (or mixes with) the earlier lines, even when
    both name a judge alike."""
    return (str(panel or ""), str(fingerprint or ""), str(run_id), str(dialogue_id), int(turn),
            str(judge), str(prompt_id))


def row_key(row: dict[str, Any]) -> UnitKey:
    """:func:`unit_key` of a ``scores.jsonl`` row."""
    return unit_key(row["run_id"], row["dialogue_id"], row["turn"], row["judge"], row["prompt_id"],
                    row.get("panel"), row.get("panel_fingerprint"))


@dataclass
class Verdict:
    """A judge's outcome for one unit, before the panel adds the ids."""

    status: JudgeStatus
    score: float | None = None
    raw: str | None = None
    error: str | None = None
    attempts: int = 0
    retries: list[str] = field(default_factory=list)
    cached: bool = False
    seconds: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    request_key: str | None = None
    messages: list[dict[str, str]] | None = None
    finish_reason: str | None = None
    parse_retries: int | None = None
    """Parse retries this outcome was allowed (an unparsed one is final only for this many)."""

    def cacheable(self) -> dict[str, Any]:
        """What the judge cache stores (only ok/unparsed outcomes are ever cached)."""
        return {"status": self.status, "score": self.score, "raw": self.raw,
                "error": self.error, "attempts": self.attempts, "retries": self.retries,
                "seconds": self.seconds, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "finish_reason": self.finish_reason,
                "parse_retries": self.parse_retries}


class JudgeError(RuntimeError):
    """Judging could not run or failed too often; the message says what and how to fix it.
    Score lines written before the failure stay in ``scores.jsonl``."""


class Judge(ABC):
    """Interface of a panel member.

    ``name`` is the config key, ``model`` the model id, ``kind`` one of ``JUDGE_KINDS``.
    ``judge(item, prompt, settings)`` returns a :class:`Verdict` and never raises for a
    failed call (that is ``api_error``); ``preflight()`` raises :class:`JudgeError` when the
    judge cannot work at all (endpoint down, missing key, model not found).
    """

    name: str
    model: str
    kind: str
    concurrency: int = 1

    def supports(self, prompt: Any) -> bool:
        return prompt.kind in ("similarity", "ability")

    def preflight(self) -> None:
        """Check the judge can run, before any call is spent."""

    def prepare(self, items: list[JudgeItem]) -> None:
        """Optional batch warm-up (the embedding proxy encodes all texts at once)."""

    @abstractmethod
    def request_key(self, item: JudgeItem, prompt: Any, settings: dict[str, Any]) -> str:
        """Hash of everything that determines this judgment (a rerun re-judges a line whose
        key changed, e.g. after a new context setting)."""

    @abstractmethod
    def judge(self, item: JudgeItem, prompt: Any, settings: dict[str, Any]) -> Verdict:
        """Score one turn (status ok | unparsed | api_error, raw text kept)."""

    def endpoint(self) -> str | None:
        return None

    def close(self) -> None:
        """Free the model / connections."""
