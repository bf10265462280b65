"""Prompts are versioned data: every file loads, the paper's text is verbatim, rendering is exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from somabench.judges.prompting import (
    PROMPT_DIR,
    PromptError,
    available_prompts,
    load_prompt,
    prompt_from_dict,
)

ABILITIES = ("memory", "understanding", "interference", "rephrasing", "reflection",
             "reasoning", "questioning")
# Figure 4 of the SOMA paper (App. B.4), spot-checked phrases (PDF line numbers removed).
FIGURE4 = [
    "You are an impartial evaluator.",
    "You are evaluating the AI assistant's capabilities in solving a problem posed by 'Human'.",
    "3. Context Integration: Consider whether the assistant integrates relevant prior dialogue "
    "or context that influences the solution",
    "- 0.7-0.9: Correct answer with a well-articulated reasoning process that includes the "
    "necessary steps and promotes understanding",
    "- 0.0\u20130.3: Incorrect answer and/or poor reasoning that lacks clarity or logic.",
    "Only respond with a single score between 0.0 and 1.0. Do not include any explanation.",
    "Reference Solution:\n{reference}\nCandidate Answer:\n{candidate}\n\nScore:",
]


def test_every_prompt_file_loads_and_id_matches_stem() -> None:
    names = available_prompts()
    assert "similarity_v1" in names and "embedding_cosine_v1" in names
    assert {f"ability_{a}_v1" for a in ABILITIES} <= set(names)
    for name in names:
        prompt = load_prompt(name)
        assert prompt.id == name and prompt.sha and prompt.description


def test_similarity_v1_is_figure4() -> None:
    prompt = load_prompt("similarity_v1")
    for phrase in FIGURE4:
        assert phrase in prompt.template
    assert prompt.score_range == (0.0, 1.0) and prompt.output_format == "number"


def test_render_with_and_without_context() -> None:
    prompt = load_prompt("similarity_v1")
    [msg] = prompt.messages(question="What is 2+2?", reference="4", candidate="four")
    assert msg["role"] == "user"
    text = msg["content"]
    assert text.endswith("Human:\nWhat is 2+2?\n\nReference Solution:\n4\nCandidate Answer:\n"
                         "four\n\nScore:")
    assert "Prior dialogue" not in text
    [msg] = prompt.messages(question="And times 3?", reference="12", candidate="12",
                            context=[("What is 2+2?", "4")])
    assert "Prior dialogue (oldest first):\nHuman: What is 2+2?\nAssistant: 4\n\nHuman:\nAnd " \
           "times 3?" in msg["content"]


def test_user_text_with_braces_is_inserted_verbatim() -> None:
    prompt = load_prompt("similarity_v1")
    [msg] = prompt.messages(question="f(x) = {x}", reference="{reference}", candidate="{}")
    assert "f(x) = {x}" in msg["content"] and "Reference Solution:\n{reference}\n" in msg["content"]


def test_ability_prompt_is_reference_free_and_bracketed() -> None:
    prompt = load_prompt("ability_memory_v1")
    messages = prompt.messages(question="What was my name?", candidate="Ada", context=[])
    assert messages[0]["role"] == "system"
    assert "Context memory" in messages[1]["content"]
    assert "(none: this is the first turn)" in messages[1]["content"]
    assert prompt.output_format == "bracketed" and prompt.score_range == (0.0, 10.0)
    assert prompt.normalize(7.0) == pytest.approx(0.7)


def test_missing_required_input_is_an_error() -> None:
    with pytest.raises(PromptError, match="reference"):
        load_prompt("similarity_v1").messages(question="q", candidate="c")


def test_malformed_prompt_files_fail_loudly(tmp_path: Path) -> None:
    good = json.loads((PROMPT_DIR / "similarity_v1.json").read_text())
    with pytest.raises(PromptError, match="unknown field"):
        prompt_from_dict({**good, "temperature": 0}, "x.json")
    with pytest.raises(PromptError, match="placeholder"):
        prompt_from_dict({**good, "template": "{question} {answer}"}, "x.json")
    with pytest.raises(PromptError, match="no parser"):
        prompt_from_dict({**good, "output_format": "yaml"}, "x.json")
    with pytest.raises(PromptError, match="lo < hi"):
        prompt_from_dict({**good, "score_range": [1, 0]}, "x.json")
    with pytest.raises(PromptError, match="Did you mean 'similarity_v1'"):
        load_prompt("similarity_v2")
