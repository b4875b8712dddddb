"""Fixture data for training tests, written once per session; one CPU thread keeps runs cheap."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.torch_threads import one_cpu_thread  # noqa: F401  (an autouse fixture, registered by import)
from vapt.data.fixtures import write_fixtures


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with vtab-1k/cifar and cub in the real layouts (read-only for tests)."""
    root = tmp_path_factory.mktemp("data")
    write_fixtures(root, tasks=("vtab1k/cifar", "fgvc/cub"))
    return root
