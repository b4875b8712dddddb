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
    """torch.save `payload` to `path` atomically."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)
