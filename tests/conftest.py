"""Fixtures every test folder shares: one PyTorch CPU thread per test, and the fixture data root."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

FIXTURE_TASKS = ("vtab1k/cifar", "fgvc/cub")


@pytest.fixture(autouse=True)
def one_cpu_thread():
    """Run each test with one PyTorch CPU thread (tiny models run fastest so, and the machines are shared).

    Torch-free tests (the theory package) are left alone: torch is not imported for them.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only data root with vtab-1k/cifar and cub in their real layouts (do not modify it)."""
    from vapt.data.fixtures import write_fixtures

    root = tmp_path_factory.mktemp("fixtures")
    write_fixtures(root, tasks=FIXTURE_TASKS)
    return root


@pytest.fixture
def data_root(fixture_root: Path, tmp_path: Path) -> Path:
    """A private copy of the fixture data root that a test may damage."""
    root = tmp_path / "data"
    shutil.copytree(fixture_root, root)
    return root
