"""Choose which dialogues a run sees: filters, truncation, seeded sample, shard, limit.

Why: one deterministic pipeline, driven only by YAML values, so the same config, seed and shard
always give the same dialogues in the same order. Order of the steps:

1. filters, on the original dialogues: ``tasks`` (``meta.task`` in the list), ``min_turns`` /
   ``max_turns`` (inclusive bounds on the number of turns), ``context_dependent_only``;
2. ``truncate_turns``: keep the first N turns of each kept dialogue (filters see the original
   length, so ``max_turns`` and ``truncate_turns`` do not cancel out);
3. ``sample``: a seeded random subset of N dialogues (``random.Random(seed)``), kept in file
   order; a sample larger than what the filters left keeps everything, with a warning;
4. ``shard="i/n"``: keep positions ``p`` (0-based, after step 3) with ``p % n == i``; the
   shards of one config are disjoint and their union is the whole selection;
5. ``limit``: the first N dialogues of the shard (so the limit applies per shard);
6. ``truncate_chars`` (null by default): cut every user turn longer than N characters to its
   first N; ``meta["truncated_chars"]`` maps each cut turn's index to its original length.
   Characters, not tokens, so every model and method sees the same text; after the models are
   built, ``somabench.data.preflight`` checks every turn against each model's context window.

An empty selection after step 3 is an error (the config is wrong); an empty shard only warns.

``context_dependent_only`` applies the written rule of ``somabench.data.context`` (the paper's
App. B.1 filter, whose classifier is unpublished): a dialogue's own ``meta.context_dependent``
label, else its ``meta.task`` against the dataset's ``context_dependent_tasks`` list.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from somabench.data.context import ContextRule, filter_context_dependent
from somabench.data.schema import DatasetError, Dialogue
from somabench.registry import did_you_mean

log = logging.getLogger(__name__)

SELECTION_KEYS = (
    "min_turns",
    "max_turns",
    "truncate_turns",
    "tasks",
    "sample",
    "context_dependent_only",
    "context_dependent_tasks",
    "negative_control_tasks",
    "truncate_chars",
)


def _optional_int(cfg: Mapping[str, Any], key: str, *, minimum: int) -> int | None:
    value = cfg[key]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DatasetError(
            f"dataset.{key}={value!r}: expected null or an integer >= {minimum} "
            f"(override e.g. dataset.{key}={max(minimum, 1)} or dataset.{key}=null)"
        )
    return value


@dataclass(frozen=True)
class Selection:
    """The selection knobs of a ``dataset`` config, validated (values come from YAML only)."""

    min_turns: int | None
    max_turns: int | None
    truncate_turns: int | None
    tasks: tuple[str, ...] | None
    sample: int | None
    context_dependent_only: bool
    truncate_chars: int | None
    context_rule: ContextRule

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> Selection:
        missing = [key for key in SELECTION_KEYS if key not in cfg]
        if missing:
            raise DatasetError(
                f"dataset config '{cfg.get('name')}' lacks key(s) "
                f"{['dataset.' + k for k in missing]}; every conf/dataset/*.yaml sets them"
            )
        min_turns = _optional_int(cfg, "min_turns", minimum=1)
        max_turns = _optional_int(cfg, "max_turns", minimum=1)
        if min_turns is not None and max_turns is not None and max_turns < min_turns:
            raise DatasetError(
                f"dataset.max_turns={max_turns} is below dataset.min_turns={min_turns}; "
                "no dialogue can pass"
            )
        tasks = cfg["tasks"]
        if tasks is not None:
            if (
                isinstance(tasks, str)
                or not isinstance(tasks, Sequence)
                or not tasks
                or not all(isinstance(t, str) for t in tasks)
            ):
                raise DatasetError(
                    f"dataset.tasks={tasks!r}: expected null or a non-empty list of task codes, "
                    "e.g. dataset.tasks=[CM,SI]"
                )
            tasks = tuple(tasks)
        flag = cfg["context_dependent_only"]
        if flag is None:
            flag = False
        if not isinstance(flag, bool):
            raise DatasetError(f"dataset.context_dependent_only={flag!r}: expected true/false/null")
        return cls(
            min_turns=min_turns,
            max_turns=max_turns,
            truncate_turns=_optional_int(cfg, "truncate_turns", minimum=1),
            tasks=tasks,
            sample=_optional_int(cfg, "sample", minimum=1),
            context_dependent_only=flag,
            truncate_chars=_optional_int(cfg, "truncate_chars", minimum=1),
            context_rule=ContextRule.from_cfg(cfg),
        )


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; ``None`` stays ``None``."""
    if shard is None:
        return None
    text = str(shard).strip()
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if not sep or n < 1 or not 0 <= i < n:
        raise DatasetError(
            f"shard={shard!r}: expected 'i/n' with integers 0 <= i < n, e.g. shard=0/4"
        )
    return i, n


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DatasetError(f"limit={limit!r}: expected null or an integer >= 1, e.g. limit=5")


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DatasetError(f"seed={seed!r}: expected an integer, e.g. seed=0")


