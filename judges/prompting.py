"""Judge prompts as data: load a versioned prompt from ``judges/prompts/<id>.json`` and render it.

Why: a reworded prompt silently moves scores (lm-eval-harness #2211), so prompts are files, a
released one is never edited (add ``_v2``), and every score line stores the prompt id and the
hash of the prompt file. Fields of a prompt file:

``id`` (``similarity_v1``), ``name`` (the metric it measures, e.g. ``similarity``), ``version``,
``kind`` (``similarity`` | ``ability`` | ``embedding``), ``description``, ``source``,
``system`` (or null), ``template`` with named placeholders ``{question}``, ``{reference}``,
``{candidate}``, ``{context}`` and any ``fields`` of the prompt itself, ``context_template``
(``{turns}``), ``context_turn_template`` (``{user}``, ``{assistant}``), ``context_separator``,
``empty_context``, ``requires`` (inputs that must be present), ``output_format`` (the parser in
:mod:`somabench.judges.parsing`), ``score_range`` ``[lo, hi]`` and ``reminder`` (the follow-up
message sent when a reply cannot be parsed).
"""

from __future__ import annotations

import functools
import hashlib
import json
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
INPUTS = ("question", "reference", "candidate", "context")
KINDS = ("similarity", "ability", "embedding", "answer")  # answer: judges/math_answer.py


class PromptError(ValueError):
    """A prompt file is missing or malformed, or an input it requires is absent."""


@dataclass(frozen=True)
class JudgePrompt:
    """One versioned judge prompt (see the module docstring for the fields)."""

    id: str
    name: str
    version: int
    kind: str
    description: str
    source: str
    system: str | None
    template: str | None
    requires: tuple[str, ...]
    output_format: str
    score_range: tuple[float, float]
    reminder: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    context_template: str = "{turns}\n"
    context_turn_template: str = "User: {user}\nAssistant: {assistant}"
    context_separator: str = "\n\n"
    empty_context: str = ""
    sha: str = ""
    """sha256 (16 hex digits) of the prompt file's canonical JSON: stored with every score."""

    @property
    def lo(self) -> float:
        return self.score_range[0]

    @property
    def hi(self) -> float:
        return self.score_range[1]

    def normalize(self, score: float) -> float:
        """Map a score in ``score_range`` to [0, 1] (values outside are clipped first)."""
        clipped = min(max(score, self.lo), self.hi)
        return (clipped - self.lo) / (self.hi - self.lo)

    def render_context(self, turns: list[tuple[str, str]]) -> str:
        """The dialogue-context block for previous ``(user, assistant)`` exchanges."""
        if not turns:
            return self.empty_context
        body = self.context_separator.join(
            self.context_turn_template.format(user=u, assistant=a) for u, a in turns
        )
        return self.context_template.format(turns=body)

    def messages(self, *, question: str | None = None, reference: str | None = None,
                 candidate: str | None = None,
                 context: list[tuple[str, str]] | None = None) -> list[dict[str, str]]:
        """The chat messages a judge model receives for one turn."""
        if self.template is None:
            raise PromptError(f"prompt {self.id} ({self.kind}) is not a chat prompt")
        values = {"question": question, "reference": reference, "candidate": candidate}
        missing = [k for k in self.requires if k != "context" and values.get(k) is None]
        if missing:
            raise PromptError(f"prompt {self.id} needs {missing} but they are missing")
        text = self.template.format(
            question=question or "", reference=reference or "", candidate=candidate or "",
            context=self.render_context(list(context or [])), **self.fields,
        )
        out = [{"role": "system", "content": self.system}] if self.system else []
        out.append({"role": "user", "content": text})
        return out


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def prompt_from_dict(data: dict[str, Any], where: str) -> JudgePrompt:
    """Validate one prompt object; errors name the file and the field."""
    required = ("id", "name", "version", "kind", "description", "source", "template",
                "requires", "output_format", "score_range")
    missing = [k for k in required if k not in data]
    if missing:
        raise PromptError(f"{where}: missing field(s) {missing}")
    known = set(JudgePrompt.__dataclass_fields__) - {"sha"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise PromptError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
    if data["kind"] not in KINDS:
        raise PromptError(f"{where}: kind '{data['kind']}' is not one of {KINDS}")
    lo, hi = (float(x) for x in data["score_range"])
    if not lo < hi:
        raise PromptError(f"{where}: score_range {data['score_range']} must be [lo, hi] with lo < hi")
    from somabench.judges.parsing import PARSERS

    if data["output_format"] not in PARSERS:
        raise PromptError(f"{where}: output_format '{data['output_format']}' has no parser; "
                          f"known: {sorted(PARSERS)}")
    template = data["template"]
    if template is not None:
        allowed = set(INPUTS) | set(data.get("fields") or {})
        extra = _placeholders(template) - allowed
        if extra:
            raise PromptError(f"{where}: template placeholder(s) {sorted(extra)} are neither "
                              f"inputs {INPUTS} nor the prompt's fields")
        absent = [k for k in data["requires"] if k != "context" and "{" + k + "}" not in template]
        if absent:
            raise PromptError(f"{where}: requires {absent} but the template never uses them")
    canonical = json.dumps(data, sort_keys=True, ensure_ascii=False)
    return JudgePrompt(
        **{**data, "requires": tuple(data["requires"]), "score_range": (lo, hi),
           "fields": dict(data.get("fields") or {})},
        sha=hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16],
    )


@functools.cache
def load_prompt(prompt_id: str, prompt_dir: str | None = None) -> JudgePrompt:
    """Load ``<prompt_dir>/<prompt_id>.json`` (default: the packaged ``judges/prompts``)."""
    directory = Path(prompt_dir) if prompt_dir else PROMPT_DIR
    path = directory / f"{prompt_id}.json"
    if not path.exists():
        from somabench.registry import did_you_mean

        names = available_prompts(prompt_dir)
        raise PromptError(f"unknown judge prompt '{prompt_id}' (no {path}).{did_you_mean(prompt_id, names)} "
                          f"Available: {', '.join(names)}.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PromptError(f"{path}: not valid JSON ({exc})") from exc
    prompt = prompt_from_dict(data, str(path))
    if prompt.id != prompt_id:
        raise PromptError(f"{path}: id '{prompt.id}' must equal the file stem '{prompt_id}'")
    return prompt


def available_prompts(prompt_dir: str | None = None) -> list[str]:
    directory = Path(prompt_dir) if prompt_dir else PROMPT_DIR
    return sorted(p.stem for p in directory.glob("*.json"))
