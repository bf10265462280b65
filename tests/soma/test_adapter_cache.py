"""The adapter cache (soma/adapter_cache.py): switch-rule variants share one training, anything
that trains the adapter changes the key, entries round-trip bit for bit, a damaged one is a miss."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import OmegaConf

from somabench.config import compose
from somabench.soma.adapter_cache import AdapterCache, training_key


def key(method: str, *over: str, dialogue: str = "d1", seed: int = 0) -> str:
    cfg = compose([f"method={method}", *over])
    method_cfg: dict[str, Any] = OmegaConf.to_container(cfg.method, resolve=True)
    return training_key(method_cfg, g_fingerprint={"model": "g", "adapter_id": "x"},
                        f_fingerprint={"model": "f"}, generation={"max_new_tokens": 8},
                        seed=seed, dialogue_id=dialogue, warm=[["q", "a"]])


def test_switch_rule_variants_share_the_training() -> None:
    assert key("soma") == key("soma_recorded")  # acceptance.required acts after training
    assert key("soma_holdout") == key("soma_holdout_recorded")
    assert key("soma") == key("soma", "method.switch.gate.consecutive_hits=3",
                              "method.switch.acceptance.max_failed_tests=1",
                              "method.switch.drift.enabled=false")


def test_training_inputs_change_the_key() -> None:
    base = key("soma")
    assert key("soma_holdout") != base  # held-out contexts leave the training set
    assert key("soma_positive_control") != key("soma_holdout")  # trains on B
    assert key("soma", "method.lora.rank=4") != base
    assert key("soma_wo_adl") != base
    assert key("soma", dialogue="d2") != base and key("soma", seed=1) != base


def test_store_load_round_trip_and_damaged_entry(tmp_path) -> None:
    cache = AdapterCache(tmp_path)
    state = {"lora_A": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    assert cache.load("k") is None
    cache.store("k", state, {"adapter_id": "abc", "lora_s": 1.5})
    weights, record = cache.load("k")
    assert torch.equal(weights["lora_A"], state["lora_A"]) and record["adapter_id"] == "abc"
    (cache.path("k") / "lora.pt").write_bytes(b"not a checkpoint")
    assert cache.load("k") is None  # unreadable: trained again, never a wrong adapter
