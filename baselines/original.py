"""Original: the large model F answers every turn with the full history (the reference)."""

from __future__ import annotations

from somabench.methods import Method, Session, TurnPlan


class Original(Method):
    name = "original"

    def plan(self, session: Session, turn: int) -> TurnPlan:
        return TurnPlan(role="F", messages=session.full_messages(turn))
