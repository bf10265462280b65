"""Final-answer extraction and MATH answer equivalence (judge-free accuracy, issue 16).

Why: on datasets with gold answers (MATH-500 sessions in ``dataset=mathmt``) a method's quality
can be measured without any judge: did it reach the right final answer, and the same one as the
Original? Researchers trust these numbers because the established graders define them; this
module follows their conventions (own code, read for the approach):

* EleutherAI/lm-evaluation-harness ``lm_eval/tasks/minerva_math/utils.py``:
  ``last_boxed_only_string`` / ``remove_boxed`` (last ``\\boxed{}`` with brace matching, also
  ``\\fbox``), ``normalize_final_answer`` (the unit words and LaTeX spacing it deletes, ``\\text``
  unwrapping, ``\\sqrt3``/``\\frac12`` shorthand, thousands separators) and ``is_equiv``
  (normalised strings, then sympy equality of the two sides, time-bounded);
* ZubinGou/math-evaluation-harness ``grader.py`` / ``parser.py``: ``strip_string`` (``\\left``/
  ``\\right``, ``dfrac``/``tfrac``, degrees, ``\\%``, ``x=`` and ``x \\in`` prefixes, ``.5`` ->
  ``0.5``, trailing ``.0``), ``extract_answer`` (boxed, else "the answer is", else the last
  number) and ``math_equal`` (string, numeric with relative tolerance and percentage variants,
  elementwise for tuples, intervals and matrices, then symbolic).

Differences, on purpose: (1) an answer nothing can be extracted from is reported as such
(``Extraction.answer is None``); the judge grades it wrong and records it as not found, so the
found-rate can stand beside accuracy. (2) Exact (issue 23): no relative tolerance (theirs, 1e-4,
graded 3.1416 as pi and 20240 as 20241); numbers compare as fractions, decimals enter sympy as
exact rationals, and only a gold written as a decimal with k places admits answers that round to
it. (3) LaTeX is converted to a sympy expression by a small converter here (``latex_to_sympy``),
not by sympy's ``parse_latex`` (needs an antlr4 runtime matching sympy's; the one pinned by
omegaconf does not), and the converted text is whitelisted before sympy's ``parse_expr`` (which
calls ``eval``) sees model output; math-verify, which does parse LaTeX on omegaconf's runtime,
is the second opinion (``math_verify_grader``). (4) sympy runs in a separate worker process with
a deadline (``SympyWorker``): a pathological expression (``10^{10^{10}}``) is killed, not waited
for, and the comparison is ``None`` (undecided) rather than a guess. (5) Bare comma lists
(``1, -2`` as the solutions of an equation) compare as multisets; bracketed tuples and
intervals compare in order, bracket types included.
"""

from __future__ import annotations

import json
import logging
import re
import select
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

log = logging.getLogger(__name__)

GRADER_VERSION = 2  # bump when extraction or equivalence changes meaning (judge request keys)

# Words deleted from answers, from minerva_math's REMOVED_EXPRESSIONS (lm-evaluation-harness)
# plus math-evaluation-harness's unit list (strip_string); matched as whole words.
UNIT_WORDS = (
    "square", "ways", "integers", "dollars", "dollar", "mph", "inches", "inch", "ft", "feet",
    "foot", "hours", "hour", "km", "units", "unit", "points", "point", "minutes", "minute",
    "digits", "digit", "cents", "cent", "degrees", "degree", "cm", "gm", "pounds", "pound",
    "meters", "meter", "meals", "edges", "students", "childrentickets", "multiples", "seconds",
    "second", "days", "day", "weeks", "week", "years", "year", "miles", "mile", "sq", "grams",
    "gram", "kg", "liters", "liter", "ounces", "ounce", "people", "percent", "cups", "cup",
)
# LaTeX spacing / decoration with no mathematical meaning (minerva SUBSTITUTIONS and
# REMOVED_EXPRESSIONS, math-evaluation-harness strip_string).
NOISE = ("\\!", "\\,", "\\;", "\\:", "\\ ", "~", "\\displaystyle", "\\mathrm{th}", "\\ldots",
         "\\dots", "\\cdots", "{,}", "\\quad", "\\qquad")
SYMPY_FUNCTIONS = ("sqrt", "log", "sin", "cos", "tan", "cot", "sec", "csc", "asin", "acos",
                   "atan", "exp", "Abs", "pi", "oo", "I", "E", "Rational", "binomial",
                   "factorial")
