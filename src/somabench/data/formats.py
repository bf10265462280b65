"""Custom-data formats people already have, converted to the bundled line schema.

Why: chat data mostly exists as OpenAI fine-tuning JSONL (``{"messages": [{"role",
"content"}]}``) or ShareGPT JSON (``[{"id", "conversations": [{"from", "value"}]}]``);
asking users to rewrite it into ``{"id", "dataset", "turns"}`` first loses them. Each format
maps one record to a dict in the bundled line schema, which then goes through the same strict
validator as bundled files (``somabench.data.schema``). A record a format cannot use raises
``FormatError`` naming the field (``messages[2].role``); the file reader adds file and line.

Formats (``dataset.format``): ``turns`` (the bundled schema), ``messages`` (OpenAI chat),
``sharegpt`` (``conversations``), or ``auto`` (by the first record's keys; neither
``messages`` nor ``conversations``: ``turns``).
Conversion rules shared by ``messages`` and ``sharegpt``: ``system`` messages go to
``meta.system``; assistant messages before the first user message go to
``meta.assistant_opening``; consecutive messages of one side are joined with a blank line;
empty messages are skipped; a trailing user message gets ``assistant: null``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from somabench.data.hub import (
    MERGE_SEPARATOR,
    SHAREGPT_ASSISTANT_ROLES,
    SHAREGPT_SYSTEM_ROLES,
    SHAREGPT_USER_ROLES,
)

MESSAGES_USER_ROLES = frozenset({"user"})
MESSAGES_ASSISTANT_ROLES = frozenset({"assistant"})
MESSAGES_SYSTEM_ROLES = frozenset({"system", "developer"})
# Keys a record may carry next to its messages; anything else is an error (a typo must not
# silently load as something else). ``metadata`` is what OpenAI's eval/fine-tuning files use.
EXTRA_KEYS = ("id", "meta", "metadata")
FORMATS = ("auto", "turns", "messages", "sharegpt")
AUTO_KEYS = {"turns": "turns", "messages": "messages", "conversations": "sharegpt"}


class FormatError(ValueError):
    """A record that does not fit its format; ``field`` names the offending field."""

    def __init__(self, message: str, field: str | None = None):
        self.field = field
        super().__init__(message)


Converter = Callable[[Any, str, str], dict[str, Any]]
"""``convert(record, default_id, dataset) -> dict`` in the bundled line schema."""


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _text_of(content: Any, field: str) -> str:
    """A message's text: a string, or OpenAI content parts ``[{"type": "text", "text"}]``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text" \
                    or not isinstance(part.get("text"), str):
                raise FormatError("only text content parts ({\"type\": \"text\", \"text\": ...}) "
                                  "can be benchmarked", field=f"{field}[{i}]")
            texts.append(part["text"])
        return "".join(texts)
    raise FormatError(f"must be a string or a list of text parts, got {_type_name(content)}",
                      field=field)


