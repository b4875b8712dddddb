"""File output for the theory package: atomic files (the project's implementation, in `vapt.io`) and output sets.

A run's outputs are written as a set: every file goes to a staging folder inside the output folder first,
and only when all of them are complete are they moved into place, so a failure (a full disk, a read-only
folder) leaves the previous run's outputs as they were, never a mix of old and new files.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from vapt.io import atomic_write, file_mode, write_csv

__all__ = ["OutputError", "atomic_write", "check_output_folder", "file_mode", "reason", "write_csv", "write_set"]


class OutputError(Exception):
    """An output folder or file that cannot be written; the message names the path and the cause."""


def reason(err: OSError) -> str:
    """The cause of an OSError in words (no space left, read-only, not a directory, ...)."""
    words = {
        errno.ENOSPC: "no space left on the device",
        errno.EROFS: "read-only file system",
        errno.ENOTDIR: "not a directory",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EDQUOT: "disk quota exceeded",
    }
    return words.get(err.errno, (err.strerror or type(err).__name__).lower())


def check_output_folder(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and prove a file can be written in it; :class:`OutputError` otherwise."""
    path = Path(path)
    try:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(blocker))
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-check.")
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        where = f" ({err.filename} is a file)" if err.errno == errno.ENOTDIR and err.filename else ""
        raise OutputError(f"--out {path}: cannot write there: {reason(err)}{where}") from None
    return path


def write_set(out: str | os.PathLike, writers: dict[str, Callable[[Path], object]]) -> list[Path]:
    """Write every file of a run (name -> function writing that file) as a set into folder ``out``.

    The files are written into a staging folder inside ``out`` and moved into place only when all of them
    are complete; on any failure nothing in ``out`` changes and an :class:`OutputError` names the file and
    the cause.
    """
    out = Path(out)
    try:
        stage = Path(tempfile.mkdtemp(dir=out, prefix=".staging-"))
    except OSError as err:
        raise OutputError(f"cannot write in {out}: {reason(err)}; the previous outputs there are unchanged") from None
    name = ""
    try:
        for name, write in writers.items():
            write(stage / name)
            os.chmod(stage / name, file_mode())
        for name in writers:
            os.replace(stage / name, out / name)
    except OSError as err:
        raise OutputError(
            f"cannot write {out / name}: {reason(err)}; the previous outputs in {out} are unchanged"
        ) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return [out / name for name in writers]
