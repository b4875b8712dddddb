"""Fixtures every test folder shares: one PyTorch CPU thread per test, and the fixture data root."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Sequence
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
def fixture_roots(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`make(tasks, num_classes)`: a read-only fixture data root in the real layouts, written once per session."""
    from vapt.data.fixtures import write_fixtures

    made: dict[tuple[tuple[str, ...], int], Path] = {}

    def make(tasks: Sequence[str] = FIXTURE_TASKS, num_classes: int = 10) -> Path:
        key = (tuple(tasks), num_classes)
        if key not in made:
            made[key] = tmp_path_factory.mktemp("fixtures")
            write_fixtures(made[key], tasks=tasks, num_classes=num_classes)
        return made[key]

    return make


@pytest.fixture(scope="session")
def fixture_root(fixture_roots: Callable[..., Path]) -> Path:
    """A read-only data root with vtab-1k/cifar and cub (10 classes) in their real layouts (do not modify it)."""
    return fixture_roots()


def private_copy(root: Path, tmp_path: Path) -> Path:
    """A copy of a fixture data root under `tmp_path` that a test may damage."""
    return Path(shutil.copytree(root, tmp_path / "data"))


@pytest.fixture
def data_root(fixture_root: Path, tmp_path: Path) -> Path:
    """A private copy of the fixture data root that a test may damage."""
    return private_copy(fixture_root, tmp_path)
