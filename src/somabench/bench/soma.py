"""``make bench`` for SOMA -> results/bench/soma.json (settings: conf/bench/soma.yaml).

Its modes (all but ``f_decode`` are real runs on the tiny family with the request cache off):

* ``full_adaptation``: SOMA at the family's default budget on >= 3 bundled dialogues; median
  and max seconds of the full adaptation (mining + F on the mined prompts + LoRA + gate), the
  per-stage split, and the neighbour index build apart;
* ``reference_settings``: the reference implementation's small settings; seconds per 5-turn
  dialogue, everything included (serving turns too);
* ``reference_settings_llamacpp_f``: the same with F (serving turns, mined queries) on the
  llama.cpp server (the ``[llamacpp]`` extra; skipped without it); G stays in torch;
* ``reference_settings_llama_server_f``: the same on llama.cpp's own ``llama-server`` with
  parallel slots (``make llama-server``; skipped without it): the mined queries decode together;
* ``f_decode``: F's decode tok/s through transformers vs llama.cpp (both servers) for the same
  model, one prompt at a time and as one batch.

The file also holds the machine (CPU model, torch capability, bf16 flags, cores, load average
before and after) and the resolved dtypes with their reasons: timings mean little without them.

    python -m somabench bench soma [--out results/bench] [bench.full.dialogues=1 ...] [override ...]
    python -m somabench bench soma bench.update=true bench.full.enabled=false ...  # some modes
"""

from __future__ import annotations

import json
import logging
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from somabench import dtype as dtypes
from somabench.bench import SETTINGS_PREFIX as BENCH_PREFIX
from somabench.config import compose, conf_dir, to_dict
from somabench.errors import ConfigError
from somabench.rundir import now

log = logging.getLogger(__name__)

BENCH_NAME = "soma"
BENCH_FORMAT = 2  # 2: contract-1 layout (machine, dtype, modes); 1 was soma/bench.py
ADAPTATION_STAGES = ("mining_s", "f_queries_s", "lora_s", "gate_s")
SERVING_STAGES = ("serving_f_s", "serving_g_s")


def load_settings(overrides: list[str]) -> tuple[DictConfig, list[str]]:
    """conf/bench/soma.yaml with ``bench.*`` overrides applied; the rest are run overrides
    (this bench starts real runs, so unlike the others a plain ``key=value`` is a run override)."""
    settings = OmegaConf.load(conf_dir() / "bench" / f"{BENCH_NAME}.yaml")
    ours = [o[len(BENCH_PREFIX):] for o in overrides if o.startswith(BENCH_PREFIX)]
    if ours:
        settings = OmegaConf.merge(settings, OmegaConf.from_dotlist(ours))
    if not isinstance(settings, DictConfig):
        raise ConfigError(f"conf/bench/{BENCH_NAME}.yaml must hold a mapping")
    return settings, [o for o in overrides if not o.startswith(BENCH_PREFIX)]


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "median": None, "max": None, "min": None}
    return {"n": len(values), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3), "min": round(min(values), 3)}


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def summarize_run(run_dir: Path) -> list[dict[str, Any]]:
    """Per-dialogue stage seconds, switch outcome and wall time from a run's records."""
    from somabench.records import load_dialogues, load_turns

    turns = load_turns(run_dir)
    out = []
    for d in load_dialogues(run_dir):
        mine = sorted((t for t in turns if t.dialogue_id == d.dialogue_id), key=lambda t: t.turn)
        a = d.adaptation
        stages = {k: round(float(a.get(k) or 0.0), 3) for k in ADAPTATION_STAGES}
        stages["serving_f_s"] = round(sum(t.seconds.get("generate_share", 0.0) for t in mine
                                          if t.served_by == "F"), 3)
        stages["serving_g_s"] = round(sum(t.seconds.get("generate_share", 0.0) for t in mine
                                          if t.served_by.startswith("G")), 3)
        adapted = any(a.get(k) is not None for k in ADAPTATION_STAGES)
        out.append({
            "dialogue_id": d.dialogue_id, "n_turns": d.n_turns,
            "served_by": [t.served_by for t in mine],
            "adapted": adapted,
            "adaptation_s": round(sum(stages[k] for k in ADAPTATION_STAGES), 3) if adapted else None,
            "stages_s": stages, "neighbor_index_s": a.get("neighbor_index_s"),
            "switch_turn": (a.get("switch") or {}).get("switch_turn"),
            "mining_steps": a.get("mining_steps"), "lora_steps": a.get("lora_steps"),
            "f_queries": a.get("f_queries"), "knobs": {k: v for k, v in (a.get("knobs") or {}).items()
                                                       if k in ("M", "W", "B")},
            "train_tokens": getattr(d, "train_tokens", None) or None,
            "wall_s": d.seconds.get("wall"), "errors": d.n_errors,
        })
    return out


