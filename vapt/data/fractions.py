"""Deterministic, class-stratified subsets of a training split (the low-data study)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vapt.errors import ConfigError


def stratified_fraction(labels: Sequence[int], fraction: float, seed: int) -> list[int]:
    """Indices of a `fraction` of the samples of every class (at least one each), drawn from `seed`.

    Each class keeps max(1, round(fraction * count)) of its samples; the draw depends only on
    (labels, fraction, seed), and the returned indices are sorted.
    """
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"fraction must be in (0, 1], got {fraction!r}")
    labels = np.asarray(labels)
    if fraction == 1.0:
        return list(range(len(labels)))
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        keep = max(1, int(round(fraction * len(members))))
        chosen.extend(rng.permutation(members)[:keep].tolist())
    return sorted(chosen)
