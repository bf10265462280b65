"""Read a JSONL or JSONL.GZ file of dialogues in the bundled line schema, strictly.

Why: a malformed line is an error naming the file, the 1-based line number and the field, never
a silent skip; duplicate ids name both lines. Blank lines are ignored (they hold no record).
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator
from pathlib import Path

from somabench.data.schema import DatasetError, Dialogue, dialogue_from_obj

log = logging.getLogger(__name__)


def _raw_lines(path: Path) -> Iterator[bytes]:
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as handle:
            yield from handle
    else:
        with path.open("rb") as handle:
            yield from handle


def read_dialogues_jsonl(path: str | Path) -> list[Dialogue]:
    """All dialogues of ``path`` in file order; raise ``DatasetError`` on the first bad line."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    dialogues: list[Dialogue] = []
    first_line_of: dict[str, int] = {}
    try:
        for number, raw in enumerate(_raw_lines(path), start=1):
            where = f"{path}:{number}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetError(
                    f"not valid UTF-8 ({exc.reason} at byte {exc.start})", where=where
                ) from exc
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DatasetError(
                    f"invalid JSON ({exc.msg} at column {exc.colno})", where=where
                ) from exc
            dialogue = dialogue_from_obj(obj, where=where)
            if dialogue.id in first_line_of:
                raise DatasetError(
                    f"duplicate id {dialogue.id!r}: lines {first_line_of[dialogue.id]} and "
                    f"{number} of {path}",
                    where=where,
                    field="id",
                )
            first_line_of[dialogue.id] = number
            dialogues.append(dialogue)
    except (gzip.BadGzipFile, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable gzip file ({exc})") from exc
    if not dialogues:
        raise DatasetError(f"{path}: holds no dialogues")
    log.debug("read %d dialogues from %s", len(dialogues), path)
    return dialogues
