"""Strict score parsers, one per prompt ``output_format``.

Why: FastChat's ``$ERROR$ -> -1`` averaged failures into results (lm-sys/FastChat#2074). Here a
reply either parses to a number inside the prompt's range or it does not; a reply that does
not is retried and finally recorded as ``unparsed`` with its raw text, never as a number.

Formats:

* ``number``: the whole reply is one number, optionally preceded by ``Score:`` and followed by
  a full stop (``0.7``, ``Score: 0.85``, ``1.``); anything else (prose, two numbers, a
  fraction) is unparsed.
* ``bracketed``: the reply contains exactly one rating in double square brackets, as in
  MT-Bench (``... Rating: [[7]]``); none, or two different ones, is unparsed.
* ``cosine``: not parsed from text (the embedding proxy computes its number).
* ``final_answer``: not parsed from text (the ``math_answer`` judge grades final answers).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_NUMBER_ONLY = re.compile(rf"^\s*(?:score\s*[:=]\s*)?({_NUMBER})\s*\.?\s*$", re.IGNORECASE)
_BRACKETED = re.compile(rf"\[\[\s*({_NUMBER})\s*\]\]")


@dataclass(frozen=True)
class Parsed:
    """A parse outcome: ``score`` when ok, else ``None`` with the ``reason``."""

    score: float | None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.score is not None


def _in_range(value: float, lo: float, hi: float) -> Parsed:
    if not math.isfinite(value):
        return Parsed(None, f"score {value} is not finite")
    if value < lo or value > hi:
        return Parsed(None, f"score {value:g} is outside the prompt's range [{lo:g}, {hi:g}]")
    return Parsed(value)


def parse_number(text: str, lo: float, hi: float) -> Parsed:
    match = _NUMBER_ONLY.match(text or "")
    if not match:
        return Parsed(None, "reply is not a single number")
    return _in_range(float(match.group(1)), lo, hi)


def parse_bracketed(text: str, lo: float, hi: float) -> Parsed:
    values = {float(m) for m in _BRACKETED.findall(text or "")}
    if not values:
        return Parsed(None, "no [[score]] in the reply")
    if len(values) > 1:
        return Parsed(None, f"conflicting [[score]] values {sorted(values)}")
    return _in_range(values.pop(), lo, hi)


def parse_cosine(text: str, lo: float, hi: float) -> Parsed:
    raise ValueError("the cosine format is computed by the embedding judge, not parsed")


def parse_final_answer(text: str, lo: float, hi: float) -> Parsed:
    raise ValueError("final answers are graded by the math_answer judge (judges/math_equiv.py)")


PARSERS: dict[str, Callable[[str, float, float], Parsed]] = {
    "number": parse_number,
    "bracketed": parse_bracketed,
    "cosine": parse_cosine,
    "final_answer": parse_final_answer,
}


def parse_score(text: str, output_format: str, score_range: tuple[float, float]) -> Parsed:
    """Parse ``text`` with the parser named by a prompt's ``output_format``."""
    if output_format not in PARSERS:
        raise ValueError(f"unknown output_format '{output_format}'; known: {sorted(PARSERS)}")
    lo, hi = score_range
    return PARSERS[output_format](text, lo, hi)
