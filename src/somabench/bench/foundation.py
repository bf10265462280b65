"""Foundation benchmark: harness overhead, hf throughput vs plain generate, batching speed-up.

Settings and goals: conf/bench/foundation.yaml. Writes results/bench/foundation.json.

    python -m somabench bench foundation [--out results/bench] [overhead.dialogues=2 ...]
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from somabench.bench import load_settings
from somabench.config import compose
from somabench.rundir import now

log = logging.getLogger(__name__)

BENCH_NAME = "foundation"


def _cfg(settings: Any, tmp: Path, extra: list[str]) -> Any:
    return compose(list(settings.overrides) + [
        f"paths.output_root={tmp / 'outputs'}", f"cache.path={tmp / 'cache.sqlite'}",
        "cache.enabled=false", *extra])


class _Timed:
    """Wraps a backend's generate_text to sum the seconds spent inside model calls."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.seconds = 0.0
        self.calls = 0
        self._inner = backend.generate_text

        def timed(*args: Any, **kwargs: Any) -> Any:  # whatever the backend's signature is
            started = time.perf_counter()
            try:
                return self._inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self.calls += 1

        backend.generate_text = timed


def _serve(cfg: Any, batch_size: int) -> tuple[float, _Timed, int]:
    from somabench.data import load_dialogues
    from somabench.records import RecordStore
    from somabench.registry import load_builtin, methods
    from somabench.runner import RunContext, Runner

    load_builtin()
    dialogues = load_dialogues(cfg.dataset, limit=cfg.limit, seed=int(cfg.seed), shard=None)
    ctx = RunContext(cfg)
    timed = _Timed(ctx.raw("F"))  # load the model before the clock starts
    method = methods.get("original")(cfg.method, ctx)
    store = RecordStore(Path(cfg.paths.output_root) / f"b{batch_size}")
    runner = Runner(cfg, ctx, method, store, run_id="bench", reference=None, reference_key=None,
                    history_mode="own")
    started = time.perf_counter()
    runner.serve(dialogues, batch_size)
    wall = time.perf_counter() - started
    tokens = sum(t.tokens["F"].completion or 0 for t in store.turns())
    return wall, timed, tokens


def bench_overhead(settings: Any, tmp: Path) -> dict[str, Any]:
    """Median over ``overhead.repeats`` fresh runs of the share of wall time outside model calls."""
    s = settings.overhead
    runs: list[dict[str, Any]] = []
    for i in range(max(1, int(s.get("repeats", 1)))):
        cfg = _cfg(settings, tmp / f"overhead{i}", [
            f"limit={s.dialogues}", f"dataset.truncate_turns={s.truncate_turns}",
            f"generation.max_new_tokens={s.max_new_tokens}"])
        wall, timed, _ = _serve(cfg, 1)
        runs.append({"wall_s": round(wall, 3), "model_s": round(timed.seconds, 3),
                     "calls": timed.calls, "overhead_share": round(1.0 - timed.seconds / wall, 4)})
    share = statistics.median([r["overhead_share"] for r in runs])
    return {"wall_s": statistics.median([r["wall_s"] for r in runs]),
            "model_s": statistics.median([r["model_s"] for r in runs]), "calls": runs[0]["calls"],
            "overhead_share": share, "repeats": len(runs), "per_run": runs,
            "goal_max": settings.goals.overhead_max, "met": share <= settings.goals.overhead_max}


