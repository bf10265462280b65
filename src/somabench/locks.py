"""Inter-process file locks: one helper over the ``filelock`` package for every lock file.

Why: four modules (the shared reference, the dtype probe cache, the request cache's setup and
the tune study) each called ``fcntl.flock`` themselves, and ``fcntl`` imported at module level
kept the package from importing on Windows. ``filelock`` picks the OS primitive (``flock`` on
POSIX, ``msvcrt`` on Windows); the lock is released when the holder exits or is killed, and
the lock file stays in place (its content is free for the holder to use, e.g. who holds it).

Foundation layer: imports nothing from somabench.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout


class LockBusy(RuntimeError):
    """A non-blocking :func:`file_lock` found the lock held by another process (or lock)."""


@contextlib.contextmanager
def file_lock(path: Path, *, blocking: bool = True) -> Iterator[Path]:
    """Hold the exclusive lock on ``path`` (created with its folder if missing) for the
    ``with`` block; yields ``path``. ``blocking=False`` raises :class:`LockBusy` at once
    instead of waiting. Each call is its own lock: nesting two on one path in one process
    waits (or, non-blocking, raises), as two processes would."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(blocking=blocking)
    except Timeout as exc:
        raise LockBusy(f"{path} is locked by another process") from exc
    try:
        yield path
    finally:
        lock.release()


__all__ = ["LockBusy", "file_lock"]
