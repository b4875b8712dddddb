"""One BLAS thread per process: the fits are small, and parallelism comes from the process pool."""

from __future__ import annotations

import os
from contextlib import contextmanager


def limit_blas_threads() -> None:
    """Use one BLAS thread in this process: the fits are small, and parallelism comes from the pool."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(1)


@contextmanager
def single_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1):
        yield
