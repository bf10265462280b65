"""Dialogue types and the strict validator for the bundled line schema.

Why: every loader (bundled file, custom JSONL, hub conversion) ends in the same validator, so a
dialogue reaching the runner always has a non-empty id, at least one turn and non-empty user
text, and a bad line fails loudly with file, line and field instead of being skipped.

Line schema (see ``bundled/SOURCES.md``)::

    {"id": str, "dataset": str, "turns": [{"user": str, "assistant": str | null}, ...],
     "meta": {...}}

``meta`` may be omitted (it becomes ``{}``); every other key is required, and unknown keys are
errors (a misspelled ``"turn"`` must not silently load as an empty dialogue).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from somabench.errors import DatasetError
from somabench.registry import did_you_mean

DIALOGUE_KEYS = ("id", "dataset", "turns", "meta")
REQUIRED_DIALOGUE_KEYS = ("id", "dataset", "turns")
TURN_KEYS = ("user", "assistant")


@dataclass(frozen=True)
class Turn:
    """One user turn and the source's reference answer to it (``None`` when it has none)."""

    user: str
    assistant: str | None


@dataclass(frozen=True)
class Dialogue:
    """A validated multi-turn dialogue.

    ``meta`` is the source's metadata (``task``, ``source``, ``license``, ...); ``meta.task`` is
    what ``dataset.tasks`` filters on. When ``truncate_turns`` cut the dialogue,
    ``meta["num_turns_original"]`` keeps the original length (per-turn lists in ``meta`` are
    left untouched).
    """

    id: str
    dataset: str
    turns: tuple[Turn, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.turns)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _reject_unknown_keys(obj: Mapping[str, Any], allowed: tuple[str, ...] | list[str], *,
                         where: str, prefix: str) -> None:
    """A key outside the schema is an error naming it, the allowed keys and the closest one."""
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise DatasetError(
            f"unknown key(s) {unknown}; allowed keys: {list(allowed)}."
            + did_you_mean(unknown[0], allowed),
            where=where,
            field=f"{prefix}{unknown[0]}",
        )


def dialogue_from_obj(obj: Any, *, where: str) -> Dialogue:
    """Validate one decoded JSON object and build a ``Dialogue``; raise ``DatasetError``."""
    if not isinstance(obj, Mapping):
        raise DatasetError(f"expected a JSON object, got {_type_name(obj)}", where=where)
    _reject_unknown_keys(obj, DIALOGUE_KEYS, where=where, prefix="")
    for key in REQUIRED_DIALOGUE_KEYS:
        if key not in obj:
            raise DatasetError("missing required field", where=where, field=key)

    for key in ("id", "dataset"):
        value = obj[key]
        if not isinstance(value, str):
            raise DatasetError(f"must be a string, got {_type_name(value)}", where=where, field=key)
        if not value.strip():
            raise DatasetError("must be a non-empty string", where=where, field=key)

    raw_turns = obj["turns"]
    if not isinstance(raw_turns, list):
        raise DatasetError(
            f"must be a list of turn objects, got {_type_name(raw_turns)}",
            where=where,
            field="turns",
        )
    if not raw_turns:
        raise DatasetError("must hold at least one turn", where=where, field="turns")
    turns = tuple(_turn_from_obj(t, where=where, index=i) for i, t in enumerate(raw_turns))

    meta = obj.get("meta", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, Mapping):
        raise DatasetError(f"must be an object, got {_type_name(meta)}", where=where, field="meta")
    return Dialogue(id=obj["id"], dataset=obj["dataset"], turns=turns, meta=dict(meta))


def _turn_from_obj(obj: Any, *, where: str, index: int) -> Turn:
    name = f"turns[{index}]"
    if not isinstance(obj, Mapping):
        raise DatasetError(
            f"must be an object with keys {list(TURN_KEYS)}, got {_type_name(obj)}",
            where=where,
            field=name,
        )
    _reject_unknown_keys(obj, TURN_KEYS, where=where, prefix=f"{name}.")
    if "user" not in obj:
        raise DatasetError("missing required field", where=where, field=f"{name}.user")
    if "assistant" not in obj:
        raise DatasetError(
            "missing required field (use null when there is no reference answer)",
            where=where,
            field=f"{name}.assistant",
        )
    user, assistant = obj["user"], obj["assistant"]
    if not isinstance(user, str):
        raise DatasetError(
            f"must be a string, got {_type_name(user)}", where=where, field=f"{name}.user"
        )
    if not user.strip():
        raise DatasetError("user text is empty", where=where, field=f"{name}.user")
    if assistant is not None and not isinstance(assistant, str):
        raise DatasetError(
            f"must be a string or null, got {_type_name(assistant)}",
            where=where,
            field=f"{name}.assistant",
        )
    return Turn(user=user, assistant=assistant)
