"""A malformed line fails with an error naming the file, the line number and the field."""

from __future__ import annotations

import gzip
import json
import re

import pytest

from somabench.data import DatasetError
from somabench.data.files import read_dialogues_jsonl


def _line(**obj) -> str:
    base = {"id": "x", "dataset": "custom", "turns": [{"user": "hi", "assistant": None}]}
    base.update(obj)
    return json.dumps({k: v for k, v in base.items() if v is not ...})


GOOD = _line(id="good")

# (bad line, field named in the error or None, fragment of the message)
CASES = {
    "bad_json": ('{"id": "x", "turns": [', None, "invalid JSON"),
    "not_object": ("[1, 2]", None, "expected a JSON object, got list"),
    "missing_id": (_line(id=...), "id", "missing required field"),
    "id_not_str": (_line(id=7), "id", "must be a string, got int"),
    "empty_id": (_line(id="  "), "id", "non-empty"),
    "missing_dataset": (_line(dataset=...), "dataset", "missing required field"),
    "missing_turns": (_line(turns=...), "turns", "missing required field"),
    "turns_not_list": (_line(turns="hi"), "turns", "must be a list of turn objects, got str"),
    "turns_empty": (_line(turns=[]), "turns", "at least one turn"),
    "turn_not_object": (_line(turns=["hi"]), "turns[0]", "must be an object"),
    "missing_user": (_line(turns=[{"assistant": "a"}]), "turns[0].user", "missing required"),
    "missing_assistant": (_line(turns=[{"user": "u"}]), "turns[0].assistant", "use null"),
    "empty_user": (
        _line(turns=[{"user": "q", "assistant": "a"}, {"user": " \n", "assistant": None}]),
        "turns[1].user",
        "user text is empty",
    ),
    "user_not_str": (
        _line(turns=[{"user": 3, "assistant": None}]),
        "turns[0].user",
        "must be a string, got int",
    ),
    "assistant_wrong_type": (
        _line(turns=[{"user": "u", "assistant": ["a"]}]),
        "turns[0].assistant",
        "must be a string or null, got list",
    ),
    "unknown_turn_key": (
        _line(turns=[{"user": "u", "assistant": None, "usr": "x"}]),
        "turns[0].usr",
        "unknown key",
    ),
    "unknown_key": (_line(turn=[]), "turn", "unknown key"),
    "meta_not_object": (_line(meta=[1]), "meta", "must be an object, got list"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_line_names_file_line_and_field(case: str, write_jsonl) -> None:
    bad, field, fragment = CASES[case]
    path = write_jsonl([GOOD, bad])  # the bad line is line 2
    with pytest.raises(DatasetError) as info:
        read_dialogues_jsonl(path)
    message = str(info.value)
    assert message.startswith(f"{path}:2: "), message
    assert fragment in message
    assert info.value.where == f"{path}:2"
    assert info.value.field == field
    if field is not None:
        assert f"field '{field}'" in message


def test_duplicate_id_names_both_lines(write_jsonl) -> None:
    path = write_jsonl([_line(id="a"), _line(id="b"), "", _line(id="a")])
    with pytest.raises(
        DatasetError,
        match=re.escape(f"{path}:4: field 'id': duplicate id 'a': lines 1 and 4 of {path}"),
    ):
        read_dialogues_jsonl(path)


def test_blank_lines_are_ignored_but_counted(write_jsonl) -> None:
    path = write_jsonl(["", GOOD, "   ", '{"broken'])
    with pytest.raises(DatasetError, match=re.escape(f"{path}:4: invalid JSON")):
        read_dialogues_jsonl(path)


def test_gz_errors_name_the_line(tmp_path) -> None:
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(gzip.compress((GOOD + "\n" + _line(id=None) + "\n").encode()))
    with pytest.raises(DatasetError, match=re.escape(f"{path}:2: field 'id': must be a string")):
        read_dialogues_jsonl(path)


def test_not_gzip_despite_suffix(tmp_path) -> None:
    path = tmp_path / "plain.jsonl.gz"
    path.write_text(GOOD + "\n")
    with pytest.raises(DatasetError, match="not a readable gzip file"):
        read_dialogues_jsonl(path)


def test_invalid_utf8_names_the_line(tmp_path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + b'{"id": "caf\xe9"}\n')
    with pytest.raises(DatasetError, match=re.escape(f"{path}:2: not valid UTF-8")):
        read_dialogues_jsonl(path)


def test_empty_file_is_an_error(write_jsonl) -> None:
    path = write_jsonl(["", " "])
    with pytest.raises(DatasetError, match="holds only blank lines"):
        read_dialogues_jsonl(path)


def test_meta_may_be_omitted_and_empty_assistant_is_kept(write_jsonl) -> None:
    path = write_jsonl([_line(turns=[{"user": "u", "assistant": ""}])])
    (dialogue,) = read_dialogues_jsonl(path)
    assert dialogue.meta == {}
    assert dialogue.turns[0].assistant == ""


def test_dataset_error_is_a_value_error() -> None:
    assert issubclass(DatasetError, ValueError)
