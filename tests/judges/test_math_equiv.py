"""Final-answer extraction and MATH equivalence on hand-checked cases (issue 16).

``fixtures/math_cases.jsonl``: one (reply, gold, expected) per line, labelled by hand;
``expected`` is true/false, and ``"found": false`` marks a reply with no extractable final answer
(the judge grades it wrong and records it as not found). Comparisons are exact (issue 23):
20240 != 20241, 3.1416 != pi, 0.3333 != 1/3, 1.4142 != sqrt 2; a decimal gold admits answers
that round to it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from somabench.judges.math_equiv import (
    MathGrader,
    NotConvertible,
    extract_answer,
    last_boxed,
    latex_to_sympy,
    normalize_answer,
)

CASES = [json.loads(line) for line in
         (Path(__file__).parent / "fixtures" / "math_cases.jsonl").read_text().splitlines()
         if line.strip()]


@pytest.fixture(scope="module")
def grader(cfg_task_judge) -> MathGrader:
    spec = cfg_task_judge.judge.judges.answer
    with MathGrader(sympy_timeout=float(spec.sympy_timeout),
                    decimal_gold_rounding=bool(spec.decimal_gold_rounding)) as g:
        yield g


@pytest.fixture(scope="module")
def cfg_task_judge():
    from somabench.config import compose

    return compose(["judge=task"])


def test_fixture_is_large_and_covers_every_category() -> None:
    assert len(CASES) >= 40
    ids = " ".join(c["id"] for c in CASES)
    for kind in ("boxed", "nested", "frac", "interval", "units", "degrees", "pi", "matrix",
                 "plain", "wrong", "unextractable", "exact", "decimal_gold", "factorial",
                 "or_list", "unicode_minus", "log_base", "final_answer_markdown"):
        assert kind in ids, kind
    assert sum(c["expected"] is False for c in CASES) >= 15
    assert all(c["expected"] in (True, False) for c in CASES)  # no answer is wrong, not null


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case(case: dict, grader: MathGrader) -> None:
    extraction = extract_answer(case["reply"])
    if not case.get("found", True):
        assert not extraction.ok and extraction.answer is None and case["expected"] is False
        return
    assert extraction.ok, case["reply"]
    assert grader.equivalent(extraction.answer, case["gold"]) is case["expected"]


def test_last_boxed_keeps_nested_braces() -> None:
    assert last_boxed(r"a \boxed{1} b \boxed{\frac{\sqrt{3}}{2}} c") == r"\frac{\sqrt{3}}{2}"
    assert last_boxed(r"\boxed{\frac{1}{2}") is None  # never closes


def test_extraction_order_boxed_then_answer_is_then_last_number() -> None:
    assert extract_answer(r"7 and \boxed{5}. The answer is 6").method == "boxed"
    got = extract_answer("We try 3. So the answer is $x^2$. Check: 9 works.")
    assert (got.answer, got.method) == ("x^2", "answer_is")
    got = extract_answer("3 apples plus 4 apples make 7 apples")
    assert (got.answer, got.method) == ("7", "last_number")
    assert extract_answer("1,234 people came").answer == "1,234"
    assert extract_answer("so the probability is 1/3").answer == "1/3"  # a fraction, not 3
    assert extract_answer("values 1, 2, 3").answer == "3"  # a list is not one number


def test_normalisation_examples() -> None:
    assert normalize_answer(r"\$32,\!348") == "32348"
    assert normalize_answer(r"\left( 3, \frac{\pi}{2} \right)") == r"(3,\frac{\pi}{2})"
    assert normalize_answer(r"\dfrac{17}{50}") == r"\frac{17}{50}"
    assert normalize_answer("5.0") == "5"
    assert normalize_answer(r"30^\circ") == "30"
    assert normalize_answer(r"\text{(B)}") == "B"


def test_converter_whitelists_what_parse_expr_evaluates() -> None:
    assert latex_to_sympy(r"\frac{\sqrt{3}}{3}") == "((sqrt(3))/(3))"
    assert latex_to_sympy(r"1\frac{4}{5}") == "(1+Rational(4,5))"
    assert latex_to_sympy("6+9i") == "6+9I"
    for hostile in ("__import__(os)", "open(x).read()", "lambdax", r"\unknown{3}", "2.x"):
        with pytest.raises(NotConvertible):
            latex_to_sympy(hostile)


def test_pathological_expression_is_time_bounded() -> None:
    with MathGrader(sympy_timeout=2.0) as g:
        assert g.equivalent("2", "2")  # string path: no sympy
        # 10^(10^10) has ten billion digits: sympy would run for hours; the worker is killed
        assert g.equivalent(r"10^{10^{10}}", r"10^{10^{10}}+1") is False
        assert g.timeouts == 1
        assert g.equivalent(r"\sqrt{8}", r"2\sqrt{2}")  # the worker restarts after a kill


def test_last_number_fallback_can_be_turned_off() -> None:
    assert extract_answer("so far 2 points, then", last_number=False).answer is None
    assert extract_answer(r"\boxed{3}", last_number=False).answer == "3"


def test_bundled_solutions_match_their_gold_answers(grader: MathGrader) -> None:
    """Every MATH turn of the bundled mathmt: the boxed answer of the dataset's own solution
    is equivalent to ``meta.answers`` (480 real pairs: the grader's recall on true matches)."""
    import gzip

    from somabench.data.loaders import bundled_dir

    pairs = []
    with gzip.open(bundled_dir() / "mathmt.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            dialogue = json.loads(line)
            for turn, gold in zip(dialogue["turns"], dialogue["meta"].get("answers") or [],
                                  strict=False):
                pairs.append((turn["assistant"], gold))
    assert len(pairs) == 480
    misses = [(a[-80:], g) for a, g in pairs
              if not (e := extract_answer(a)).ok or not grader.equivalent(e.answer, g)]
    assert misses == []
    # precision: a solution graded against the NEXT turn's gold matches only equal golds
    false = [(g, nxt) for (a, g), (_, nxt) in zip(pairs, pairs[1:] + pairs[:1], strict=True)
             if grader.equivalent(extract_answer(a).answer, nxt)
             and normalize_answer(g) != normalize_answer(nxt)]
    assert false == []


def test_issue_23_extraction_cases() -> None:
    got = extract_answer(r"so we get \boxed{\frac{1}{2}")  # cut off before its closing brace
    assert (got.answer, got.method) == (r"\frac{1}{2}", "boxed_unclosed")
    assert extract_answer("so the total is \\boxed{").answer is None  # not the last number
    assert extract_answer("Thus.\n\n**Final Answer:** 12").answer == "12"
    assert extract_answer("The answer is \u22125.").answer == "-5"
    assert extract_answer("we get \u221212 apples", last_number=True).answer == "-12"


def test_issue_23_normalisation() -> None:
    assert normalize_answer(r"x = 2 \text{ or } x = 3") == "2,3"
    assert normalize_answer("x=1, y=2") == "x=1,y=2"  # a system's solution stays as written
    assert normalize_answer(r"\log_2 8") == r"\log_{2}8"  # base kept apart from the argument
    assert latex_to_sympy(r"\log_{2}8") == "log((8),(2))"
    assert latex_to_sympy("10!") == "factorial(10)"
    assert latex_to_sympy("0.3333") == "Rational(3333,10000)"  # exact, not a float


def test_decimal_gold_rounding_can_be_turned_off() -> None:
    with MathGrader(sympy_timeout=5.0, decimal_gold_rounding=False) as g:
        assert g.equivalent("3.14159", "3.14") is False
        assert g.equivalent("3.140", "3.14") is True  # still the same number
    with MathGrader(sympy_timeout=5.0) as g:
        assert g.equivalent("3.14159", "3.14") is True
        assert g.equivalent("3.14159", r"\pi") is False  # an exact gold wants the exact value
