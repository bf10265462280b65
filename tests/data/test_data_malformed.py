"""Bad input of every kind fails with ONE readable line (file, line, field, fix); BOM/CRLF load.

Each case is a whole file a user might hand in, loaded the way a run loads it
(``dataset=custom dataset.path=<file>``). No model is loaded.
"""

from __future__ import annotations

import codecs
import gzip
import json
from pathlib import Path

import pytest

from somabench.data import DatasetError, load_dialogues


def _obj(id_: str = "d1", **overrides) -> dict:
    obj = {"id": id_, "dataset": "custom",
           "turns": [{"user": "What is 2+2?", "assistant": "4"},
                     {"user": "And 3+3?", "assistant": None}]}
    obj.update(overrides)
    return obj


def _jsonl(*objs: dict) -> bytes:
    return "".join(json.dumps(o) + "\n" for o in objs).encode()


GOOD = _jsonl(_obj("d1"), _obj("d2"))

# name -> (file bytes, file suffix, line in the message or None, field or None, fix fragment)
CASES: dict[str, tuple[bytes, str, int | None, str | None, str]] = {
    "invalid_json": (_jsonl(_obj("d1")) + b'{"id": "d2", "turns": [\n' + _jsonl(_obj("d3")),
                     ".jsonl", 2, None, "each line must be one complete JSON object"),
    "two_objects_on_one_line": (json.dumps(_obj("a")).encode() + json.dumps(_obj("b")).encode()
                                + b"\n", ".jsonl", 1, None, "put each dialogue on its own line"),
    "pretty_printed_json": (json.dumps(_obj(), indent=2).encode(), ".jsonl", 1, None,
                            "each dialogue on a single line"),
    "json_array": (json.dumps([_obj("a"), _obj("b")]).encode(), ".jsonl", 1, None,
                   "one JSON object per line"),
    "binary_data": (b"\x00\x01\x02\x03garbage\xff\xfe\n", ".jsonl", 1, None, "not JSONL text"),
    "gzip_without_suffix": (gzip.compress(GOOD), ".jsonl", 1, None, "name the file *.jsonl.gz"),
    "zip_archive": (b"PK\x03\x04\x14\x00\x00\x00" + b"\x00" * 20, ".jsonl", 1, None,
                    "export it as JSONL"),
    "utf16": (codecs.BOM_UTF16_LE + GOOD.decode().encode("utf-16-le"), ".jsonl", 1, None,
              "save it as UTF-8"),
    "latin1": (_jsonl(_obj("d1")) + '{"id": "café"}\n'.encode("latin-1"), ".jsonl", 2, None,
               "save the file as UTF-8"),
    "empty_file": (b"", ".jsonl", None, None, "expected one JSON object per line"),
    "blank_lines_only": (b"\n  \r\n\n", ".jsonl", None, None, "only blank lines"),
    "wrong_type_id": (_jsonl(_obj(7)), ".jsonl", 1, "id", "must be a string, got int"),
    "wrong_type_turns": (_jsonl(_obj(turns="hello")), ".jsonl", 1, "turns",
                         "must be a list of turn objects"),
    "wrong_type_user": (_jsonl(_obj(turns=[{"user": 3, "assistant": None}])), ".jsonl", 1,
                        "turns[0].user", "must be a string, got int"),
    "missing_field": (_jsonl({"id": "d1", "dataset": "custom"}), ".jsonl", 1, "turns",
                      "missing required field"),
    "missing_assistant": (_jsonl(_obj(turns=[{"user": "u"}])), ".jsonl", 1,
                          "turns[0].assistant", "use null when there is no reference answer"),
    "empty_user": (_jsonl(_obj(turns=[{"user": " ", "assistant": None}])), ".jsonl", 1,
                   "turns[0].user", "user text is empty"),
    "misspelled_key": (_jsonl({"id": "d1", "dataset": "custom", "turn": []}), ".jsonl", 1, "turn",
                       "Did you mean 'turns'?"),
    "misspelled_turn_key": (_jsonl(_obj(turns=[{"usr": "u", "assistant": None}])), ".jsonl", 1,
                            "turns[0].usr", "Did you mean 'user'?"),
    "empty_id": (_jsonl(_obj("")), ".jsonl", 1, "id", "must be a non-empty string"),
    "empty_turns": (_jsonl(_obj(turns=[])), ".jsonl", 1, "turns", "at least one turn"),
    "duplicate_ids": (_jsonl(_obj("d1"), _obj("d2"), _obj("d1")), ".jsonl", 3, "id",
                      "give every dialogue its own id"),
    "truncated_last_line": (GOOD + json.dumps(_obj("d3")).encode()[:40], ".jsonl", 3, None,
                            "the file looks truncated"),
    "truncated_gzip": (gzip.compress(_jsonl(*(_obj(f"d{i}") for i in range(50))))[:-30],
                       ".jsonl.gz", None, None,
                       "copy or download it again"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_file_gives_one_readable_line(case: str, tmp_path: Path, dataset_cfg) -> None:
    data, suffix, line, field, fix = CASES[case]
    path = tmp_path / f"{case}{suffix}"
    path.write_bytes(data)
    with pytest.raises(DatasetError) as info:
        load_dialogues(dataset_cfg("custom", path=str(path)), limit=None, seed=0)
    message = str(info.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    if line is not None:
        assert message.startswith(f"{path}:{line}: "), message
    assert info.value.field == field
    if field is not None:
        assert f"field '{field}'" in message
    assert fix in message, message


def _read(tmp_path: Path, name: str, data: bytes, dataset_cfg) -> list:
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return load_dialogues(dataset_cfg("custom", path=str(path)), limit=None, seed=0)


@pytest.mark.parametrize("name", ["win.jsonl", "win.jsonl.gz"])
def test_bom_and_crlf_load_like_plain_utf8(name: str, tmp_path: Path, dataset_cfg) -> None:
    """What spreadsheet and Windows tools write: a UTF-8 BOM and CRLF line ends, plus a string
    holding an escaped CRLF that must survive untouched."""
    objs = [_obj("d1"), _obj("d2", turns=[{"user": "line one\r\nline two", "assistant": "ok"}])]
    plain = _read(tmp_path, "plain.jsonl", _jsonl(*objs), dataset_cfg)
    windows = codecs.BOM_UTF8 + _jsonl(*objs).replace(b"\n", b"\r\n")
    loaded = _read(tmp_path, name, windows, dataset_cfg)
    assert loaded == plain
    assert loaded[0].id == "d1"  # the BOM did not stick to the first key or value
    assert loaded[1].turns[0].user == "line one\r\nline two"


def test_last_line_without_newline_is_fine(tmp_path: Path, dataset_cfg) -> None:
    loaded = _read(tmp_path, "nonl.jsonl", GOOD.rstrip(b"\n"), dataset_cfg)
    assert [d.id for d in loaded] == ["d1", "d2"]


def test_bom_only_allowed_at_the_start(tmp_path: Path, dataset_cfg) -> None:
    data = _jsonl(_obj("d1")) + codecs.BOM_UTF8 + _jsonl(_obj("d2"))
    with pytest.raises(DatasetError, match=r":2: invalid JSON"):
        _read(tmp_path, "bom2.jsonl", data, dataset_cfg)