LATEX_FUNCTIONS = {"\\sin": "sin", "\\cos": "cos", "\\tan": "tan", "\\cot": "cot",
                   "\\sec": "sec", "\\csc": "csc", "\\arcsin": "asin", "\\arccos": "acos",
                   "\\arctan": "atan", "\\ln": "log", "\\log": "log", "\\exp": "exp"}


# -- extraction --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Extraction:
    """The final answer found in a reply: ``answer`` (raw LaTeX) and how it was found
    (``boxed`` | ``answer_is`` | ``last_number``); ``answer is None`` when nothing was found."""

    answer: str | None
    method: str | None

    @property
    def ok(self) -> bool:
        return self.answer is not None


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """Content of the ``{...}`` group opening at ``text[start]`` (nested braces) and the index
    after its closing brace; ``None`` if unbalanced."""
    if start >= len(text) or text[start] != "{":
        return None
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{" and (i == 0 or text[i - 1] != "\\"):
            depth += 1
        elif text[i] == "}" and (i == 0 or text[i - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i + 1
    return None


def _boxes(text: str) -> list[tuple[str, bool]]:
    """Every ``\\boxed``/``\\fbox`` in order: (content, closed). An unclosed ``\\boxed{`` (a
    reply cut off or missing a brace) holds the rest of the text."""
    out: list[tuple[str, bool]] = []
    for match in re.finditer(r"\\(?:boxed|fbox)\s*", text):
        end = match.end()
        if end < len(text) and text[end] == "{":
            group = _braced(text, end)
            out.append((group[0].strip(), True) if group is not None
                       else (text[end + 1:].strip().rstrip("$").strip(), False))
        elif match.group(0).endswith(" "):
            out.append((re.split(r"[\s$]", text[end:], maxsplit=1)[0].strip(), True))
    return out


def last_boxed(text: str) -> str | None:
    """Content of the last closed ``\\boxed{...}`` / ``\\fbox{...}`` (or ``\\boxed 5``), nested
    braces kept; ``None`` when there is none."""
    closed = [content for content, ok in _boxes(text) if ok]
    return closed[-1] if closed else None


# "the answer is X", "Final Answer: X", "**Final Answer:** X" (markdown emphasis around either part)
_ANSWER_IS = re.compile(
    r"(?:final answer|the answer|answer)[*_]*\s*(?:is|:)[*_:\s]*(.+?)(?:\.\s|\.$|\n|$)",
    re.IGNORECASE | re.DOTALL)
# the last number: a fraction a/b, a number with thousands separators, a decimal or an integer
_NUMBER = re.compile(r"-?\d+/\d+|-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?|-?\.\d+")
# Unicode a model may write instead of LaTeX (U+2212 minus sign first of all)
UNICODE_MATH = {"\u2212": "-", "\u00d7": "\\times ", "\u00b7": "\\cdot ", "\u22c5": "\\cdot ",
                "\u00f7": "\\div ", "\u03c0": "\\pi ", "\u221e": "\\infty ", "\u2264": "\\le ",
                "\u2265": "\\ge ", "\u2260": "\\ne ", "\u221a": "\\sqrt", "\u00b2": "^2",
                "\u00b3": "^3", "\u00a0": " ", "\u2009": " ", "\u202f": " "}
_UNICODE_TABLE = str.maketrans(UNICODE_MATH)


def plain_unicode(text: str) -> str:
    """Unicode math symbols as the ASCII/LaTeX the rest of the grader reads."""
    return text.translate(_UNICODE_TABLE)


def _unwrap_math(text: str) -> str:
    text = text.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if text.startswith(left) and text.endswith(right) and len(text) > len(left) + len(right):
            return text[len(left):-len(right)].strip()
    return text.strip("$ ").strip()


def extract_answer(reply: str | None, last_number: bool = True) -> Extraction:
    """The reply's final answer: the last ``\\boxed{}`` (an unclosed last one: the text after
    it, ``boxed_unclosed``), else the last "the answer is X" / "Final Answer: X", else
    (``last_number``) the last number (math-evaluation-harness ``extract_answer`` order).
    Without the last-number fallback a reply cut off before its answer is unextractable
    instead of being graded on an intermediate number; an unclosed box is never replaced by
    a number inside it (``\\boxed{\\frac{1}{2}`` is 1/2, not 2)."""
    if not reply or not reply.strip():
        return Extraction(None, None)
    reply = plain_unicode(reply)
    boxes = _boxes(reply)
    if boxes:
        content, closed = boxes[-1]
        if content:
            return Extraction(content, "boxed" if closed else "boxed_unclosed")
        if not closed:
            return Extraction(None, None)  # cut off right after "\boxed{"
    stated = [m.group(1) for m in _ANSWER_IS.finditer(reply)]
    for candidate in reversed(stated):
        candidate = _unwrap_math(candidate.strip().rstrip(".").strip("*_ ").rstrip("."))
        if candidate and re.search(r"[\w\\]", candidate):
            return Extraction(candidate, "answer_is")
    numbers = _NUMBER.findall(reply) if last_number else []
    if numbers:
        return Extraction(numbers[-1], "last_number")
    return Extraction(None, None)


# -- normalisation -----------------------------------------------------------------------------
def _replace_command(text: str, command: str, render: Callable[[str], str]) -> str:
    """Replace every ``\\command{arg}`` (nested braces) by ``render(arg)``."""
    out, i = [], 0
    pattern = re.compile(re.escape(command) + r"\s*(?=\{)")
    while True:
        match = pattern.search(text, i)
        if not match:
            out.append(text[i:])
            return "".join(out)
        group = _braced(text, match.end())
        if group is None:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:match.start()])
        out.append(render(group[0]))
        i = group[1]


def _fix_shorthand(text: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac 34`` -> ``\\frac{3}{4}``, ``\\frac9{19}``,
    ``\\sqrt3`` -> ``\\sqrt{3}`` (minerva ``fix_fracs`` / ``fix_sqrt``)."""
    text = re.sub(r"\\sqrt\s*(\w)", r"\\sqrt{\1}", text)
    text = re.sub(r"\\frac\s*(\w)\s*(\w)", r"\\frac{\1}{\2}", text)
    text = re.sub(r"\\frac\s*(\w)\s*(?=\{)", r"\\frac{\1}", text)
    text = re.sub(r"\\frac\s*(\{[^{}]*\})\s*(\w)", r"\\frac\1{\2}", text)
    return text


def _strip_units(text: str) -> str:
    words = "|".join(sorted(UNIT_WORDS, key=len, reverse=True))
    text = re.sub(rf"(?<![A-Za-z\\])(?:{words})(?:\s*\^\s*\{{?\d\}}?)?(?![A-Za-z])", "", text,
                  flags=re.IGNORECASE)
    return text


ROW = "\x02"  # placeholder for a LaTeX row break while normalising
_VARIABLE = re.compile(r"\s*([A-Za-z](?:_\{?\w+\}?)?)\s*=(.*)", re.DOTALL)


def _strip_variable(s: str) -> str:
    """``x = 5`` -> ``5``; ``x=2,x=3`` (solutions of one equation, "x=2 or x=3") -> ``2,3``.
    A list naming different variables (``x=1,y=2``) is a system's solution and is kept."""
    if s.count("=") == 1:
        match = _VARIABLE.fullmatch(s)
        return match.group(2) if match else s
    parts = _split_top(s, ",")
    matches = [_VARIABLE.fullmatch(p) for p in parts]
    if len(parts) > 1 and all(m and "=" not in m.group(2) for m in matches) \
            and len({m.group(1) for m in matches if m}) == 1:
        return ",".join(m.group(2) for m in matches if m)
    return s


def normalize_answer(answer: str | None) -> str | None:
    """A canonical string for a final answer (strip_string + normalize_final_answer):
    LaTeX noise, ``\\text``, units, degrees, dollars, percent signs, ``x =``/``x \\in``
    prefixes, thousands separators and trailing ``.0`` removed; ``dfrac``/``tfrac`` -> ``frac``."""
    if answer is None:
        return None
    s = plain_unicode(str(answer)).strip()
    s = last_boxed(s) or s
    s = _unwrap_math(s)
    s = s.replace("\n", " ").replace("\\\\", ROW).strip()  # matrix rows survive "\ " removal
    s = re.sub(r"\\(?:d|t)frac", r"\\frac", s)
    s = re.sub(r"\\(?:d|t)binom", r"\\binom", s)
    s = s.replace("\\left", "").replace("\\right", "")
    s = re.sub(r"\\(?:big|Big|bigg|Bigg)[lr]?", "", s)
    for noise in NOISE:
        s = s.replace(noise, " " if noise in ("\\ ", "~", "\\quad", "\\qquad") else "")
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|°|\\degree|\\circ", "", s)
    s = s.replace("\\%", "%").replace("\\$", "").replace("$", "")
    s = _replace_command(s, "\\text", lambda a: " " + a + " ")
    s = _replace_command(s, "\\textbf", lambda a: a)
    s = _replace_command(s, "\\mbox", lambda a: " " + a + " ")
    s = _replace_command(s, "\\mathrm", lambda a: a)
    s = _replace_command(s, "\\mathbf", lambda a: a)
    s = _replace_command(s, "\\operatorname", lambda a: a)
    s = _strip_units(s)
    s = s.replace("%", "")
    s = s.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    s = re.sub(r"\^\s*\{\s*\}", "", s)  # "\text{}^2" left by removed units
    s = s.replace(" and ", ",").replace("\\text{and}", ",").replace(" or ", ",")
    s = _fix_shorthand(s)
    s = s.strip().rstrip(".").strip()
    # "x = 5" -> "5", "x \in [-2, 7]" -> "[-2, 7]" (a short variable name on the left)
    s = re.sub(r"^\s*[A-Za-z](?:_\{?\w+\}?)?\s*\\in\s*", "", s)
    s = _strip_variable(s)
    s = re.sub(r"\\log_\s*([^\s{])", r"\\log_{\1}", s)  # "\log_2 8": the base is one token
    s = re.sub(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])", "\\1\x01", s)  # "\cot x" keeps its space
    s = re.sub(r"\s+", "", s).replace("\x01", " ").replace(ROW, "\\\\")
    s = re.sub(r"(?<!\\log)_\{(\w+)\}", r"_\1", s)  # 4210_{5} -> 4210_5
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):  # 58,500 -> 58500
        s = s.replace(",", "")
    s = re.sub(r"(?<![\d.])\.(\d)", r"0.\1", s)  # .5 -> 0.5
    s = re.sub(r"^(-?\d+)\.0+$", r"\1", s)  # 5.0 -> 5
    s = re.sub(r"^(-?\d+\.\d*?)0+$", r"\1", s)  # 2.50 -> 2.5
    if re.fullmatch(r"\(?\\text\{?\(?([A-Ea-e])\)?\}?\)?|\(([A-Ea-e])\)", s):  # "(C)" -> "C"
        s = re.sub(r"[^A-Ea-e]", "", s)
    if re.fullmatch(r"[A-Za-z]{2,}", s):  # words compare case-insensitively ("Evelyn")
        s = s.lower()
    return s


