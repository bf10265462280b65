"""math-verify, the second MATH grader (issue 23): installed beside hydra without changing its
antlr runtime, run in the worker process, and its verdicts on the hand-labelled fixtures."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import pytest

from somabench.judges.math_verify_grader import MathVerifyGrader, math_verify_version

CASES = [json.loads(line) for line in
         (Path(__file__).parent / "fixtures" / "math_cases.jsonl").read_text().splitlines()
         if line.strip()]


@pytest.fixture(scope="module")
def second() -> MathVerifyGrader:
    g = MathVerifyGrader(timeout=5.0)
    yield g
    g.close()


def test_antlr_runtime_stays_the_one_omegaconf_pins() -> None:
    """The antlr4_9_3 extra: math-verify's LaTeX parser runs on omegaconf's runtime 4.9.x."""
    from latex2sympy2_extended import latex2sympy
    from omegaconf import OmegaConf

    assert version("antlr4-python3-runtime").startswith("4.9.")
    assert math_verify_version() == "0.9.0"  # the pin in pyproject.toml
    assert str(latex2sympy(r"\frac{1}{2}")) == "1/2"  # the antlr parser works on 4.9
    assert OmegaConf.create({"a": "${b}", "b": 3}).a == 3  # and so does omegaconf's grammar


@pytest.mark.parametrize(("reply", "gold", "correct", "answer"), [
    (r"\boxed{20240}", "20241", False, "20240"),
    (r"\boxed{10!}", "3628800", True, "10!"),
    (r"\boxed{\log_2 8}", "3", True, r"\log_{2}{8}"),
    ("**Final Answer:** 12", "12", True, "12"),
    ("The answer is \u22125.", "-5", True, "-5"),  # Unicode minus: we map it before parsing
    ("I am not sure how to solve this problem.", "8", False, None),
])
def test_verdicts_on_the_issue_cases(second: MathVerifyGrader, reply: str, gold: str,
                                     correct: bool, answer: str | None) -> None:
    out = second.grade(reply, gold, target_is_gold=True)
    assert (out["correct"], out["answer"]) == (correct, answer)


def test_reference_reply_as_target(second: MathVerifyGrader) -> None:
    """answer_agreement: the Original's whole reply is the target; math-verify extracts both."""
    assert second.grade(r"so \boxed{\frac{1}{2}}", r"We get $0.5$, i.e. \boxed{\frac12}",
                        target_is_gold=False)["correct"] is True
    out = second.grade(r"\boxed{3}", "I have no idea.", target_is_gold=False)
    assert out["correct"] is None and out["target"] is None  # nothing to compare with


def test_fixture_agreement_is_measured_not_assumed(second: MathVerifyGrader) -> None:
    """Every hand-labelled case gets a math-verify verdict; where it differs from the label is
    listed (the exact grader matches every label: test_math_equiv.py::test_case)."""
    verdicts = {c["id"]: second.grade(c["reply"], c["gold"], target_is_gold=True)["correct"]
                for c in CASES}
    assert all(v in (True, False, None) for v in verdicts.values())
    agree = sum(verdicts[c["id"]] is c["expected"] for c in CASES)
    misses = sorted(c["id"] for c in CASES if verdicts[c["id"]] is not c["expected"])
    assert agree + len(misses) == len(CASES)
    # no extractable answer is wrong for math-verify too
    assert all(verdicts[c["id"]] is not True for c in CASES if c.get("found") is False)
    print(f"math-verify agrees with {agree}/{len(CASES)} labels; differs on {misses}")
