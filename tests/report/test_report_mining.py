"""mined_prompts_<tag>: per-variant mining summary (issue 12), on a hand-built fixture."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from somabench.report.build import ReportResult
from somabench.report.mining import add_mining_artifacts, distinct_share, mining_rows, summary_frame


def _adaptation(prompts: list[str], shift: list[float], changed: list[float], delta: float | None,
                switch: int | None) -> dict:
    return {"verbalized": prompts, "prompt_shift": shift, "verbalized_changed": changed,
            "mining_steps": 20, "mining_final": {"J_first": 2.0, "J_last": 1.5},
            "switch": {"switch_turn": switch, "acceptance": {"Delta": delta}}}


@pytest.fixture
def dialogues() -> pd.DataFrame:
    rows = [
        ("SOMA", "d1", _adaptation(["a b", "c d"], [0.2, 0.4], [0.5, 1.0], -0.1, None)),
        ("SOMA", "d2", _adaptation(["e f", "g h"], [0.1, 0.1], [0.0, 0.5], 0.2, 4)),
        ("SOMA w/o ADL", "d1", _adaptation(["a b", "c d"], [0.3, 0.3], [0.5, 0.5], None, None)),
        ("SOMA w/o ADL", "d2", _adaptation(["x y", "g h"], [0.2, 0.2], [1.0, 1.0], 0.0, None)),
        ("Original", "d1", {}),
    ]
    return pd.DataFrame([{"family": "tiny", "label": lab, "dataset": "mathmt", "dialogue_id": d,
                          "adaptation": a} for lab, d, a in rows])


def test_rows_and_summary_by_hand(dialogues: pd.DataFrame) -> None:
    rows = mining_rows(dialogues, "tiny")
    assert len(rows) == 4 and set(rows["label"]) == {"SOMA", "SOMA w/o ADL"}  # Original: no mining
    soma = rows[rows["label"] == "SOMA"].set_index("dialogue_id")
    assert soma.loc["d1", "prompt_shift"] == pytest.approx(0.3)
    assert soma.loc["d1", "verbalized_changed"] == pytest.approx(0.75)
    # d1: both variants mined "a b | c d" (not distinct); d2 differs -> 1 of 2 dialogues each
    assert distinct_share(rows) == {"SOMA": 0.5, "SOMA w/o ADL": 0.5}
    summary = summary_frame(rows).set_index("variant")
    assert summary.loc["SOMA", "n"] == 2
    assert summary.loc["SOMA", "switched"] == "1/2"
    assert summary.loc["SOMA", "Delta mean [min, max]"] == "+0.050 [-0.100, +0.200]"
    assert summary.loc["SOMA", "‖P−P0‖/‖P0‖ mean (sd)"] == "0.200 (0.141)"
    assert summary.loc["SOMA w/o ADL", "V(P) changed % mean (sd)"] == "75 (35)"


def test_artifact_written_or_skipped_with_reason(dialogues: pd.DataFrame, tmp_path: Path) -> None:
    result = ReportResult(out_dir=tmp_path)
    add_mining_artifacts(result, SimpleNamespace(dialogues=dialogues), None, "tiny", "tiny", tmp_path)
    md = (tmp_path / "mined_prompts_tiny.md").read_text()
    assert "SOMA w/o ADL" in md and "a b \\| c d" in md
    header = next(line for line in md.splitlines() if line.startswith("| variant"))
    assert header.count("|") == 9  # 8 columns: no unescaped pipe inside a header
    assert len(pd.read_csv(tmp_path / "mined_prompts_tiny.csv")) == 4
    empty = ReportResult(out_dir=tmp_path)
    add_mining_artifacts(empty, SimpleNamespace(dialogues=dialogues.iloc[4:]), None, "tiny", "tiny",
                         tmp_path / "none")
    assert empty.skipped and "no SOMA mining records" in empty.skipped[0][1]
