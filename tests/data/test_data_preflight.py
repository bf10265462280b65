"""A turn longer than a model's context window fails before generation, or is truncated on request."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from somabench.data import DatasetError, load_dialogues
from somabench.data.preflight import check_context, context_window, find_oversized
from somabench.testing.fake import FakeBackend


def WindowedFake() -> FakeBackend:  # noqa: N802 - reads like the class it returns
    """The fake backend (tokens = whitespace words of the rendered prompt), 60-token window."""
    return FakeBackend(context_window=60)


def _write(tmp_path: Path, big_words: int) -> Path:
    turns = [{"user": "short question", "assistant": None},
             {"user": "word " * big_words, "assistant": None},
             {"user": "another short one", "assistant": None}]
    lines = [{"id": "small", "dataset": "custom", "turns": turns[:1]},
             {"id": "big", "dataset": "custom", "turns": turns}]
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in lines), encoding="utf-8")
    return path


def test_oversized_turn_fails_naming_dialogue_turn_tokens_and_limit(tmp_path, dataset_cfg) -> None:
    dialogues = load_dialogues(dataset_cfg("custom", path=str(_write(tmp_path, 200))),
                               limit=None, seed=0)
    backends = {"F": FakeBackend(), "G": WindowedFake()}  # F cannot say its window: skipped
    with pytest.raises(DatasetError) as info:
        check_context(dialogues, backends, max_new_tokens=8)
    message = str(info.value)
    assert "\n" not in message
    # 200 words + the fake chat template (rendered JSON) = 201 fake tokens
    assert message.startswith("dialogue 'big': field 'turns[1].user': turn 2 of 3 is 201 tokens "
                              "for G (1,000 characters)"), message
    assert "G's context window is 60 tokens with 8 kept for the answer" in message
    assert "at most 52 fit" in message
    assert info.value.field == "turns[1].user"
    # the suggested truncation, applied through the dataset config, makes the run fit
    chars = int(re.search(r"dataset\.truncate_chars=(\d+)$", message).group(1))
    cut = load_dialogues(dataset_cfg("custom", path=str(_write(tmp_path, 200)),
                                     truncate_chars=chars), limit=None, seed=0)
    check_context(cut, backends, max_new_tokens=8)
    assert cut[1].meta["truncated_chars"] == {"1": 1000}
    assert len(cut[1].turns[1].user) == chars
    assert cut[1].turns[0] == dialogues[1].turns[0]  # short turns untouched
    assert "truncated_chars" not in cut[0].meta


def test_truncate_chars_null_keeps_text_and_bad_value_is_rejected(tmp_path, dataset_cfg) -> None:
    path = str(_write(tmp_path, 30))
    (small, big) = load_dialogues(dataset_cfg("custom", path=path), limit=None, seed=0)
    assert big.turns[1].user == "word " * 30 and "truncated_chars" not in big.meta
    with pytest.raises(DatasetError, match=r"dataset.truncate_chars=0: expected null or an integer"):
        load_dialogues(dataset_cfg("custom", path=path, truncate_chars=0), limit=None, seed=0)


def test_unknown_window_or_token_count_is_skipped_not_guessed(tmp_path, dataset_cfg) -> None:
    dialogues = load_dialogues(dataset_cfg("custom", path=str(_write(tmp_path, 500))),
                               limit=None, seed=0)
    no_count = WindowedFake()
    no_count.count_tokens = lambda text: None  # an endpoint without a local tokenizer
    assert find_oversized(dialogues, "F", FakeBackend(), max_new_tokens=8) == []
    assert find_oversized(dialogues, "F", no_count, max_new_tokens=8) == []


def test_answer_budget_larger_than_window_is_an_error() -> None:
    with pytest.raises(DatasetError, match="generation.max_new_tokens=60 leaves no room"):
        find_oversized([], "G", WindowedFake(), max_new_tokens=60)


def test_run_fails_before_any_generation(tmp_path: Path) -> None:
    """Through the task: the run stops when F is built, before its first generate call."""
    from somabench.config import compose
    from somabench.task import run_task

    data = _write(tmp_path, 200)
    cfg = compose(["model.F.backend=testing.fake", "model.G.backend=testing.fake", "model.F.asset=null",
                   "model.G.asset=null", "+model.F.context_window=60",
                   "+model.G.context_window=60", "dataset=custom", f"dataset.path={data}",
                   "method=original", "judge=none", "progress=false", "logger=csv",
                   "generation.max_new_tokens=8", f"paths.output_root={tmp_path / 'outputs'}",
                   f"cache.path={tmp_path / 'cache' / 'requests.sqlite'}"])
    with pytest.raises(DatasetError, match=r"^dialogue 'big': field 'turns\[1\].user': turn 2"):
        run_task(cfg)
    assert not list((tmp_path / "outputs").rglob("records.jsonl"))


@pytest.mark.parametrize(("backend", "expected"), [
    (SimpleNamespace(context_window=lambda: 4096), 4096),
    (SimpleNamespace(llm=SimpleNamespace(llm_engine=SimpleNamespace(
        model_config=SimpleNamespace(max_model_len=2048)))), 2048),
    (SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(max_position_embeddings=8192)),
                     tokenizer=SimpleNamespace(model_max_length=int(1e30))), 8192),
    (SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(n_positions=1024))), 1024),
    (SimpleNamespace(tokenizer=SimpleNamespace(model_max_length=int(1e30))), None),
    (SimpleNamespace(_tokenizer=SimpleNamespace(model_max_length=131072)), 131072),
    (SimpleNamespace(), None),
])
def test_context_window_lookup(backend, expected) -> None:
    assert context_window(backend) == expected


def test_real_smollm2_tokenizer_and_config(smollm2_path: Path) -> None:
    """SmolLM2's own tokenizer and config.json (8192 positions), no weights loaded."""
    from transformers import AutoConfig, AutoTokenizer

    from somabench.data import Dialogue, Turn

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_path))
    backend = SimpleNamespace(
        model_id="smollm2", tokenizer=tokenizer,
        model=SimpleNamespace(config=AutoConfig.from_pretrained(str(smollm2_path))),
        render=lambda m: tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True),
        count_tokens=lambda t: len(tokenizer(t, add_special_tokens=False)["input_ids"]),
    )
    text = " hello" * 9000
    dialogue = Dialogue(id="long", dataset="custom", turns=(Turn("hi", None), Turn(text, None)))
    (found,) = find_oversized([dialogue], "G", backend, max_new_tokens=32)
    assert (found.dialogue, found.turn, found.window) == ("long", 1, 8192)
    assert 9000 < found.tokens < 9100  # one token per " hello" plus the chat template
    with pytest.raises(DatasetError, match=r"turn 2 of 2 is 9,0\d\d tokens for G .* 8,192 tokens"):
        check_context([dialogue], {"G": backend}, max_new_tokens=32)