# -- LaTeX -> sympy text -----------------------------------------------------------------------
_SAFE = re.compile(r"[0-9A-Za-z+\-*/().,\s]*")
MAX_SYMBOL_PRODUCT = 3  # "xyz" is read as x*y*z; a longer letter run is prose
_IDENT = re.compile(r"[A-Za-z_]\w*")


class NotConvertible(ValueError):
    """The answer is not an expression this converter understands (compare as strings)."""


def _convert(s: str, expr: str) -> str:
    """Recursive part of ``latex_to_sympy``: ``\\frac{}{}``, ``\\sqrt[n]{}``, ``{}`` groups."""
    out, i = [], 0
    while i < len(s):
        two = next((c for c in TWO_ARGUMENTS if s.startswith(c, i)), None)
        if two is not None:
            first = _braced(s, _skip_spaces(s, i + len(two)))
            second = _braced(s, _skip_spaces(s, first[1])) if first else None
            if first is None or second is None:
                raise NotConvertible(expr)
            out.append(TWO_ARGUMENTS[two].format(_convert(first[0], expr),
                                                 _convert(second[0], expr)))
            i = second[1]
        elif s.startswith("\\log_", i):  # \log_{b} x -> log(x, b)
            base = _braced(s, i + len("\\log_"))
            if base is None:
                raise NotConvertible(expr)
            arg, i = _log_argument(s, _skip_spaces(s, base[1]), expr)
            out.append(f"log(({_convert(arg, expr)}),({_convert(base[0], expr)}))")
        elif s.startswith("\\sqrt", i):
            j, index = _skip_spaces(s, i + len("\\sqrt")), None
            if j < len(s) and s[j] == "[":
                close = s.find("]", j)
                if close < 0:
                    raise NotConvertible(expr)
                index, j = s[j + 1:close], _skip_spaces(s, close + 1)
            group = _braced(s, j)
            if group is None:
                raise NotConvertible(expr)
            inner = _convert(group[0], expr)
            out.append(f"sqrt({inner})" if index is None
                       else f"(({inner})**(1/({_convert(index, expr)})))")
            i = group[1]
        elif s[i] == "{":
            group = _braced(s, i)
            if group is None:
                raise NotConvertible(expr)
            out.append("(" + _convert(group[0], expr) + ")")
            i = group[1]
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


