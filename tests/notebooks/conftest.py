"""A smoke cache shared by every notebook of the session (one pre-trained tiny ViT, one set of runs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """$VAPT_SMOKE_CACHE for the kernels of this session (a fresh folder unless one is given)."""
    given = os.environ.get("VAPT_SMOKE_CACHE")
    cache = Path(given) if given else tmp_path_factory.mktemp("smoke-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VAPT_SMOKE_CACHE", str(cache))
        yield cache
