"""History-Prefix (paper App. B.3): after SOMA's switch, unadapted G answers with the whole history.

Why a baseline: it isolates what the Original's answers in the prompt alone buy the surrogate.
F serves the warm window and the gate turns exactly as in SOMA (the shared switch controller,
``somabench.switching``); once the gate passes, G answers every later turn with the whole
conversation so far as its prompt: the Original's turns up to the switch, then what was served
(with the root setting ``history=reference``: the Original's answers for every earlier turn,
the paper's "entire conversation produced by the Original up to t-1"). No parameter updates.
"""

from __future__ import annotations

from typing import Any

from somabench.methods import Session
from somabench.switching.method import SwitchingMethod


class HistoryPrefix(SwitchingMethod):
    name = "history_prefix"

    def g_messages(self, session: Session, turn: int) -> list[dict[str, str]]:
        # Only turns before `turn`: the controller also asks for earlier (warm) turns.
        return session.full_messages(turn, session.history[:turn])

    def g_context(self, session: Session, turn: int) -> dict[str, Any] | None:
        return {"history_turns": min(turn, len(session.history)), "verbatim_turns": turn}
