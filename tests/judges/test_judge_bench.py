"""The judge throughput bench on a real loopback server (scripted latency, tiny sizes)."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf
from somabench.judges.bench import main

from somabench.config import conf_dir


def test_bench_config_is_complete() -> None:
    bench = OmegaConf.load(conf_dir() / "bench" / "judges.yaml")
    assert list(bench.concurrency) == [1, 8] and bench.output == "results/bench/judges.json"
    assert set(bench.modes) == {"scripted", "smollm2"}


def test_bench_measures_concurrency_gain(tmp_path: Path) -> None:
    bench = OmegaConf.load(conf_dir() / "bench" / "judges.yaml")
    bench.concurrency = [1, 4]
    bench.modes.scripted.update(latency_seconds=0.2, n_dialogues=4, n_turns=2)
    bench.modes.smollm2.enabled = False
    config, out = tmp_path / "bench.yaml", tmp_path / "judges.json"
    OmegaConf.save(bench, config)
    assert main(["--config", str(config), "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["format"] == 1 and report["machine"]["cpus"]
    scripted = report["modes"]["scripted_latency"]
    one, four = scripted["results"]["1"], scripted["results"]["4"]
    assert one["turns"] == four["turns"] == 8 and one["chat_requests"] == 8
    assert one["status_counts"]["ok"] == 8 and four["max_in_flight"] <= 4
    assert scripted["ratio"] > 1.5  # 4 requests in flight beat 1 on a latency-bound server
