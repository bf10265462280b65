"""Read a JSONL or JSONL.GZ file of dialogues (or a JSON array file), strictly.

Why: a malformed line is an error naming the file, the 1-based line number, the field and the
fix, never a silent skip and never a raw decoder traceback; duplicate ids name both lines.
Blank lines are ignored (they hold no record). What spreadsheet and Windows tools write loads
as is: a UTF-8 byte-order mark before the first line and CRLF line ends. Files that are not
JSONL text at all (binary, gzip without the ``.gz`` suffix, UTF-16, a zip or Parquet file, one
pretty-printed JSON document) are named for what they are, with the conversion that fixes them.
Records may be in another format people already have (``somabench.data.formats``: OpenAI
``messages`` JSONL, ShareGPT ``conversations``); a ``*.json`` / ``*.json.gz`` file holds one JSON
array of records (what ShareGPT dumps are), with errors still naming the record's line.
"""

from __future__ import annotations

import codecs
import gzip
import json
import logging
import zlib
from collections.abc import Iterator
from pathlib import Path

from somabench.data.formats import CONVERTERS, FORMATS, FormatError, detect
from somabench.data.schema import DatasetError, Dialogue, dialogue_from_obj

log = logging.getLogger(__name__)

SCHEMA_HINT = 'one JSON object per line: {"id": ..., "dataset": ..., "turns": [...]}'
JSON_ARRAY_SUFFIXES = (".json", ".json.gz")  # one JSON array of records instead of JSONL
# Leading bytes of formats people hand in by mistake -> what it is and how to fix it.
MAGIC: tuple[tuple[bytes, str, str], ...] = (
    (b"\x1f\x8b", "gzip-compressed data", "name the file *.jsonl.gz"),
    (b"PK\x03\x04", "a zip archive (or xlsx)", "extract or export it as JSONL"),
    (b"PAR1", "a Parquet file", "convert it to JSONL (pandas: read_parquet, then "
                                "to_json(orient='records', lines=True))"),
    (b"SQLite format 3\x00", "an SQLite database", "export the dialogues as JSONL"),
    (codecs.BOM_UTF16_LE, "UTF-16 text", "save it as UTF-8"),
    (codecs.BOM_UTF16_BE, "UTF-16 text", "save it as UTF-8"),
)


def _raw_lines(path: Path) -> Iterator[bytes]:
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as handle:
            yield from handle
    else:
        with path.open("rb") as handle:
            yield from handle


def _not_text(raw: bytes, number: int) -> str | None:
    """Why this line is not JSONL text (binary or a known foreign format), or None."""
    if number == 1:
        for magic, what, fix in MAGIC:
            if raw.startswith(magic):
                return f"this is {what}, not JSONL text; {fix}"
    nul = raw.find(b"\x00")
    if nul >= 0:
        return f"binary data (NUL byte at byte {nul}), not JSONL text; expected {SCHEMA_HINT}"
    return None


def _json_fix(exc: json.JSONDecodeError, text: str, last_unterminated: bool) -> str:
    """A fix for a line that does not parse, from the shape of the mistake."""
    stripped = text.strip()
    if last_unterminated:
        return ("the last line is cut off (it has no line end and its JSON is incomplete): the "
                "file looks truncated; re-export it or delete that partial line")
    if stripped in ("{", "["):
        return ("the file looks like pretty-printed JSON; JSONL needs each dialogue on a "
                "single line")
    if exc.msg == "Extra data":
        return "two JSON values on one line; put each dialogue on its own line"
    return f"each line must be one complete JSON object ({SCHEMA_HINT})"


def _decode(raw: bytes, number: int, where: str) -> str:
    if number == 1 and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]  # spreadsheet / Windows exports start with a BOM
    problem = _not_text(raw, number)
    if problem:
        raise DatasetError(problem, where=where)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"not valid UTF-8 ({exc.reason} at byte {exc.start}); save the file as UTF-8",
            where=where,
        ) from exc


class _Records:
    """Converts decoded records (format picked once, from the first) and checks unique ids."""

    def __init__(self, path: Path, fmt: str, dataset: str) -> None:
        self.path, self.fmt, self.dataset = path, fmt, dataset
        self.convert = None if fmt == "auto" else CONVERTERS.get(fmt)
        self.first_line_of: dict[str, int] = {}
        self.dialogues: list[Dialogue] = []

    def add(self, obj: object, number: int, where: str) -> None:
        try:
            if self.convert is None:
                self.convert = CONVERTERS[detect(obj, self.fmt)]
            obj = self.convert(obj, f"{self.path.stem.split('.')[0]}-{number:06d}", self.dataset)
        except FormatError as exc:
            raise DatasetError(str(exc), where=where, field=exc.field) from exc
        dialogue = dialogue_from_obj(obj, where=where)
        if dialogue.id in self.first_line_of:
            raise DatasetError(
                f"duplicate id {dialogue.id!r}: lines {self.first_line_of[dialogue.id]} and "
                f"{number} of {self.path}; give every dialogue its own id",
                where=where,
                field="id",
            )
        self.first_line_of[dialogue.id] = number
        self.dialogues.append(dialogue)


