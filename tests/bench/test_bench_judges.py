"""The judge throughput bench (somabench.bench.judges) on a real loopback server: scripted
latency, tiny sizes, one repeat; and the bench package's one signature."""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

from omegaconf import OmegaConf

from somabench.bench import BENCHMARKS
from somabench.bench.judges import run
from somabench.config import conf_dir


def test_every_bench_has_the_one_signature() -> None:
    for name in BENCHMARKS:
        module = importlib.import_module(f"somabench.bench.{name}")
        assert list(inspect.signature(module.run).parameters) == ["out_dir", "overrides"], name


def test_bench_config_is_complete() -> None:
    bench = OmegaConf.load(conf_dir() / "bench" / "judges.yaml")
    assert list(bench.concurrency) == [1, 8] and bench.repeats >= 3
    assert set(bench.modes) == {"scripted", "smollm2"}


def test_bench_measures_concurrency_gain(tmp_path: Path) -> None:
    overrides = ["concurrency=[1,4]", "repeats=1", "modes.scripted.latency_seconds=0.2",
                 "modes.scripted.n_dialogues=4", "modes.scripted.n_turns=2",
                 "modes.smollm2.enabled=false"]
    assert run(tmp_path, overrides) == 0
    report = json.loads((tmp_path / "judges.json").read_text())
    assert report["format"] == 2 and report["machine"]["cores"]
    assert report["machine"]["load_avg_before"] is not None and "load_avg_after" in report["machine"]
    scripted = report["modes"]["scripted_latency"]
    one, four = scripted["results"]["1"], scripted["results"]["4"]
    assert one["turns"] == four["turns"] == 8 and one["chat_requests"] == 8
    assert one["status_counts"]["ok"] == 8 and four["max_in_flight"] <= 4
    assert scripted["ratio"] > 1.5  # 4 requests in flight beat 1 on a latency-bound server
