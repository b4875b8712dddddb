"""Errors raised for bad user input (each message names the file, field or value and what was expected),
and the checks of values every module shares."""

from __future__ import annotations

import errno
from typing import Any


class VaptError(Exception):
    """Base class for errors caused by user input; the CLI prints them without a traceback."""


class ConfigError(VaptError, ValueError):
    """An invalid option, method name or configuration value."""


class WeightsError(VaptError, FileNotFoundError):
    """Pre-trained weights that are missing, unreachable or do not fit the backbone."""


class DataLayoutError(VaptError, ValueError):
    """A dataset folder, split file, line, label or image that does not match the expected layout."""


class OutputError(VaptError):
    """An output folder or file that cannot be created or written."""


class CheckpointError(VaptError):
    """A run's checkpoint.pt that cannot be read back (truncated, foreign or from another run)."""


# errno values of a write that failed because of where it writes (full disk or quota, read-only file system)
WRITE_ERRNOS: frozenset[int] = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def write_failure(err: OSError, what: str = "file") -> OutputError | None:
    """One-line OutputError for a write that failed for lack of space or a read-only disk; None for other errors."""
    if err.errno not in WRITE_ERRNOS:
        return None
    path = f" {str(err.filename)!r}" if err.filename else ""
    return OutputError(f"cannot write {what}{path}: {(err.strerror or 'write failed').lower()}")


def load_failure(err: BaseException) -> str:
    """Why `torch.load` failed, in one short line (without torch's advice to load untrusted files unsafely)."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
        text = "not a tensors-only PyTorch file: " + " ".join(text.split())
    else:
        text = " ".join(text.split())
    return f"{type(err).__name__}: {text[:200]}"


def check_positive_int(name: str, value: Any, allow_none: bool = False) -> int | None:
    """`value` when it is an integer >= 1 (not a bool; or None if `allow_none`), else a ConfigError naming `name`."""
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}")
    return value


def check_probability(name: str, value: Any) -> float:
    """`value` when it is a number in [0, 1), else a ConfigError naming `name`."""
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1), got {value!r}")
    return value


def benchmark_default(name: str, value: str | None, choices: tuple[str, ...], defaults: dict[str, str],
                      benchmark: str) -> str:
    """`value` when it is one of `choices` (else a ConfigError naming `name`); None gives the benchmark's default."""
    if value is None:
        return defaults.get(benchmark, "pil")
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value
