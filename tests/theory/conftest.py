"""Shared helpers for the theory tests."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_module():
    """Run ``python -m <module> <args>`` from the repository root; return the completed process."""

    def run(module, *args, extra_code=None, timeout=120):
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cmd = [sys.executable, "-c", extra_code] if extra_code else [sys.executable, "-m", module, *args]
        return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Run each test with one BLAS thread: the fits are small, and the machines running the tests are shared."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1):
        yield
