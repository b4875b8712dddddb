"""Atomic file output for the theory package: the project's one implementation, in `vapt.io`."""

from vapt.io import atomic_write, file_mode, write_csv

__all__ = ["atomic_write", "file_mode", "write_csv"]
