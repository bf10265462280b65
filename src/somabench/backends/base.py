"""The small model protocol every backend speaks.

Why: a method only decides who answers a turn and with what messages; how the answer is
produced (transformers, an OpenAI-compatible endpoint, vLLM) hides behind ``chat``.
Counts a backend cannot report are ``None``, never ``0``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from somabench.records import TurnStatus

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings. Greedy unless ``do_sample``; sampling is seeded."""

    max_new_tokens: int
    do_sample: bool = False
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @classmethod
    def from_cfg(cls, cfg: Any, **overrides: Any) -> GenerationConfig:
        data = dict(cfg) if not isinstance(cfg, GenerationConfig) else asdict(cfg)
        data.update(overrides)
        data["stop"] = tuple(data.get("stop") or ())
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown generation setting(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    def cache_fields(self) -> dict[str, Any]:
        """Settings that change the output (all of them: transport knobs live elsewhere)."""
        data = asdict(self)
        if not self.do_sample:  # greedy ignores temperature/top_p/seed
            data.update(temperature=0.0, top_p=1.0, seed=None)
        return data


@dataclass
class Completion:
    """One answer with what it cost."""

    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    seconds: float
    """Wall time of the call that produced it (for a batch: the whole batch)."""
    rendered_prompt: str
    model_id: str
    batch_size: int = 1
    cached: bool = False
    finish_reason: str | None = None
    status: TurnStatus = "ok"
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    cached_prompt_tokens: int | None = None
    """Of ``prompt_tokens``, how many were read from a KV/prefix cache instead of being
    prefilled (0: all computed; None: the backend cannot tell)."""
    first_token_s: float | None = None
    """Seconds from the start of the call to this answer's first token (for a batch: the
    batch's first decoding step); None where the backend does not stream (TTFT unknown)."""
    last_token_s: float | None = None
    """Seconds from the start of the call to this answer's last token (a batched row may end
    before the batch does); None where unknown (then ``seconds`` is the bound)."""

    @property
    def seconds_share(self) -> float:
        """This answer's share of a batched call's wall time."""
        return self.seconds / max(self.batch_size, 1)


@runtime_checkable
class Backend(Protocol):
    """What methods, the runner, the cache and the judges call on a model: ``chat`` /
    ``chat_batch`` answer, ``render`` / ``count_tokens`` measure, ``fingerprint`` keys the cache,
    ``describe`` is what run.json and records say about it. ``base_rows`` (with
    ``supports_base_rows``) serves some rows of a batch with the session adapter off."""

    kind: str
    model_id: str

    def chat(self, messages: list[Message], gen: GenerationConfig) -> Completion: ...

    def chat_batch(self, batch: list[list[Message]], gen: GenerationConfig,
                   base_rows: Sequence[bool] | None = None) -> list[Completion]: ...

    def render(self, messages: list[Message]) -> str: ...

    def count_tokens(self, text: str) -> int | None: ...

    def fingerprint(self) -> dict[str, Any]: ...

    def describe(self) -> dict[str, Any]: ...

    @property
    def supports_base_rows(self) -> bool: ...


class BackendBase:
    """Shared defaults and helpers: ``chat`` and ``chat_batch`` in terms of each other (a
    subclass implements one), the system prompt, canonical JSON rendering, a stable
    fingerprint. Satisfies :class:`Backend`."""

    kind = "base"
    model_id = ""
    revision: str | None = None
    adapter_id: str | None = None
    system_prompt: str | None = None
    """Prepended as a system message when the messages have none (:meth:`with_system`)."""
    _ANSWERS: ClassVar[tuple[str, str]] = ("chat", "chat_batch")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if all(getattr(cls, name) is getattr(BackendBase, name) for name in cls._ANSWERS):
            raise TypeError(f"{cls.__qualname__} must implement chat or chat_batch "
                            f"(BackendBase defines each in terms of the other)")

    def chat(self, messages: list[Message], gen: GenerationConfig) -> Completion:
        """One answer: a batch of one."""
        return self.chat_batch([messages], gen)[0]

    def chat_batch(self, batch: list[list[Message]], gen: GenerationConfig,
                   base_rows: Sequence[bool] | None = None) -> list[Completion]:
        """Answers one by one (backends that batch natively override this)."""
        self.refuse_base_rows(base_rows)
        return [self.chat(messages, gen) for messages in batch]

    @property
    def supports_base_rows(self) -> bool:
        """Whether ``chat_batch(..., base_rows=...)`` may turn the session adapter off per row."""
        return False

    def refuse_base_rows(self, base_rows: Sequence[bool] | None) -> None:
        """A backend without per-row adapters cannot serve a base row: say so, never ignore it."""
        if base_rows is not None and any(base_rows):
            raise ValueError(f"{self.kind} backend ({self.model_id}) cannot serve base rows "
                             f"(supports_base_rows is false)")

    def with_system(self, messages: list[Message]) -> list[Message]:
        """``messages`` with :attr:`system_prompt` first, unless they carry a system message."""
        if self.system_prompt and not any(m["role"] == "system" for m in messages):
            return [{"role": "system", "content": self.system_prompt}, *messages]
        return messages

    def render_json(self, messages: list[Message]) -> str:
        """Canonical JSON of the messages sent (with the system prompt): the prompt of a
        backend whose chat template is applied elsewhere (a server, or none at all)."""
        return json.dumps(self.with_system(messages), ensure_ascii=False, sort_keys=True,
                          separators=(",", ":"))

    def render(self, messages: list[Message]) -> str:
        return json.dumps(messages, ensure_ascii=False)

    def count_tokens(self, text: str) -> int | None:
        return None

    def fingerprint(self) -> dict[str, Any]:
        """Everything about this backend that changes its outputs (for the cache key)."""
        return {
            "kind": self.kind,
            "model_id": self.model_id,
            "revision": self.revision,
            "adapter_id": self.adapter_id,
        }

    def describe(self) -> dict[str, Any]:
        """What records and run.json say about this backend: the fingerprint plus facts that
        do not change outputs (engine, the reason for the dtype, quantization, device)."""
        return {"engine": self.kind, **self.fingerprint()}


def sha16(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class BackendError(RuntimeError):
    """A model call failed for good (after retries); the runner records it, never a number.

    The message names the endpoint/model and the fix. ``reason`` is a short machine-readable
    cause (``connection``, ``timeout``, ``rate_limit``, ``server_error``, ``bad_response``,
    ``auth``, ``not_found``, ``bad_request``, ``error``); ``attempts`` describes each failed try.
    """

    def __init__(self, message: str, *, reason: str = "error",
                 attempts: list[str] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.attempts = list(attempts or [])
