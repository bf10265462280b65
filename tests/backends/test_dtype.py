"""``dtype: auto`` (somabench.dtype): capability -> dtype, the cached probe, explicit wins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from somabench import dtype as dtypes
from somabench.dtype import CpuInfo

AVX2_ONLY = CpuInfo(model="AMD EPYC (test)", capability="AVX2", native_bf16_flags=(),
                    torch_version="2.13.0+cpu")
AVX512_BF16 = CpuInfo(model="AMD EPYC (test)", capability="AVX512",
                      native_bf16_flags=("avx512_bf16",), torch_version="2.13.0+cpu")
SETTINGS = {"shapes": [[4, 4, 4]], "repeats": 1, "budget_seconds": 1.0, "min_speedup": 1.0}


class FakeProbe:
    """Stands in for the matmul microbenchmark; counts how often it is measured."""

    def __init__(self, fp32_s: float, bf16_s: float) -> None:
        self.result = {"fp32_s": fp32_s, "bf16_s": bf16_s, "speedup_bf16": fp32_s / bf16_s}
        self.calls = 0

    def __call__(self, settings: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        return dict(self.result)


def resolve(requested: str, info: CpuInfo, probe: FakeProbe, cache: Path,
            device: str = "cpu") -> dtypes.DtypeChoice:
    return dtypes.resolve(requested, device, cache, info=info, bench=probe, settings=SETTINGS)


def test_avx2_only_cpu_gets_fp32_without_probing(tmp_path: Path) -> None:
    probe = FakeProbe(fp32_s=1.0, bf16_s=0.1)  # would say bf16 wins: must not even be asked
    choice = resolve("auto", AVX2_ONLY, probe, tmp_path)
    assert choice.name == "float32"
    assert "no native bf16" in choice.reason and "AVX2" in choice.reason
    assert probe.calls == 0


def test_native_bf16_confirmed_by_probe_gets_bf16(tmp_path: Path) -> None:
    probe = FakeProbe(fp32_s=0.5, bf16_s=0.25)
    choice = resolve("auto", AVX512_BF16, probe, tmp_path)
    assert choice.name == "bfloat16"
    assert "avx512_bf16" in choice.reason and "x2.0" in choice.reason
    assert choice.to_json() == {"dtype": "bfloat16", "dtype_reason": choice.reason,
                                "dtype_requested": "auto"}


def test_native_flags_but_slow_probe_gets_fp32(tmp_path: Path) -> None:
    """Flags alone do not decide: a machine whose bf16 path is slow (0.5x) stays on fp32."""
    choice = resolve("auto", AVX512_BF16, FakeProbe(fp32_s=0.5, bf16_s=1.0), tmp_path)
    assert choice.name == "float32" and "slower" in choice.reason


def test_probe_is_cached_per_machine(tmp_path: Path) -> None:
    probe = FakeProbe(fp32_s=0.5, bf16_s=0.25)
    first = resolve("auto", AVX512_BF16, probe, tmp_path)
    second = resolve("auto", AVX512_BF16, probe, tmp_path)
    assert probe.calls == 1 and first.name == second.name == "bfloat16"
    assert "cached" in second.reason
    # another torch version (or CPU) is another machine: measured again
    other = CpuInfo(**{**AVX512_BF16.__dict__, "torch_version": "2.14.0+cpu"})
    resolve("auto", other, probe, tmp_path)
    assert probe.calls == 2
    table = json.loads((tmp_path / dtypes.PROBE_FILE).read_text())
    assert len(table) == 2 and all(e["cpu"]["model"] == "AMD EPYC (test)" for e in table.values())


@pytest.mark.parametrize(("requested", "info", "expected"), [
    ("float32", AVX512_BF16, "float32"),   # explicit fp32 on a bf16-capable CPU
    ("bf16", AVX2_ONLY, "bfloat16"),       # explicit bf16 on an AVX2-only CPU
    ("fp16", AVX2_ONLY, "float16"),
])
def test_explicit_dtype_wins(tmp_path: Path, requested: str, info: CpuInfo, expected: str) -> None:
    probe = FakeProbe(fp32_s=0.5, bf16_s=0.25)
    choice = resolve(requested, info, probe, tmp_path)
    assert choice.name == expected and choice.reason.startswith("explicit")
    assert probe.calls == 0


def test_gpu_bf16_where_supported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Test GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve("auto", AVX2_ONLY, FakeProbe(1, 1), tmp_path, device="cuda").name == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    choice = resolve("auto", AVX2_ONLY, FakeProbe(1, 1), tmp_path, device="cuda:0")
    assert choice.name == "float32" and "lacks bf16" in choice.reason


def test_unknown_dtype_names_the_fix() -> None:
    with pytest.raises(ValueError, match="model.<role>.dtype=auto"):
        dtypes.canonical("float8")


def test_real_probe_shapes_run(tmp_path: Path) -> None:
    """The real microbenchmark on tiny shapes returns both timings (no speed assertion)."""
    result = dtypes.microbenchmark(SETTINGS)
    assert result["fp32_s"] > 0 and result["bf16_s"] > 0 and result["speedup_bf16"] > 0
