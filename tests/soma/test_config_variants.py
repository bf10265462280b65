"""The ablations are config variants of one class (no code copies); theory knobs from config."""

from __future__ import annotations

import math
from typing import Any

import pytest

from somabench.config import compose
from somabench.registry import load_builtin, methods
from somabench.soma.method import Soma


class NoCtx:
    """The constructor only reads config; models are loaded lazily at the first dialogue."""

    cfg = None


@pytest.mark.parametrize(("name", "beta", "lambda_exp"), [
    ("soma", 0.05, 1.0), ("soma_wo_adl", 0.0, 1.0), ("soma_wo_expw_adl", 0.0, 0.0)])
def test_ablation_is_the_same_class_with_other_weights(name: str, beta: float,
                                                        lambda_exp: float) -> None:
    load_builtin()
    assert methods.get(name) is Soma
    cfg = compose([f"method={name}"])
    method = Soma(cfg.method, NoCtx())
    assert method.name == name  # records carry the ablation's name
    assert method.mining_cfg.weights.beta == beta
    assert method.mining_cfg.weights.lambda_exp == lambda_exp
    assert method.n_candidates == 3  # auto: Cor. 3 with the default theory knobs
    assert method.switch_cfg.warm_window == 2 and not method.batchable


def test_auto_warm_window_and_fixed_m() -> None:
    cfg = compose(["method=soma", "method.switch.warm_window=auto",
                   "method.soft_prompt.n_candidates=5"])
    method = Soma(cfg.method, NoCtx())
    assert method.switch_cfg.warm_window == 12  # ceil(2 log(2/.05) / .8^2) (Cor. 4)
    assert method.n_candidates == 5


# -- per-family budgets (conf/method/family/) -----------------------------------------------------
# App. B.2 ranges (paper ~line 434) for the SOMA knobs the family inherits from soma.yaml.
B2_CHOICES = {"soft_prompt.length": [4, 8, 16, 32, 64], "neighbors.k": [20, 50, 100],
              "mining.top_m": [50, 100, 200], "lora.rank": [4, 8, 16, 32],
              "lora.alpha": [4, 8, 16, 32]}
B2_INTERVALS = {"mining.lr": (1e-4, 5e-3), "mining.weight_decay": (0.0, 1e-2),
                "mining.grad_clip": (0.5, 1.0), "mining.tau": (0.4, 1.2),
                "mining.lambda_exp": (0.5, 2.0), "mining.beta": (0.02, 0.15),
                "lora.lr": (5e-5, 2e-3), "switch.acceptance.epsilon": (0.05, 0.12)}
# F's answers are capped in F tokens (generation.max_new_tokens) but trained on in G's tokens;
# with different tokenizers (tiny: Qwen vs SmolLM2, llama: 3.1 vs 2) allow 1.5 G tokens per F token.
TOKENIZER_MARGIN = 1.5


def get(node: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize("experiment", ["table1_llama", "table3_qwen", "ablation_llama"])
def test_paper_experiments_get_the_paper_budgets(experiment: str) -> None:
    m = compose([f"experiment={experiment}", "method=soma"]).method
    sw = m.switch
    assert 5 <= sw.warm_window <= 12  # App. B.2: W 5-12
    assert sw.warm_window == 5 and sw.gate.consecutive_hits in (2, 3)  # Sec. 5: m = 2-3
    acc = sw.acceptance
    assert acc.enabled and acc.batch == "auto" and (acc.min_batch, acc.max_batch) == (6, 24)
    assert acc.delta == 0.05 and sw.expected_turns is None  # no oracle
    for key, choices in B2_CHOICES.items():
        assert get(m, key) in choices, key
    for key, (low, high) in B2_INTERVALS.items():
        assert low <= get(m, key) <= high, key
    # lengths for 512-token answers (tiny deviations must not leak in)
    assert m.mining.max_answer_tokens == 512 and m.mining.max_context_tokens == 2048
    assert m.lora.max_seq_tokens == 4096 and m.summary.budget_tokens == 256
    assert m.theory.epsilon == acc.epsilon  # one epsilon, one delta
    ft = compose([f"experiment={experiment}", "method=history_ft"]).method
    assert ft.train.max_steps == 50 and ft.train.max_length == 4096
    assert ft.switch == sw  # "the switching is the same as SOMA" (App. B.3)
    hp = compose([f"experiment={experiment}", "method=history_prefix"]).method
    assert hp.switch == sw
    ablation = compose([f"experiment={experiment}", "method=soma_wo_expw_adl"]).method
    assert ablation.switch == sw and ablation.lora == m.lora and ablation.mining.steps == m.mining.steps


@pytest.mark.parametrize("model", ["tiny", "tiny_qwen"])
def test_tiny_family_deviations(model: str) -> None:
    m = compose([f"model={model}", "method=soma"]).method
    assert m.switch.warm_window == 2 and m.switch.acceptance.batch == 2
    assert m.mining.max_context_tokens == 128 and m.summary.budget_tokens == 96
    assert m.mining.steps == 10 * m.switch.warm_window  # 10 steps per warm turn
    assert compose([f"model={model}", "method=history_ft"]).method.train.max_length == 384


def test_family_budgets_do_not_touch_other_methods() -> None:
    from omegaconf import OmegaConf

    for method in ("original", "surrogate", "llmlingua2", "routellm"):
        tiny = compose(["model=tiny", f"method={method}"]).method
        llama = compose(["model=llama", f"method={method}"]).method
        assert OmegaConf.to_container(tiny) == OmegaConf.to_container(llama), method
        assert "switch" not in tiny and "mining" not in tiny


@pytest.mark.parametrize("overrides", [
    ["model=tiny"], ["model=tiny_qwen"], ["experiment=default_tiny"], ["experiment=tiny_paper"],
    ["experiment=table1_llama"], ["experiment=table3_qwen"], ["experiment=ablation_qwen"]])
def test_no_truncation_leaves_the_context_less_than_half(overrides: list[str]) -> None:
    """Answers are capped before contexts are cut: every pair keeps >= half its tokens for S_t."""
    soma = compose([*overrides, "method=soma"])
    answer = math.ceil(soma.generation.max_new_tokens * TOKENIZER_MARGIN) + 1  # + EOS
    m = soma.method
    # mining: context window vs the answer positions read
    assert m.mining.max_context_tokens >= m.mining.max_answer_tokens
    # LoRA: max_seq_tokens holds the soft prompt, the answer, then the left-truncated context
    assert m.lora.max_seq_tokens - m.soft_prompt.length - answer >= m.lora.max_seq_tokens / 2
    ft = compose([*overrides, "method=history_ft"]).method
    assert ft.train.max_length - answer >= ft.train.max_length / 2
