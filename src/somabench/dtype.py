"""``dtype: auto``: pick bf16 or fp32 per machine, and say why.

Why: bf16 is 1.6-2.2x faster than fp32 on a CPU with native bf16 instructions (avx512_bf16,
AMX) and on most GPUs, but on an AVX2-only CPU torch's bf16 matrix products fall back to a
generic kernel that was 20-30x slower for prefill and training (issue 11). No single dtype is
right, so ``auto`` decides per machine:

* GPU (``device`` starts with ``cuda``): bf16 where ``torch.cuda.is_bf16_supported()``;
* CPU: bf16 only when the CPU advertises native bf16 matrix instructions (``/proc/cpuinfo``
  flags ``avx512_bf16`` / ``amx_bf16``, or an AMX capability reported by torch) AND a ~1 s
  microbenchmark of bf16 vs fp32 matrix products at prefill/training shapes confirms it
  (conf/bench/dtype_probe.yaml). The probe result is cached per machine in
  ``<cache_dir>/dtype_probe.json`` (key: cpu model + flags + torch version + probe settings);
* everything else: fp32.

An explicit dtype (``model.G.dtype=float32``) always wins. The resolved dtype is part of a
backend's fingerprint (so request-cache keys and neighbour indexes never mix bf16 and fp32
answers) and, with its reason, of ``run.json`` and every bench file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from somabench.locks import file_lock
from somabench.rundir import now

log = logging.getLogger(__name__)

AUTO = "auto"
# Accepted spellings -> canonical torch attribute names.
ALIASES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float32": "float32", "fp32": "float32",
           "float16": "float16", "fp16": "float16", AUTO: AUTO}
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 flags of native bf16 matrix instructions
PROBE_FILE = "dtype_probe.json"
PROBE_FORMAT = 2  # bump when the cached probe entry or the way it is measured changes
LOCK_SUFFIX = ".lock"  # the probe file's lock: <probe file>.lock


@dataclass(frozen=True)
class DtypeChoice:
    """A resolved dtype: ``name`` is a torch dtype name; ``reason`` says why, for records."""

    name: str
    reason: str
    requested: str

    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.name)

    def to_json(self) -> dict[str, str]:
        return {"dtype": self.name, "dtype_reason": self.reason, "dtype_requested": self.requested}


@dataclass(frozen=True)
class CpuInfo:
    """What decides bf16 on a CPU: torch's kernel capability and the CPU's own flags."""

    model: str
    capability: str
    native_bf16_flags: tuple[str, ...]
    torch_version: str

    @property
    def native_bf16(self) -> bool:
        return bool(self.native_bf16_flags) or "AMX" in self.capability.upper()

    def key(self, settings: dict[str, Any]) -> str:
        blob = json.dumps({"v": PROBE_FORMAT, "cpu": asdict(self), "probe": settings},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def canonical(name: str) -> str:
    """Canonical dtype name for a config value; the error names the allowed spellings."""
    key = str(name).strip().lower()
    if key not in ALIASES:
        raise ValueError(f"model dtype '{name}' is not one of {sorted(ALIASES)} "
                         f"(fix: model.<role>.dtype=auto)")
    return ALIASES[key]


def _cpuinfo_text() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def cpu_info() -> CpuInfo:
    """This machine's CPU model, flags of interest and torch's reported capability."""
    import torch

    text = _cpuinfo_text()
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.lower().startswith("model name")), platform.processor() or "unknown")
    flags: set[str] = set()
    for line in text.splitlines():
        if line.lower().startswith(("flags", "features")):
            flags.update(line.split(":", 1)[1].split())
    try:
        capability = str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - older torch: unknown capability
        capability = "unknown"
    return CpuInfo(model=model, capability=capability,
                   native_bf16_flags=tuple(f for f in NATIVE_BF16_FLAGS if f in flags),
                   torch_version=torch.__version__)


def probe_settings(path: Path | None = None) -> dict[str, Any]:
    """The microbenchmark's settings (conf/bench/dtype_probe.yaml)."""
    from omegaconf import OmegaConf

    from somabench.config import conf_dir

    source = path or conf_dir() / "bench" / "dtype_probe.yaml"
    return OmegaConf.to_container(OmegaConf.load(source), resolve=True)  # type: ignore[return-value]


def _operands(dtype: Any, shape: list[int]) -> tuple[Any, Any]:
    import torch

    m, k, n = (int(x) for x in shape)
    gen = torch.Generator().manual_seed(0)
    return (torch.randn(m, k, generator=gen).to(dtype), torch.randn(k, n, generator=gen).to(dtype))


def _timed_matmul(a: Any, b: Any) -> float:
    import torch

    started = time.perf_counter()
    torch.matmul(a, b)
    return time.perf_counter() - started