TWO_ARGUMENTS = {"\\frac": "(({})/({}))", "\\binom": "binomial(({}),({}))"}


def _log_argument(s: str, i: int, expr: str) -> tuple[str, int]:
    """The argument of ``\\log_{b}`` at ``s[i]``: a ``{}`` group, a ``()`` group, a number or
    one letter; (argument, index after it)."""
    group = _braced(s, i)
    if group is not None:
        return group
    if i < len(s) and s[i] == "(":
        depth = 0
        for j in range(i, len(s)):
            depth += 1 if s[j] == "(" else -1 if s[j] == ")" else 0
            if depth == 0:
                return s[i + 1:j], j + 1
        raise NotConvertible(expr)
    token = re.match(r"\d+(?:\.\d+)?|[A-Za-z]", s[i:])
    if token is None:
        raise NotConvertible(expr)
    return token.group(0), i + token.end()


def _skip_spaces(s: str, i: int) -> int:
    while i < len(s) and s[i] == " ":
        i += 1
    return i


def _identifier(match: re.Match[str]) -> str:
    name = match.group(0)
    if name in SYMPY_FUNCTIONS or len(name) == 1:
        return name
    if len(name) <= MAX_SYMBOL_PRODUCT and name.isalpha():
        return "*".join(name)  # "xy" is a product of symbols
    raise NotConvertible(name)  # longer words are prose, not an expression


