"""Surrogate: the small model G answers every turn with the full history, unadapted."""

from __future__ import annotations

from somabench.methods import Method, Session, TurnPlan


class Surrogate(Method):
    name = "surrogate"

    def plan(self, session: Session, turn: int) -> TurnPlan:
        return TurnPlan(role="G", messages=session.full_messages(turn))
