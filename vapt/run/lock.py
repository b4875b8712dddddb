"""One process per run folder: an OS file lock (`filelock`) held for as long as a run trains.

The lock is released by the operating system when its process ends, however it ends, so a lock that
cannot be taken always means a live process is training that run.
"""

from __future__ import annotations

import os
from pathlib import Path

from filelock import FileLock, Timeout

LOCK_NAME = ".lock"


def run_lock(directory: str | os.PathLike) -> FileLock:
    """The lock of the run in `directory` (not yet acquired)."""
    return FileLock(str(Path(directory) / LOCK_NAME))


def try_lock(directory: str | os.PathLike) -> FileLock | None:
    """The acquired lock of the run in `directory`, or None when another process holds it."""
    lock = run_lock(directory)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


def is_live(directory: str | os.PathLike) -> bool:
    """Whether another process holds the lock of the run in `directory` (it is training that run now)."""
    if not (Path(directory) / LOCK_NAME).exists():
        return False
    lock = try_lock(directory)
    if lock is None:
        return True
    lock.release()
    return False


__all__ = ["LOCK_NAME", "is_live", "run_lock", "try_lock"]
