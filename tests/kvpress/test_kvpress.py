"""KV-cache compression baselines (backends/kv_press.py, conf/method/kvpress_*.yaml).

Everywhere: the config is checked and a missing kvpress is a one-line error naming the venv.
In the kvpress venv (``make test-kvpress``; marker ``kvpress``): the press really shrinks F's KV
cache after the prefill, and ``method=kvpress_*`` runs end to end on the tiny family through the
ordinary runner and records, answering every turn the Original answered.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from somabench.backends.kv_press import INSTALL_HINT, KVPressSpec, press_floor, press_outcome
from somabench.config import compose
from somabench.errors import ConfigError

HAVE_KVPRESS = importlib.util.find_spec("kvpress") is not None
needs_kvpress = pytest.mark.skipif(not HAVE_KVPRESS, reason="needs kvpress: make kvpress-env, then "
                                   "make test-kvpress")


def overrides(method: str, tmp_path: Path) -> list[str]:
    return [f"method={method}", "model=tiny", "dataset=mathmt", "limit=2",
            "dataset.truncate_turns=3", "generation.max_new_tokens=8", "judge=none",
            "progress=false", f"paths.output_root={tmp_path / 'outputs'}",
            f"cache.path={tmp_path / 'cache' / 'requests.sqlite'}"]


def test_spec_validation_names_the_key() -> None:
    assert KVPressSpec.from_cfg(None) is None
    spec = KVPressSpec.from_cfg({"name": "snapkv", "compression_ratio": 0.5})
    assert spec.describe() == {"name": "snapkv", "compression_ratio": 0.5}
    with pytest.raises(ConfigError, match="kv_press.name='h2o': one of"):
        KVPressSpec.from_cfg({"name": "h2o", "compression_ratio": 0.5})
    with pytest.raises(ConfigError, match="compression_ratio=1.0: must be in"):
        KVPressSpec.from_cfg({"name": "snapkv", "compression_ratio": 1.0})


class _Press:
    def __init__(self, **attrs: int) -> None:
        self.__dict__.update(attrs)


def test_a_prompt_within_the_window_is_served_whole() -> None:
    """kvpress's SnapKV asserts prompt > window_size (a 44-token ReMeDi first turn failed a run
    with it); such a prompt is served uncompressed and the turn says so. Above the window the
    kept count is kvpress's compute_n_kept: max(1, int(n * (1 - ratio)))."""
    snapkv, streaming = _Press(window_size=64, kernel_size=5), _Press(n_sink=4)
    assert press_floor(snapkv) == 64 and press_floor(streaming) == 4 and press_floor(object()) == 0
    half = KVPressSpec("snapkv", 0.5)
    assert press_outcome(snapkv, half, 44) == {
        "applied": False, "prompt_kv_kept": 44,
        "reason": "prompt of 44 tokens <= the press's 64-token window"}
    assert not press_outcome(snapkv, half, 64)["applied"]
    assert press_outcome(snapkv, half, 65) == {"applied": True, "prompt_kv_kept": 32}
    assert press_outcome(streaming, KVPressSpec("streaming_llm", 0.75), 101)["prompt_kv_kept"] == 25
    assert press_outcome(streaming, KVPressSpec("streaming_llm", 0.0), 9)["prompt_kv_kept"] == 9


@pytest.mark.parametrize("method", ["kvpress_streaming_llm_50", "kvpress_streaming_llm_75",
                                    "kvpress_snapkv_50", "kvpress_snapkv_75"])
def test_methods_compose_with_their_press(method: str, tmp_path: Path) -> None:
    from somabench.runner import RunContext

    spec = RunContext(compose(overrides(method, tmp_path))).model_spec("F")["kv_press"]
    press, ratio = method.removeprefix("kvpress_").rsplit("_", 1)
    assert spec == {"name": press, "compression_ratio": int(ratio) / 100}


def test_control_composes_with_nothing_removed(tmp_path: Path) -> None:
    from somabench.runner import RunContext

    spec = RunContext(compose(overrides("kvpress_control", tmp_path))).model_spec("F")["kv_press"]
    assert spec == {"name": "streaming_llm", "compression_ratio": 0.0}


@pytest.mark.kvpress
@needs_kvpress
def test_control_press_leaves_answers_unchanged(tiny_assets) -> None:
    """The control's hooks remove nothing: served one prompt at a time in the same venv, its
    greedy answers equal plain F's, so any gap to the reference comes from the stack, not it."""
    from somabench.backends.base import GenerationConfig
    from somabench.backends.hf import HFBackend

    kwargs = {"model_id": "Qwen/Qwen2.5-Coder-0.5B-Instruct",
              "path": str(tiny_assets["qwen2.5-coder-0.5b-instruct"]), "dtype": "float32"}
    plain = HFBackend(**kwargs)
    control = HFBackend(**kwargs, kv_press={"name": "streaming_llm", "compression_ratio": 0.0})
    gen = GenerationConfig(max_new_tokens=12)
    for question in ("Explain hash maps. " * 20, "What is 17 * 23? Show the steps."):
        prompt = plain.render([{"role": "user", "content": question}])
        [a] = plain.generate_text([prompt], gen)
        [b] = control.generate_text([prompt], gen)
        assert a.text == b.text and a.completion_tokens == b.completion_tokens