def read_dialogues(path: str | Path, fmt: str = "turns", dataset: str = "custom") -> list[Dialogue]:
    """All dialogues of a JSONL(.gz) file, or of a ``*.json(.gz)`` array file, in ``fmt``
    (``somabench.data.formats.FORMATS``; ``dataset`` names converted records)."""
    path = Path(path)
    if fmt not in FORMATS:
        raise DatasetError(f"dataset.format={fmt!r}: expected one of {list(FORMATS)}")
    if path.name.endswith(JSON_ARRAY_SUFFIXES):
        return _read_json_array(path, _Records(path, fmt, dataset))
    return read_dialogues_jsonl(path, _Records(path, fmt, dataset))


def _read_json_array(path: Path, records: _Records) -> list[Dialogue]:
    """A file holding one JSON array of records; each record's line is where it starts."""
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}; check dataset.path")
    try:
        raw = b"".join(_raw_lines(path))
    except (gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable gzip file ({exc}); recompress it with gzip, "
                           "or drop the .gz suffix if it is plain text") from exc
    text = _decode(raw, 1, f"{path}:1")
    decoder = json.JSONDecoder()

    def line_at(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    def fail(message: str, pos: int) -> DatasetError:
        return DatasetError(message, where=f"{path}:{line_at(pos)}")

    pos = len(text) - len(text.lstrip())
    if pos == len(text):
        raise DatasetError(f"{path}: the file is empty; expected a JSON array of records")
    if text[pos] != "[":
        raise fail("a *.json dataset file must hold one JSON array of records ([{...}, ...]); "
                   "for one record per line name it *.jsonl", pos)
    pos += 1
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos < len(text) and text[pos] == "]":
            break
        start = pos
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise fail(f"invalid JSON ({exc.msg}); the array is malformed or cut off here",
                       exc.pos) from exc
        records.add(obj, line_at(start), f"{path}:{line_at(start)}")
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos >= len(text) or text[pos] != "]":
            raise fail("expected ',' or ']' after a record; the file looks truncated or is "
                       "not one JSON array", pos)
    if text[pos + 1:].strip():
        raise fail("extra data after the JSON array", pos + 1)
    if not records.dialogues:
        raise DatasetError(f"{path}: the JSON array is empty; expected at least one record")
    log.debug("read %d dialogues from %s", len(records.dialogues), path)
    return records.dialogues


def read_dialogues_jsonl(path: str | Path, records: _Records | None = None) -> list[Dialogue]:
    """All dialogues of ``path`` in file order; raise ``DatasetError`` on the first bad line.
    ``records`` converts other formats (default: the bundled line schema)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}; check dataset.path")
    records = records or _Records(path, "turns", "custom")
    number = 0
    try:
        for number, raw in enumerate(_raw_lines(path), start=1):
            where = f"{path}:{number}"
            text = _decode(raw, number, where)
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                fix = _json_fix(exc, text, last_unterminated=not raw.endswith(b"\n"))
                raise DatasetError(
                    f"invalid JSON ({exc.msg}, column {exc.colno}); {fix}", where=where
                ) from exc
            if number == 1 and isinstance(obj, list):
                raise DatasetError(
                    f"the file holds a JSON array; JSONL needs {SCHEMA_HINT} (or name the "
                    "file *.json to read it as one array of records)", where=where
                )
            records.add(obj, number, where)
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise DatasetError(f"{path}: not a readable gzip file ({exc}); recompress it with "
                           "gzip, or drop the .gz suffix if it is plain text") from exc
    except EOFError as exc:
        raise DatasetError(f"{path}: the gzip stream ends early after line {number} (the file "
                           "is truncated); copy or download it again") from exc
    if not records.dialogues:
        what = "is empty" if number == 0 else "holds only blank lines"
        raise DatasetError(f"{path}: the file {what}; expected {SCHEMA_HINT}")
    log.debug("read %d dialogues from %s", len(records.dialogues), path)
    return records.dialogues