def _run_soma(name: str, settings: Any, common: list[str], extra: list[str],
              workdir: Path) -> tuple[DictConfig, list[dict[str, Any]], float]:
    from somabench.task import run_task

    overrides = [*common, *settings.overrides, f"limit={int(settings.dialogues)}",
                 f"paths.output_root={workdir / name}", f"task_name=bench_{name}", *extra]
    cfg = compose(overrides)
    log.info("bench soma/%s: %d dialogue(s), overrides %s", name, int(settings.dialogues), overrides)
    started = time.perf_counter()
    run_task(cfg)
    wall = time.perf_counter() - started
    run_dir = Path(cfg.paths.output_root) / cfg.task_name / cfg.run_name
    return cfg, summarize_run(run_dir), wall


def bench_full(settings: Any, common: list[str], extra: list[str], workdir: Path) -> dict[str, Any]:
    cfg, dialogues, wall = _run_soma("full_adaptation", settings, common, extra, workdir)
    adapted = [d for d in dialogues if d["adapted"]]
    stages = {k: _stats([d["stages_s"][k] for d in adapted]) for k in ADAPTATION_STAGES}
    summary = _stats([d["adaptation_s"] for d in adapted])
    met = summary["median"] is not None and summary["median"] <= float(settings.goal_median_s)
    return {
        "what": "seconds of SOMA's full adaptation per dialogue (mining + F on mined prompts + "
                "LoRA + gate) at the family's default budget; neighbour index build apart",
        "dialogues_run": len(dialogues), "dialogues_adapted": len(adapted),
        "adaptation_s": summary, "stages_s": stages,
        "neighbor_index_s": _stats([d["neighbor_index_s"] for d in adapted
                                    if d["neighbor_index_s"] is not None]),
        "goal_median_s": float(settings.goal_median_s), "met": met if adapted else None,
        "run_wall_s": round(wall, 3), "budget": _budget(cfg), "per_dialogue": dialogues,
    }


def bench_reference(settings: Any, common: list[str], extra: list[str],
                    workdir: Path) -> dict[str, Any]:
    cfg, dialogues, wall = _run_soma("reference_settings", settings, common, extra, workdir)
    walls = [d["wall_s"] for d in dialogues if d["wall_s"] is not None]
    summary = _stats(walls)
    return {
        "what": "seconds per dialogue at the reference implementation's small settings, "
                "everything included (F/G serving turns, mining, F queries, LoRA, gate)",
        "dialogue_s": summary,
        "stages_s": {k: _stats([d["stages_s"][k] for d in dialogues])
                     for k in (*ADAPTATION_STAGES, *SERVING_STAGES)},
        "goal_s": float(settings.goal_s),
        "met": summary["median"] <= float(settings.goal_s) if walls else None,
        "reference_impl_s_note": "the authors' reference implementation took about 285 s per "
                                 "dialogue on the issue's AVX2 machine (issue 11); not re-measured",
        "run_wall_s": round(wall, 3), "budget": _budget(cfg), "per_dialogue": dialogues,
    }


