"""Latency (TTFT / TPOT / end-to-end) per turn: the arithmetic by hand, and a real tiny run."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pandas as pd
import pytest
import torch

from somabench.backends.base import Completion
from somabench.config import compose
from somabench.latency import (
    describe,
    latency_frame,
    latency_summary,
    queue_of_call,
    queue_of_planned,
    turn_timing,
)
from somabench.records import load_turns
from somabench.task import run_task


def completion(**kw) -> Completion:  # noqa: ANN003
    base = {"text": "a b c", "prompt_tokens": 10, "completion_tokens": 5, "seconds": 2.0,
            "rendered_prompt": "p", "model_id": "m"}
    return Completion(**{**base, **kw})


def test_turn_timing_by_hand() -> None:
    c = completion(first_token_s=0.4, last_token_s=1.2)
    got = turn_timing(0.5, c)
    assert got == {"queue": 0.5, "latency": 2.5, "ttft": 0.9, "tpot": pytest.approx(0.2)}
    # no streaming: TTFT and TPOT unknown, never 0; latency still measured
    assert turn_timing(0.5, completion()) == {"queue": 0.5, "latency": 2.5}
    # no last token time: the call's end bounds it; one token has no TPOT
    assert turn_timing(0.0, completion(first_token_s=0.4))["tpot"] == pytest.approx(0.4)
    assert "tpot" not in turn_timing(0.0, completion(first_token_s=0.4, completion_tokens=1))
    assert turn_timing(None, c) == {}


def test_queue_rules() -> None:
    assert queue_of_call(10.0, 12.5) == 2.5
    # answered while planning: the call is placed at the end of the plan (upper bound)
    assert queue_of_planned(10.0, 13.0, completion(seconds=2.0)) == 1.0
    assert queue_of_planned(10.0, 13.0, completion(seconds=2.0, cached=True)) == 3.0


def test_describe_percentiles_by_hand() -> None:
    values = pd.Series([1.0, 2.0, 3.0, 4.0, float("nan")])
    got = describe(values)
    # numpy linear interpolation over the 4 known values: rank p/100 * (n - 1)
    assert got == {"mean": 2.5, "median": 2.5, "p90": pytest.approx(3.7), "p99": pytest.approx(3.97)}
    assert describe(pd.Series([float("nan")])) == dict.fromkeys(["mean", "median", "p90", "p99"])


class _Turn:
    def __init__(self, method: str, seconds: dict[str, float], status: str = "ok") -> None:
        self.method, self.dataset, self.dialogue_id, self.turn = method, "d", "x", 0
        self.served_by, self.cached, self.status, self.seconds = "F", False, status, seconds


def test_summary_per_method_skips_failed_turns() -> None:
    turns = [_Turn("a", {"ttft": 1.0, "latency": 3.0}), _Turn("a", {"ttft": 3.0, "latency": 5.0}),
             _Turn("a", {"ttft": 99.0, "latency": 99.0}, status="api_error"),
             _Turn("b", {"latency": 2.0})]
    table = latency_summary(latency_frame(turns), ["method"]).set_index("method")
    assert table.loc["a", "ttft_s_mean"] == 2.0 and table.loc["a", "latency_s_median"] == 4.0
    assert table.loc["a", "latency_turns"] == 2
    assert pd.isna(table.loc["b", "ttft_s_mean"]) and table.loc["b", "latency_s_p99"] == 2.0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_assets) -> Path:  # noqa: ANN001
    """A real batched run on the tiny models (2 dialogues in one batch, no request cache)."""
    from tests.conftest import tiny_overrides

    tmp = tmp_path_factory.mktemp("latency")
    cfg = compose(tiny_overrides(tmp) + ["method=original", "limit=2", "batch_size=2",
                                         "dataset.truncate_turns=1", "cache.enabled=false",
                                         "task_name=lat"])
    run_task(cfg)
    return Path(cfg.paths.output_root) / cfg.task_name / cfg.run_name


def test_tiny_run_ttft_below_end_to_end(tiny_run: Path) -> None:
    """Every turn has queue < TTFT < latency; the summary has the four statistics of each."""
    turns = load_turns(tiny_run)
    assert len(turns) == 2 and {t.batch_size for t in turns} == {2}
    for t in turns:
        s = t.seconds
        assert 0 <= s["queue"] < s["ttft"] < s["latency"], s
        assert s["tpot"] > 0
        assert s["latency"] >= s["queue"] + s["generate"] - 1e-6  # a batch answer waits for it
    # both rows of the batch get their first token at the batch's first step
    assert turns[0].seconds["ttft"] == turns[1].seconds["ttft"]
    summary = pd.read_csv(tiny_run / "summary.csv")
    for measure in ("ttft", "tpot", "latency"):
        for stat in ("mean", "median", "p90", "p99"):
            assert summary[f"{measure}_s_{stat}"].notna().all()
    assert (summary["ttft_s_median"] < summary["latency_s_median"]).all()


def test_report_has_latency_table_and_figure(tiny_run: Path, tmp_path: Path) -> None:
    from somabench.commands.report import main as report_main

    out = tmp_path / "results"
    assert report_main([str(tiny_run.parents[2]), "--out", str(out), "--quiet",
                        "report.figures.formats=[png]"]) == 0
    md = (out / "latency_tiny.md").read_text()
    assert "TTFT p99 (s)" in md and "latency median (s)" in md and "Original" in md
    table = pd.read_csv(out / "latency_tiny.csv")
    summary = pd.read_csv(tiny_run / "summary.csv")
    assert table["TTFT median (s)"].iloc[0] == pytest.approx(summary["ttft_s_median"].iloc[0])
    assert (out / "latency_cdf_tiny.png").stat().st_size > 0
    # the machine's load when each dialogue ended is recorded and printed beside the latency
    loads = [json.loads(line)["machine"]["load_avg"]
             for line in (tiny_run / "dialogues.jsonl").read_text().splitlines()]
    assert loads and all(len(x) == 3 and min(x) >= 0 for x in loads)
    assert table["load 1-min median"].iloc[0] == pytest.approx(statistics.median(x[0] for x in loads))
    assert table["load 1-min max"].iloc[0] == pytest.approx(max(x[0] for x in loads))
    threads = {json.loads(line)["machine"]["torch_threads"]
               for line in (tiny_run / "dialogues.jsonl").read_text().splitlines()}
    assert threads == {torch.get_num_threads()}
    assert str(table["torch threads"].iloc[0]) == str(torch.get_num_threads())
    assert "load 1-min median" in md


def test_machine_load_skips_dialogues_without_it() -> None:
    from somabench.report.latency import machine_load

    frame = pd.DataFrame({"family": ["t", "t", "t", "u"], "label": ["A", "A", "A", "A"],
                          "dataset": ["d"] * 4, "load_1m": [1.0, 3.0, float("nan"), 9.0],
                          "torch_threads": [2.0, 1.0, 2.0, 2.0]})
    got = machine_load(frame, "t")
    assert got.to_dict("records") == [{"label": "A", "dataset": "d", "load_1m_median": 2.0,
                                       "load_1m_max": 3.0, "torch_threads": "1/2"}]
    assert machine_load(frame.drop(columns="load_1m"), "t").empty


def test_wandb_summary_has_latency(tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb", reason="wandb not installed")
    from tests.report.test_report_wandb import finished_records

    from somabench.report.wandb_logger import start

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose(["logger=wandb", "method=original", "dataset=mathmt", "task_name=lat", "judge=none",
                   f"paths.output_root={tiny_run.parents[3]}"])
    logger = start(cfg, tiny_run)
    logger.log_results()
    logger.finish("success")
    [offline] = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    summary = {}
    for r in finished_records(offline):
        if r.WhichOneof("record_type") == "summary":
            summary.update({u.key: json.loads(u.value_json) for u in r.summary.update if u.key})
    expected = pd.read_csv(tiny_run / "summary.csv").iloc[0]
    for measure in ("ttft", "tpot", "latency"):
        for stat in ("mean", "median", "p90", "p99"):
            key = f"{measure}_s_{stat}"
            assert summary[f"latency/{key}"] == pytest.approx(expected[key])
