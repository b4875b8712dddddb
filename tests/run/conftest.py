"""Training tests read the shared fixture data root without changing it, so they skip the private copy."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_root(fixture_root: Path) -> Path:
    """The session's fixture data root (read-only for these tests)."""
    return fixture_root
