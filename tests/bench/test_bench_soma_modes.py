"""conf/bench/soma.yaml's modes: the llama.cpp-F variants are the reference scenario plus F's engine."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from somabench.bench.soma import MODES, load_settings, mode_settings


def test_llamacpp_variant_extends_the_reference_settings() -> None:
    settings, extra = load_settings(["bench.reference_settings.dialogues=2", "seed=3"])
    assert extra == ["seed=3"]
    ref, _ = mode_settings(settings, "reference_settings")
    fast, missing = mode_settings(settings, "reference_settings_llamacpp_f")
    assert list(fast.overrides) == [*ref.overrides, "model.F.backend=llamacpp"]
    assert fast.dialogues == 2 and fast.goal_s == ref.goal_s
    assert missing is None or "pip install -e '.[llamacpp]'" in missing
    assert {key for key, _ in MODES.values()} <= set(settings)


def test_llama_server_variant_adds_the_native_engine() -> None:
    settings, _ = load_settings([])
    ref, _ = mode_settings(settings, "reference_settings")
    native, missing = mode_settings(settings, "reference_settings_llama_server_f")
    assert list(native.overrides) == [*ref.overrides, "model.F.backend=llamacpp",
                                      "model.F.llamacpp.engine=native"]
    assert missing is None or "make llama-server" in missing


def test_a_missing_engine_skips_the_mode_with_the_engines_own_error(monkeypatch,
                                                                     tmp_path) -> None:
    """The reason is the engine's error (it names the fix); a typo in needs is an error."""
    monkeypatch.setenv("SOMABENCH_LLAMA_SERVER", str(tmp_path / "missing"))
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    settings = OmegaConf.create({"a": {"overrides": ["x=1"], "dialogues": 1},
                                 "b": {"like": "a", "needs": "llama_server", "overrides": ["y=2"]},
                                 "c": {"needs": "no_such_engine", "overrides": []}})
    node, missing = mode_settings(settings, "b")
    assert list(node.overrides) == ["x=1", "y=2"]
    assert missing is not None and "make llama-server" in missing
    assert str(tmp_path / "missing") in missing  # where it looked
    with pytest.raises(ValueError, match="llama_server"):  # a typo is an error, not a skip
        mode_settings(settings, "c")


def _fake_mode(value: float):
    def fn(*_args) -> dict:
        return {"dialogue_s": {"median": value}}
    return fn


def test_update_remeasures_one_mode_and_keeps_the_others(tmp_path, monkeypatch) -> None:
    """bench.update=true: the disabled modes come back from the existing file with their own
    measurement stamp; without it a disabled mode is recorded as skipped (never a stale number)."""
    import json

    from somabench.bench import soma

    monkeypatch.setattr(soma, "MODES", {"full_adaptation": ("full", _fake_mode(1.0)),
                                        "reference_settings": ("reference_settings", _fake_mode(2.0))})
    monkeypatch.setattr(soma, "bench_f_decode", _fake_mode(3.0))
    monkeypatch.setattr(soma, "_dtypes", lambda *_: {})
    assert soma.run(tmp_path, []) == 0
    first = json.loads((tmp_path / "soma.json").read_text())
    assert set(first["modes"]) == {"full_adaptation", "reference_settings", "f_decode"}
    assert all("load_avg_before" in m["measured"] for m in first["modes"].values())

    monkeypatch.setattr(soma, "MODES", {"full_adaptation": ("full", _fake_mode(9.0)),
                                        "reference_settings": ("reference_settings", _fake_mode(8.0))})
    only_ref = ["bench.full.enabled=false", "bench.f_decode.enabled=false"]
    assert soma.run(tmp_path, ["bench.update=true", *only_ref]) == 0
    second = json.loads((tmp_path / "soma.json").read_text())
    assert second["modes"]["reference_settings"]["dialogue_s"]["median"] == 8.0
    assert second["modes"]["full_adaptation"] == first["modes"]["full_adaptation"]
    assert second["modes"]["f_decode"] == first["modes"]["f_decode"]
    assert second["kept_from"]["modes"] == ["full_adaptation", "f_decode"]
    assert second["kept_from"]["file_created"] == first["created"]

    assert soma.run(tmp_path, only_ref) == 0
    third = json.loads((tmp_path / "soma.json").read_text())
    assert third["modes"]["full_adaptation"] == {"skipped": "bench.full.enabled=false"}
    assert "kept_from" not in third


def test_batch_speed_counts_every_completion_of_one_batch_call() -> None:
    """batch_tok_s: one chat_batch over all prompts, completion tokens / wall seconds."""
    import time
    from types import SimpleNamespace

    from somabench.bench.soma import _batch_speed

    calls: list[int] = []

    class Backend:
        def chat_batch(self, batch, gen):
            calls.append(len(batch))
            time.sleep(0.05)
            return [SimpleNamespace(completion_tokens=10) for _ in batch]

    out = _batch_speed(Backend(), [[{"role": "user", "content": str(i)}] for i in range(4)],
                       None, repeats=2)
    assert calls == [1, 4, 4]  # a one-prompt warm-up, then whole batches
    assert out["batch"] == 4 and out["tok_s"]["n"] == 2
    assert 0 < out["tok_s"]["median"] <= 40 / 0.05


def test_f_decode_rows_per_engine_with_skips_and_speedups(monkeypatch) -> None:
    """f_decode: an hf row, one row per llama.cpp engine that is installed (the other recorded
    as skipped with its reason), and each engine's speedups over hf, single and batched."""
    from types import SimpleNamespace

    import somabench.backends
    from somabench.bench import soma

    built: list[dict] = []

    class Backend:
        def __init__(self, spec: dict) -> None:
            self.spec = spec
            self.rate = 10.0 if spec["backend"] == "hf" else 30.0  # "tokens per second"

        def chat(self, messages, gen):
            return SimpleNamespace(completion_tokens=6, seconds=6 / self.rate,
                                   meta={"request_seconds": 6 / self.rate})

        def chat_batch(self, batch, gen):
            return [SimpleNamespace(completion_tokens=6) for _ in batch]

        def describe(self) -> dict:
            return {"backend": self.spec["backend"]}

        def close(self) -> None:
            pass

    def build(role, spec, cache_dir=None):
        built.append(spec)
        return Backend(spec)

    monkeypatch.setattr(somabench.backends, "build_backend", build)
    monkeypatch.setattr(soma, "missing_requirement",
                        lambda needs: "llama-server is not built" if needs == "llama_server" else None)
    settings = OmegaConf.create({"prompts": 2, "batch": 3, "max_new_tokens": 8, "repeats": 2})
    out = soma.bench_f_decode(settings, ["experiment=default_tiny"], [])
    assert [s["backend"] for s in built] == ["hf", "llamacpp"]
    assert built[1]["llamacpp"]["engine"] == "python" and "n_ctx" in built[1]["llamacpp"]
    assert out["llama_server"] == {"skipped": "llama-server is not built"}
    assert out["hf"]["tok_s"]["median"] == pytest.approx(10.0)
    assert out["llamacpp"]["tok_s"]["median"] == pytest.approx(30.0)
    assert out["speedup_llamacpp_over_hf"] == pytest.approx(3.0)
    assert out["llamacpp"]["batch_tok_s"]["batch"] == 3
    assert "batch_speedup_llamacpp_over_hf" in out
