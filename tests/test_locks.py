"""One lock helper (somabench.locks over filelock): exclusive across processes, released when
the holder exits, non-blocking on request; no module imports ``fcntl`` (Windows has none)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from somabench.locks import LockBusy, file_lock

SRC = Path(__file__).resolve().parents[1] / "src"

HOLD = """
import sys, time
from pathlib import Path
from somabench.locks import file_lock
with file_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_lock_held_elsewhere_is_busy_then_free_once_the_holder_exits(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path), "60"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LockBusy, match="x.lock"):
            with file_lock(path, blocking=False):
                pass
    finally:
        holder.kill()  # a killed holder releases its lock
        holder.wait()
    with file_lock(path, blocking=False) as held:
        assert held == path
        with pytest.raises(LockBusy):  # a second lock on one path, even in one process
            with file_lock(path, blocking=False):
                pass


def test_no_module_imports_fcntl() -> None:
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                 if "import fcntl" in p.read_text(encoding="utf-8")]
    assert offenders == []
