"""What a method is: it decides who answers a turn and with what context, nothing else.

Why: one runner serves every method. A method gets a ``Session`` (the dialogue, the history it
is allowed to see, the Original's reference answers when available, and a scratch ``state``)
and returns a ``TurnPlan``. The runner generates (batched across dialogues when the method is
stateless), writes records and accounts tokens. Methods that adapt (SOMA, History-FT) do
their extra work in ``start``/``plan``/``observe`` and report its cost on the session.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from omegaconf import DictConfig

from somabench.backends.base import Backend, Completion, GenerationConfig, Message
from somabench.errors import ConfigError
from somabench.records import Usage
from somabench.registry import methods

if TYPE_CHECKING:  # a type name only
    from somabench.data import Dialogue

Role = Literal["F", "G"]
"""Who answers a turn: the large model F or the small surrogate G."""
HistoryMode = Literal["own", "reference"]
"""``own``: later turns see the method's answers; ``reference``: the Original's."""


def history_mode(value: object) -> HistoryMode:
    """The config's ``history`` as a :data:`HistoryMode`, or one error naming the key."""
    if value == "own":
        return "own"
    if value == "reference":
        return "reference"
    raise ConfigError(f"history={value!r}: expected 'own' or 'reference'")

log = logging.getLogger(__name__)


class MethodContext(Protocol):
    """What a method may use of the run it serves in: the run's config, its generation
    settings, the models by role and the sentence encoder.

    Why a protocol: methods depend on this seam, not on the runner (which imports them), so
    ``somabench.runner.RunContext`` (the one implementation) and a test's stand-in both fit, and
    the import graph has no cycle through the runner."""

    cfg: DictConfig
    """The run's whole resolved config (``paths``, ``seed``, ``dataset``, ``cache`` ...)."""
    gen: GenerationConfig
    """The run's generation settings (``generation``)."""

    def raw(self, role: str) -> Any:
        """The role's underlying backend (white-box: tokenizer, model, embeddings)."""
        ...

    def backend(self, role: str) -> Backend:
        """The role's backend behind the request cache, if one is enabled."""
        ...

    def encoder(self) -> Any:
        """phi, the sentence encoder gates and summaries embed with."""
        ...

    def shared(self, key: str, build: Callable[[], Any] | None = None) -> Any:
        """A run-scoped object under ``key`` (built by ``build`` on first use, closed with the
        run); None when absent and no ``build`` is given."""
        ...


@dataclass
class TurnPlan:
    """Who answers this turn and what they see."""

    role: Role
    """Backend role that generates: ``F`` or ``G``."""
    messages: list[Message]
    """Chat messages the answering model gets (the runner applies its chat template)."""
    served_by: str | None = None
    """Label for the record (defaults to ``role``; e.g. ``G+lora``)."""
    completion: Completion | None = None
    """Set when the method already produced the answer itself (the runner then skips generate)."""
    gate: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    tokens: dict[str, Usage] = field(default_factory=dict)
    """Extra per-turn tokens (``compressor``, ``router``, or F/G calls beyond the answer)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Extra per-turn stages (``compress``, ``route``, ``gate``)."""


