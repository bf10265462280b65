"""Preflight: every user turn must fit each model's context window, checked before generation.

Why: a dialogue with one enormous turn used to be sent to the model as is and ran for minutes
(or failed deep inside generation) before anyone learned the turn could never fit. The check
needs the model's tokenizer and context window, so it runs after the backends are built and
before the first generate call (the Original reference included). It counts each turn *alone*,
rendered with the model's chat template: every method sends at least that much for the turn, so
a turn that fails here fails for every method; longer histories are the methods' business.

The fix it suggests: shorten the turn, drop the dialogue, or set ``dataset.truncate_chars=N``
(``somabench.data.select`` cuts user turns to N characters, the same text for every model).
A backend that cannot count tokens or does not know its context window (an OpenAI-compatible
endpoint without a local tokenizer) is skipped with a log line, never guessed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from somabench.data.schema import DatasetError, Dialogue

log = logging.getLogger(__name__)

# transformers' ``model_max_length`` when a tokenizer does not know its limit (int(1e30)).
UNKNOWN_TOKENIZER_LIMIT = 10**18
# Config fields that hold the context window, by model family (GPT-2 style, Llama style ...).
CONFIG_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def _positive_int(value: Any) -> int | None:
    if callable(value):
        value = value()
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < UNKNOWN_TOKENIZER_LIMIT:
        return value
    return None


def context_window(backend: Any) -> int | None:
    """The model's context window in tokens, or None when the backend cannot say.

    Looked up in this order: a ``context_window`` attribute (or method) of the backend; the
    vLLM engine's ``max_model_len``; the loaded transformers model's config; the tokenizer's
    ``model_max_length`` (ignored when it is transformers' "unknown" sentinel).
    """
    declared = _positive_int(getattr(backend, "context_window", None))
    if declared:
        return declared
    engine = getattr(getattr(backend, "llm", None), "llm_engine", None)
    vllm_len = _positive_int(getattr(getattr(engine, "model_config", None), "max_model_len", None))
    if vllm_len:
        return vllm_len
    config = getattr(getattr(backend, "model", None), "config", None)
    for name in CONFIG_FIELDS:
        value = _positive_int(getattr(config, name, None))
        if value:
            return value
    tokenizer = getattr(backend, "tokenizer", None) or getattr(backend, "_tokenizer", None)
    return _positive_int(getattr(tokenizer, "model_max_length", None))


@dataclass(frozen=True)
class Oversized:
    """One turn that does not fit one model."""

    role: str
    dialogue: str
    turn: int  # 0-based
    n_turns: int
    chars: int
    tokens: int
    window: int
    reserve: int

    @property
    def budget(self) -> int:
        return self.window - self.reserve

    def suggested_chars(self) -> int:
        """A ``truncate_chars`` that fits, from this turn's characters per token (10 % margin)."""
        return max(1, math.floor(self.chars * self.budget / self.tokens * 0.9))


def _turn_tokens(backend: Any, text: str) -> int | None:
    rendered = backend.render([{"role": "user", "content": text}])
    return backend.count_tokens(rendered)


def find_oversized(dialogues: Sequence[Dialogue], role: str, backend: Any, *,
                   max_new_tokens: int) -> list[Oversized]:
    """Turns of ``dialogues`` whose prompt alone plus the answer budget exceeds the window.

    Returns [] when the backend cannot count tokens or does not know its window (logged)."""
    window = context_window(backend)
    if window is not None and max_new_tokens >= window:
        raise DatasetError(f"generation.max_new_tokens={max_new_tokens} leaves no room for a "
                           f"prompt in {role}'s context window of {window} tokens; lower it")
    if window is None:
        log.info("preflight: %s (%s) does not report a context window; turn lengths not checked",
                 role, getattr(backend, "model_id", "?"))
        return []
    found = []
    for dialogue in dialogues:
        for index, turn in enumerate(dialogue.turns):
            tokens = _turn_tokens(backend, turn.user)
            if tokens is None:
                log.info("preflight: %s (%s) cannot count tokens; turn lengths not checked",
                         role, getattr(backend, "model_id", "?"))
                return []
            if tokens + max_new_tokens > window:
                found.append(Oversized(role, dialogue.id, index, len(dialogue.turns),
                                       len(turn.user), tokens, window, max_new_tokens))
    return found


def check_context(dialogues: Sequence[Dialogue], backends: Mapping[str, Any], *,
                  max_new_tokens: int) -> None:
    """Raise ``DatasetError`` naming the first turn that cannot fit a model's context window.

    ``backends`` maps a role (``F``, ``G``) to its built, *unwrapped* backend (the request cache
    wrapper does not expose the tokenizer); ``max_new_tokens`` is reserved for the answer.
    """
    problems = [p for role, backend in backends.items()
                for p in find_oversized(dialogues, role, backend, max_new_tokens=max_new_tokens)]
    if not problems:
        return
    first = problems[0]
    more = f" ({len(problems) - 1} more turn(s) too long)" if len(problems) > 1 else ""
    raise DatasetError(
        f"turn {first.turn + 1} of {first.n_turns} is {first.tokens:,} tokens for {first.role} "
        f"({first.chars:,} characters), but {first.role}'s context window is {first.window:,} "
        f"tokens with {first.reserve:,} kept for the answer (generation.max_new_tokens), so at "
        f"most {first.budget:,} fit{more}; shorten the turn, drop the dialogue, or set "
        f"dataset.truncate_chars={first.suggested_chars()}",
        where=f"dialogue {first.dialogue!r}",
        field=f"turns[{first.turn}].user",
    )


def on_build(dialogues: Sequence[Dialogue], *, max_new_tokens: int) -> Callable[[str, Any], None]:
    """A ``RunContext`` build hook: check a role's backend as soon as it is built.

    Why a hook: backends are built lazily, so a run that needs only F (the Original) or has
    nothing left to serve (a finished job resumed) never loads a model just to check lengths,
    and every model is still checked before its first generate call."""

    def check(role: str, backend: Any) -> None:
        check_context(dialogues, {role: backend}, max_new_tokens=max_new_tokens)

    return check


__all__ = ["Oversized", "check_context", "context_window", "find_oversized", "on_build"]
