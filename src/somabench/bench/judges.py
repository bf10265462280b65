"""Judge throughput bench: judged turns per second at concurrency 1 vs 8 on a local server.

Why: the judge client's concurrency is what makes a paper panel (3 remote judges x every turn)
affordable; this measures it through the full panel path (items, cache off, score lines,
summary) against a real OpenAI-compatible server on 127.0.0.1, in two modes (see
``conf/bench/judges.yaml``): the scripted double (``somabench.testing.scripted``) with a fixed
latency (like a remote API) and the real SmolLM2-135M behind ``somabench.serve`` (the model is
the bottleneck). Each concurrency is measured ``repeats`` times; the median is reported.

    python -m somabench bench judges [--out results/bench] [bench.key=value ...]
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from somabench.bench import load_settings
from somabench.config import compose
from somabench.records import (
    JUDGE_SKIPPED,
    JUDGE_STATUSES,
    DialogueRecord,
    RecordStore,
    TurnRecord,
)
from somabench.rundir import SCORES_FILE, RunHeader, now, read_jsonl, write_header

log = logging.getLogger(__name__)

BENCH_NAME = "judges"
BENCH_FORMAT = 2  # 2: contract-1 layout (machine, dtype, medians); 1 was judges/bench.py
REF_KEY = "bench-reference"


def write_synthetic_run(root: Path, n_dialogues: int, n_turns: int) -> Path:
    """A run dir + reference dir with arithmetic questions (distinct texts: no cache effects)."""
    ref_dir = root / "references" / REF_KEY
    run_dir = root / "run"
    ref_store, store = RecordStore(ref_dir), RecordStore(run_dir)
    for d in range(n_dialogues):
        did = f"bench-{d}"
        ref_turns, turns = [], []
        for t in range(n_turns):
            a, b = d + 2, t + 3
            user = f"What is {a} times {b}? Explain briefly."
            common: dict[str, Any] = dict(dialogue_id=did, dataset="bench", turn=t, model_id="bench", user=user,
                          rendered_prompt=user, prompt_hash="-")
            ref_turns.append(TurnRecord(run_id=f"reference/{REF_KEY}", method="original",
                                        served_by="F", response=f"{a} x {b} = {a * b}.", **common))
            turns.append(TurnRecord(run_id="bench", method="surrogate", served_by="G",
                                    response=f"The product of {a} and {b} is {a * b}.",
                                    reference_turn_ref=f"{REF_KEY}/{did}/{t}", **common))
        ref_store.append_dialogue(ref_turns, DialogueRecord(f"reference/{REF_KEY}", did, "bench",
                                                            "original", n_turns))
        store.append_dialogue(turns, DialogueRecord("bench", did, "bench", "surrogate", n_turns))
    write_header(run_dir, RunHeader(status="success", reference_dir=str(ref_dir),
                                    started=now(), updated=now()))
    return run_dir


def panel_config(bench: DictConfig, tmp: Path, base_url: str, model: str, concurrency: int,
                 mode: DictConfig) -> DictConfig:
    cfg = compose([f"judge={bench.panel}", "progress=false", f"paths.output_root={tmp}",
                   f"cache.path={tmp / 'unused.sqlite'}"])
    with open_dict(cfg):
        cfg.judge.judges = {"bench": {"kind": "llm", "model": model, "base_url": base_url,
                                      "api_key_env": None}}
        cfg.judge.concurrency = concurrency
        cfg.judge.cache.enabled = False  # every turn is a real call
        if mode.get("max_tokens") is not None:
            cfg.judge.prompt_settings.similarity.max_tokens = int(mode.max_tokens)
        if mode.get("parse_retries") is not None:
            cfg.judge.parse_retries = int(mode.parse_retries)
    return cfg


def measure_once(bench: DictConfig, server: Any, mode: DictConfig,
                 concurrency: int) -> dict[str, Any]:
    """Judge a fresh synthetic run once at ``concurrency``; seconds, rows and server calls."""
    from somabench.judges.panel import judge_run

    with tempfile.TemporaryDirectory(prefix="somabench-judge-bench-") as tmp:
        run_dir = write_synthetic_run(Path(tmp), int(mode.n_dialogues), int(mode.n_turns))
        cfg = panel_config(bench, Path(tmp), server.base_url, server.model_id, concurrency, mode)
        before = server.stats()["chat_requests"]
        started = time.perf_counter()
        judge_run(cfg, run_dir)
        seconds = time.perf_counter() - started
        rows = read_jsonl(run_dir / SCORES_FILE)
        calls = server.stats()["chat_requests"] - before
    return {"seconds": seconds, "rows": rows, "calls": calls}


def measure(bench: DictConfig, server: Any, mode: DictConfig) -> dict:
    from somabench import dtype as dtypes
    from somabench.judges.panel import judge_run

    out: dict[str, Any] = {}
    if bench.get("warmup", True):  # imports, connection setup, first-call costs: not measured
        with tempfile.TemporaryDirectory(prefix="somabench-judge-bench-") as tmp:
            run_dir = write_synthetic_run(Path(tmp), 1, 1)
            judge_run(panel_config(bench, Path(tmp), server.base_url, server.model_id, 1, mode),
                      run_dir)
    for concurrency in bench.concurrency:
        runs = [measure_once(bench, server, mode, int(concurrency))
                for _ in range(int(bench.repeats))]
        rows = runs[-1]["rows"]
        rates = [len(r["rows"]) / r["seconds"] for r in runs]
        statuses = {s: sum(r["status"] == s for r in rows)
                    for s in JUDGE_STATUSES if s != JUDGE_SKIPPED}
        out[str(concurrency)] = {
            "turns": len(rows), "repeats": len(runs),
            "seconds": [round(r["seconds"], 3) for r in runs],
            "turns_per_second": round(statistics.median(rates), 3),
            "turns_per_second_runs": [round(x, 3) for x in rates],
            "chat_requests": runs[-1]["calls"], "status_counts": statuses,
            "max_in_flight": server.stats()["max_in_flight"],
            # shared CPUs: a high load makes the model rows noisy; read them with this
            "load_avg_after": dtypes.load_average(),
        }
        log.info("%s: concurrency %s -> median %.2f judged turns/s over %d run(s)",
                 server.model_id, concurrency, statistics.median(rates), len(runs))
    return out


def ratio(results: dict[str, Any], bench: DictConfig) -> float | None:
    lo, hi = str(min(bench.concurrency)), str(max(bench.concurrency))
    a, b = results.get(lo, {}).get("turns_per_second"), results.get(hi, {}).get("turns_per_second")
    return round(b / a, 3) if a and b else None


def run_bench(bench: DictConfig) -> dict[str, Any]:
    from somabench import dtype as dtypes
    from somabench.serve import OpenAICompatServer
    from somabench.testing.scripted import Behavior, ScriptedServer

    bounds: dict[str, Any] = {"max_requests": int(bench.server.max_requests),
              "lifetime_seconds": float(bench.server.lifetime_seconds)}
    report: dict[str, Any] = {
        "bench": BENCH_NAME, "format": BENCH_FORMAT,
        "what": "judged turns per second through the judge panel (similarity_v1, cache off) "
                "against a loopback OpenAI-compatible server",
        "created": now(), "settings": OmegaConf.to_container(bench, resolve=True),
        "machine": {**dtypes.machine(), "load_avg_before": dtypes.load_average()},
        "dtype": {}, "concurrency": list(bench.concurrency), "modes": {},
    }
    scripted = bench.modes.get("scripted")
    if scripted and scripted.enabled:
        default = Behavior.sleep(float(scripted.latency_seconds), str(scripted.reply))
        with ScriptedServer(default=default, **bounds) as server:
            results = measure(bench, server, scripted)
        report["dtype"]["scripted_latency"] = {"dtype": None, "dtype_reason": "no model"}
        report["modes"]["scripted_latency"] = {
            "server": f"script mode, {scripted.latency_seconds}s per request (like a remote API)",
            "results": results, "ratio": ratio(results, bench)}
    real = bench.modes.get("smollm2")
    if real and real.enabled:
        from somabench import assets
        from somabench.backends.hf import HFBackend

        backend = HFBackend(model_id=str(real.model_id), path=str(assets.resolve(str(real.asset))),
                            dtype=str(real.dtype))
        described = backend.describe()
        report["dtype"]["smollm2_backend"] = {"dtype": described.get("dtype"),
                                              "dtype_reason": described.get("dtype_reason")}
        with OpenAICompatServer(backend, **bounds) as server:
            results = measure(bench, server, real)
        report["modes"]["smollm2_backend"] = {
            "server": f"backend mode, {real.model_id} ({real.dtype}, CPU), one generation at a "
                      f"time, max_tokens={real.max_tokens}, parse_retries={real.parse_retries}",
            "results": results, "ratio": ratio(results, bench)}
    report["machine"]["load_avg_after"] = dtypes.load_average()
    return report


def run(out_dir: Path, overrides: list[str]) -> int:
    """Contract 1: measure every enabled mode, write ``out_dir/judges.json``; 0 = ok."""
    for noisy in ("somabench.judges.panel", "somabench.judges.aggregate", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    report = run_bench(load_settings(BENCH_NAME, list(overrides)))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{BENCH_NAME}.json"
    output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(json.dumps({k: v.get("ratio") for k, v in report["modes"].items()}), "->", output)
    return 0
