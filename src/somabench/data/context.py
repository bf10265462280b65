"""Which dialogues fit SOMA's premise: the context-dependence rule (paper App. B.1).

Why its own module: the paper "filter[s] out the non-context-dependent dialogues" (App. B.1)
without publishing its classifier, and SOMA's premise (later turns live near the early ones)
only holds on such dialogues. The rule used here is written down, data-grounded and testable,
not a heuristic over the text (a keyword-cue classifier was tried and rejected: it marked 39 of
60 MATH-500 sessions, whose turns are independent problems, as context dependent).

The rule, per dialogue, first match wins:

1. ``meta.context_dependent`` (a boolean on the dialogue) is the answer: an annotated custom
   file decides for itself;
2. else the dialogue is context dependent iff its ``meta.task`` is in the dataset's
   ``context_dependent_tasks`` (``conf/dataset/<name>.yaml``): tasks whose later turns are
   *built* to refer back to earlier ones, each list justified in its dataset file from the
   dataset's own definition of the task;
3. else (no label, no task list) the dialogue cannot be classified: an error that says so.

Tasks listed in ``negative_control_tasks`` are independent by construction (MATH-500 sessions:
8 unrelated problems of one subject). They are never context dependent and are labelled as a
*negative control* wherever a report shows them: a method whose premise is context dependence
should not gain there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from somabench.data.schema import DatasetError, Dialogue

LABEL_SOURCES = ("meta", "task")


@dataclass(frozen=True)
class ContextRule:
    """The dataset's declared labels (values come from ``conf/dataset/*.yaml`` only)."""

    dependent_tasks: frozenset[str] | None
    negative_control_tasks: frozenset[str]

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> ContextRule:
        def tasks(key: str) -> frozenset[str] | None:
            value = cfg.get(key)
            if value is None:
                return None
            if isinstance(value, str) or not isinstance(value, Sequence) or not all(
                    isinstance(t, str) for t in value):
                raise DatasetError(f"dataset.{key}={value!r}: expected null or a list of "
                                   "meta.task codes, e.g. dataset.{key}=[SI,AR]")
            return frozenset(value)

        dependent = tasks("context_dependent_tasks")
        control = tasks("negative_control_tasks") or frozenset()
        both = sorted((dependent or frozenset()) & control)
        if both:
            raise DatasetError(f"dataset tasks {both} are listed both in context_dependent_tasks "
                               "and negative_control_tasks; a task is one or the other")
        return cls(dependent_tasks=dependent, negative_control_tasks=control)

    def classify(self, dialogue: Dialogue, name: str) -> tuple[bool, str]:
        """(context dependent?, where the answer came from: ``meta`` | ``task``)."""
        label = dialogue.meta.get("context_dependent")
        if isinstance(label, bool):
            return label, "meta"
        task = dialogue.meta.get("task")
        if isinstance(task, str) and task in self.negative_control_tasks:
            return False, "task"
        if self.dependent_tasks is not None and isinstance(task, str):
            return task in self.dependent_tasks, "task"
        raise DatasetError(
            f"dataset.context_dependent_only=true cannot classify dialogue {dialogue.id!r} of "
            f"'{name}': it has no boolean meta.context_dependent and "
            + ("no string meta.task" if self.dependent_tasks is not None else
               "the dataset declares no dataset.context_dependent_tasks")
            + ". Annotate the file (meta.context_dependent per dialogue), set "
            "dataset.context_dependent_tasks=[...], or set dataset.context_dependent_only=false."
        )

    def is_negative_control(self, dialogue: Dialogue) -> bool:
        return dialogue.meta.get("task") in self.negative_control_tasks


def filter_context_dependent(dialogues: Iterable[Dialogue], rule: ContextRule,
                             name: str) -> list[Dialogue]:
    """Keep the dialogues the rule classifies as context dependent (every one must classify)."""
    return [d for d in dialogues if rule.classify(d, name)[0]]


def session_role(dialogues: Sequence[Dialogue], rule: ContextRule) -> str:
    """``negative_control`` when every dialogue is of a negative-control task, else ``study``."""
    if dialogues and all(rule.is_negative_control(d) for d in dialogues):
        return "negative_control"
    return "study"


def switchable(turn_counts: Iterable[int], turns_needed: int | None) -> int:
    """How many sessions are long enough for a switch that leaves G at least one turn:
    ``W + max(m, |B|_future) + 1 <= turns`` (``turns_needed``; None: no switching method)."""
    if turns_needed is None:
        return 0
    return sum(1 for n in turn_counts if n >= turns_needed)
