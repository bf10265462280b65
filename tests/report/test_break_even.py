"""The break-even table of the study (report/study.py): overhead, saving per G turn and the G
turns that repay the adaptation, by hand on a two-session toy."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from somabench.metrics import TOKEN_ROLES, USAGE_PARTS
from somabench.report.study import break_even_sessions, break_even_table
from somabench.report.tables import StatsKnobs

PRICES = {"F": {"prompt": 1.0, "completion": 1.0, "cached_prompt": 0.1}, "G": {"prompt": 0.1, "completion": 0.1},
          "train": {"forward": 1.0, "backward": 2.0}}  # USD per 1M tokens


def _zeros(prefixes: tuple[str, ...]) -> dict[str, float]:
    return {f"{p}tokens_{r}_{part}": 0.0 for p in prefixes for r in TOKEN_ROLES for part in USAGE_PARTS}


def turn(method: str, dialogue: str, n: int, served: str, f_prompt: int, g_prompt: int = 0,
         f_cached: int = 0) -> dict:
    row = {"family": "t", "run_key": method, "label": method.upper(), "method": method, "dataset": "d",
           "dialogue_id": dialogue, "turn": n, "served_by": served, "status": "ok", **_zeros(("",))}
    row["tokens_F_prompt"], row["tokens_G_prompt"] = float(f_prompt), float(g_prompt)
    row["tokens_F_cached_prompt"] = float(f_cached)
    return row


def dialogue(method: str, dialogue_id: str, adapt_f: int, train_fwd: int) -> dict:
    row = {"family": "t", "run_key": method, "label": method.upper(), "method": method, "dataset": "d",
           "dialogue_id": dialogue_id, "adaptation": {"switch": {"switch_turn": 1}},
           **_zeros(("", "adapt_"))}
    row["adapt_tokens_F_prompt"] = row["tokens_F_prompt"] = float(adapt_f)
    row["train_tokens_G_forward"], row["train_tokens_G_backward"] = float(train_fwd), float(train_fwd)
    return row


def toy() -> SimpleNamespace:
    """Two 3-turn sessions. The Original's turns cost 1, 2, 3 M F tokens (USD 1, 2, 3).
    SOMA, session a: turn 0 by F plus a gate candidate on G (1 M F + 1 M G: USD 1.1), turns 1-2
    by G with 2 M G prompt tokens (USD 0.2 each); adaptation 2 M F tokens (USD 2), training 1 M
    forward + 1 M backward on G (USD 0.1 + 0.2). Session b never switches: F on every turn, as
    the Original, plus the same adaptation."""
    turns = [turn("original", d, n, "F", n + 1) for d in ("a", "b") for n in range(3)]
    # the Original with a prefix cache: turn n reads n M of its n + 1 M prompt tokens from the
    # cache at a tenth of the price: USD 1.0, 1.1, 1.2
    turns += [turn("original_prefix_cache", d, n, "F", n + 1, f_cached=n) for d in ("a", "b") for n in range(3)]
    turns += [turn("soma", "a", 0, "F", 1, g_prompt=1), turn("soma", "a", 1, "G+lora", 0, 2),
              turn("soma", "a", 2, "G+lora", 0, 2)]
    turns += [turn("soma", "b", n, "F", n + 1) for n in range(3)]
    dialogues = [dialogue("soma", d, 2_000_000, 1_000_000) for d in ("a", "b")]
    for t in turns:  # tokens are in millions above
        for k in ("tokens_F_prompt", "tokens_G_prompt", "tokens_F_cached_prompt"):
            t[k] *= 1_000_000
    return SimpleNamespace(dialogues=pd.DataFrame(dialogues), turns=pd.DataFrame(turns),
                           prices=lambda family: PRICES)


def test_overhead_and_saving_by_hand() -> None:
    sessions = break_even_sessions(toy(), "t").set_index("dialogue_id")
    # a: 2 (F adaptation) + 0.1 + 0.2 (G training) + (1.1 - 1) (the gate's G call) = 2.4
    assert sessions.loc["a", "overhead_usd"] == pytest.approx(2.4)
    # G turns: (2 - 0.2) and (3 - 0.2) -> mean 2.3
    assert sessions.loc["a", "saving_usd"] == pytest.approx(2.3)
    assert sessions.loc["a", "g_turns"] == 2
    assert sessions.loc["b", "overhead_usd"] == pytest.approx(2.3)
    assert pd.isna(sessions.loc["b", "saving_usd"]) and sessions.loc["b", "g_turns"] == 0
    # against the prefix-cached Original: G turns save (1.1 - 0.2) and (1.2 - 0.2) -> 0.95; b's F
    # turns cost (2 - 1.1) + (3 - 1.2) = 2.7 more than the cached Original's
    assert sessions.loc["a", "saving_usd_prefix_cache"] == pytest.approx(0.95)
    assert sessions.loc["a", "overhead_usd_prefix_cache"] == pytest.approx(2.4)
    assert sessions.loc["b", "overhead_usd_prefix_cache"] == pytest.approx(5.0)


def test_break_even_turns() -> None:
    sessions = break_even_sessions(toy(), "t")
    [row] = break_even_table(sessions, StatsKnobs(2000, 0, 0.95, min_n=5)).to_dict("records")
    assert row["n"] == 2 and row["sessions with G turns"] == 1
    # below min_n no interval: overhead mean 2.35 -> 2350 per 1000 sessions; saving 2300 per 1000
    # G turns; 2350 / 2300 -> 1 G turn
    assert row["G turns to break even"] == "1"
    assert row["overhead USD per 1000 sessions"].startswith("2350.000 (n=2")
    # (2.4 + 5.0) / 2 = 3.7 per session against 0.95 per G turn -> 4 G turns
    assert row["G turns to break even vs Original + prefix cache"] == "4"
    worse = sessions.assign(saving_usd=-1.0)
    [row] = break_even_table(worse, StatsKnobs(2000, 0, 0.95, min_n=5)).to_dict("records")
    assert row["G turns to break even"].startswith("never")
