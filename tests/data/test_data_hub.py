"""Hub conversions, on in-memory ``datasets.Dataset`` objects and through the real
``datasets.load_dataset`` on files shipped in ``tests/data/fixtures/`` (the hub itself is
unreachable here: ``dataset.hub.path=json|parquet`` reads local files with the same call).

Rows go through Arrow either way, so they arrive as Arrow gives them back (e.g. a
``characters`` struct holding the union of all rows' names, absent ones as None).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets
import pytest

from somabench.data import DatasetError, Turn, load_dialogues
from somabench.data.hub import convert_rows
from somabench.registry import RegistryError

FIXTURES = Path(__file__).parent / "fixtures"
SHAREGPT_JSON = FIXTURES / "sharegpt_rows.json"        # SHAREGPT_ROWS as a ShareGPT dump (array)
MULTICHAR_PARQUET = FIXTURES / "multichar_rows.parquet"  # MULTICHAR_ROWS as the hub's parquet

SHAREGPT_ROWS = [
    {  # system prompt, consecutive human messages, trailing human message
        "id": "abc_0",
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Hello"},
            {"from": "human", "value": "Are you there?"},
            {"from": "gpt", "value": "Yes."},
            {"from": "human", "value": "Explain it again."},
        ],
    },
    {  # opening assistant message, an empty message and two gpt messages in a row
        "id": "abc_1",
        "conversations": [
            {"from": "gpt", "value": "Welcome!"},
            {"from": "human", "value": "Write a haiku"},
            {"from": "gpt", "value": ""},
            {"from": "gpt", "value": "Leaves fall"},
            {"from": "chatgpt", "value": "softly"},
        ],
    },
    {"id": "abc_2", "conversations": []},  # empty
    {"id": "abc_3", "conversations": [{"from": "gpt", "value": "only the bot"}]},
    {"id": "abc_4", "conversations": [{"from": "narrator", "value": "?"}]},
    {"id": "abc_0", "conversations": [{"from": "human", "value": "dup"}]},  # duplicate id
]

MULTICHAR_ROWS = [
    {
        "setting": "A village square.",
        "characters": {"Sophie": "a baker", "Tom": "a smith", "Mia": "a child"},
        "conversation": [
            {"from": "Sophie", "message": "Morning, Tom!"},
            {"from": "Tom", "message": "Morning. Bread ready?"},
            {"from": "Mia", "message": "Can I have some?"},
            {"from": "Sophie", "message": "Of course."},
            {"from": "Tom", "message": "I'll pay for hers."},
            {"from": "Tom", "message": "And mine."},
        ],
        "setting after interaction": "Everyone has bread.",
    },
    {
        "setting": "A cave.",
        "characters": {"Echo": "a voice"},
        "conversation": [{"from": "Echo", "message": "Hello?"}, {"from": "Echo", "message": "?"}],
        "setting after interaction": "Silence.",
    },
]


def _hub_cfg(dataset_cfg, name: str, **hub_overrides):
    return dataset_cfg(name, **{f"hub.{k}": v for k, v in hub_overrides.items()})


def test_sharegpt_conversion_drops_and_counts(dataset_cfg, caplog) -> None:
    rows = datasets.Dataset.from_list(SHAREGPT_ROWS)
    cfg = _hub_cfg(dataset_cfg, "sharegpt")
    with caplog.at_level(logging.WARNING, logger="somabench.data.hub"):
        dialogues = convert_rows(rows, cfg)
    assert [d.id for d in dialogues] == ["sharegpt-abc_0", "sharegpt-abc_1"]
    first, second = dialogues
    assert first.turns == (
        Turn(user="Hello\n\nAre you there?", assistant="Yes."),
        Turn(user="Explain it again.", assistant=None),
    )
    assert first.meta["system"] == "Be brief."
    assert first.meta["source_id"] == "abc_0"
    assert first.meta["source"] == "hf:anon8231489123/ShareGPT_Vicuna_unfiltered"
    assert first.meta["license"].startswith("none stated")
    assert second.turns == (Turn(user="Write a haiku", assistant="Leaves fall\n\nsoftly"),)
    assert second.meta["assistant_opening"] == "Welcome!"
    assert "dropped 4 hub row(s)" in caplog.text
    for reason in ("no conversations", "no user message", "unknown speaker role", "duplicate id"):
        assert reason in caplog.text


@pytest.mark.parametrize(
    ("row_indices", "message"),
    [
        # error mode names the row that cannot be converted
        (None, r"ShareGPT_Vicuna_unfiltered row 2: cannot convert "
               r"with converter 'sharegpt': no conversations"),
        # duplicate ids name both rows
        ((0, -1), r"row 1: cannot convert with converter 'sharegpt': "
                  r"duplicate id \('sharegpt-abc_0': rows 0 and 1\)"),
    ],
    ids=["unconvertible-row", "duplicate-id"],
)
def test_sharegpt_error_mode_names_the_rows(dataset_cfg, row_indices, message) -> None:
    chosen = SHAREGPT_ROWS if row_indices is None else [SHAREGPT_ROWS[i] for i in row_indices]
    rows = datasets.Dataset.from_list(chosen)
    cfg = _hub_cfg(dataset_cfg, "sharegpt", on_unconvertible="error")
    with pytest.raises(DatasetError, match=message):
        convert_rows(rows, cfg)


def test_multichar_conversion(dataset_cfg) -> None:
    rows = datasets.Dataset.from_list(MULTICHAR_ROWS)
    cfg = _hub_cfg(dataset_cfg, "multichar", **{"options.scene_in_first_turn": False})
    (dialogue,) = convert_rows(rows, cfg)  # the one-speaker row is dropped
    assert dialogue.id == "multichar-000000"
    assert dialogue.turns == (
        Turn(user="Sophie: Morning, Tom!", assistant="Morning. Bread ready?"),
        Turn(
            user="Mia: Can I have some?\n\nSophie: Of course.",
            assistant="I'll pay for hers.\n\nAnd mine.",
        ),
    )
    meta = dialogue.meta
    assert meta["assistant_character"] == "Tom"
    # Arrow padded the struct with the other row's name; the converter removes it.
    assert meta["characters"] == {"Sophie": "a baker", "Tom": "a smith", "Mia": "a child"}
    assert meta["setting"] == "A village square."
    assert meta["setting_after"] == "Everyone has bread."
    assert meta["license"] == "cc-by-4.0"


def test_multichar_scene_in_first_turn(dataset_cfg) -> None:
    rows = datasets.Dataset.from_list(MULTICHAR_ROWS[:1])
    (dialogue,) = convert_rows(rows, dataset_cfg("multichar"))  # yaml: scene_in_first_turn true
    assert dialogue.turns[0].user == (
        "Setting: A village square.\nCharacters:\n- Sophie: a baker\n- Tom: a smith\n"
        "- Mia: a child\nYou are Tom.\n\nSophie: Morning, Tom!"
    )
    assert (
        dialogue.turns[1:]
        == convert_rows(
            rows, _hub_cfg(dataset_cfg, "multichar", **{"options.scene_in_first_turn": False})
        )[0].turns[1:]
    )


def test_turns_converter_round_trips_bundled_rows(dataset_cfg) -> None:
    import json

    from somabench.data.loaders import bundled_dir

    lines = (bundled_dir() / "tiny" / "mtbench101.jsonl").read_text().splitlines()
    rows = datasets.Dataset.from_list([json.loads(line) for line in lines])
    cfg = _hub_cfg(dataset_cfg, "remedi", path="someone/mtbench101-copy")
    converted = convert_rows(rows, cfg)
    bundled = load_dialogues(dataset_cfg("mtbench101", tiny=True), limit=None, seed=0)
    assert [(d.id, d.turns) for d in converted] == [(d.id, d.turns) for d in bundled]
    assert converted[0].meta["task"] == bundled[0].meta["task"]


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch) -> Path:
    """Arrow files ``load_dataset`` writes go to tmp (config only; the loader itself is real)."""
    cache = tmp_path / "hf_datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    return cache


def test_fixtures_hold_the_rows_the_conversion_tests_use() -> None:
    assert json.loads(SHAREGPT_JSON.read_text(encoding="utf-8")) == SHAREGPT_ROWS
    assert datasets.Dataset.from_parquet(str(MULTICHAR_PARQUET)).to_list() == \
        datasets.Dataset.from_list(MULTICHAR_ROWS).to_list()


def test_hub_loader_reads_a_sharegpt_json_dump_with_the_real_load_dataset(
        dataset_cfg, datasets_cache, caplog) -> None:
    cfg = dataset_cfg("sharegpt", min_turns=2, **{"hub.path": "json",
                                                  "hub.data_files": str(SHAREGPT_JSON)})
    with caplog.at_level(logging.WARNING, logger="somabench.data.hub"):
        dialogues = load_dialogues(cfg, limit=None, seed=0)
    assert [d.id for d in dialogues] == ["sharegpt-abc_0"]
    assert dialogues[0].turns == (
        Turn(user="Hello\n\nAre you there?", assistant="Yes."),
        Turn(user="Explain it again.", assistant=None),
    )
    assert dialogues[0].meta["source"] == "hf:json"
    assert "dropped 4 hub row(s)" in caplog.text
    assert any(datasets_cache.rglob("*.arrow"))  # the real builder ran


def test_hub_loader_reads_parquet_like_the_in_memory_conversion(dataset_cfg, datasets_cache) -> None:
    overrides = {"hub.path": "parquet", "hub.data_files": str(MULTICHAR_PARQUET)}
    loaded = load_dialogues(dataset_cfg("multichar", **overrides), limit=None, seed=0)
    in_memory = convert_rows(datasets.Dataset.from_list(MULTICHAR_ROWS), dataset_cfg("multichar"))
    assert [(d.id, d.turns) for d in loaded] == [(d.id, d.turns) for d in in_memory]
    assert loaded[0].meta["characters"] == {"Sophie": "a baker", "Tom": "a smith", "Mia": "a child"}


def test_unreachable_hub_is_a_clear_error(dataset_cfg, datasets_cache) -> None:
    """HF_HUB_OFFLINE=1 (tests/conftest.py): the real loader cannot reach the hub."""
    with pytest.raises(DatasetError, match=r"could not be loaded \(ConnectionError.*dataset=custom"):
        load_dialogues(dataset_cfg("multichar"), limit=None, seed=0)


def test_missing_data_file_is_a_clear_error(dataset_cfg, datasets_cache, tmp_path) -> None:
    cfg = dataset_cfg("sharegpt", **{"hub.path": "json",
                                     "hub.data_files": str(tmp_path / "nope.json")})
    with pytest.raises(DatasetError, match=r"could not be loaded \(FileNotFoundError.*nope.json"):
        load_dialogues(cfg, limit=None, seed=0)


def test_remedi_hub_without_path(dataset_cfg) -> None:
    with pytest.raises(DatasetError, match=r"dataset.hub.path is null for 'remedi'"):
        load_dialogues(dataset_cfg("remedi", loader="hub"), limit=None, seed=0)


def test_hub_config_errors(dataset_cfg) -> None:
    rows = datasets.Dataset.from_list(SHAREGPT_ROWS[:1])
    with pytest.raises(RegistryError, match="Did you mean 'sharegpt'"):
        convert_rows(rows, _hub_cfg(dataset_cfg, "sharegpt", converter="sharegtp"))
    with pytest.raises(DatasetError, match=r"options has unknown key\(s\) \['foo'\]"):
        convert_rows(rows, _hub_cfg(dataset_cfg, "sharegpt", options={"foo": 1}))
    with pytest.raises(DatasetError, match="on_unconvertible='skip'"):
        convert_rows(rows, _hub_cfg(dataset_cfg, "sharegpt", on_unconvertible="skip"))
    with pytest.raises(DatasetError, match="loader=hub but dataset.hub is None"):
        load_dialogues(dataset_cfg("mtbench", loader="hub"), limit=None, seed=0)
    with pytest.raises(DatasetError, match="tiny=true needs bundled data"):
        load_dialogues(dataset_cfg("sharegpt", tiny=True), limit=None, seed=0)