def bench_throughput(settings: Any, tmp: Path) -> dict[str, Any]:
    import torch

    from somabench.backends.base import GenerationConfig
    from somabench.data import load_dialogues
    from somabench.runner import RunContext

    s = settings.throughput
    cfg = _cfg(settings, tmp / "tp", [f"limit={s.prompts}"])
    dialogues = load_dialogues(cfg.dataset, limit=cfg.limit, seed=0, shard=None)
    messages = [[{"role": "user", "content": d.turns[0].user}] for d in dialogues]
    backend = RunContext(cfg).raw("F")
    gen = GenerationConfig(max_new_tokens=int(s.max_new_tokens))
    ours, plain = [], []
    for _ in range(int(s.repeats)):
        tokens, seconds = 0, 0.0
        for m in messages:
            c = backend.chat(m, gen)
            tokens += c.completion_tokens
            seconds += c.seconds
        ours.append(tokens / seconds)
        tokens, started = 0, time.perf_counter()
        for m in messages:  # the plain loop a user would write
            text = backend.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
            enc = backend.tokenizer(text, return_tensors="pt", add_special_tokens=False)
            with torch.inference_mode():
                out = backend.model.generate(**enc, max_new_tokens=int(s.max_new_tokens), do_sample=False,
                                             pad_token_id=backend.tokenizer.pad_token_id)
            tokens += out.shape[1] - enc["input_ids"].shape[1]
        plain.append(tokens / (time.perf_counter() - started))
    ratio = statistics.median(ours) / statistics.median(plain)
    return {"somabench_tok_s": round(statistics.median(ours), 2),
            "plain_generate_tok_s": round(statistics.median(plain), 2), "ratio": round(ratio, 3),
            "goal_min": settings.goals.throughput_ratio_min,
            "met": ratio >= settings.goals.throughput_ratio_min,
            "note": "somabench seconds are measured around model.generate only; the plain loop "
                    "includes templating and tokenization"}


def bench_batching(settings: Any, tmp: Path) -> dict[str, Any]:
    """Median over ``batching.repeats`` of the batch-1 / batch-B wall-time ratio (each repeat
    serves the same dialogues both ways, in fresh run dirs)."""
    s = settings.batching
    common = [f"limit={s.dialogues}", f"dataset.truncate_turns={s.truncate_turns}",
              f"generation.max_new_tokens={s.max_new_tokens}"]
    runs: list[dict[str, Any]] = []
    for i in range(max(1, int(s.get("repeats", 1)))):
        wall1, _, tok1 = _serve(_cfg(settings, tmp / f"batch1_{i}", common), 1)
        wallb, _, tokb = _serve(_cfg(settings, tmp / f"batchB_{i}",
                                     common + [f"batch_size={s.batch_size}"]), int(s.batch_size))
        runs.append({"wall_batch1_s": round(wall1, 2), f"wall_batch{s.batch_size}_s": round(wallb, 2),
                     "speedup": round(wall1 / wallb, 2), "completion_tokens": [tok1, tokb]})
    speedup = statistics.median([r["speedup"] for r in runs])
    return {"dialogues": s.dialogues, "batch_size": s.batch_size,
            "wall_batch1_s": statistics.median([r["wall_batch1_s"] for r in runs]),
            f"wall_batch{s.batch_size}_s": statistics.median([r[f"wall_batch{s.batch_size}_s"] for r in runs]),
            "speedup": speedup, "completion_tokens": runs[0]["completion_tokens"],
            "repeats": len(runs), "per_run": runs, "goal_min": settings.goals.batch_speedup_min,
            "met": speedup >= settings.goals.batch_speedup_min}


def run(out_dir: Path, overrides: list[str]) -> int:
    """Contract 1: measure, write ``out_dir/foundation.json``; 0 = it ran (goals met or not are
    data: ``summary``)."""
    from somabench import dtype as dtypes

    settings = load_settings(BENCH_NAME, list(overrides))
    machine = {**dtypes.machine(), "load_avg_before": dtypes.load_average()}
    run_cfg = compose(list(settings.overrides))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        result: dict[str, Any] = {
            "bench": BENCH_NAME, "machine": machine,
            "dtype": {"F": dtypes.resolve(str(run_cfg.model.F.dtype), str(run_cfg.model.F.device),
                                          run_cfg.paths.cache_dir).to_json()},
            "settings": OmegaConf.to_container(settings, resolve=True),
            "overhead": bench_overhead(settings, tmp),
            "throughput": bench_throughput(settings, tmp),
            "batching": bench_batching(settings, tmp),
            "measured": now(),
        }
    machine["load_avg_after"] = dtypes.load_average()
    result["summary"] = {k: result[k].get("met") for k in ("overhead", "throughput", "batching")}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{BENCH_NAME}.json").write_text(json.dumps(result, indent=2, default=str))
    return 0
