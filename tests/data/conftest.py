"""Fixture datasets in the real layouts, written once per session and copied for tests that damage them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vapt.data.fixtures import write_fixtures


@pytest.fixture(scope="session")
def fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only data root with vtab-1k/cifar and cub (do not modify it)."""
    root = tmp_path_factory.mktemp("fixtures")
    write_fixtures(root, tasks=("vtab1k/cifar", "fgvc/cub"))
    return root


@pytest.fixture
def data_root(fixture_root: Path, tmp_path: Path) -> Path:
    """A private copy of the fixture data root that a test may damage."""
    root = tmp_path / "data"
    shutil.copytree(fixture_root, root)
    return root
