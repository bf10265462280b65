"""The drift monitor (paper Sec. 3.3): sliding query average vs the running content centroid.

Paper: "maintain a running centroid of past content ... continuously monitor similarity between
a sliding average of recent queries and the centroid ... if this falls below a threshold or a
quick recheck indicates growing divergence, we roll back for the next turn by querying F once,
refresh the summary on the new window, and then continue with G."

As implemented:

* **content** of turn t = phi(q_t) and phi(answer_t) (whole texts; the summary's centroid is
  over sentences, this one over turns, so the monitor costs two encoder rows per turn);
* the **centroid** is the mean of the content vectors of every turn since the last refresh
  (turn 0 at the start), *before* the current turn is added: a running centroid of past content;
* the **similarity** at turn t is cos(mean of phi(q) over the last ``window`` queries since
  the refresh, this one included, centroid);
* a check runs after every turn from the first one with a centroid (turn 1 on), so the recheck
  history exists when the switch happens and the monitor can fire on the first G turn of a
  short dialogue. It fires when the similarity is below ``threshold`` or the last
  ``recheck_turns`` + 1 similarities fell strictly and by >= ``recheck_drop`` in total;
* a fire **while G serves** hands the *next* turn to F (``pending``); after that F turn the
  monitor is refreshed on the new window: the centroid restarts at the first turn of the
  drifted query window, the recheck history is cleared (SOMA refreshes its summary there too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DriftConfig:
    enabled: bool
    window: int
    threshold: float
    recheck_turns: int
    recheck_drop: float
    max_rollbacks: int | None

    @classmethod
    def from_cfg(cls, d: Any) -> DriftConfig:
        out = cls(enabled=bool(d["enabled"]), window=int(d["window"]),
                  threshold=float(d["threshold"]), recheck_turns=int(d["recheck_turns"]),
                  recheck_drop=float(d["recheck_drop"]),
                  max_rollbacks=None if d["max_rollbacks"] is None else int(d["max_rollbacks"]))
        if out.window < 1:
            raise ValueError(f"switch.drift.window must be >= 1, got {out.window}")
        return out


def _unit(vec: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 else vec


@dataclass
class DriftState:
    since: int = 0
    """First turn of the current window (0, or the start of the last drifted window)."""
    content: list[tuple[int, np.ndarray]] = field(default_factory=list)
    queries: list[tuple[int, np.ndarray]] = field(default_factory=list)
    history: list[float] = field(default_factory=list)
    """Similarities since the last refresh (one per checked turn)."""
    pending: str | None = None
    """Reason for handing the next turn to F (set by a fire while G serves)."""
    pending_start: int | None = None
    refreshes: list[dict[str, int]] = field(default_factory=list)


class DriftMonitor:
    """Numbers in, decisions out; the state lives in ``DriftState`` (one per dialogue)."""

    def __init__(self, cfg: DriftConfig) -> None:
        self.cfg = cfg

    def centroid(self, state: DriftState) -> np.ndarray | None:
        rows = [v for t, v in state.content if t >= state.since]
        return _unit(np.mean(np.stack(rows), axis=0)) if rows else None

    def similarity(self, state: DriftState, turn: int, query_vec: np.ndarray) -> float | None:
        """cos(sliding mean of the last `window` queries incl. ``query_vec``, past centroid)."""
        centroid = self.centroid(state)
        if centroid is None:
            return None
        recent = [v for t, v in state.queries if state.since <= t < turn]
        recent = [*recent[len(recent) - (self.cfg.window - 1):], query_vec] \
            if self.cfg.window > 1 else [query_vec]
        return float(_unit(np.mean(np.stack(recent), axis=0)) @ centroid)

    def fires(self, state: DriftState, sim: float | None) -> str | None:
        """The reason the monitor fires on ``sim`` (given the history so far), else None."""
        if sim is None:
            return None
        if sim < self.cfg.threshold:
            return f"drift: similarity {sim:.3f} < threshold {self.cfg.threshold}"
        r = self.cfg.recheck_turns
        tail = [*state.history, sim][-(r + 1):]
        if r >= 1 and len(tail) == r + 1:
            falling = all(b < a for a, b in zip(tail, tail[1:], strict=False))
            if falling and tail[0] - tail[-1] >= self.cfg.recheck_drop:
                return (f"drift: similarity fell {tail[0] - tail[-1]:.3f} >= "
                        f"{self.cfg.recheck_drop} over {r} checks (recheck)")
        return None

    def observe(self, state: DriftState, turn: int, query_vec: np.ndarray,
                answer_vec: np.ndarray | None, sim: float | None, serving_g: bool,
                may_roll_back: bool) -> str | None:
        """Record turn ``turn``'s check (``sim`` from ``similarity``) and add its content.

        ``serving_g``: G serves the next turn unless the monitor fires; ``may_roll_back``: the
        rollback cap is not reached. Returns why the monitor fired (None: it did not).
        """
        reason = self.fires(state, sim) if self.cfg.enabled else None
        if sim is not None:
            state.history.append(sim)
        if reason and serving_g and may_roll_back:
            state.pending = reason
            state.pending_start = max(turn - self.cfg.window + 1, state.since)
        state.queries.append((turn, query_vec))
        state.content.append((turn, query_vec))
        if answer_vec is not None:
            state.content.append((turn, answer_vec))
        return reason

    def refresh(self, state: DriftState, turn: int) -> int:
        """After the F turn of a rollback: restart the window at the drifted queries."""
        start = state.pending_start if state.pending_start is not None else turn
        state.since = start
        state.history = []
        state.pending = None
        state.pending_start = None
        state.refreshes.append({"turn": turn, "window_from": start})
        return start