def latex_to_sympy(expr: str) -> str:
    """sympy ``parse_expr`` text for a normalised LaTeX expression, or ``NotConvertible``.

    Handles ``\\frac``, ``\\sqrt[n]{}``, ``^``, ``\\cdot``/``\\times``/``\\div``, ``\\pi``,
    ``\\infty``, ``i`` (imaginary unit), trig/log names, mixed numbers (``1\\frac{4}{5}``) and
    implicit products; anything else (``\\pm``, relations, subscripts, prose) raises. Because
    ``parse_expr`` evaluates its input, the result may hold only digits, decimal points between
    digits, operators, parentheses, single-letter symbols and ``SYMPY_FUNCTIONS``.
    """
    if re.search(r"\\pm|\\mp|(?<!\\log)_|\\cup|=|<|>|\\le|\\ge|\\ne", expr):
        raise NotConvertible(expr)
    mixed = re.fullmatch(r"(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}", expr)
    if mixed:
        sign, whole, num, den = mixed.groups()
        return f"{sign}({whole}+Rational({num},{den}))"
    s = _convert(expr, expr)
    s = re.sub(r"(\d+|\b[A-Za-z])!", r"factorial(\1)", s)  # 10! (before "!" is rejected)
    for latex, name in sorted(LATEX_FUNCTIONS.items(), key=lambda kv: -len(kv[0])):
        s = s.replace(latex, " " + name + " ")
    s = (s.replace("\\cdot", "*").replace("\\times", "*").replace("\\div", "/")
         .replace("\\pi", " pi ").replace("\\infty", " oo ").replace("[", "(").replace("]", ")")
         .replace("^", "**"))
    if "\\" in s or not _SAFE.fullmatch(s) or re.search(r"\.(?!\d)|(?<!\d)\.", s):
        raise NotConvertible(expr)
    s = _IDENT.sub(_identifier, s)
    s = re.sub(r"\d+\.\d+", _exact_decimal, s)  # 0.3333 is 3333/10000, not a float near 1/3
    return re.sub(r"(?<![A-Za-z])i(?![A-Za-z])", "I", s)


def _exact_decimal(match: re.Match[str]) -> str:
    whole, frac = match.group(0).split(".")
    return f"Rational({int(whole + frac)},{10 ** len(frac)})"


# -- sympy in a worker process with a deadline -------------------------------------------------
EXACT_DIGITS = 50  # constants sympy cannot simplify to 0 are compared at this many digits
EXACT_EPS = 1e-40  # ... and count as equal below this relative difference (an exact identity)


