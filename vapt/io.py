"""Atomic file writes (text, JSON, CSV, figures, torch): a temporary file beside the target, renamed over it.

Torch-free at import time, so the `theory` package shares it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def check_writable_dir(path: str | os.PathLike, what: str = "output folder", create: bool = True) -> Path:
    """Prove files can be written in folder `path` by creating one (OutputError naming it otherwise).

    With `create`, the folder is made; without, it is left alone and its nearest existing ancestor is probed.
    """
    from vapt.errors import OutputError

    path = Path(path)
    probe_in = path
    if not create:
        probe_in = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        elif not probe_in.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        fd, probe = tempfile.mkstemp(dir=probe_in, prefix=".write-check.")
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            reason = "it is a file" if blocker == path else f"{blocker} is a file"
        raise OutputError(f"{what} {str(path)!r} cannot be written ({reason}); expected a folder this user "
                          f"can create files in") from None
    return path


def check_writable_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Prove `path` can be written (its folder is created and writable, it is not a folder); OutputError otherwise."""
    from vapt.errors import OutputError

    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {str(path)!r} is a folder; expected a file name")
    check_writable_dir(path.parent, f"folder of {what} {str(path)!r},")
    return path


def file_mode() -> int:
    """The permissions a newly created file gets under the current umask (mkstemp's files are 0600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds it replaces `path`, else it is removed.

    The temporary name ends with the target's suffix, so writers that infer a format from it still do.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except OSError as err:  # name the target, not the temporary file (e.g. "No space left on device: 'x.pt'")
        if err.errno is None:
            raise
        raise type(err)(err.errno, err.strerror, str(path)) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)` on a temporary file beside `path`, then move it into place."""
    with atomic_path(path) as tmp:
        write(str(tmp))
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write text to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write JSON to `path` atomically (NaN and infinities are refused)."""
    return write_text_atomic(path, json.dumps(data, indent=1, allow_nan=False))


def write_csv(frame: Any, path: str | os.PathLike, columns: list[str] | None = None) -> Path:
    """Write a pandas DataFrame (optionally only `columns`) as CSV atomically, without its index."""
    table = frame if columns is None else frame[list(columns)]
    return atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))


def save_torch_atomic(path: str | os.PathLike, payload: Any) -> Path:
    """torch.save `payload` to `path` atomically; a failed write raises the OSError behind it, naming `path`.

    The file is written through a Python file object, so a full disk surfaces as OSError (errno ENOSPC)
    rather than torch's "unexpected pos" RuntimeError.
    """
    import torch

    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as handle:
                torch.save(payload, handle)
        except RuntimeError as err:
            if isinstance(err.__context__, OSError):
                raise err.__context__ from None
            raise
    return Path(path)