@dataclass
class Session:
    """One dialogue as one method sees it while serving it."""

    dialogue: Dialogue
    """The dialogue being served (``somabench.data.Dialogue``)."""
    history_mode: HistoryMode
    """What later turns see as the assistant's earlier answers."""
    reference: list[str] | None = None
    """The Original's answers, turn by turn (None if no reference run exists)."""
    history: list[tuple[str, str]] = field(default_factory=list)
    """(user, assistant) pairs before the current turn, per ``history_mode``."""
    own_answers: list[str] = field(default_factory=list)
    """This method's answers so far (what the user received)."""
    state: dict[str, Any] = field(default_factory=dict)
    """Method scratch space (adapters, gate state ...); never written to records directly."""
    adaptation: dict[str, Any] = field(default_factory=dict)
    """Dialogue-level adaptation details/costs (mining steps, seconds, hardness ...)."""
    adaptation_tokens: dict[str, Usage] = field(default_factory=dict)
    """Tokens spent on adaptation, per model; counted in tokens per dialogue."""
    train_tokens: dict[str, dict[str, int]] = field(default_factory=dict)
    """Training forward/backward tokens per model (``add_train_tokens``)."""

    @property
    def id(self) -> str:
        return self.dialogue.id

    def user(self, turn: int) -> str:
        return self.dialogue.turns[turn].user

    def full_messages(self, turn: int, history: list[tuple[str, str]] | None = None) -> list[Message]:
        """History as chat messages followed by the current user query."""
        pairs = self.history if history is None else history
        messages: list[Message] = []
        for user, assistant in pairs:
            messages.append({"role": "user", "content": user})
            messages.append({"role": "assistant", "content": assistant})
        messages.append({"role": "user", "content": self.user(turn)})
        return messages

    def reference_history(self, turn: int) -> list[tuple[str, str]]:
        """The Original's dialogue up to (not including) ``turn``."""
        if self.reference is None:
            raise RuntimeError("this method needs the Original reference run, which is missing")
        return [(self.user(t), self.reference[t]) for t in range(turn)]

    def add_adaptation_tokens(self, role: str, usage: Usage) -> None:
        self.adaptation_tokens[role] = self.adaptation_tokens.get(role, Usage()) + usage

    def add_train_tokens(self, role: str, stage: str, counts: dict[str, int]) -> None:
        """Training forward/backward token counts (DialogueRecord.train_tokens), per stage."""
        total = self.train_tokens.setdefault(role, {"forward": 0, "backward": 0})
        by_stage = self.adaptation.setdefault("train_tokens_by_stage", {}).setdefault(
            stage, {}).setdefault(role, {"forward": 0, "backward": 0})
        for key in ("forward", "backward"):
            total[key] += int(counts.get(key, 0))
            by_stage[key] += int(counts.get(key, 0))


class Method(ABC):
    """Base class. Subclasses register lazily in their package's table: ``methods.register("name", "module:Class")``."""

    name = "base"
    batchable = True
    """True when turns of different dialogues can share one generate call (no per-session
    model state). Methods that adapt G per dialogue set this False."""
    needs_reference = False
    """True when the method reads the Original's answers (History-Prefix, History-FT ...)."""

    def __init__(self, cfg: DictConfig, ctx: MethodContext) -> None:
        self.cfg = cfg  # the ``method`` config node
        self.ctx = ctx  # backends, encoder, generation settings of the run
        # Records carry the configured name, so config variants of one class (ablations,
        # offline stand-ins) are labelled as what they are.
        self.name = str(cfg.get("name", self.name)) if cfg is not None else self.name
        problem = type(self).label_problem(cfg) if cfg is not None else None
        if problem:
            raise ConfigError(problem)

    @classmethod
    def label_problem(cls, cfg: Any) -> str | None:
        """Why ``cfg`` (a ``method`` config) must not run under this method's name, or None.

        Why: a stand-in (a random router, an LLMLingua-1 compressor) must never be reported as
        the paper's baseline. Checked at construction (an error) and by the report (a
        relabelled row, ``report.collect.label_problem``); subclasses with a paper label
        override it."""
        return None

    def start(self, session: Session) -> None:
        """Called once before the first turn of a dialogue."""

    @abstractmethod
    def plan(self, session: Session, turn: int) -> TurnPlan:
        """Who answers ``turn`` and with what messages."""

    def observe(self, session: Session, turn: int, plan: TurnPlan, completion: Completion) -> None:
        """Called after the answer of ``turn`` is known."""

    def finish(self, session: Session) -> None:
        """Called after the last turn (release per-session adapters here)."""

    @property
    def gen(self) -> GenerationConfig:
        return self.ctx.gen


def usage_of(completion: Completion) -> Usage:
    return Usage(completion.prompt_tokens, completion.completion_tokens,
                 completion.cached_prompt_tokens)


__all__ = ["Method", "MethodContext", "Session", "TurnPlan", "methods", "usage_of"]
