"""Errors raised for bad user input: each message names the file, field or value and what was expected."""

import errno


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
