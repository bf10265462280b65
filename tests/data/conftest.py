"""Fixtures for the dataset tests: the real conf/dataset/*.yaml files, with overrides."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

CONF_DATASET = Path(__file__).resolve().parents[2] / "conf" / "dataset"


@pytest.fixture
def dataset_cfg() -> Callable[..., DictConfig]:
    """``dataset_cfg("mtbench101", min_turns=3)`` -> the yaml with those keys overridden."""

    def make(name: str, **overrides: Any) -> DictConfig:
        cfg = OmegaConf.load(CONF_DATASET / f"{name}.yaml")
        for key, value in overrides.items():
            OmegaConf.update(cfg, key, value, merge=False)
        return cfg

    return make


def _dialogue_line(id_: str, n_turns: int = 2, **meta: Any) -> str:
    turns = [{"user": f"question {i}", "assistant": f"answer {i}"} for i in range(n_turns)]
    return json.dumps({"id": id_, "dataset": "custom", "turns": turns, "meta": meta})


@pytest.fixture
def dialogue_line() -> Callable[..., str]:
    """``dialogue_line("d1", 3, task="x")`` -> one valid JSONL line in the bundled schema."""
    return _dialogue_line


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[[list[str], str], Path]:
    """Write raw lines to ``tmp_path/<name>`` and return the path."""

    def write(lines: list[str], name: str = "dialogues.jsonl") -> Path:
        path = tmp_path / name
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return path

    return write
