"""Voronoi losses: zero at the truth, invariant to atom order, growing with perturbation."""

import numpy as np
import pytest

from theory.families import family_names
from theory.models import MixingMeasure
from theory.truths import default_truth
from theory.voronoi import (
    cell_parameter_errors,
    smallest_multi_atom_weight,
    voronoi_cells,
    voronoi_d1,
    voronoi_d2,
)

FAMILY_NAMES = family_names()


def _split(G, cell, delta):
    """Over-specified measure: atom `cell` replaced by two atoms at +-delta sharing its weight."""
    atoms = np.vstack([G.atoms, G.atoms[cell] - delta])
    atoms[cell] = G.atoms[cell] + delta
    biases = np.append(G.biases, G.biases[cell] - np.log(2))
    biases[cell] = G.biases[cell] - np.log(2)
    return MixingMeasure(atoms, biases)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_zero_at_truth(name):
    _, G = default_truth(name)
    assert voronoi_d1(G, G) == 0.0
    assert voronoi_d2(G, G) == 0.0
    assert np.all(cell_parameter_errors(G, G) == 0.0)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_invariant_to_order_of_fitted_atoms(name):
    rng = np.random.default_rng(0)
    _, G = default_truth(name)
    G_hat = _split(G, 0, 0.05 * np.ones(G.atoms.shape[1]))
    G_hat = MixingMeasure(G_hat.atoms + 0.03 * rng.standard_normal(G_hat.atoms.shape), G_hat.biases + 0.02)
    for perm in ([2, 0, 1], [1, 2, 0], [0, 2, 1]):
        G_perm = MixingMeasure(G_hat.atoms[perm], G_hat.biases[perm])
        assert voronoi_d1(G_perm, G) == pytest.approx(voronoi_d1(G_hat, G), rel=1e-12)
        assert voronoi_d2(G_perm, G) == pytest.approx(voronoi_d2(G_hat, G), rel=1e-12)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_grows_with_perturbation(name):
    rng = np.random.default_rng(1)
    _, G = default_truth(name)
    direction = rng.standard_normal(G.atoms.shape)
    bias_dir = rng.standard_normal(G.biases.shape)
    d1 = [voronoi_d1(MixingMeasure(G.atoms + s * direction, G.biases + s * bias_dir), G) for s in (1e-3, 1e-2, 1e-1)]
    assert d1[0] > 0 and np.all(np.diff(d1) > 0)
    split_dir = rng.standard_normal(G.atoms.shape[1])
    d2 = [voronoi_d2(_split(G, 1, s * split_dir), G) for s in (1e-3, 1e-2, 1e-1)]
    assert d2[0] > 0 and np.all(np.diff(d2) > 0)


def test_d2_squares_distances_only_in_multi_atom_cells():
    _, G = default_truth("vpt")
    delta = np.array([0.1, 0.0])
    G_hat = _split(G, 0, delta)
    # The split cell contributes w * ||delta||^2 per atom, the single-atom cell nothing; masses match.
    w = G.weights[0] / 2
    assert voronoi_d2(G_hat, G) == pytest.approx(2 * w * 0.1**2)
    assert voronoi_d1(G_hat, G) == pytest.approx(2 * w * 0.1)
    assert smallest_multi_atom_weight(G_hat, G) == pytest.approx(w)
    assert np.isnan(smallest_multi_atom_weight(G, G))
    assert list(voronoi_cells(G_hat, G)) == [0, 1, 0]


def test_mass_mismatch_and_empty_cell_count():
    _, G = default_truth("vpt")
    # both fitted atoms near true atom 0: cell 1 is empty, its whole mass is missing
    G_hat = MixingMeasure(np.vstack([G.atoms[0], G.atoms[0] + 0.01]), G.biases)
    assert voronoi_d1(G_hat, G) >= G.weights[1]
    assert np.isnan(cell_parameter_errors(G_hat, G)[1])


def test_rejects_atoms_of_another_family():
    _, G_vpt = default_truth("vpt")
    _, G_vapt = default_truth("vapt")
    with pytest.raises(ValueError, match="same family"):
        voronoi_d1(G_vpt, G_vapt)


def _fit(atoms, weights):
    return MixingMeasure(np.array(atoms, dtype=float), np.log(np.array(weights, dtype=float)))


def test_degenerate_flag_on_hand_built_fits():
    from theory.voronoi import is_degenerate

    _, G = default_truth("vpt")  # atoms (1, -0.5) and (-0.8, 0.6), weights 1 and exp(-0.5)
    w0, w1 = G.weights
    near = [[1.05, -0.5], [0.95, -0.45], [-0.8, 0.62]]
    # two atoms share cell 0 with 60 % / 40 % of its weight: not degenerate
    assert not is_degenerate(_fit(near, [0.6 * w0, 0.4 * w0, w1]), G)
    # the extra atom holds 5 % of its cell: degenerate
    assert is_degenerate(_fit(near, [0.95 * w0, 0.05 * w0, w1]), G)
    # just above the 10 % threshold the atom is not small
    assert not is_degenerate(_fit(near, [0.88 * w0, 0.12 * w0, w1]), G)
    # an atom wandered farther than 1 from its true atom (still nearest to it): degenerate
    assert is_degenerate(_fit([[1.0, -0.5], [2.1, -0.5], [-0.8, 0.6]], [0.5 * w0, 0.5 * w0, w1]), G)
    # an exact fit at the truth is not degenerate; a small weight in a one-atom cell does not count
    assert not is_degenerate(G, G)
    assert not is_degenerate(_fit([[1.0, -0.5], [-0.8, 0.6]], [w0, 0.01]), G)


def test_parameter_and_expert_errors_over_multi_atom_cells_weighted_by_share():
    from theory.families import make_family
    from theory.voronoi import evaluation_grid, expert_sup_error, parameter_error

    _, G = default_truth("vpt")
    family = make_family("vpt", np.array([[1.0, 0.5], [-0.3, 1.0]]), np.array([1.0, -2.0]))
    w0, w1 = G.weights
    # cell 0 holds two atoms at distance 0.1 (share 0.75) and 0.3 (share 0.25); cell 1 one atom at 0.5
    fit = _fit([[1.1, -0.5], [1.3, -0.5], [-0.8, 1.1]], [0.75 * w0, 0.25 * w0, w1])
    assert parameter_error(fit, G) == pytest.approx(0.75 * 0.1 + 0.25 * 0.3)  # multi-atom cell only
    assert parameter_error(fit, G, multi_atom_only=False) == pytest.approx(
        (0.75 * w0 * 0.1 + 0.25 * w0 * 0.3 + w1 * 0.5) / (w0 + w1)
    )
    # h = c^T p with c = (1, -2): the experts are off by 0.1 and 0.3 in cell 0, by 1.0 in cell 1
    grid = evaluation_grid(2, 5)
    assert expert_sup_error(family, fit, G, grid) == pytest.approx(0.75 * 0.1 + 0.25 * 0.3)
    assert expert_sup_error(family, fit, G, grid, multi_atom_only=False) == pytest.approx(1.0)
