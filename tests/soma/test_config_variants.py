"""The ablations are config variants of one class (no code copies); theory knobs from config."""

from __future__ import annotations

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
