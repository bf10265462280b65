"""One throughput estimator (metrics.mean_tps over metrics.dialogue_throughput): summary, W&B
and the report agree, and end-to-end never exceeds generation, on random turn tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from somabench.metrics import dialogue_throughput, mean_tps


def random_turns(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, dialogues = [], []
    for d in range(int(rng.integers(1, 6))):
        for t in range(int(rng.integers(1, 9))):
            gen = float(rng.uniform(0.0, 3.0))
            rows.append({"dialogue_id": f"d{d}", "turn": t, "completion_tokens": float(rng.integers(0, 64)),
                         "generate_share_s": gen, "e2e_s": gen + float(rng.exponential(0.5)),
                         "timed_plan": True, "cached": bool(rng.random() < 0.2)})
        dialogues.append({"dialogue_id": f"d{d}", "adapt_s": float(rng.exponential(5.0)),
                          "start_s": float(rng.exponential(0.1))})
    return pd.DataFrame(rows), pd.DataFrame(dialogues)


@pytest.mark.parametrize("seed", range(200))
def test_end_to_end_never_exceeds_generation(seed: int) -> None:
    turns, dialogues = random_turns(np.random.default_rng(seed))
    per = dialogue_throughput(turns, ["dialogue_id"], dialogues)
    both = per.dropna(subset=["tps", "tps_e2e"])
    assert (both["tps_e2e"] <= both["tps"] + 1e-9).all()
    gen, e2e = mean_tps(per, "tps"), mean_tps(per, "tps_e2e")
    if gen is not None and e2e is not None and len(both) == len(per):
        assert e2e <= gen + 1e-9


def test_mean_tps_by_hand() -> None:
    turns = pd.DataFrame({"dialogue_id": ["a", "a", "b"], "completion_tokens": [10.0, 30.0, 10.0],
                          "generate_share_s": [1.0, 1.0, 1.0], "e2e_s": [2.0, 2.0, 2.5],
                          "timed_plan": True, "cached": False})
    per = dialogue_throughput(turns, ["dialogue_id"])
    # a: 40 / 2 = 20 gen, 40 / 4 = 10 e2e; b: 10 / 1 = 10 gen, 10 / 2.5 = 4 e2e
    assert mean_tps(per, "tps") == pytest.approx(15.0)  # pooled would be 50 / 3 = 16.7
    assert mean_tps(per, "tps_e2e") == pytest.approx(7.0)  # pooled would be 50 / 6.5 = 7.69
    assert mean_tps(pd.DataFrame(), "tps") is None