def _budget(cfg: DictConfig) -> dict[str, Any]:
    """The adaptation knobs the run actually used (so a number can be traced to its budget)."""
    m = cfg.method
    keys = {"soft_prompt": ("length", "n_candidates"), "mining": ("steps", "turns_per_step"),
            "lora": ("rank", "epochs", "max_steps", "examples_per_step", "early_stopping", "batching",
                     "gap_max_new_tokens")}
    out: dict[str, Any] = {"warm_window": m.switch.get("warm_window"),
                           "max_new_tokens": cfg.generation.max_new_tokens,
                           "truncate_turns": cfg.dataset.get("truncate_turns")}
    for section, names in keys.items():
        node = m.get(section) or {}
        out[section] = {n: (OmegaConf.to_container(node.get(n), resolve=True)
                            if OmegaConf.is_config(node.get(n)) else node.get(n))
                        for n in names if n in node}
    return out


def _decode_prompts(cfg: DictConfig, n: int) -> list[list[dict[str, str]]]:
    from somabench.data import load_dialogues

    dialogues = load_dialogues(cfg.dataset, limit=n, seed=int(cfg.seed), shard=None)
    return [[{"role": "user", "content": d.turns[0].user}] for d in dialogues]


def _decode_speed(backend: Any, prompts: list[list[dict[str, str]]], gen: Any,
                  repeats: int) -> dict[str, Any]:
    """tok/s per repeat = completion tokens / seconds of the model calls (one prompt at a time)."""
    backend.chat(prompts[0], gen)  # warm-up (first call compiles/allocates)
    rates = []
    for _ in range(repeats):
        tokens, seconds = 0, 0.0
        for messages in prompts:
            c = backend.chat(messages, gen)
            tokens += c.completion_tokens or 0
            seconds += float(c.meta.get("request_seconds", c.seconds))
        rates.append(tokens / seconds if seconds > 0 else 0.0)
    return {"tok_s": _stats(rates), "per_repeat": [round(r, 2) for r in rates],
            "describe": backend.describe() if hasattr(backend, "describe") else None}


def _batch_speed(backend: Any, prompts: list[list[dict[str, str]]], gen: Any,
                 repeats: int) -> dict[str, Any]:
    """Aggregate tok/s of one ``chat_batch`` over all prompts at once (wall seconds): what SOMA's
    M x W mined queries or a batch of dialogues see. A server without parallel slots answers
    them one by one; a batched engine decodes them together."""
    backend.chat_batch(prompts[:1], gen)  # warm-up
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = backend.chat_batch(prompts, gen)
        seconds = time.perf_counter() - started
        rates.append(sum(c.completion_tokens or 0 for c in done) / seconds if seconds else 0.0)
    return {"tok_s": _stats(rates), "per_repeat": [round(r, 2) for r in rates],
            "batch": len(prompts)}


F_DECODE_ROWS = {"llamacpp": "llama_cpp", "llama_server": "llama_server"}  # row -> NEEDS_ENGINE key