def _to_turns(messages: list[tuple[str, str, str]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """(side, text, field) in order -> turn dicts + meta (system, assistant_opening)."""
    system: list[str] = []
    opening: list[str] = []
    merged: list[list[str]] = []  # [side, text]
    for side, text, _ in messages:
        if not text.strip():
            continue
        if side == "system":
            system.append(text)
        elif side == "assistant" and not merged:
            opening.append(text)
        elif merged and merged[-1][0] == side:
            merged[-1][1] += MERGE_SEPARATOR + text
        else:
            merged.append([side, text])
    if not merged:
        raise FormatError("holds no non-empty user message", field=messages[0][2].split("[")[0]
                          if messages else None)
    turns: list[dict[str, Any]] = []
    for side, text in merged:
        if side == "user":
            turns.append({"user": text, "assistant": None})
        else:
            turns[-1]["assistant"] = text
    meta = {}
    if system:
        meta["system"] = MERGE_SEPARATOR.join(system)
    if opening:
        meta["assistant_opening"] = MERGE_SEPARATOR.join(opening)
    return turns, meta


def _record(obj: Any, list_key: str) -> list[Any]:
    if not isinstance(obj, Mapping):
        raise FormatError(f"expected a JSON object, got {_type_name(obj)}")
    unknown = sorted(set(obj) - {list_key, *EXTRA_KEYS})
    if unknown:
        raise FormatError(f"unknown key(s) {unknown}; allowed: {[list_key, *EXTRA_KEYS]}",
                          field=unknown[0])
    items = obj.get(list_key)
    if not isinstance(items, list):
        raise FormatError(f"missing or not a list (got {_type_name(items)})", field=list_key)
    if not items:
        raise FormatError("must hold at least one message", field=list_key)
    return items


def _finish(obj: Mapping[str, Any], default_id: str, dataset: str,
            turns: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    source_id = obj.get("id", default_id)
    if not isinstance(source_id, (str, int)) or isinstance(source_id, bool) \
            or not str(source_id).strip():
        raise FormatError(f"must be a non-empty string or integer, got {source_id!r}", field="id")
    extra = obj.get("meta", obj.get("metadata"))
    if extra is not None and not isinstance(extra, Mapping):
        raise FormatError(f"must be an object, got {_type_name(extra)}",
                          field="meta" if "meta" in obj else "metadata")
    return {"id": str(source_id), "dataset": dataset, "turns": turns,
            "meta": {**dict(extra or {}), **meta}}


def _side(role: Any, field: str, user: frozenset[str], assistant: frozenset[str],
          system: frozenset[str]) -> str:
    if not isinstance(role, str):
        raise FormatError(f"must be a string, got {_type_name(role)}", field=field)
    name = role.lower()
    for side, roles in (("user", user), ("assistant", assistant), ("system", system)):
        if name in roles:
            return side
    allowed = sorted(user | assistant | system)
    raise FormatError(f"unsupported role {role!r}; expected one of {allowed}", field=field)


def convert_messages(obj: Any, default_id: str, dataset: str) -> dict[str, Any]:
    """OpenAI chat format: ``{"messages": [{"role", "content"}, ...], "id"?, "metadata"?}``."""
    messages = []
    for i, message in enumerate(_record(obj, "messages")):
        field = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise FormatError(f"must be an object with role and content, got "
                              f"{_type_name(message)}", field=field)
        for key in ("role", "content"):
            if key not in message:
                raise FormatError("missing required field", field=f"{field}.{key}")
        side = _side(message["role"], f"{field}.role", MESSAGES_USER_ROLES,
                     MESSAGES_ASSISTANT_ROLES, MESSAGES_SYSTEM_ROLES)
        messages.append((side, _text_of(message["content"], f"{field}.content"), field))
    turns, meta = _to_turns(messages)
    return _finish(obj, default_id, dataset, turns, meta)


def convert_sharegpt(obj: Any, default_id: str, dataset: str) -> dict[str, Any]:
    """ShareGPT/Vicuna: ``{"id"?, "conversations": [{"from", "value"}, ...]}``."""
    messages = []
    for i, message in enumerate(_record(obj, "conversations")):
        field = f"conversations[{i}]"
        if not isinstance(message, Mapping):
            raise FormatError(f"must be an object with from and value, got "
                              f"{_type_name(message)}", field=field)
        for key in ("from", "value"):
            if key not in message:
                raise FormatError("missing required field", field=f"{field}.{key}")
        side = _side(message["from"], f"{field}.from", SHAREGPT_USER_ROLES,
                     SHAREGPT_ASSISTANT_ROLES, SHAREGPT_SYSTEM_ROLES)
        value = message["value"]
        if not isinstance(value, str):
            raise FormatError(f"must be a string, got {_type_name(value)}", field=f"{field}.value")
        messages.append((side, value, field))
    turns, meta = _to_turns(messages)
    return _finish(obj, default_id, dataset, turns, meta)


def convert_turns(obj: Any, default_id: str, dataset: str) -> Any:
    """The bundled line schema: passed through unchanged (the validator checks it)."""
    return obj


CONVERTERS: dict[str, Converter] = {
    "turns": convert_turns,
    "messages": convert_messages,
    "sharegpt": convert_sharegpt,
}


def detect(obj: Any, fmt: str) -> str:
    """The format to read a file with: ``fmt``, or for ``auto`` the first record's keys."""
    if fmt not in FORMATS:
        raise FormatError(f"dataset.format={fmt!r}: expected one of {list(FORMATS)}")
    if fmt != "auto":
        return fmt
    if isinstance(obj, Mapping):
        for key, name in AUTO_KEYS.items():
            if key in obj:
                return name
    # Neither list key: the bundled schema, whose validator names the misspelled key.
    return "turns"