def _sympy_equal(a: str, b: str, places: int | None) -> bool | None:
    """True/False when sympy decides ``a == b``; None when either side does not parse.

    ``places`` None: exact (sympy proves it, or two constants agree to ``EXACT_DIGITS`` digits:
    an identity sympy cannot simplify, like nested radicals). ``places`` k: ``b`` is a decimal
    gold with k places, and ``a`` matches when it rounds to it (|a - b| <= 0.5 * 10^-k)."""
    from sympy import N, Rational, Symbol, simplify
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    transformations = standard_transformations + (implicit_multiplication_application,
                                                  convert_xor)
    # every letter is a plain symbol (not sympy's E, N, S, O, Q); "I" is the imaginary unit
    symbols = {c: Symbol(c) for c in set(re.findall(r"(?<![A-Za-z])[A-Za-z](?![A-Za-z])",
                                                    a + " " + b)) if c != "I"}
    try:
        x = parse_expr(a, local_dict=dict(symbols), transformations=transformations)
        y = parse_expr(b, local_dict=dict(symbols), transformations=transformations)
    except Exception:  # noqa: BLE001 - unparsable text is "undecided", not an error
        return None
    try:
        if places is not None:
            if x.free_symbols or y.free_symbols:
                return False
            return bool(abs(complex(N(x - y, EXACT_DIGITS))) <= float(Rational(1, 2 * 10 ** places)))
        if x == y or simplify(x - y) == 0:
            return True
    except Exception:  # noqa: BLE001
        pass
    try:
        if x.free_symbols or y.free_symbols:
            return bool(x.equals(y))
        diff = abs(complex(N(x - y, EXACT_DIGITS)))
        return diff <= EXACT_EPS * max(abs(complex(N(y, EXACT_DIGITS))), 1.0)
    except Exception:  # noqa: BLE001
        return False


# what the worker process can run: op name -> function (or "module:function", imported there)
WORKER_OPS: dict[str, Callable[..., object] | str] = {
    "equal": _sympy_equal,
    "math_verify": "somabench.judges.math_verify_grader:verify_reply",
}
READY = "ready"


def _resolve(op: str) -> Callable[..., object]:
    target = WORKER_OPS[op]
    if callable(target):
        return target
    import importlib

    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def serve_worker(ops: list[str]) -> None:
    """The worker process: imports its ``ops`` (so the first deadline does not pay for them),
    says ``ready``, then serves one JSON request ``[op, args]`` per stdin line with one JSON
    reply per stdout line."""
    import sympy  # noqa: F401 - the import is the slow part of the first comparison

    funcs = {op: _resolve(op) for op in ops}
    sys.stdout.write(json.dumps(READY) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        try:
            op, args = json.loads(line)
            reply = funcs[op](*args)
        except Exception:  # noqa: BLE001 - keep serving; the caller sees "undecided"
            reply = None
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


class SympyWorker:
    """One long-lived ``python`` process that runs sympy comparisons (``WORKER_OPS``); a call
    past ``timeout`` seconds kills it (it restarts on the next call) and returns ``None``
    (undecided). Starting it (python + imports) has its own allowance, ``startup_timeout``.

    Why a process and not ``signal.alarm`` (minerva's ``timeout``): an alarm only works in the
    main thread and cannot interrupt big-integer arithmetic in C, which is what hangs. Why a
    plain subprocess and not ``multiprocessing``: spawn re-imports the caller's main script.
    """

    def __init__(self, timeout: float, ops: tuple[str, ...] = ("equal",),
                 startup_timeout: float = 120.0) -> None:
        self.timeout = float(timeout)
        self.ops = list(ops)
        self.startup_timeout = float(startup_timeout)
        self._proc: subprocess.Popen[str] | None = None
        self.timeouts = 0

    def _start(self) -> subprocess.Popen[str] | None:
        code = (f"from somabench.judges.math_equiv import serve_worker; "
                f"serve_worker({self.ops!r})")
        proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, bufsize=1)
        self._proc = proc
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], self.startup_timeout)
        if not ready or proc.stdout.readline().strip() != json.dumps(READY):
            log.warning("the grader worker did not start within %.0fs", self.startup_timeout)
            self.close()
            return None
        return proc

    def call(self, op: str, *args: object) -> object:
        """``op(*args)`` in the worker; ``None`` when it failed or ran past the deadline."""
        proc = self._proc if self._proc is not None and self._proc.poll() is None \
            else self._start()
        if proc is None:
            return None
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps([op, list(args)]) + "\n")
            proc.stdin.flush()
        except OSError:
            self.close()
            return None
        ready, _, _ = select.select([proc.stdout], [], [], self.timeout)
        if ready:
            line = proc.stdout.readline()
            if line:
                return json.loads(line)
            self.close()
            return None
        log.warning("%s took longer than %.1fs on %r; undecided", op, self.timeout,
                    [str(a)[:80] for a in args])
        self.timeouts += 1
        self.close()
        return None

    def equal(self, a: str, b: str, places: int | None) -> bool | None:
        reply = self.call("equal", a, b, places)
        return reply if isinstance(reply, bool) else None

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


