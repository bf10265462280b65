"""Load dialogues from the Hugging Face hub with ``datasets`` and convert rows to ``Dialogue``.

Why: ShareGPT and Multi-Char cannot be bundled (see ``bundled/SOURCES.md``), so they are read by
hub name when a hub is reachable. Each source has a converter (``somabench.registry.
hub_converters``, whose table is in ``somabench/data/__init__.py``; chosen by
``dataset.hub.converter``; ``somabench ls hub_converter`` lists them) that maps one row to a
dict in the bundled line schema; the result then goes through the same validator as bundled files.
A row a converter cannot use raises ``Unconvertible``; ``dataset.hub.on_unconvertible`` decides
whether that is an error or a drop (drops are counted by reason and logged).

``dataset.hub`` keys: ``path`` (hub id), ``name`` (config name), ``split``, ``data_files``,
``revision`` (pin a commit for reproducible runs), ``converter``, ``on_unconvertible``
(``error`` | ``drop``), ``license`` (copied to ``meta.license``), ``options`` (converter
options; unknown options are errors).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from somabench.data.schema import DatasetError, Dialogue, dialogue_from_obj
from somabench.registry import HubConverter, hub_converters

log = logging.getLogger(__name__)

HUB_KEYS = (
    "path",
    "name",
    "split",
    "data_files",
    "revision",
    "converter",
    "on_unconvertible",
    "license",
    "options",
)
ON_UNCONVERTIBLE = ("error", "drop")

# ShareGPT speaker tags seen in public ShareGPT dumps (FastChat's clean_sharegpt.py and the
# Vicuna "conversations" format): human/gpt, plus user/assistant/chatgpt/bing/bard variants.
SHAREGPT_USER_ROLES = frozenset({"human", "user"})
SHAREGPT_ASSISTANT_ROLES = frozenset({"gpt", "chatgpt", "assistant", "bing", "bard", "model"})
SHAREGPT_SYSTEM_ROLES = frozenset({"system"})
# Consecutive messages of one side are joined into one turn with a blank line (paragraph break).
MERGE_SEPARATOR = "\n\n"
# Column holding the text of the scene after the conversation in agentlans/multi-character-dialogue.
MULTICHAR_SETTING_AFTER = "setting after interaction"


class Unconvertible(ValueError):
    """A hub row that cannot become a dialogue; ``reason`` is short and row-independent."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        super().__init__(reason + (f" ({detail})" if detail else ""))


Converter = HubConverter
"""``convert(row, *, index, dataset, options) -> dict`` in the bundled line schema."""

CONVERTER_OPTIONS: dict[str, frozenset[str]] = {
    "turns": frozenset(),
    "sharegpt": frozenset(),
    "multichar": frozenset({"scene_in_first_turn"}),
}
"""The ``dataset.hub.options`` each converter accepts (tests/data check it covers the registry)."""


