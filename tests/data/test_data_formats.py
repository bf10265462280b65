"""Custom data in the formats people have: OpenAI ``messages`` JSONL and ShareGPT
``conversations`` JSON, loaded as ``dataset=custom`` through ``hydra.compose``; a bad record is
one ``error:`` line naming file, line and field. The last test serves a ``messages`` file with
the real tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from somabench.config import compose
from somabench.data import DatasetError, Turn, load_dialogues

FIXTURES = Path(__file__).parent / "fixtures"
MESSAGES = FIXTURES / "chat_messages.jsonl"
SHAREGPT = FIXTURES / "chat_sharegpt.json"


def _load(path: Path, *extra: str) -> list:
    cfg = compose(["dataset=custom", f"dataset.path={path}", *extra])
    return load_dialogues(cfg.dataset, limit=None, seed=0)


def test_openai_messages_jsonl_loads_as_custom() -> None:
    first, second = _load(MESSAGES)
    assert first.id == "chat_messages-000001"  # no id: file stem + line
    assert first.dataset == "custom"
    assert first.turns == (Turn("What is 2+2?", "4."), Turn("And doubled?", "8."))
    assert first.meta == {"task": "arithmetic", "system": "You are a terse math tutor."}
    assert second.id == "chat-2"
    # text parts are joined; consecutive user messages merge; a trailing user turn has no answer
    assert second.turns == (Turn("Name a prime above 10.", "11."),
                            Turn("Another?\n\nOne above 20.", None))


def test_sharegpt_json_array_loads_as_custom() -> None:
    first, second = _load(SHAREGPT)
    assert [d.id for d in (first, second)] == ["sg-1", "sg-2"]
    assert first.turns == (Turn("Give me a colour.", "Teal."), Turn("Another one?", "Ochre."))
    assert second.meta["system"] == "Answer in one word."


def test_explicit_format_and_auto_agree() -> None:
    assert _load(MESSAGES, "dataset.format=messages") == _load(MESSAGES)
    assert _load(SHAREGPT, "dataset.format=sharegpt") == _load(SHAREGPT)


def test_format_mismatch_names_the_field() -> None:
    with pytest.raises(DatasetError, match=r"chat_messages.jsonl:1: field 'messages': unknown"):
        _load(MESSAGES, "dataset.format=sharegpt")


def _msg(role: str, content: object) -> dict:
    return {"role": role, "content": content}


GOOD = {"messages": [_msg("user", "hi"), _msg("assistant", "hello")]}
# name -> (records, suffix, line, field, message fragment)
BAD = {
    "unknown_role": ([GOOD, {"messages": [_msg("user", "a"), _msg("tool", "{}")]}], ".jsonl", 2,
                     "messages[1].role", "unsupported role 'tool'"),
    "content_not_text": ([{"messages": [_msg("user", 3)]}], ".jsonl", 1, "messages[0].content",
                         "must be a string or a list of text parts, got int"),
    "image_part": ([{"messages": [_msg("user", [{"type": "image_url", "image_url": {}}])]}],
                   ".jsonl", 1, "messages[0].content[0]", "only text content parts"),
    "missing_content": ([GOOD, GOOD | {"id": "x"}, {"messages": [{"role": "user"}]}], ".jsonl", 3,
                        "messages[0].content", "missing required field"),
    "misspelled_key": ([{"mesages": []}], ".jsonl", 1, "mesages", "unknown key(s)"),
    "extra_key": ([GOOD | {"mesages": []}], ".jsonl", 1, "mesages", "unknown key(s)"),
    "no_user_message": ([{"messages": [_msg("system", "s"), _msg("assistant", "a")]}], ".jsonl",
                        1, "messages", "no non-empty user message"),
    "duplicate_id": ([GOOD | {"id": "a"}, GOOD | {"id": "a"}], ".jsonl", 2, "id",
                     "duplicate id 'a': lines 1 and 2"),
    "sharegpt_bad_speaker": ([{"id": "s", "conversations": [{"from": "human", "value": "q"}]},
                              {"id": "t", "conversations": [{"from": "narrator", "value": "q"}]}],
                             ".json", 11, "conversations[0].from", "unsupported role 'narrator'"),
    "sharegpt_value_not_string": ([{"conversations": [{"from": "human", "value": None}]}],
                                  ".json", 2, "conversations[0].value", "got null"),
}


def _write(path: Path, records: list, suffix: str) -> Path:
    if suffix == ".json":  # one record per block of lines, like a pretty-printed dump
        text = "[\n" + ",\n".join(json.dumps(r, indent=1) for r in records) + "\n]\n"
    else:
        text = "".join(json.dumps(r) + "\n" for r in records)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_record_is_one_line_with_file_line_and_field(case: str, tmp_path: Path) -> None:
    records, suffix, line, field, fragment = BAD[case]
    path = _write(tmp_path / f"{case}{suffix}", records, suffix)
    with pytest.raises(DatasetError) as info:
        _load(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line}: "), message
    assert info.value.field == field
    assert fragment in message, message


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ('[{"messages": [{"role": "user", "content": "q"}]},\n {"messages": [', 2, "invalid JSON"),
    ('{"messages": []}\n', 1, "must hold one JSON array"),
    ("[\n]\n", None, "the JSON array is empty"),
    ('[{"id": "a", "messages": [{"role": "user", "content": "q"}]}] [', 1, "extra data"),
])
def test_broken_json_array_file(text: str, line: int | None, fragment: str, tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError, match=fragment) as info:
        _load(path)
    if line is not None:
        assert str(info.value).startswith(f"{path}:{line}: ")


def test_unknown_format_is_a_config_error() -> None:
    with pytest.raises(DatasetError, match=r"dataset.format='csv': expected one of"):
        _load(MESSAGES, "dataset.format=csv")


def test_messages_file_serves_as_custom_with_the_real_tiny_models(
        tiny_cfg_overrides: list[str], tiny_assets) -> None:
    from somabench.records import load_turns
    from somabench.task import run_dir_of, run_task

    cfg = compose([*tiny_cfg_overrides, "method=original", "dataset=custom",
                   f"dataset.path={MESSAGES}"])
    run_task(cfg)
    turns = load_turns(run_dir_of(cfg))
    assert [(t.dialogue_id, t.turn) for t in turns] == [("chat_messages-000001", 0),
                                                         ("chat_messages-000001", 1)]
    assert all(t.status == "ok" and t.response for t in turns)
