"""Dry-run of a run or sweep: what it would load, launch and lack here, without loading anything.

Why: the paper's recipes (LLaMA-3.1-70B on 4 x 80 GB GPUs, an LLM judge panel behind
OpenRouter) cannot run on a laptop, but a researcher should see *before* booking a GPU node
which models each job needs, on which backend, roughly how much memory, which jobs the sweep
launches with which launcher, and what this machine is missing (GPU, vLLM, hub access, API
keys, launcher plugins, offline assets).

    python -m somabench plan experiment=table1_llama
    python -m somabench plan experiment=table1_llama model.F.backend=vllm dataset=mathmt limit=5
    python -m somabench plan experiment=table3_qwen hydra/launcher=slurm

Nothing is imported that loads a model (no torch, no vllm, no transformers). Memory is an
estimate: the weights (parameter count x bytes of the dtype) from the model's local
``config.json`` when there is one, else from the size in its name ("70B", "135M"; labelled
``from name``); KV cache and activations come on top (the KV bytes per token are printed when
the config is known). Exit status 0 when the plan could be built (missing items are listed,
not fatal), 2 on a config error; ``--strict`` also exits 1 when something is missing.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from somabench.config import to_dict
from somabench.fit import SessionFit, session_fit
from somabench.validate import validate

log = logging.getLogger(__name__)

ROLES = ("F", "G", "G_serve")
BYTES_PER_DTYPE = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2,
                   "fp16": 2, "half": 2, "float": 4}
# dtype "auto": vLLM and transformers take the checkpoint's dtype; on a GPU that is 16-bit for
# every model the recipes name, on a CPU somabench may pick float32 (SPEED's dtype policy), so
# the plan counts the worst case per device.
AUTO_BYTES = {"cuda": 2, "cpu": 4}
GIB = 1024**3
NAME_SIZE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*([bBmM])(?![a-zA-Z])")
SIZE_UNIT = {"b": 1e9, "m": 1e6}
LAUNCHER_PLUGINS = {  # Hydra launcher/sweeper target prefix -> module the plugin installs
    "hydra_plugins.hydra_joblib_launcher": "hydra_plugins.hydra_joblib_launcher",
    "hydra_plugins.hydra_submitit_launcher": "hydra_plugins.hydra_submitit_launcher",
    "hydra_plugins.hydra_ray_launcher": "hydra_plugins.hydra_ray_launcher",
}


@dataclass
class ModelNeed:
    """One model a job loads (or calls), with its backend and a memory estimate."""

    where: str  # config path, e.g. model.F
    model_id: str
    backend: str
    device: str
    dtype: str
    params: float | None
    params_source: str  # "config.json" | "from name" | "unknown"
    weight_gib: float | None
    kv_bytes_per_token: int | None
    tensor_parallel: int = 1
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        size = "params ?" if self.params is None else f"{_human(self.params)} params ({self.params_source})"
        if self.weight_gib is None:
            mem = "memory: unknown"
        elif self.backend in ("openai",):
            mem = "memory here: none (remote endpoint)"
        else:
            per = self.weight_gib / max(self.tensor_parallel, 1)
            mem = f"weights ~{self.weight_gib:.1f} GiB {self.dtype}"
            if self.tensor_parallel > 1:
                mem += f" = {per:.1f} GiB on each of {self.tensor_parallel} GPUs"
        kv = "" if self.kv_bytes_per_token is None else \
            f", KV cache {self.kv_bytes_per_token / 1024:.0f} KiB/token"
        extra = f"  [{'; '.join(self.notes)}]" if self.notes else ""
        return f"{self.where:<24} {self.backend:<7} {self.device:<5} {self.model_id}: {size}, {mem}{kv}{extra}"


@dataclass
class Plan:
    overrides: list[str]
    launcher: str
    sweeper: str
    jobs: list[list[str]]
    job_note: str | None
    models: list[ModelNeed]
    judges: list[str]
    missing: list[str]
    fits: list[SessionFit] = field(default_factory=list)
    """Per (dataset, method) of the jobs: sessions, how many can switch, negative control."""

    def to_json(self) -> dict[str, Any]:
        return {"overrides": self.overrides, "launcher": self.launcher, "sweeper": self.sweeper,
                "jobs": self.jobs, "job_note": self.job_note,
                "models": [m.__dict__ for m in self.models], "judges": self.judges,
                "missing": self.missing, "sessions": [f.__dict__ for f in self.fits]}


def _human(n: float) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


# -- composing -----------------------------------------------------------------------------------
def compose_with_hydra(overrides: list[str]) -> DictConfig:
    """The job config including the ``hydra`` node (sweeper params, launcher)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from somabench.config import conf_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def split_sweeps(overrides: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Plain overrides and the sweep ones (``key=a,b``) expanded to their values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    plain, sweeps = [], {}
    for text, parsed in zip(overrides, parser.parse_overrides(overrides), strict=True):
        if parsed.is_sweep_override():
            key = parsed.get_key_element()
            sweeps[key] = list(parsed.sweep_string_iterator())
        else:
            plain.append(text)
    return plain, sweeps


def sweep_jobs(cfg: DictConfig, cli_sweeps: dict[str, list[str]],
               plain: list[str] | None = None) -> tuple[list[list[str]], str | None]:
    """Jobs the basic sweeper launches: the product of the experiment's ``hydra.sweeper.params``
    and the command line's sweep overrides. As in Hydra's BasicSweeper, the command line wins
    for the same key, a plain ``key=value`` included (it pins that axis to one value)."""
    sweeper = cfg.hydra.sweeper
    search = cfg.get("search")  # an hparams_search config: `somabench tune` runs it
    if search is not None:
        space = ", ".join(f"{k}: {v}" for k, v in (search.get("params") or {}).items())
        return [], (f"Optuna search (python -m somabench tune): {search.get('n_trials')} "
                    f"trial(s), one at a time, space {space}")
    node = sweeper.get("params")  # None without an experiment's sweep axes
    params = to_dict(node, resolve=False) if node is not None else {}
    grid: dict[str, list[str]] = {}
    if params:
        _, from_cfg = split_sweeps([f"{k}={v}" for k, v in params.items()])
        for k, v in params.items():
            grid[k] = from_cfg.get(k, [str(v)])
    for text in plain or []:
        key, _, value = text.partition("=")
        if key in grid:
            grid[key] = [value]
    grid.update(cli_sweeps)
    if not grid:
        return [[]], None
    keys = list(grid)
    return [[f"{k}={v}" for k, v in zip(keys, values, strict=True)]
            for values in itertools.product(*(grid[k] for k in keys))], None


# -- models ----------------------------------------------------------------------------------------
def params_from_config(config: dict[str, Any]) -> float | None:
    """Parameters of a decoder-only transformer from its HF config (Llama/Qwen/Mistral shape)."""
    cfg = config.get("text_config", config)
    try:
        h, layers = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"])
        inter, vocab = int(cfg["intermediate_size"]), int(cfg["vocab_size"])
        heads = int(cfg["num_attention_heads"])
    except (KeyError, TypeError, ValueError):
        return None
    kv = int(cfg.get("num_key_value_heads") or heads)
    hd = int(cfg.get("head_dim") or h // heads)
    attn = h * heads * hd * 2 + 2 * h * kv * hd
    if cfg.get("attention_bias") or config.get("model_type", "").startswith("qwen2"):
        attn += heads * hd + 2 * kv * hd
    mlp = 3 * h * inter
    embed = vocab * h * (1 if cfg.get("tie_word_embeddings", config.get("tie_word_embeddings")) else 2)
    return float(embed + layers * (attn + mlp + 2 * h) + h)


def kv_bytes_per_token(config: dict[str, Any], dtype_bytes: int) -> int | None:
    cfg = config.get("text_config", config)
    try:
        heads = int(cfg["num_attention_heads"])
        kv = int(cfg.get("num_key_value_heads") or heads)
        hd = int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads)
        return 2 * int(cfg["num_hidden_layers"]) * kv * hd * dtype_bytes
    except (KeyError, TypeError, ValueError):
        return None


def params_from_name(model_id: str) -> float | None:
    """'meta-llama/Llama-3.1-70B-Instruct' -> 70e9 (the last size-looking token of the name)."""
    found = NAME_SIZE.findall(model_id.split("/")[-1])
    if not found:
        return None
    number, unit = found[-1]
    return float(number) * SIZE_UNIT[unit.lower()]


def local_dir(spec: dict[str, Any], cache_dir: str | None) -> Path | None:
    """The model's local directory if it is configured and present (never downloads)."""
    if spec.get("path"):
        path = Path(str(spec["path"])).expanduser()
        return path if path.is_dir() else None
    if spec.get("asset"):
        from somabench import assets

        try:
            path = assets.resolve(str(spec["asset"]), cache_dir)
        except Exception:  # noqa: BLE001 - a missing asset is reported elsewhere
            return None
        return path if Path(path).is_dir() else None
    return None


def model_need(where: str, spec: dict[str, Any], cache_dir: str | None) -> ModelNeed:
    backend = str(spec.get("backend", "hf"))
    device = str(spec.get("device") or "cpu")
    if backend == "vllm":  # vLLM places the model itself: the CPU build on the CPU, else CUDA
        device = "cpu" if vllm_build() == "cpu" else "cuda"
    dtype = str(spec.get("dtype") or "auto")
    model_id = str(spec.get("model_id") or spec.get("model") or "?")
    config: dict[str, Any] = {}
    directory = local_dir(spec, cache_dir)
    if directory is not None and (directory / "config.json").is_file():
        config = json.loads((directory / "config.json").read_text())
    params, source = params_from_config(config), "config.json"
    if params is None:
        params, source = params_from_name(model_id), "from name"
    if params is None:
        source = "unknown"
    nbytes = BYTES_PER_DTYPE.get(dtype) or AUTO_BYTES.get(device.split(":")[0], 4)
    notes = []
    if dtype == "auto":
        notes.append(f"dtype auto: counted at {nbytes} bytes/param on {device}")
    need = ModelNeed(
        where=where, model_id=model_id, backend=backend, device=device, dtype=dtype,
        params=params, params_source=source,
        weight_gib=None if params is None else params * nbytes / GIB,
        kv_bytes_per_token=kv_bytes_per_token(config, nbytes) if config and where != "model.encoder" else None,
        tensor_parallel=int(spec.get("tensor_parallel_size") or 1) if backend == "vllm" else 1,
        notes=notes,
    )
    if backend == "vllm":
        util = spec.get("gpu_memory_utilization")
        if device == "cpu":
            need.notes.append("vllm-cpu: KV cache of VLLM_CPU_KVCACHE_SPACE GB on top of the weights")
        else:
            need.notes.append(f"vLLM claims {util if util is not None else 'its default share'} of "
                              f"each GPU's memory for weights + KV cache")
        if spec.get("enable_lora"):
            need.notes.append(f"multi-LoRA: up to {spec.get('max_loras') or 'default'} live adapters, "
                              f"rank <= {spec.get('max_lora_rank') or 'default'}")
    return need


def models_of(cfg: DictConfig) -> list[ModelNeed]:
    cache_dir = str(cfg.paths.cache_dir) if "paths" in cfg else None
    out = []
    for role in ROLES:
        if role in cfg.model and cfg.model[role] is not None:
            spec = to_dict(cfg.model[role])
            out.append(model_need(f"model.{role}", spec, cache_dir))
    if "encoder" in cfg.model:
        spec = to_dict(cfg.model.encoder)
        spec.setdefault("backend", "st")
        out.append(model_need("model.encoder", spec, cache_dir))
    method = cfg.method
    for key in ("compressor", "router"):
        node = method.get(key) if hasattr(method, "get") else None
        if isinstance(node, DictConfig) and (node.get("model_id") or node.get("path")):
            spec = to_dict(node)
            spec.setdefault("backend", "hf")
            out.append(model_need(f"method.{key}", spec, cache_dir))
    if str(method.get("name", "")).startswith(("soma", "history_ft")):
        for need in out:
            if need.where == "model.G":
                need.notes.append("per-dialogue LoRA training on top of the weights "
                                  "(activations + adapter optimizer state)")
    return out


def judges_of(cfg: DictConfig) -> tuple[list[str], list[dict[str, Any]]]:
    judge = cfg.get("judge")
    if judge is None or not judge.get("judges"):
        return [f"judge={judge.get('name') if judge is not None else 'none'} (no model judges)"], []
    lines, specs = [], []
    for name, node in judge.judges.items():
        spec = to_dict(node)
        specs.append({"name": name, **spec})
        where = spec.get("base_url") or spec.get("asset") or spec.get("path") or "in-process"
        lines.append(f"judge.judges.{name:<14} {spec.get('kind', '?'):<6} {spec.get('model', '?')} @ {where}")
    return lines, specs


# -- this machine --------------------------------------------------------------------------------
def gpu_count() -> int:
    """Visible NVIDIA GPUs without importing torch (driver proc files or nvidia-smi)."""
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        return len(list(proc.iterdir()))
    return 1 if shutil.which("nvidia-smi") else 0


def vllm_build() -> str | None:
    """``cpu`` (the vllm-cpu distribution), ``cuda`` (vllm) or None, without importing vllm."""
    from importlib import metadata

    for dist, build in (("vllm-cpu", "cpu"), ("vllm", "cuda")):
        try:
            metadata.distribution(dist)
            return build
        except metadata.PackageNotFoundError:
            continue
    return None


def _is_loopback(url: str) -> bool:
    from somabench.backends.openai_api import is_loopback_url

    return is_loopback_url(url)


def missing_here(cfg: DictConfig, models: list[ModelNeed], judge_specs: list[dict[str, Any]],
                 launcher: str, sweeper: str) -> list[str]:
    missing: list[str] = []
    gpus = gpu_count()
    for role in ROLES:
        if role not in cfg.model or cfg.model[role] is None:
            continue
        spec = to_dict(cfg.model[role])
        backend = spec.get("backend")
        where = f"model.{role} ({spec.get('model_id')})"
        wants_gpu = bool(spec.get("requires_gpu")) or str(spec.get("device", "")).startswith("cuda")
        build = vllm_build() if backend == "vllm" else None
        if backend == "vllm":
            if build is None:
                missing.append(f"{where}: backend=vllm needs vLLM in this Python (make vllm-env "
                               f"creates .venv-vllm; CUDA: pip install 'somabench[vllm]')")
            tp = int(spec.get("tensor_parallel_size") or 1)
            if gpus and tp > gpus:
                missing.append(f"{where}: tensor_parallel_size={tp} but {gpus} GPU(s) here")
        if (wants_gpu or (backend == "vllm" and build != "cpu")) and not gpus:
            missing.append(f"{where}: needs a CUDA GPU, none here")
        if backend in ("hf", "vllm") and not spec.get("path") and not spec.get("gguf_file"):
            if spec.get("asset"):
                if local_dir(spec, str(cfg.paths.cache_dir)) is None:
                    missing.append(f"{where}: offline asset {spec['asset']} not fetched "
                                   f"(python -m somabench assets fetch {cfg.model.get('family')})")
            elif os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_cached(str(spec["model_id"])):
                missing.append(f"{where}: not in the local Hugging Face cache; needs hub access "
                               f"(gated models also need HF_TOKEN) or model.{role}.path=<local dir>")
        if backend == "openai":
            url = str(spec.get("base_url") or "")
            if not url:
                missing.append(f"{where}: backend=openai needs model.{role}.base_url")
            elif not _is_loopback(url) and spec.get("api_key_env") and \
                    not os.environ.get(str(spec["api_key_env"])):
                missing.append(f"{where}: API key env {spec['api_key_env']} is not set")
    for spec in judge_specs:
        judge_url, env = spec.get("base_url"), spec.get("api_key_env")
        if judge_url and env and not _is_loopback(str(judge_url)) and not os.environ.get(str(env)):
            missing.append(f"judge.judges.{spec['name']}: API key env {env} is not set "
                           f"({judge_url})")
        if spec.get("kind") == "local" and spec.get("asset") and \
                local_dir(spec, str(cfg.paths.cache_dir)) is None:
            missing.append(f"judge.judges.{spec['name']}: offline asset {spec['asset']} not fetched")
    for target in (launcher, sweeper):
        for prefix, module in LAUNCHER_PLUGINS.items():
            if target.startswith(prefix) and importlib.util.find_spec(module) is None:
                missing.append(f"Hydra plugin {module} (for {target}) is not installed")
    return sorted(set(missing))


def dataset_needs(names: set[str]) -> list[str]:
    """Datasets read from the hub (conf/dataset/<name>.yaml ``loader: hub``) when offline."""
    from somabench.config import conf_dir

    out = []
    for name in sorted(names):
        path = conf_dir() / "dataset" / f"{name}.yaml"
        loader = to_dict(OmegaConf.load(path), resolve=False).get("loader") if path.is_file() else None
        if loader == "hub" and os.environ.get("HF_HUB_OFFLINE") == "1":
            out.append(f"dataset {name}: read from the Hugging Face hub, but HF_HUB_OFFLINE=1 "
                       f"(download it where the hub is reachable, or use a local copy)")
    return out


def _hub_cached(model_id: str) -> bool:
    from somabench.backends import _in_hf_cache

    return _in_hf_cache(model_id)


# -- the plan ------------------------------------------------------------------------------------
def build_plan(overrides: list[str]) -> Plan:
    plain, cli_sweeps = split_sweeps(overrides)
    base = compose_with_hydra(plain + [f"{k}={v[0]}" for k, v in cli_sweeps.items()])
    validate(base)  # a bad method/judge/dataset value: the error a run would give, before work
    launcher = str(base.hydra.launcher.get("_target_", "?"))
    sweeper = str(base.hydra.sweeper.get("_target_", "?"))
    multirun = (str(base.hydra.get("mode")) == "RunMode.MULTIRUN" or bool(cli_sweeps)
                or base.get("search") is not None)  # an hparams_search: trials, not one run
    jobs, note = sweep_jobs(base, cli_sweeps, plain) if multirun else ([[]], None)
    # Models depend on the config groups a job selects: compose once per distinct
    # (model, method) choice among the jobs, not once per job.
    seen: dict[str, ModelNeed] = {}
    judge_lines: list[str] = []
    judge_specs: list[dict[str, Any]] = []
    missing: set[str] = set()
    variants = {tuple(o for o in job if o.split("=")[0] in ("model", "method")) for job in jobs} or {()}
    for variant in sorted(variants):
        cfg = base if not variant else compose_with_hydra(plain + list(variant))
        validate(cfg)
        models = models_of(cfg)
        for m in models:
            seen.setdefault(f"{m.where}|{m.model_id}|{m.backend}|{m.dtype}", m)
        lines, specs = judges_of(cfg)
        judge_lines = judge_lines or lines
        judge_specs = judge_specs or specs
        missing.update(missing_here(cfg, models, specs, launcher, sweeper))
    datasets = {o.split("=", 1)[1] for job in jobs for o in job if o.startswith("dataset=")}
    missing.update(dataset_needs(datasets or {str(base.dataset.name)}))
    if not gpu_count() and any(m.device.startswith("cuda") for m in seen.values()):
        missing.add("GPU: none visible here (no /proc/driver/nvidia, no nvidia-smi)")
    return Plan(overrides=overrides, launcher=launcher, sweeper=sweeper, jobs=jobs,
                job_note=note, models=list(seen.values()), judges=judge_lines,
                missing=sorted(missing), fits=fits_of(base, plain, jobs))


MAX_FIT_JOBS = 200  # jobs whose sessions are loaded for the fit section (each composes once)


def fits_of(base: DictConfig, plain: list[str], jobs: list[list[str]]) -> list[SessionFit]:
    """:class:`SessionFit` per distinct (dataset, method) config among the jobs (the bundled
    files load in well under a second; a dataset that cannot load here is left out: the
    missing section names it)."""
    from somabench.data import load_dialogues
    from somabench.data.schema import DatasetError

    out: dict[str, SessionFit] = {}
    for job in (jobs or [[]])[:MAX_FIT_JOBS]:
        cfg = compose_with_hydra(plain + job) if job else base
        validate(cfg)  # each job's values (a sweep axis may hold a bad one)
        if cfg.get("method") is None or cfg.get("dataset") is None:
            continue
        dataset = to_dict(cfg.dataset)
        method = to_dict(cfg.method)
        key = json.dumps([dataset, method, cfg.get("limit"), cfg.get("seed")], sort_keys=True,
                         default=str)
        if key in out:
            continue
        try:
            dialogues = load_dialogues(cfg.dataset, limit=cfg.get("limit"), seed=int(cfg.seed))
        except (DatasetError, OSError, ValueError) as exc:
            log.info("plan: sessions of %s not counted: %s", dataset.get("name"), exc)
            continue
        out[key] = session_fit(dataset, method, dialogues)
    return list(out.values())


def render(plan: Plan, max_jobs: int) -> str:
    out = [f"somabench dry-run: {' '.join(plan.overrides) or '(defaults)'}", "", "Models:"]
    out += [f"  {m.line()}" for m in plan.models]
    out += ["", "Judges:"] + [f"  {line}" for line in plan.judges]
    out += ["", f"Launcher: {plan.launcher}", f"Sweeper:  {plan.sweeper}"]
    if plan.job_note:
        out.append(f"Jobs: {plan.job_note}")
    else:
        out.append(f"Jobs: {len(plan.jobs)}")
        for i, job in enumerate(plan.jobs[:max_jobs]):
            out.append(f"  [{i}] {' '.join(job) or '(single run)'}")
        if len(plan.jobs) > max_jobs:
            out.append(f"  ... {len(plan.jobs) - max_jobs} more")
    if plan.fits:
        out += ["", "Sessions (a switch needs W + max(m, |B|) + 1 turns; somabench/fit.py):"]
        out += [f"  {fit.line()}" for fit in plan.fits]
    out += ["", "Missing on this machine:" if plan.missing else "Missing on this machine: nothing"]
    out += [f"  - {m}" for m in plan.missing]
    return "\n".join(out)