def microbenchmark(settings: dict[str, Any]) -> dict[str, Any]:
    """bf16 vs fp32 matrix products at the configured shapes: summed median seconds and the
    fp32/bf16 speed-up. The two dtypes alternate call by call, so a load spike from another
    process hits both alike; bf16 stops early once it alone used ``budget_seconds``."""
    import torch

    started = time.perf_counter()
    fp32 = bf16 = 0.0
    with torch.inference_mode():
        for shape in settings["shapes"]:
            pairs = {dt: _operands(dt, shape) for dt in (torch.float32, torch.bfloat16)}
            for a, b in pairs.values():
                torch.matmul(a, b)  # warm-up: oneDNN kernel selection, page faults
            times: dict[Any, list[float]] = {dt: [] for dt in pairs}
            for _ in range(int(settings["repeats"])):
                for dt, (a, b) in pairs.items():
                    times[dt].append(_timed_matmul(a, b))
                if sum(times[torch.bfloat16]) > float(settings["budget_seconds"]):
                    break
            fp32 += statistics.median(times[torch.float32])
            bf16 += statistics.median(times[torch.bfloat16])
    return {"fp32_s": round(fp32, 6), "bf16_s": round(bf16, 6),
            "speedup_bf16": round(fp32 / bf16, 4) if bf16 > 0 else None,
            "threads": torch.get_num_threads(), "probe_s": round(time.perf_counter() - started, 3),
            "measured": now()}


@contextlib.contextmanager
def _locked(path: Path) -> Any:
    with file_lock(path.with_name(path.name + LOCK_SUFFIX)):
        yield


def cached_probe(info: CpuInfo, cache_dir: str | Path | None,
                 settings: dict[str, Any] | None = None,
                 bench: Callable[[dict[str, Any]], dict[str, Any]] = microbenchmark) -> dict[str, Any]:
    """The microbenchmark result for this machine, measured once and cached on disk."""
    settings = settings or probe_settings()
    key = info.key(settings)
    if cache_dir is None:
        from somabench.assets import default_cache_dir

        cache_dir = default_cache_dir()
    path = Path(cache_dir) / PROBE_FILE
    with _locked(path):  # parallel sweep jobs measure once
        table = json.loads(path.read_text()) if path.exists() else {}
        if key in table:
            return {**table[key]["result"], "cached": True}
        log.info("dtype auto: measuring bf16 vs fp32 matrix products on this CPU (once; cached "
                 "in %s)", path)
        result = bench(settings)
        table[key] = {"cpu": asdict(info), "settings": settings, "result": result}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(table, indent=2))
        tmp.replace(path)
    return {**result, "cached": False}


def resolve(requested: str, device: str = "cpu", cache_dir: str | Path | None = None, *,
            info: CpuInfo | None = None,
            bench: Callable[[dict[str, Any]], dict[str, Any]] = microbenchmark,
            settings: dict[str, Any] | None = None) -> DtypeChoice:
    """Resolve a config dtype (``auto`` or an explicit name) for ``device`` on this machine."""
    name = canonical(requested)
    if name != AUTO:
        return DtypeChoice(name, f"explicit (dtype={requested})", str(requested))
    if str(device).startswith("cuda"):
        return _resolve_gpu(requested)
    if str(device) != "cpu":
        return DtypeChoice("float32", f"auto: device {device} is neither cpu nor cuda", requested)
    info = info or cpu_info()
    where = f"CPU {info.model!r}, torch capability {info.capability}"
    if not info.native_bf16:
        return DtypeChoice("float32", f"auto: {where} has no native bf16 matrix instructions "
                                      f"({'/'.join(NATIVE_BF16_FLAGS)}); bf16 would take torch's "
                                      f"slow generic path", requested)
    settings = settings or probe_settings()
    result = cached_probe(info, cache_dir, settings, bench)
    speedup = result.get("speedup_bf16")
    flags = ",".join(info.native_bf16_flags) or "AMX"
    measured = (f"bf16 {result.get('bf16_s')} s vs fp32 {result.get('fp32_s')} s "
                f"(x{speedup}, {'cached' if result.get('cached') else 'measured now'})")
    if speedup is not None and speedup >= float(settings["min_speedup"]):
        return DtypeChoice("bfloat16", f"auto: {where} has {flags} and the matmul probe confirms: "
                                       f"{measured}", requested)
    return DtypeChoice("float32", f"auto: {where} has {flags} but the matmul probe found bf16 "
                                  f"slower: {measured}", requested)


def _resolve_gpu(requested: str) -> DtypeChoice:
    import torch

    if not torch.cuda.is_available():
        return DtypeChoice("float32", "auto: device cuda requested but no GPU is available",
                           requested)
    if torch.cuda.is_bf16_supported():
        return DtypeChoice("bfloat16", f"auto: GPU {torch.cuda.get_device_name()} supports bf16",
                           requested)
    return DtypeChoice("float32", f"auto: GPU {torch.cuda.get_device_name()} lacks bf16",
                       requested)


def machine() -> dict[str, Any]:
    """The machine block of bench files: cpu model, torch capability, cores, load average."""
    info = cpu_info()
    return {"cpu_model": info.model, "torch_cpu_capability": info.capability,
            "native_bf16_flags": list(info.native_bf16_flags), "torch": info.torch_version,
            "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}


def dialogue_machine() -> dict[str, Any]:
    """What a dialogue line records of the machine when it ends: the load averages and the
    torch CPU threads (latency depends on both; docs/reports.md, Latency)."""
    import sys

    torch = sys.modules.get("torch")  # never imported just for this (an API-only run has no torch in use)
    return {"load_avg": load_average(),
            "torch_threads": int(torch.get_num_threads()) if torch is not None else None}


def load_average() -> list[float] | None:
    """1/5/15-minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None
