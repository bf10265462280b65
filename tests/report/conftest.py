"""Report fixtures: hand-made run dirs (report_fixtures.py) and the composed report config."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.report.report_fixtures import build_outputs, build_warm_window


@pytest.fixture(scope="session")
def report_cfg():
    """conf/report/default.yaml as composed by the CLI."""
    from somabench.config import compose

    return compose().report


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    """An outputs dir with references, surrogate/soma/soma_wo_adl runs and judge scores."""
    root = tmp_path / "outputs"
    build_outputs(root)
    return root


@pytest.fixture
def outputs_with_sweep(outputs: Path) -> Path:
    """The same plus a warm-window sweep (soma, W = 1..3 on three datasets)."""
    build_warm_window(outputs)
    return outputs
