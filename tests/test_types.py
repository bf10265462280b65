"""mypy passes on src/somabench with the settings in pyproject.toml ([tool.mypy]): strict on the
foundation and the seams, lenient elsewhere, like tests/test_layers.py runs lint-imports.

baselines/ and judges/ install as somabench.baselines and somabench.judges (package-dir in
pyproject.toml), so mypy reads a copy of the tree laid out the way it installs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYOUT = {"somabench": ROOT / "src" / "somabench", "somabench/baselines": ROOT / "baselines",
          "somabench/judges": ROOT / "judges"}
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "baselines", "judges")


def mypy_command() -> list[str] | None:
    exe = shutil.which("mypy", path=str(Path(sys.executable).parent)) or shutil.which("mypy")
    return [exe] if exe else None


def installed_layout(dest: Path) -> Path:
    """src/somabench with baselines/ and judges/ where they install (symlinks are not followed:
    a worktree may hold convenience links under src/somabench)."""
    for rel, source in LAYOUT.items():
        shutil.copytree(source, dest / rel, ignore=SKIP, symlinks=True,
                        dirs_exist_ok=True)
    return dest


@pytest.mark.timeout(900)
def test_mypy_passes(tmp_path: Path) -> None:
    command = mypy_command()
    if command is None:
        pytest.skip("mypy is not installed here: pip install -e '.[dev]'")
    tree = installed_layout(tmp_path / "tree")
    out = subprocess.run(
        [*command, "--config-file", str(ROOT / "pyproject.toml"), "--python-executable",
         sys.executable, "--cache-dir", str(ROOT / ".mypy_cache"), "-p", "somabench"],
        cwd=tree, capture_output=True, text=True, timeout=900)
    report = out.stdout.replace(str(tree) + "/", "")
    assert out.returncode == 0, report[-6000:] + out.stderr[-2000:]