def _filter_tasks(dialogues: list[Dialogue], tasks: tuple[str, ...], name: str) -> list[Dialogue]:
    present: set[str] = set()
    for dialogue in dialogues:
        task = dialogue.meta.get("task")
        if not isinstance(task, str):
            raise DatasetError(
                f"dataset.tasks={list(tasks)} is set but dialogue {dialogue.id!r} of '{name}' "
                "has no string meta.task; set dataset.tasks=null"
            )
        present.add(task)
    unknown = [t for t in tasks if t not in present]
    if unknown:
        hints = "".join(did_you_mean(t, sorted(present)) for t in unknown)
        raise DatasetError(
            f"dataset.tasks has {unknown}, not a meta.task of '{name}'.{hints} "
            f"Available: {', '.join(sorted(present))}."
        )
    wanted = set(tasks)
    return [d for d in dialogues if d.meta["task"] in wanted]


def _truncate(dialogue: Dialogue, n: int) -> Dialogue:
    if len(dialogue.turns) <= n:
        return dialogue
    meta = dict(dialogue.meta)
    meta["num_turns_original"] = len(dialogue.turns)
    return replace(dialogue, turns=dialogue.turns[:n], meta=meta)


def _truncate_chars(dialogue: Dialogue, n: int) -> Dialogue:
    long = {str(i): len(t.user) for i, t in enumerate(dialogue.turns) if len(t.user) > n}
    if not long:
        return dialogue
    turns = tuple(replace(t, user=t.user[:n]) if str(i) in long else t
                  for i, t in enumerate(dialogue.turns))
    return replace(dialogue, turns=turns, meta={**dialogue.meta, "truncated_chars": long})


def select_dialogues(
    dialogues: Sequence[Dialogue],
    selection: Selection,
    *,
    name: str,
    limit: int | None,
    seed: int,
    shard: str | None,
) -> list[Dialogue]:
    """Apply steps 1-6 of the module docstring; ``name`` only labels messages."""
    _check_limit(limit)
    _check_seed(seed)
    shard_spec = parse_shard(shard)
    kept = list(dialogues)
    counts = [f"loaded {len(kept)}"]

    if selection.tasks is not None:
        kept = _filter_tasks(kept, selection.tasks, name)
        counts.append(f"tasks {len(kept)}")
    if selection.min_turns is not None or selection.max_turns is not None:
        low = selection.min_turns or 1
        high = selection.max_turns
        kept = [d for d in kept if len(d.turns) >= low and (high is None or len(d.turns) <= high)]
        counts.append(f"turns in [{low}, {high if high is not None else 'inf'}] {len(kept)}")
    if selection.context_dependent_only:
        kept = filter_context_dependent(kept, selection.context_rule, name)
        counts.append(f"context-dependent {len(kept)}")
    if not kept:
        raise DatasetError(
            f"no dialogue of '{name}' passes the filters ({'; '.join(counts)}); relax "
            "dataset.tasks / dataset.min_turns / dataset.max_turns"
        )
    if selection.truncate_turns is not None:
        kept = [_truncate(d, selection.truncate_turns) for d in kept]

    if selection.sample is not None:
        if selection.sample >= len(kept):
            log.warning(
                "dataset.sample=%d but only %d dialogues of '%s' pass the filters: keeping all",
                selection.sample,
                len(kept),
                name,
            )
        else:
            chosen = sorted(random.Random(seed).sample(range(len(kept)), selection.sample))
            kept = [kept[i] for i in chosen]
        counts.append(f"sample(seed={seed}) {len(kept)}")
    if shard_spec is not None:
        i, n = shard_spec
        kept = kept[i::n]
        counts.append(f"shard {i}/{n} {len(kept)}")
        if not kept:
            log.warning("shard %s of '%s' is empty", shard, name)
    if limit is not None:
        kept = kept[:limit]
        counts.append(f"limit {len(kept)}")
    if selection.truncate_chars is not None:
        kept = [_truncate_chars(d, selection.truncate_chars) for d in kept]
        cut = sum(len(d.meta.get("truncated_chars", ())) for d in kept)
        if cut:
            log.warning("dataset.truncate_chars=%d cut %d user turn(s) of '%s'",
                        selection.truncate_chars, cut, name)
    log.info("dataset '%s': %s", name, " -> ".join(counts))
    return kept
