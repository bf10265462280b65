"""A disk cache of a dialogue's adaptation (SOMA's today), keyed on everything that trains it.

It lives in ``switching`` because it stores and restores a ``SessionAdapter``'s weights, and the keys it leaves out are
the switch rule's (``method.switch.*``). The key and the folder layout are unchanged from
``soma/adapter_cache.py``, so adapters cached before the move are still hits.

Why: SOMA variants that differ only in the *switch rule* (the acceptance test blocking or only
recorded, the gate, drift, the serving summary) train the very same adapter on the very same
mined data. Training it once per dialogue and reusing it halves a study's compute without
changing any number: the reusing run restores the adapter's weights bit for bit (its id is the
hash of the weights) and the adaptation's records, tokens and stage seconds *as measured when
it was trained*, so its cost tables count the training a deployment would pay. The record says
``adapter_cache.hit`` and how long the reuse itself took.

The key: G's and F's fingerprints (model, dtype, adapter-free), the generation settings (F's
mined answers depend on them), the run seed, the dialogue id, the warm turns' messages and
answers, and the method config *minus* the keys listed in ``RULE_ONLY_KEYS`` (they act after
training). A key that is missing a training input would reuse a wrong adapter, so the rule is
the other way round: everything is in the key unless it is known to act after training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

RULE_ONLY_KEYS: tuple[tuple[str, ...], ...] = (
    ("name",),
    ("summary",),
    ("switch", "gate"),
    ("switch", "drift"),
    ("switch", "expected_turns"),
    ("switch", "require_payoff"),
    ("switch", "acceptance", "required"),
    ("switch", "acceptance", "max_failed_tests"),
    ("adapter_cache",),
)
"""``method.*`` paths that act only after the adapter is trained (so variants share it)."""


def _drop(tree: dict[str, Any], path: tuple[str, ...]) -> None:
    node: Any = tree
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(path[-1], None)


def training_key(method_cfg: dict[str, Any], *, g_fingerprint: dict[str, Any],
                 f_fingerprint: dict[str, Any], generation: dict[str, Any], seed: int,
                 dialogue_id: str, warm: list[Any]) -> str:
    """sha256 over every input of the adaptation (see the module docstring)."""
    cfg = json.loads(json.dumps(method_cfg, default=str))
    for path in RULE_ONLY_KEYS:
        _drop(cfg, path)
    g_fp = {k: v for k, v in g_fingerprint.items() if k != "adapter_id"}
    f_fp = {k: v for k, v in f_fingerprint.items() if k != "adapter_id"}
    payload = {"method": cfg, "G": g_fp, "F": f_fp, "generation": generation, "seed": seed,
               "dialogue": dialogue_id, "warm": warm}
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


class AdapterCache:
    """``<root>/<key>/{lora.pt, adaptation.json}``; writes are atomic (temp dir + rename)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key

    def load(self, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        folder = self.path(key)
        meta, weights = folder / "adaptation.json", folder / "lora.pt"
        if not (meta.is_file() and weights.is_file()):
            return None
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            return state, json.loads(meta.read_text())
        except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as err:  # damaged: a miss
            log.warning("adapter cache entry %s is unreadable (%s): training again", folder, err)
            return None

    def store(self, key: str, state: dict[str, torch.Tensor], record: dict[str, Any]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.path(key)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=self.root))
        torch.save({k: v.detach().cpu() for k, v in state.items()}, tmp / "lora.pt")
        (tmp / "adaptation.json").write_text(json.dumps(record, default=str))
        try:
            os.replace(tmp, final)
        except OSError:  # another process stored it first: keep theirs
            for f in tmp.iterdir():
                f.unlink()
            tmp.rmdir()
        return final