# -- equivalence -------------------------------------------------------------------------------
def _to_fraction(s: str) -> Fraction | None:
    """The exact value of an integer, decimal, ``a/b`` or ``\\frac{a}{b}`` of numbers; else None."""
    if "_" in s:  # Fraction() reads "4210_5" as 42105; a subscript is a base, not a number
        return None
    frac = re.fullmatch(r"(-?)\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}", s)
    try:
        if frac is not None:
            sign, num, den = frac.groups()
            value = Fraction(num) / Fraction(den)
            return -value if sign else value
        if re.fullmatch(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:/\d+(?:\.\d+)?)?", s) is None:
            return None
        if "/" in s:
            num, den = s.split("/")
            return Fraction(num) / Fraction(den)
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def decimal_places(gold: str) -> int | None:
    """k when ``gold`` is a decimal with k places (``3.14`` -> 2), else None: only such a gold
    admits answers that round to it (a gold of 20241, 1/3 or \\pi needs the exact value)."""
    match = re.fullmatch(r"-?\d*\.(\d+)", gold)
    return len(match.group(1)) if match else None


def _split_top(s: str, sep: str) -> list[str]:
    """Split on ``sep`` outside any (), [], {} nesting."""
    parts: list[str] = []
    current: list[str] = []
    depth, i = 0, 0
    while i < len(s):
        ch = s[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if depth == 0 and s.startswith(sep, i):
            parts.append("".join(current))
            current, i = [], i + len(sep)
            continue
        current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


_MATRIX = re.compile(r"\\begin\{([pbvB]?matrix|array)\}(?:\{[^}]*\})?(.*)\\end\{\1\}")


def _matrix(s: str) -> list[list[str]] | None:
    match = _MATRIX.fullmatch(s)
    if not match:
        return None
    rows = [r for r in match.group(2).split("\\\\") if r.strip()]
    return [[c.strip() for c in r.split("&")] for r in rows]


def _enclosure(s: str) -> tuple[str, list[str], str] | None:
    """(open, elements, close) of a top-level tuple/interval/set, else None."""
    if len(s) < 2:
        return None
    if s.startswith("\\{") and s.endswith("\\}"):
        opener, body, closer = "{", s[2:-2], "}"
    elif s[0] in "([" and s[-1] in ")]":
        opener, body, closer = s[0], s[1:-1], s[-1]
        depth = 0
        for ch in body:  # "(1)+(2)" is not one enclosure
            depth += 1 if ch in "([{" else -1 if ch in ")]}" else 0
            if depth < 0:
                return None
    else:
        return None
    parts = _split_top(body, ",")
    return (opener, parts, closer) if len(parts) > 1 or opener == "{" else None


@dataclass
class MathGrader:
    """MATH answer equivalence with settings from ``conf/judge/task.yaml``.

    Exact: numbers compare as fractions and expressions by sympy (no relative tolerance, so
    20240 != 20241 and 3.1416 != \\pi). ``decimal_gold_rounding``: a gold written as a decimal
    with k places (the problem asked to round) also matches an answer that rounds to it at k
    places (MATH's "express as a decimal to the nearest tenth"). ``sympy_timeout``: seconds one
    symbolic comparison may take before it is abandoned.
    """

    sympy_timeout: float
    decimal_gold_rounding: bool = True

    def __post_init__(self) -> None:
        self._worker = SympyWorker(self.sympy_timeout)

    def close(self) -> None:
        self._worker.close()

    @property
    def timeouts(self) -> int:
        """Symbolic comparisons abandoned at the deadline so far."""
        return self._worker.timeouts

    def __enter__(self) -> MathGrader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def equivalent(self, answer: str | None, gold: str | None) -> bool:
        """Is ``answer`` (a final answer, as extracted) the same as ``gold``?"""
        if answer is None or gold is None:
            raise ValueError("equivalent() needs two answers; check extraction first")
        a, g = normalize_answer(answer), normalize_answer(gold)
        return bool(a is not None and g is not None and self._equal(a, g))

    def _equal(self, a: str, g: str) -> bool:
        if a == g:
            return True
        if "\\pm" in a or "\\pm" in g:  # "1\pm\sqrt{19}" is the set of both roots
            a2, g2 = _pm_set(a), _pm_set(g)
            if (a2, g2) != (a, g):
                return self._equal(a2, g2)
        if "\\cup" in a or "\\cup" in g:
            pa, pg = a.split("\\cup"), g.split("\\cup")
            return len(pa) == len(pg) and all(self._equal(x, y) for x, y in zip(pa, pg, strict=True))
        ma, mg = _matrix(a), _matrix(g)
        if ma is not None or mg is not None:
            if ma is None or mg is None or len(ma) != len(mg):
                return False
            return all(len(ra) == len(rg) and all(self._equal(x, y) for x, y in zip(ra, rg, strict=True))
                       for ra, rg in zip(ma, mg, strict=True))
        ea, eg = _enclosure(a), _enclosure(g)
        if ea is not None and eg is None and ea[0] == "{":  # a set vs a bare list
            eg = ("{", _split_top(g, ","), "}")
        if eg is not None and ea is None and eg[0] == "{":
            ea = ("{", _split_top(a, ","), "}")
        if ea is not None or eg is not None:
            if ea is None or eg is None or len(ea[1]) != len(eg[1]):
                return False
            if ea[0] == "{" and eg[0] == "{":
                return self._same_multiset(ea[1], eg[1])
            return (ea[0], ea[2]) == (eg[0], eg[2]) and all(
                self._equal(x, y) for x, y in zip(ea[1], eg[1], strict=True))
        la, lg = _split_top(a, ","), _split_top(g, ",")
        if len(la) > 1 or len(lg) > 1:  # bare lists: the solutions "1,-2" in any order
            return len(la) == len(lg) and self._same_multiset(la, lg)
        if a.count("=") == 1 and g.count("=") == 1:
            (al, ar), (gl, gr) = a.split("="), g.split("=")
            if self._equal(al, gl) and self._equal(ar, gr):
                return True
            return self._symbolic(f"({al})-({ar})", f"({gl})-({gr})", latex=True) or \
                self._symbolic(f"({al})-({ar})", f"-(({gl})-({gr}))", latex=True)
        fa, fg = _to_fraction(a), _to_fraction(g)
        places = decimal_places(g) if self.decimal_gold_rounding else None
        if fa is not None and fg is not None:
            return fa == fg if places is None else abs(fa - fg) <= Fraction(1, 2 * 10 ** places)
        if re.fullmatch(r"[A-Za-z]{2,}", a) or re.fullmatch(r"[A-Za-z]{2,}", g):
            return False  # words are compared as strings only
        return self._symbolic(a, g, latex=True, places=places)

    def _symbolic(self, a: str, g: str, latex: bool, places: int | None = None) -> bool:
        try:
            sa = latex_to_sympy(a) if latex else a
            sg = latex_to_sympy(g) if latex else g
        except NotConvertible:
            return False
        return self._worker.equal(sa, sg, places) is True

    def _same_multiset(self, xs: list[str], ys: list[str]) -> bool:
        remaining = list(ys)
        for x in xs:
            match = next((i for i, y in enumerate(remaining) if self._equal(x, y)), None)
            if match is None:
                return False
            remaining.pop(match)
        return not remaining


def _pm_set(s: str) -> str:
    """Expand ``a\\pm b`` into the two values: ``1\\pm\\sqrt{5},-2`` -> the set
    ``\\{1+\\sqrt{5},1-(\\sqrt{5}),-2\\}`` (elements with more than one ``\\pm`` are kept)."""
    body = s[2:-2] if s.startswith("\\{") and s.endswith("\\}") else s
    parts: list[str] = []
    for part in _split_top(body, ","):
        if part.count("\\pm") == 1:
            left, right = part.split("\\pm")
            left = left or "0"
            parts += [f"{left}+{right}", f"{left}-({right})"]
        else:
            parts.append(part)
    return "\\{" + ",".join(parts) + "\\}"
