"""Second opinion on every graded turn: HuggingFace math-verify (issue 23).

Why: a hand-written grader can be wrong in ways its own fixtures miss (the rel_tol bug graded
3.1416 as pi). math-verify is an independent implementation, with its own extraction (it reads
the whole reply, not our extracted answer) and its own LaTeX parser (latex2sympy2_extended on
the antlr 4.9.3 runtime omegaconf pins: the ``antlr4_9_3`` extra). The ``math_answer`` judge
records its verdict beside ours on every line (``correct_math_verify`` in ``raw``) and the
accuracy report states how often the two agree and lists where they do not. It is a second
opinion, not the score: accuracy stays the MATH-equivalence grade.

math-verify bounds its own parsing and comparison with ``signal.alarm``, which works only in a
process's main thread; so it runs in the grader's worker process
(:class:`~somabench.judges.math_equiv.SympyWorker`, op ``math_verify``), whose main thread
serves requests and whose deadline bounds the call as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from somabench.judges.math_equiv import SympyWorker, plain_unicode

DISTRIBUTION = "math-verify"
BOUNDED_STEPS = 3  # one grade = two parses and one comparison, each bounded by ``timeout``


def math_verify_version() -> str:
    """Installed math-verify version (part of the judge's request key): a new release may
    grade differently."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "missing"


def verify_reply(target: str, reply: str, target_is_gold: bool, timeout: int) -> dict[str, Any]:
    """(Runs in the worker.) math-verify's verdict on ``reply`` against ``target``: the gold
    answer (LaTeX without delimiters, wrapped in ``$...$``) or another reply (its own final
    answer is extracted). ``correct`` is None when math-verify finds nothing in the target."""
    from math_verify import parse, verify

    gold = parse(f"${target}$" if target_is_gold else plain_unicode(target),
                 parsing_timeout=timeout)
    pred = parse(plain_unicode(reply), parsing_timeout=timeout)
    return {"correct": bool(verify(gold, pred, timeout_seconds=timeout)) if gold and pred
            else (None if not gold else False),
            "answer": str(pred[-1]) if pred else None,
            "target": str(gold[-1]) if gold else None}


@dataclass
class MathVerifyGrader:
    """math-verify in its own worker process; ``grade`` never raises (a failure or a call past
    ``timeout`` seconds is ``{"correct": None, "error": ...}``, recorded, not guessed)."""

    timeout: float

    def __post_init__(self) -> None:
        self._worker = SympyWorker(self.timeout * BOUNDED_STEPS, ops=("math_verify",))
        self.version = math_verify_version()

    def grade(self, reply: str, target: str, target_is_gold: bool) -> dict[str, Any]:
        if self.version == "missing":
            return {"correct": None, "answer": None, "target": None,
                    "error": "math-verify is not installed (pip install -e .)"}
        timeouts = self._worker.timeouts
        # math-verify's own alarms get the whole budget of a parse; the worker deadline covers
        # both parses and the comparison
        out = self._worker.call("math_verify", target, reply, target_is_gold,
                                max(1, int(self.timeout)))
        if isinstance(out, dict):
            return out
        why = (f"ran past {self.timeout * BOUNDED_STEPS:g}s" if self._worker.timeouts > timeouts
               else "failed in the worker")
        return {"correct": None, "answer": None, "target": None, "error": f"math-verify {why}"}

    def close(self) -> None:
        self._worker.close()