def bench_f_decode(settings: Any, common: list[str], extra: list[str]) -> dict[str, Any]:
    from somabench.backends import build_backend
    from somabench.backends.base import GenerationConfig

    cfg = compose([*common, *extra])
    prompts = _decode_prompts(cfg, int(settings.prompts))
    batch = _decode_prompts(cfg, int(settings.batch))
    gen = GenerationConfig(max_new_tokens=int(settings.max_new_tokens))
    repeats = int(settings.repeats)
    f_cfg = to_dict(cfg.model.F)
    out: dict[str, Any] = {"model_id": f_cfg["model_id"], "prompts": len(prompts),
                           "max_new_tokens": gen.max_new_tokens,
                           "what": "tok_s: completion tokens / seconds of each call (prompt "
                                   "processing included; short first-turn prompts), one prompt "
                                   "at a time; batch_tok_s: completion tokens / wall seconds of "
                                   "one chat_batch of `batch` prompts"}
    hf = build_backend("F", {**f_cfg, "backend": "hf"}, cache_dir=cfg.paths.cache_dir)
    out["hf"] = _decode_speed(hf, prompts, gen, repeats)
    out["hf"]["batch_tok_s"] = _batch_speed(hf, batch, gen, repeats)
    del hf
    for label, needs in F_DECODE_ROWS.items():
        missing = missing_requirement(needs)
        if missing:
            out[label] = {"skipped": missing}
            continue
        spec = {**f_cfg, "backend": "llamacpp",
                "llamacpp": {**f_cfg["llamacpp"], "engine": NEEDS_ENGINE[needs]}}
        llama = build_backend("F", spec, cache_dir=cfg.paths.cache_dir)
        try:
            out[label] = _decode_speed(llama, prompts, gen, repeats)
            out[label]["batch_tok_s"] = _batch_speed(llama, batch, gen, repeats)
        finally:
            llama.close()
        hf_rate, rate = out["hf"]["tok_s"]["median"], out[label]["tok_s"]["median"]
        out[f"speedup_{label}_over_hf"] = round(rate / hf_rate, 3) if hf_rate else None
        hf_batch, batch_rate = (out["hf"]["batch_tok_s"]["tok_s"]["median"],
                                out[label]["batch_tok_s"]["tok_s"]["median"])
        out[f"batch_speedup_{label}_over_hf"] = (round(batch_rate / hf_batch, 3)
                                                 if hf_batch else None)
    return out


def _dtypes(common: list[str], extra: list[str]) -> dict[str, Any]:
    cfg = compose([*common, *extra])
    out: dict[str, Any] = {}
    for role in ("F", "G"):
        spec = cfg.model[role]
        if spec.backend == "hf":
            out[role] = dtypes.resolve(str(spec.dtype), str(spec.device),
                                       cfg.paths.cache_dir).to_json()
        else:
            out[role] = {"dtype": None, "dtype_reason": f"backend {spec.backend}: see describe"}
    return out


MODES = {"full_adaptation": ("full", bench_full),
         "reference_settings": ("reference_settings", bench_reference),
         "reference_settings_llamacpp_f": ("reference_settings_llamacpp_f", bench_reference),
         "reference_settings_llama_server_f": ("reference_settings_llama_server_f",
                                               bench_reference)}


def mode_settings(settings: DictConfig, key: str) -> tuple[DictConfig, str | None]:
    """A mode's settings; ``like: <other>`` starts from that mode's overrides and adds its own
    (so the llama.cpp-F variant cannot drift from the reference settings it varies). The second
    value is why the mode cannot run here (None: it can)."""
    node = settings[key]
    if node.get("like"):
        base = settings[node.like]
        node = OmegaConf.merge(base, node)
        node.overrides = [*base.overrides, *settings[key].overrides]
    return node, missing_requirement(node.get("needs"))


NEEDS_ENGINE = {  # a mode's ``needs:`` -> the llama.cpp engine (backends/llamacpp.py) it runs on
    "llama_cpp": "python",
    "llama_server": "native",
}


def missing_requirement(needs: str | None) -> str | None:
    """Why a mode needing ``needs`` cannot run here (the engine's own error, which names the
    fix); None when it can, or needs nothing."""
    from somabench.backends.base import BackendError
    from somabench.backends.llamacpp import build_engine

    if not needs:
        return None
    if needs not in NEEDS_ENGINE:
        raise ValueError(f"bench needs={needs!r}; one of {sorted(NEEDS_ENGINE)}")
    try:
        build_engine(NEEDS_ENGINE[str(needs)])
    except BackendError as exc:
        return str(exc)
    return None


