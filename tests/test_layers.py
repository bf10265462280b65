"""The import contracts in pyproject.toml ([tool.importlinter]) hold: checked by import-linter's
``lint-imports``, so a new import that breaks a layer fails the suite (issue 24 tightens them)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "lint-imports missing: pip install -e '.[dev]' (import-linter)"
    out = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
