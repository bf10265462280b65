"""Fixtures for the baseline tests: a tiny run in which SOMA's switch surely happens."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def switching_overrides(tmp_path: Path) -> Callable[[str], list[str]]:
    """Overrides for a 5-turn math session (W=2 warm + m=2 gate hits + 1 G turn) whose gate
    always passes (a fixed threshold below any cosine, no Cor. 1 acceptance test: a 2-step
    adapter need not beat the base G), so the switch happens at turn 3. The switch rule itself
    is tested in tests/switching/test_switching*.py and tests/soma/test_soma_e2e.py."""

    def overrides(method: str) -> list[str]:
        return [
            f"method={method}", "model=tiny", "dataset=mathmt", "dataset.tasks=[math]",
            "limit=1", "dataset.truncate_turns=5", "generation.max_new_tokens=8", "judge=none",
            "progress=false", "method.switch.gate.threshold=-1.0",
            "method.switch.acceptance.enabled=false",
            f"paths.output_root={tmp_path / 'outputs'}",
            f"cache.path={tmp_path / 'cache' / 'requests.sqlite'}",
        ]

    return overrides


def run_dir(cfg) -> Path:  # noqa: ANN001
    return Path(cfg.paths.output_root) / cfg.task_name / cfg.run_name


@pytest.fixture
def run_dir_of() -> Callable[..., Path]:
    return run_dir
