"""The record store: atomic dialogues, torn-line repair, no duplicates, schema guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from somabench.records import (
    SCHEMA_VERSION,
    DialogueRecord,
    RecordStore,
    TurnRecord,
    Usage,
    load_turns,
)


def turn(dialogue: str, t: int) -> TurnRecord:
    return TurnRecord(run_id="r", dialogue_id=dialogue, dataset="d", turn=t, method="m",
                      served_by="F", model_id="x", user="u", response="a", rendered_prompt="p",
                      prompt_hash="h", tokens={"F": Usage(3, 2)})


def dialogue(dialogue_id: str, n: int) -> DialogueRecord:
    return DialogueRecord(run_id="r", dialogue_id=dialogue_id, dataset="d", method="m", n_turns=n)


def test_roundtrip_and_usage_sum(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    store.append_dialogue([turn("a", 0), turn("a", 1)], dialogue("a", 2))
    turns = load_turns(tmp_path)
    assert [t.turn for t in turns] == [0, 1]
    assert turns[0].tokens["F"] == Usage(3, 2)
    assert (Usage(1, None) + Usage(None, None)) == Usage(1, None)
    assert Usage().total is None


def test_torn_line_and_unfinished_dialogue_are_repaired(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    store.append_dialogue([turn("a", 0)], dialogue("a", 1))
    with (tmp_path / "records.jsonl").open("a") as fh:  # crash: turns of b written, no dialogue line
        fh.write(json.dumps(turn("b", 0).to_json()) + "\n")
        fh.write('{"run_id": "r", "dialogue_id": "b", "tu')  # torn
    store = RecordStore(tmp_path)
    assert store.finished == {"a"}
    assert [(t.dialogue_id, t.turn) for t in load_turns(tmp_path)] == [("a", 0)]


def test_finished_dialogue_cannot_be_appended_twice(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    store.append_dialogue([turn("a", 0)], dialogue("a", 1))
    with pytest.raises(ValueError, match="already"):
        store.append_dialogue([turn("a", 0)], dialogue("a", 1))


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    data = turn("a", 0).to_json()
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ValueError, match="newer"):
        TurnRecord.from_json(data)


def test_records_csv_reads_back_without_options(tmp_path) -> None:
    """records.csv: no Python-repr dicts; nested fields are JSON text or their own columns."""
    import json as _json

    import pandas as pd

    from somabench.records import TurnRecord, Usage, flat_row

    rec = TurnRecord(run_id="r", dialogue_id="d", dataset="x", turn=0, method="soma", served_by="G+lora",
                     model_id="g", user="q", response="a", rendered_prompt="p", prompt_hash="0",
                     tokens={"G": Usage(5, 3, 0)}, seconds={"generate": 0.5},
                     gate={"phase": "gate", "score": 0.7, "scores": [0.1, 0.2]})
    path = tmp_path / "records.csv"
    pd.DataFrame([flat_row(rec.to_json())]).to_csv(path, index=False)
    back = pd.read_csv(path).iloc[0]
    assert back["tokens.G.prompt"] == 5 and back["tokens.G.completion"] == 3
    assert back["seconds.generate"] == 0.5
    assert _json.loads(back["gate"]) == {"phase": "gate", "score": 0.7, "scores": [0.1, 0.2]}


def test_cached_input_price_by_hand() -> None:
    """1000 prompt tokens of which 600 read from cache, 100 completion tokens; F at 0.10 per 1M
    prompt/completion and 0.01 cached: (400 x .10 + 600 x .01 + 100 x .10) / 1e6 = 5.6e-5.
    Without a cached rate every prompt token is fresh: (1000 + 100) x .10 / 1e6 = 1.1e-4."""
    import pytest

    from somabench.metrics import cost_stacks, dialogue_frame
    from somabench.records import DialogueRecord, Usage

    d = DialogueRecord(run_id="r", dialogue_id="d", dataset="x", method="original_prefix_cache",
                       n_turns=2, tokens={"F": Usage(1000, 100, 600)})
    frame = dialogue_frame([d])
    assert frame.loc[0, "tokens_F_cached_prompt"] == 600
    cached, _ = cost_stacks(frame, {"F": {"prompt": 0.10, "completion": 0.10, "cached_prompt": 0.01}})
    plain, _ = cost_stacks(frame, {"F": {"prompt": 0.10, "completion": 0.10}})
    assert cached.loc[0, "usd_total"] == pytest.approx(5.6e-5)
    assert plain.loc[0, "usd_total"] == pytest.approx(1.1e-4)
