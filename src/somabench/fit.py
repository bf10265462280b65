"""Do a run's sessions fit the method? How many can switch, and are they a negative control?

Why one module: ``somabench plan`` says it before a run and the report says it after, with one
rule. A switch that leaves G a turn needs ``W + max(m, |B|) + 1`` turns, where |B| counts only
when the acceptance batch is drawn from future turns and blocks (``acceptance.batch_source``;
``SwitchController.turns_needed``). A study whose sessions are all shorter measures F alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from somabench.data.context import ContextRule, session_role, switchable
from somabench.data.schema import Dialogue

ADAPTER_KEY = "lora"
"""A switching method whose config has this key adapts G (SOMA, History-FT): its acceptance
test applies; History-Prefix has none (old == new G, the test is not applicable)."""


def turns_needed(method_cfg: Mapping[str, Any]) -> int | None:
    """W + max(m, |B|_future) + 1 for a switching method; None when the method never switches
    or W is ``auto`` (computed by the method per run)."""
    from somabench.switching.controller import SwitchConfig, SwitchController

    switch = method_cfg.get("switch")
    # a method without the shared switch node (a stray `++method.switch.x=` on the Original
    # adds a partial one) never switches
    if switch is None or "gate" not in switch or switch.get("warm_window") == "auto":
        return None
    controller = SwitchController(SwitchConfig.from_cfg(switch))
    return controller.turns_needed(adapts=ADAPTER_KEY in method_cfg)


@dataclass(frozen=True)
class SessionFit:
    """A dataset's sessions against one method's switch budget."""

    dataset: str
    method: str
    sessions: int
    role: str  # study | negative_control
    turns_needed: int | None
    switchable: int

    def line(self) -> str:
        role = "  NEGATIVE CONTROL (independent turns)" if self.role == "negative_control" else ""
        if self.turns_needed is None:
            return f"{self.dataset} x {self.method}: {self.sessions} session(s), no switch{role}"
        return (f"{self.dataset} x {self.method}: {self.switchable} of {self.sessions} session(s) "
                f"can switch (need >= {self.turns_needed} turns = W + max(m, |B|) + 1){role}")


def session_fit(dataset_cfg: Mapping[str, Any], method_cfg: Mapping[str, Any],
                dialogues: Iterable[Dialogue]) -> SessionFit:
    """How the loaded ``dialogues`` fit the method (see the module docstring)."""
    dialogues = list(dialogues)
    needed = turns_needed(method_cfg)
    return SessionFit(dataset=str(dataset_cfg.get("name")), method=str(method_cfg.get("name")),
                      sessions=len(dialogues),
                      role=session_role(dialogues, ContextRule.from_cfg(dataset_cfg)),
                      turns_needed=needed,
                      switchable=switchable((len(d.turns) for d in dialogues), needed))


__all__ = ["SessionFit", "session_fit", "turns_needed"]
