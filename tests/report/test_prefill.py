"""The prefill table (issue 26): prompt tokens computed = sent - read from cache, by hand."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from somabench.config import compose
from somabench.report.build import ReportResult
from somabench.report.prefill import add_prefill_artifacts, cached_shares, prefill_frame, press_note


def dialogues(cached: list[float]) -> pd.DataFrame:
    """Six dialogues of two methods: F sent 100 prompt tokens per dialogue (10 of them during
    adaptation), G 20; ``cached`` is F's cached prompt tokens per dialogue."""
    n = len(cached)
    return pd.DataFrame({
        "family": ["tiny"] * n, "dataset": ["mathmt"] * n, "dialogue_id": [f"d{i}" for i in range(n)],
        "method": ["original"] * (n // 2) + ["original_prefix_cache"] * (n - n // 2),
        "label": ["Original"] * (n // 2) + ["Original (prefix cache)"] * (n - n // 2), "run_key": ["r"] * n,
        "tokens_F_prompt": [100.0] * n, "adapt_tokens_F_prompt": [10.0] * n,
        "tokens_F_cached_prompt": cached, "adapt_tokens_F_cached_prompt": [0.0] * n,
        "tokens_G_prompt": [20.0] * n, "adapt_tokens_G_prompt": [0.0] * n,
        "tokens_G_cached_prompt": [float("nan")] * n})


def test_prefill_frame_by_hand() -> None:
    frame = prefill_frame(dialogues([0, 0, 0, 30, 60, 90]))
    assert frame["prompt_sent"].tolist() == [110.0] * 6  # 100 - 10 adaptation + 20 of G
    assert frame["prompt_computed"].tolist() == [110, 110, 110, 80, 50, 20]
    assert cached_shares(frame) == {"Original": 0.0,
                                    "Original (prefix cache)": pytest.approx(180 / 330)}


def test_prefill_table_written_only_when_something_was_cached(tmp_path: Path) -> None:
    cfg = compose([]).report
    result = ReportResult(out_dir=tmp_path)
    add_prefill_artifacts(result, SimpleNamespace(dialogues=dialogues([0] * 6), turns=pd.DataFrame()),
                          cfg, "tiny", "tiny", tmp_path)
    assert not result.written and "prefill_tiny" in dict(result.skipped)
    add_prefill_artifacts(result, SimpleNamespace(dialogues=dialogues([0, 0, 0, 30, 60, 90]),
                                                  turns=pd.DataFrame()), cfg, "tiny", "tiny", tmp_path)
    table = pd.read_csv(tmp_path / "prefill_tiny.csv")
    assert dict(zip(table["row"], table["mean"], strict=True)) == {"Original": 110.0,
                                                                   "Original (prefix cache)": 50.0}
    md = (tmp_path / "prefill_tiny.md").read_text()
    assert "Original (prefix cache) 54.5%" in md and "Original 0.0%" in md


def press_turns() -> pd.DataFrame:
    """Four SnapKV turns (one prompt within the window, served whole) and two Original turns."""
    return pd.DataFrame({
        "family": ["tiny"] * 6, "label": ["SnapKV 50 %"] * 4 + ["Original"] * 2,
        "tokens_F_prompt": [44.0, 100.0, 200.0, 300.0, 44.0, 100.0],
        "kv_press_applied": [False, True, True, True, None, None],
        "prompt_kv_kept": [44.0, 50.0, 100.0, 150.0, float("nan"), float("nan")]})


def test_press_note_by_hand(tmp_path: Path) -> None:
    note = press_note(press_turns())
    assert note is not None
    # (44 + 50 + 100 + 150) / (44 + 100 + 200 + 300) = 344 / 644 = 53.4 %; the Original has none
    assert "SnapKV 50 %: compressed 3 of 4 prompts, kept 53.4% of their prompt KV entries" in note
    assert "Original:" not in note and press_note(press_turns().iloc[4:]) is None
    # a study with presses but no prefix cache still gets the table, with the note
    result = ReportResult(out_dir=tmp_path)
    add_prefill_artifacts(result, SimpleNamespace(dialogues=dialogues([0] * 6), turns=press_turns()),
                          compose([]).report, "tiny", "tiny", tmp_path)
    assert "compressed 3 of 4 prompts" in (tmp_path / "prefill_tiny.md").read_text()