@pytest.mark.kvpress
@needs_kvpress
def test_snapkv_serves_a_short_prompt_whole_and_compresses_a_long_one(tiny_assets) -> None:
    """Without the floor kvpress raises "Query length 44 should be greater than the window size
    64" on a short first turn; with it the short prompt's answer is plain F's (nothing removed)
    and the long prompt is compressed (its record says how many KV entries were kept)."""
    from somabench.backends.base import GenerationConfig
    from somabench.backends.hf import HFBackend

    kwargs = {"model_id": "Qwen/Qwen2.5-Coder-0.5B-Instruct",
              "path": str(tiny_assets["qwen2.5-coder-0.5b-instruct"]), "dtype": "float32"}
    plain = HFBackend(**kwargs)
    snapkv = HFBackend(**kwargs, kv_press={"name": "snapkv", "compression_ratio": 0.5})
    gen = GenerationConfig(max_new_tokens=8)
    short = plain.render([{"role": "user", "content": "What is 17 * 23?"}])
    long = plain.render([{"role": "user", "content": "Explain hash maps. " * 30}])
    [a] = plain.generate_text([short], gen)
    [b] = snapkv.generate_text([short], gen)
    assert b.prompt_tokens is not None and b.prompt_tokens <= 64
    assert b.meta["kv_press"]["applied"] is False and a.text == b.text
    [c] = snapkv.generate_text([long], gen)
    assert c.prompt_tokens is not None
    assert c.meta["kv_press"] == {"applied": True, "prompt_kv_kept": c.prompt_tokens // 2}


@pytest.mark.skipif(HAVE_KVPRESS, reason="kvpress is installed here")
def test_missing_kvpress_is_one_clear_error() -> None:
    from somabench.backends.kv_press import build_press

    with pytest.raises(ConfigError, match="make kvpress-env"):
        build_press(KVPressSpec("streaming_llm", 0.5))
    assert ".venv-kvpress/bin/python -m somabench" in INSTALL_HINT


@pytest.mark.kvpress
@needs_kvpress
def test_press_shrinks_the_kv_cache_after_prefill(tiny_assets) -> None:
    import torch

    from somabench.backends.hf import HFBackend, cache_arg

    backend = HFBackend(model_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
                        path=str(tiny_assets["qwen2.5-coder-0.5b-instruct"]), dtype="float32",
                        kv_press={"name": "streaming_llm", "compression_ratio": 0.75})
    assert backend.fingerprint()["kv_press"]["name"] == "streaming_llm"
    prompt = backend.render([{"role": "user", "content": "Explain hash maps. " * 30}])
    enc = backend.tokenizer([prompt], return_tensors="pt", add_special_tokens=False)
    n_prompt = enc["input_ids"].shape[1]
    with torch.inference_mode(), backend.kv_press(backend.model):
        out = backend.model.generate(**enc, max_new_tokens=4, do_sample=False,
                                     return_dict_in_generate=True)
    kept = int(getattr(out, cache_arg()).get_seq_length())
    # 25 % of the prompt's entries kept, plus the new tokens decoded after the prefill
    assert kept <= round(0.25 * n_prompt) + 4 + 1 < n_prompt


@pytest.mark.kvpress
@needs_kvpress
def test_kvpress_method_end_to_end(tmp_path: Path, tiny_assets) -> None:
    from somabench.records import load_dialogues, load_turns
    from somabench.task import run_task

    runs = {}
    for method in ("original", "kvpress_snapkv_75"):
        cfg = compose(overrides(method, tmp_path))
        run_task(cfg)
        run_dir = Path(cfg.paths.output_root) / cfg.task_name / cfg.run_name
        runs[method] = ({(t.dialogue_id, t.turn): t for t in load_turns(run_dir)},
                        load_dialogues(run_dir))
    plain, pressed = runs["original"][0], runs["kvpress_snapkv_75"][0]
    assert set(pressed) == set(plain) and all(t.status == "ok" for t in pressed.values())
    assert all(t.served_by == "F" and not t.cached for t in pressed.values())
    assert all(t.extra["kv_press"]["prompt_kv_kept"] <= t.tokens["F"].prompt for t in pressed.values())
    # F sees the same prompts (the press acts inside the model): tokens sent are equal
    assert all(pressed[k].tokens["F"].prompt == plain[k].tokens["F"].prompt for k in plain)