def _measured(fn: Any, *args: Any) -> dict[str, Any]:
    """Run one mode and stamp it with its own start, end and load average: a mode kept from an
    earlier call (``bench.update``) must still say when and on how loaded a machine it ran."""
    started, load_before = now(), dtypes.load_average()
    out = fn(*args)
    out["measured"] = {"started": started, "finished": now(), "load_avg_before": load_before,
                       "load_avg_after": dtypes.load_average()}
    return out


def kept_modes(path: Path, report: dict[str, Any]) -> list[str]:
    """``bench.update=true``: put back the modes this call skipped (``enabled=false``) from the file
    already at ``path``, so re-measuring one mode does not erase the others. Kept modes are
    listed in ``report["kept_from"]`` with that file's creation time; they carry their own
    ``measured`` stamp (a file without one, written before stamps existed, gets the file's)."""
    if not path.exists():
        return []
    old = json.loads(path.read_text())
    kept = []
    for mode, result in report["modes"].items():
        previous = old.get("modes", {}).get(mode)
        if "skipped" in result and str(result["skipped"]).endswith("enabled=false") and previous \
                and "skipped" not in previous:
            previous.setdefault("measured", {
                "started": old.get("created"), "finished": None,
                "load_avg_before": old.get("machine", {}).get("load_avg_before"),
                "load_avg_after": old.get("machine", {}).get("load_avg_after")})
            report["modes"][mode] = previous
            kept.append(mode)
    if kept:
        report["kept_from"] = {"file_created": old.get("created"), "modes": kept,
                               "machine": old.get("machine")}
    return kept


def run(out_dir: Path, overrides: list[str]) -> int:
    """Contract 1: run every enabled mode, write ``out_dir/soma.json``; 0 = every mode ran.
    ``bench.update=true`` keeps the existing file's results for the modes disabled in this call."""
    import torch

    settings, extra = load_settings(list(overrides))
    common = list(settings.common)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "bench": BENCH_NAME, "format": BENCH_FORMAT, "created": now(),
        "overrides": list(overrides), "settings": to_dict(settings),
        "machine": {**dtypes.machine(), "torch_threads": torch.get_num_threads(),
                    "load_avg_before": dtypes.load_average()},
        "dtype": _dtypes(common, extra), "modes": {},
    }
    failures = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="soma-bench-") as tmp:
        for mode, (key, fn) in MODES.items():
            if not settings[key].enabled:
                report["modes"][mode] = {"skipped": f"bench.{key}.enabled=false"}
                continue
            node, missing = mode_settings(settings, key)
            if missing:
                report["modes"][mode] = {"skipped": missing}
                continue
            try:
                # one work dir per mode: variants of a mode (``like:``) must not share run dirs
                report["modes"][mode] = _measured(fn, node, common, extra, Path(tmp) / mode)
            except Exception as exc:  # noqa: BLE001 - recorded; the other modes still run
                log.exception("bench soma/%s failed", mode)
                report["modes"][mode] = {"error": f"{type(exc).__name__}: {exc}"}
                failures += 1
        if settings.f_decode.enabled:
            try:
                report["modes"]["f_decode"] = _measured(bench_f_decode, settings.f_decode, common,
                                                        extra)
            except Exception as exc:  # noqa: BLE001
                log.exception("bench soma/f_decode failed")
                report["modes"]["f_decode"] = {"error": f"{type(exc).__name__}: {exc}"}
                failures += 1
        else:
            report["modes"]["f_decode"] = {"skipped": "bench.f_decode.enabled=false"}
    report["machine"]["load_avg_after"] = dtypes.load_average()
    report["wall_s"] = round(time.perf_counter() - started, 3)
    report["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    path = out_dir / f"{BENCH_NAME}.json"
    if settings.get("update"):
        log.info("kept from %s: %s", path, ", ".join(kept_modes(path, report)) or "nothing")
    path.write_text(json.dumps(report, indent=2, default=str))
    log.info("wrote %s (%d mode(s) failed)", path, failures)
    return 1 if failures else 0
