"""Fixtures for judge tests: small run directories written through the real record store, and
panel configs composed from conf/judge/*.yaml and pointed at a loopback server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf, open_dict

from somabench.config import compose
from somabench.records import DialogueRecord, RecordStore, TurnRecord

REF_KEY = "mathmt-tiny-testref"
# Fast transport knobs for fault tests (the panel's conf values are for real endpoints).
FAST = {"timeout": 5.0, "max_retries": 2, "backoff_initial": 0.01, "backoff_max": 0.05,
        "preflight_timeout": 5.0, "parse_retries": 1, "concurrency": 1}


def _turn(run_id: str, did: str, t: int, method: str, response: str, served_by: str = "G",
          gate: dict[str, Any] | None = None, status: str = "ok",
          ref: bool = True) -> TurnRecord:
    return TurnRecord(
        run_id=run_id, dialogue_id=did, dataset="mathmt", turn=t, method=method,
        served_by=served_by, model_id="test", user=f"question {t} of {did}: what is {t}+{t}?",
        response=response, rendered_prompt=f"prompt {did} {t}", prompt_hash="x", status=status,
        error=None if status == "ok" else "boom",
        reference_turn_ref=f"{REF_KEY}/{did}/{t}" if ref else None, gate=gate,
    )


def write_run(root: Path, answers: dict[str, list[str]], references: dict[str, list[str]],
              method: str = "surrogate", gates: dict[str, list[dict | None]] | None = None,
              served: dict[str, list[str]] | None = None, cfg: DictConfig | None = None,
              statuses: dict[str, list[str]] | None = None) -> Path:
    """A run dir (records.jsonl, dialogues.jsonl, run.json) and its reference dir."""
    run_dir = root / "outputs" / "run" / "tiny" / "mathmt" / method
    ref_dir = root / "outputs" / "references" / REF_KEY
    ref_store = RecordStore(ref_dir)
    for did, texts in references.items():
        turns = [_turn(f"reference/{REF_KEY}", did, t, "original", a, "F", ref=False)
                 for t, a in enumerate(texts)]
        ref_store.append_dialogue(turns, DialogueRecord(f"reference/{REF_KEY}", did, "mathmt",
                                                        "original", len(turns)))
    store = RecordStore(run_dir)
    run_id = f"tiny/mathmt/{method}"
    for did, texts in answers.items():
        turns = [_turn(run_id, did, t, method, a,
                       served_by=(served or {}).get(did, ["G"] * len(texts))[t],
                       gate=(gates or {}).get(did, [None] * len(texts))[t],
                       status=(statuses or {}).get(did, ["ok"] * len(texts))[t])
                 for t, a in enumerate(texts)]
        store.append_dialogue(turns, DialogueRecord(run_id, did, "mathmt", method, len(turns)))
    config = OmegaConf.to_container(cfg, resolve=True) if cfg is not None else {}
    (run_dir / "run.json").write_text(json.dumps(
        {"status": "success", "reference_dir": str(ref_dir), "reference_key": REF_KEY,
         "config": config}))
    return run_dir


@pytest.fixture
def make_run(tmp_path: Path) -> Callable[..., Path]:
    def make(**kwargs: Any) -> Path:
        return write_run(tmp_path, **kwargs)

    return make


def base_overrides(tmp_path: Path) -> list[str]:
    return ["model=tiny", "dataset=mathmt", "progress=false",
            f"paths.output_root={tmp_path / 'outputs'}",
            f"cache.path={tmp_path / 'cache' / 'requests.sqlite'}"]


def panel_cfg(tmp_path: Path, server: Any = None, *, base_url: str | None = None,
              model: str | None = None, judges: dict[str, dict] | None = None,
              **knobs: Any) -> DictConfig:
    """The paper panel's config with its judges replaced by one judge on ``server``."""
    cfg = compose(base_overrides(tmp_path) + ["judge=paper"])
    with open_dict(cfg):
        cfg.judge.judges = judges or {"scripted": {
            "kind": "llm", "model": model or (server.model_id if server else "scripted-echo"),
            "base_url": base_url or server.base_url, "api_key_env": None}}
        for key, value in {**FAST, **knobs}.items():
            cfg.judge[key] = value
    return cfg
