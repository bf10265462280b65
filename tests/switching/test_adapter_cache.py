"""The adapter cache (switching/adapter_cache.py): switch-rule variants share one training, anything
that trains the adapter changes the key, entries round-trip bit for bit, a damaged one is a miss."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import OmegaConf

from somabench.config import compose
from somabench.switching.adapter_cache import AdapterCache, training_key


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


PINNED_KEY = "76e0a7a590ce59a1e84004e6"
"""``training_key`` of the inputs below as computed by ``soma/adapter_cache.py`` before the
module moved to ``somabench.switching`` (issue 24): adapters cached by earlier runs must still
be hits, so the key's recipe may not change silently."""


def test_key_and_layout_are_unchanged_so_old_entries_still_hit(tmp_path) -> None:
    method_cfg = {"name": "soma_recorded", "lora": {"rank": 4, "lr": 0.01},
                  "switch": {"warm_window": 3, "gate": {"threshold": "auto"},
                             "acceptance": {"required": False, "epsilon": 0.1}},
                  "summary": {"budget_tokens": 64}, "adapter_cache": {"enabled": True}}
    got = training_key(method_cfg, g_fingerprint={"model_id": "g", "dtype": "float32",
                                                  "adapter_id": "lora-x"},
                       f_fingerprint={"model_id": "f", "adapter_id": None},
                       generation={"max_new_tokens": 8, "temperature": 0.0}, seed=7,
                       dialogue_id="d1", warm=[([{"role": "user", "content": "hi"}], "hello")])
    assert got == PINNED_KEY
    # an entry written where the old module wrote it (<root>/<key>/{lora.pt, adaptation.json})
    folder = tmp_path / PINNED_KEY
    folder.mkdir()
    torch.save({"lora_A": torch.ones(2)}, folder / "lora.pt")
    (folder / "adaptation.json").write_text('{"adapter_id": "lora-old"}')
    weights, record = AdapterCache(tmp_path).load(got)
    assert torch.equal(weights["lora_A"], torch.ones(2)) and record["adapter_id"] == "lora-old"
