"""The GPU-recipe dry-run: every paper recipe plans without loading a model."""

from __future__ import annotations

import sys

import pytest

from somabench import plan
from somabench.commands import plan as plan_command
from somabench.config import conf_dir

EXPERIMENTS = sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml"))
HEAVY = ("torch", "vllm", "transformers", "sentence_transformers")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_recipe_passes_the_dry_run(experiment: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert plan_command.main([f"experiment={experiment}"]) == 0
    out = capsys.readouterr().out
    assert "Models:" in out and "model.F" in out and "model.G" in out
    assert "Launcher:" in out and "Jobs:" in out and "Missing on this machine" in out


def test_table1_plan_lists_jobs_models_and_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    monkeypatch.setattr(plan, "gpu_count", lambda: 0)
    monkeypatch.setattr(plan, "vllm_build", lambda: "cuda")  # as on a GPU node's install
    p = plan.build_plan(["experiment=table1_llama", "model.F.backend=vllm"])
    # 7 methods x 6 datasets, as conf/experiment/table1_llama.yaml's sweeper params say.
    assert len(p.jobs) == 42 and ["method=soma", "dataset=mtbench"] in p.jobs
    f = next(m for m in p.models if m.where == "model.F")
    assert (f.backend, f.params, f.params_source, f.tensor_parallel) == ("vllm", 70e9, "from name", 4)
    assert f.weight_gib == pytest.approx(70e9 * 2 / 1024**3)  # 16-bit weights on a GPU
    assert any("OPENROUTER_API_KEY" in m for m in p.missing)
    assert any("needs a CUDA GPU" in m for m in p.missing)


def test_the_dry_run_imports_no_model_library() -> None:
    import subprocess

    code = ("import sys, io, contextlib; from somabench.commands import main; "
            "f = io.StringIO(); ctx = contextlib.redirect_stdout(f); ctx.__enter__(); "
            "rc = main(['plan', 'experiment=table3_qwen']); ctx.__exit__(None, None, None); "
            f"print(rc, [m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "[]"], out.stdout + out.stderr


def test_cli_sweep_overrides_replace_the_experiment_axes() -> None:
    p = plan.build_plan(["experiment=table1_llama", "method=soma,original", "dataset=mathmt"])
    assert p.jobs == [["method=soma", "dataset=mathmt"], ["method=original", "dataset=mathmt"]]


def test_params_from_local_config_match_the_real_model(tiny_assets) -> None:
    import json

    cfg = json.loads((tiny_assets["smollm2-135m-instruct"] / "config.json").read_text())
    # SmolLM2-135M: 134.5 M parameters (tied embeddings), the count the model card states.
    assert plan.params_from_config(cfg) == pytest.approx(134.5e6, rel=0.005)
    assert plan.kv_bytes_per_token(cfg, 2) == 2 * 30 * 3 * 64 * 2


@pytest.mark.parametrize(("name", "params"), [
    ("meta-llama/Llama-3.1-70B-Instruct", 70e9), ("meta-llama/Llama-2-7b-chat-hf", 7e9),
    ("Qwen/Qwen2.5-Coder-0.5B-Instruct", 0.5e9), ("HuggingFaceTB/SmolLM2-135M-Instruct", 135e6),
    ("openai/gpt-oss-120b", 120e9), ("deepseek/deepseek-chat", None),
])
def test_params_from_name(name: str, params: float | None) -> None:
    assert plan.params_from_name(name) == params


def test_a_bad_override_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert plan_command.main(["experiment=no_such_recipe"]) == 2
    assert "cannot plan" in capsys.readouterr().err


def test_sessions_that_can_switch_for_both_acceptance_readings() -> None:
    """ReMeDi has 13 dialogues of >= 12 turns and 52 of >= 8 (bundled file). At W = 5, m = 2 and
    |B| auto (>= min_batch 6): the strict reading needs 5 + 6 + 1 = 12 turns, held-out mined
    contexts 5 + 2 + 1 = 8; the Original never switches."""
    base = ["dataset=remedi", "model=tiny", "limit=null", "method.switch.warm_window=5",
            "method.switch.acceptance.batch=auto"]
    fits = {f.method: f for f in plan.build_plan([*base, "method=soma,soma_holdout"]).fits}
    assert (fits["soma"].switchable, fits["soma"].sessions, fits["soma"].turns_needed) == (13, 100, 12)
    assert (fits["soma_holdout"].switchable, fits["soma_holdout"].turns_needed) == (52, 8)
    original = plan.build_plan(["dataset=remedi", "method=original"]).fits[0]
    assert original.turns_needed is None and "no switch" in original.line()
    control = plan.build_plan(["dataset=mathmt", "dataset.tasks=[math]", "method=original"]).fits[0]
    assert control.role == "negative_control" and "NEGATIVE CONTROL" in control.line()


def test_a_partial_switch_node_is_not_a_switching_method() -> None:
    from somabench.fit import turns_needed

    # `++method.switch.warm_window=3` on a multirun that includes the Original adds a bare node
    assert turns_needed({"name": "original", "switch": {"warm_window": 3}}) is None
    assert turns_needed({"name": "original"}) is None
