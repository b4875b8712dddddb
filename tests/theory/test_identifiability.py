"""The singular-value check separates strongly identifiable families from the others."""

import numpy as np
import pytest

from theory.identifiability import (
    THRESHOLD,
    derivative_functions,
    identifiability_table,
    singular_value_ratio,
)


def test_expected_families():
    table = identifiability_table(n_points=1500).set_index("family")
    assert table["identifiable_order1"].all()
    for name in ("vpt", "vapt", "vapt_gelu"):
        assert table.loc[name, "strongly_identifiable"], name
    for name in ("prefix", "vapt_linear"):
        assert not table.loc[name, "strongly_identifiable"], name
    # without merging the identical mixed partials every W x family looks degenerate
    assert table.loc["vapt", "ratio_order2_unmerged"] < THRESHOLD


def test_ratio_detects_dependence():
    rng = np.random.default_rng(0)
    M = rng.standard_normal((200, 4))
    assert singular_value_ratio(M) > 0.1
    dependent = np.column_stack([M, M[:, 0] - 2 * M[:, 1]])
    assert singular_value_ratio(dependent) < 1e-12
    with_duplicate = np.column_stack([M, 3 * M[:, 2]])
    assert singular_value_ratio(with_duplicate) > 0.1
    assert singular_value_ratio(with_duplicate, merge_identical=False) < 1e-12


def test_column_counts():
    assert derivative_functions("vpt", 1, 100).shape == (100, 2 * (1 + 2))
    assert derivative_functions("vapt", 2, 100).shape == (100, 2 * (1 + 4 + 10))
    with pytest.raises(ValueError, match="order"):
        derivative_functions("vpt", 3)
