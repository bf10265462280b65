"""The strict score parsers: a number in range or unparsed, never a default."""

from __future__ import annotations

import pytest

from somabench.judges.parsing import parse_bracketed, parse_number, parse_score


@pytest.mark.parametrize("text,score", [
    ("0.7", 0.7), (" 1.0\n", 1.0), ("Score: 0.85", 0.85), ("score:0.3", 0.3), ("1.", 1.0),
    ("0", 0.0), (".5", 0.5), ("1", 1.0),
])
def test_number_accepts_a_lone_number(text: str, score: float) -> None:
    assert parse_number(text, 0.0, 1.0).score == pytest.approx(score)


@pytest.mark.parametrize("text", [
    "", "   ", "The answer is good: 0.8", "0.8 because it is correct", "0.7-0.9", "8/10",
    "0.5 0.6", "Score: high", "**0.8**", "nan", "inf",
])
def test_number_rejects_anything_else(text: str) -> None:
    parsed = parse_number(text, 0.0, 1.0)
    assert parsed.score is None and not parsed.ok and parsed.reason


@pytest.mark.parametrize("text", ["1.5", "-0.1", "7"])
def test_number_out_of_range_is_unparsed_not_clipped(text: str) -> None:
    parsed = parse_number(text, 0.0, 1.0)
    assert parsed.score is None and "outside" in parsed.reason


def test_bracketed_rating() -> None:
    assert parse_bracketed("Good recall of the name. Rating: [[8]]", 0, 10).score == 8.0
    assert parse_bracketed("[[ 6.5 ]]", 0, 10).score == 6.5
    assert parse_bracketed("[[7]] ... so [[7]]", 0, 10).score == 7.0  # same value twice is fine
    assert parse_bracketed("Rating: 8", 0, 10).score is None
    assert "conflicting" in parse_bracketed("[[3]] or [[9]]", 0, 10).reason
    assert "outside" in parse_bracketed("[[11]]", 0, 10).reason


def test_parse_score_dispatches_on_output_format() -> None:
    assert parse_score("0.4", "number", (0.0, 1.0)).score == 0.4
    assert parse_score("[[4]]", "bracketed", (0.0, 10.0)).score == 4.0
    with pytest.raises(ValueError, match="unknown output_format"):
        parse_score("1", "json", (0, 1))
