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


def first_missing(directory: str | os.PathLike) -> Path | None:
    """The outermost folder of `directory`'s path that does not exist yet (None when `directory` exists)."""
    path = Path(directory)
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def remove_if_unused(directory: str | os.PathLike, created: Path | None) -> bool:
    """Remove a run folder holding nothing but its `.lock` (a run that stopped before writing anything).

    Call with the lock still held; folders up to `created` (the outermost one this process made) go too
    when they are then empty. Returns whether the run folder was removed.
    """
    path = Path(directory)
    if created is None or not path.is_dir() or {p.name for p in path.iterdir()} - {LOCK_NAME}:
        return False
    (path / LOCK_NAME).unlink(missing_ok=True)
    for folder in (path, *path.parents):
        try:
            folder.rmdir()
        except OSError:  # not empty (another run lives there) or already gone
            break
        if folder == created:
            break
    return True


__all__ = ["LOCK_NAME", "first_missing", "is_live", "remove_if_unused", "run_lock", "try_lock"]