def _merge_runs(messages: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Join consecutive messages of the same side ("user"/"assistant")."""
    merged: list[tuple[str, str]] = []
    for side, text in messages:
        if merged and merged[-1][0] == side:
            merged[-1] = (side, merged[-1][1] + MERGE_SEPARATOR + text)
        else:
            merged.append((side, text))
    return merged


def _pair_turns(merged: list[tuple[str, str]]) -> list[dict[str, str | None]]:
    """Alternating user/assistant runs (starting with user) -> turn dicts."""
    turns: list[dict[str, str | None]] = []
    for side, text in merged:
        if side == "user":
            turns.append({"user": text, "assistant": None})
        else:
            turns[-1]["assistant"] = text
    return turns


def convert_turns(
    row: Mapping[str, Any], *, index: int, dataset: str, options: Mapping[str, Any]
) -> dict[str, Any]:
    """Rows already in the bundled line schema (``id``, ``dataset``, ``turns``, ``meta``)."""
    return {key: row[key] for key in ("id", "dataset", "turns", "meta") if key in row}


def convert_sharegpt(
    row: Mapping[str, Any], *, index: int, dataset: str, options: Mapping[str, Any]
) -> dict[str, Any]:
    """ShareGPT/Vicuna rows: ``{"id", "conversations": [{"from", "value"}, ...]}``.

    ``human``/``user`` -> user, ``gpt``/``chatgpt``/... -> assistant; consecutive messages of
    one side are merged; empty messages are dropped; ``system`` messages go to
    ``meta.system``; assistant messages before the first user message go to
    ``meta.assistant_opening``; a trailing user message gets ``assistant: null``.
    """
    source_id = row.get("id")
    if not isinstance(source_id, str) or not source_id.strip():
        raise Unconvertible("no id")
    conversation = row.get("conversations")
    if not isinstance(conversation, list) or not conversation:
        raise Unconvertible("no conversations")
    messages: list[tuple[str, str]] = []
    system: list[str] = []
    opening: list[str] = []
    for message in conversation:
        if not isinstance(message, Mapping):
            raise Unconvertible("message not an object")
        role, text = message.get("from"), message.get("value")
        if not isinstance(text, str) or not isinstance(role, str):
            raise Unconvertible("message without string from/value")
        if not text.strip():
            continue
        role = role.lower()
        if role in SHAREGPT_SYSTEM_ROLES:
            system.append(text)
        elif role in SHAREGPT_USER_ROLES:
            messages.append(("user", text))
        elif role in SHAREGPT_ASSISTANT_ROLES:
            if messages:
                messages.append(("assistant", text))
            else:
                opening.append(text)
        else:
            raise Unconvertible("unknown speaker role", role)
    if not messages:
        raise Unconvertible("no user message")
    meta: dict[str, Any] = {"source_id": source_id}
    if system:
        meta["system"] = MERGE_SEPARATOR.join(system)
    if opening:
        meta["assistant_opening"] = MERGE_SEPARATOR.join(opening)
    for key in ("model", "lang", "language"):
        if row.get(key) is not None:
            meta[key] = row[key]
    return {
        "id": f"{dataset}-{source_id}",
        "dataset": dataset,
        "turns": _pair_turns(_merge_runs(messages)),
        "meta": meta,
    }


def convert_multichar(
    row: Mapping[str, Any], *, index: int, dataset: str, options: Mapping[str, Any]
) -> dict[str, Any]:
    """agentlans/multi-character-dialogue rows: ``setting``, ``characters`` (name ->
    description), ``conversation`` ([{"from": name, "message"}]), ``setting after interaction``.

    The model plays one character: the first speaker who differs from the opening speaker
    (so the dialogue starts with a user turn). Every other character's messages become user
    text prefixed ``"Name: "``; consecutive messages of one side merge. Rows have no id, so the
    id is ``<dataset>-<row index>`` (stable for a pinned ``revision``). With option
    ``scene_in_first_turn`` the setting, the character list and the played character are
    prepended to the first user turn (otherwise they are only in ``meta``).
    """
    conversation = row.get("conversation")
    if not isinstance(conversation, list) or not conversation:
        raise Unconvertible("no conversation")
    lines: list[tuple[str, str]] = []
    for message in conversation:
        if not isinstance(message, Mapping):
            raise Unconvertible("message not an object")
        speaker, text = message.get("from"), message.get("message")
        if not isinstance(speaker, str) or not speaker.strip() or not isinstance(text, str):
            raise Unconvertible("message without string from/message")
        if text.strip():
            lines.append((speaker.strip(), text))
    speakers = list(dict.fromkeys(speaker for speaker, _ in lines))
    if len(speakers) < 2:
        raise Unconvertible("fewer than two speakers")
    played = speakers[1]
    messages = [
        ("assistant", text) if speaker == played else ("user", f"{speaker}: {text}")
        for speaker, text in lines
    ]
    turns = _pair_turns(_merge_runs(messages))

    characters = row.get("characters")
    if isinstance(characters, Mapping):
        # An Arrow struct holds the union of all rows' names; absent ones come back as None.
        characters = {k: v for k, v in characters.items() if v is not None}
    setting = row.get("setting")
    if options.get("scene_in_first_turn"):
        scene = []
        if isinstance(setting, str) and setting.strip():
            scene.append(f"Setting: {setting}")
        if isinstance(characters, Mapping) and characters:
            scene.append("Characters:\n" + "\n".join(f"- {k}: {v}" for k, v in characters.items()))
        scene.append(f"You are {played}.")
        turns[0]["user"] = "\n".join(scene) + MERGE_SEPARATOR + (turns[0]["user"] or "")
    return {
        "id": f"{dataset}-{index:06d}",
        "dataset": dataset,
        "turns": turns,
        "meta": {
            "source_row": index,
            "setting": setting,
            "characters": characters,
            "assistant_character": played,
            "setting_after": row.get(MULTICHAR_SETTING_AFTER),
        },
    }


def _hub_cfg(cfg: Mapping[str, Any]) -> dict[str, Any]:
    name = cfg.get("name")
    hub = cfg.get("hub")
    if not isinstance(hub, Mapping):
        raise DatasetError(
            f"dataset '{name}' has loader=hub but dataset.hub is {hub!r}; set a hub mapping "
            "(see conf/dataset/sharegpt.yaml)"
        )
    missing = [key for key in HUB_KEYS if key not in hub]
    if missing:
        raise DatasetError(f"dataset.hub of '{name}' lacks key(s) {missing}")
    if not hub["path"]:
        raise DatasetError(
            f"dataset.hub.path is null for '{name}': no hub copy is configured. Set "
            f"dataset.hub.path=<hub id> (and dataset.hub.converter, one of "
            f"{hub_converters.names()}), or use dataset.loader=bundled."
        )
    if hub["on_unconvertible"] not in ON_UNCONVERTIBLE:
        raise DatasetError(
            f"dataset.hub.on_unconvertible={hub['on_unconvertible']!r}: expected one of "
            f"{list(ON_UNCONVERTIBLE)}"
        )
    options = hub["options"] or {}
    if not isinstance(options, Mapping):
        raise DatasetError(f"dataset.hub.options={options!r}: expected a mapping")
    hub_converters.get(hub["converter"])  # unknown converter -> RegistryError with did-you-mean
    allowed = CONVERTER_OPTIONS.get(hub_converters.canonical(hub["converter"]), frozenset())
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise DatasetError(
            f"dataset.hub.options has unknown key(s) {unknown} for converter "
            f"'{hub['converter']}'; allowed: {sorted(allowed)}"
        )
    return {**hub, "options": dict(options)}


def convert_rows(rows: Iterable[Mapping[str, Any]], cfg: Mapping[str, Any]) -> list[Dialogue]:
    """Convert hub rows (e.g. a ``datasets.Dataset``) with the converter ``cfg`` names.

    ``cfg`` is the whole ``dataset`` config. Duplicate ids and schema failures are treated
    like ``Unconvertible`` rows (error or drop per ``hub.on_unconvertible``).
    """
    hub = _hub_cfg(cfg)
    name = cfg["name"]
    convert = hub_converters.get(hub["converter"])
    source = f"hf:{hub['path']}" + (f"@{hub['revision']}" if hub["revision"] else "")
    drop = hub["on_unconvertible"] == "drop"
    dropped: Counter[str] = Counter()
    first_row_of: dict[str, int] = {}
    dialogues: list[Dialogue] = []
    for index, row in enumerate(rows):
        where = f"{hub['path']} row {index}"
        try:
            obj = convert(row, index=index, dataset=name, options=hub["options"])
            meta = obj.get("meta") if obj.get("meta") is not None else {}
            if isinstance(meta, Mapping):  # else the validator names the bad field
                obj["meta"] = {"source": source, "license": hub["license"], **meta}
            dialogue = dialogue_from_obj(obj, where=where)
            if dialogue.id in first_row_of:
                raise Unconvertible(
                    "duplicate id", f"{dialogue.id!r}: rows {first_row_of[dialogue.id]} and {index}"
                )
        except Unconvertible as exc:
            if not drop:
                raise DatasetError(
                    f"cannot convert with converter '{hub['converter']}': {exc} "
                    "(set dataset.hub.on_unconvertible=drop to skip such rows)",
                    where=where,
                ) from exc
            dropped[exc.reason] += 1
            continue
        except DatasetError as exc:
            if not drop:
                raise
            dropped["invalid " + re.sub(r"\[\d+\]", "[]", exc.field or "row")] += 1
            continue
        first_row_of[dialogue.id] = index
        dialogues.append(dialogue)
    if dropped:
        log.warning(
            "dataset '%s': dropped %d hub row(s) (dataset.hub.on_unconvertible=drop): %s",
            name,
            sum(dropped.values()),
            dict(sorted(dropped.items())),
        )
    if not dialogues:
        raise DatasetError(f"no row of {hub['path']} converts to a dialogue for '{name}'")
    return dialogues


def load_hub(cfg: Mapping[str, Any]) -> list[Dialogue]:
    """``datasets.load_dataset`` with the ``dataset.hub`` settings, then ``convert_rows``."""
    hub = _hub_cfg(cfg)
    import datasets  # heavy; only hub-loaded runs pay for it

    try:
        rows = datasets.load_dataset(
            hub["path"],
            name=hub["name"],
            split=hub["split"],
            data_files=hub["data_files"],
            revision=hub["revision"],
        )
    except Exception as exc:  # network, auth, missing file: all mean "not loadable here"
        raise DatasetError(
            f"dataset.hub.path={hub['path']!r} could not be loaded ({type(exc).__name__}: "
            f"{exc}). Without hub access use a bundled dataset, or convert the data to the "
            "bundled line schema and load it with dataset=custom dataset.path=<file>."
        ) from exc
    log.info(
        "dataset '%s': %d rows from %s split %s", cfg["name"], len(rows), hub["path"], hub["split"]
    )
    return convert_rows(rows, cfg)
