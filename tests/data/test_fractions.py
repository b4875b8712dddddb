"""Training fractions: deterministic from the seed, stratified by class, at least one image per class."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from vapt.data import stratified_fraction
from vapt.errors import ConfigError


def _labels() -> list[int]:
    rng = np.random.default_rng(0)
    counts = [50, 20, 7, 3, 1, 120]
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    return rng.permutation(labels).tolist()


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.3, 0.5])
def test_stratified_and_at_least_one_per_class(fraction: float) -> None:
    labels = _labels()
    chosen = stratified_fraction(labels, fraction, seed=3)
    picked = Counter(labels[i] for i in chosen)
    for label, total in Counter(labels).items():
        assert picked[label] == max(1, round(fraction * total))
    assert chosen == sorted(set(chosen))


def test_deterministic_from_seed() -> None:
    labels = _labels()
    assert stratified_fraction(labels, 0.3, seed=1) == stratified_fraction(labels, 0.3, seed=1)
    assert stratified_fraction(labels, 0.3, seed=1) != stratified_fraction(labels, 0.3, seed=2)


def test_full_fraction_keeps_everything() -> None:
    labels = _labels()
    assert stratified_fraction(labels, 1.0, seed=5) == list(range(len(labels)))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_invalid_fraction(fraction: float) -> None:
    with pytest.raises(ConfigError, match=r"fraction must be in \(0, 1\]"):
        stratified_fraction([0, 1], fraction, seed=0)
