"""Analytic derivatives of every prompt family agree with finite differences."""

import numpy as np
import pytest

from theory.activations import activation
from theory.families import family_names, make_family
from theory.models import MixingMeasure
from theory.truths import default_truth

FAMILY_NAMES = family_names()
ALL_FAMILIES = family_names(optional=True)


def _rel_err(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


def _perturbed_measure(name, rng, extra_atom=True):
    _, G = default_truth(name)
    atoms, biases = G.atoms, G.biases
    if extra_atom:  # over-specified: an extra atom in the first cell
        atoms, biases = np.vstack([atoms, atoms[:1]]), np.append(biases, -1.0)
    return MixingMeasure(atoms + 0.2 * rng.standard_normal(atoms.shape), biases + 0.1)


@pytest.mark.parametrize("name", ALL_FAMILIES)
def test_regression_jacobian_matches_central_differences(name):
    rng = np.random.default_rng(1)
    model, _ = default_truth(name)
    G = _perturbed_measure(name, rng)
    X = rng.uniform(-1, 1, size=(300, model.family.d))
    f, J = model.predict_with_jacobian(X, G)
    z, L = G.to_vector(), G.atoms.shape[0]
    assert J.shape == (X.shape[0], z.size)
    eps = 1e-6
    J_fd = np.empty_like(J)
    for i in range(z.size):
        step = np.zeros_like(z)
        step[i] = eps
        up = model.predict(X, MixingMeasure.from_vector(z + step, L))
        down = model.predict(X, MixingMeasure.from_vector(z - step, L))
        J_fd[:, i] = (up - down) / (2 * eps)
    np.testing.assert_allclose(f, model.predict(X, G))
    assert _rel_err(J, J_fd) < 1e-6


@pytest.mark.parametrize("name", ALL_FAMILIES)
def test_second_derivatives_match_differences_of_first(name):
    rng = np.random.default_rng(2)
    model, G = default_truth(name)
    fam = model.family
    X = rng.uniform(-1, 1, size=(200, fam.d))
    theta = G.atoms + 0.1 * rng.standard_normal(G.atoms.shape)
    d2s, d2h = fam.second_derivatives(X, theta)
    eps = 1e-6
    for t in range(fam.n_params):
        step = np.zeros_like(theta)
        step[:, t] = eps
        _, _, ds_up, dh_up = fam.derivatives(X, theta + step)
        _, _, ds_dn, dh_dn = fam.derivatives(X, theta - step)
        for analytic, numeric in (
            (d2s[:, :, t, :], (ds_up - ds_dn) / (2 * eps)),
            (d2h[:, :, t, :], (dh_up - dh_dn) / (2 * eps)),
        ):
            scale = max(np.max(np.abs(numeric)), np.max(np.abs(d2s)), 1.0)
            assert np.max(np.abs(analytic - numeric)) / scale < 1e-6


@pytest.mark.parametrize("name", ["tanh", "gelu", "identity"])
def test_activation_derivatives(name):
    u = np.linspace(-3, 3, 101)
    g, g1, g2 = activation(name, u)
    eps = 1e-5
    gp, g1p, _ = activation(name, u + eps)
    gm, g1m, _ = activation(name, u - eps)
    np.testing.assert_allclose(g1, (gp - gm) / (2 * eps), atol=1e-8)
    np.testing.assert_allclose(g2, (g1p - g1m) / (2 * eps), atol=1e-8)


def test_families_differ_and_truth_is_separated():
    X = np.random.default_rng(3).uniform(-1, 1, size=(500, 2))
    preds = {}
    for name in FAMILY_NAMES:
        model, G = default_truth(name)
        preds[name] = model.predict(X, G)
        dist = np.linalg.norm(G.atoms[0] - G.atoms[1])
        assert dist > 1.0
    assert np.max(np.abs(preds["vapt"] - preds["vapt_linear"])) > 1e-2
    assert np.max(np.abs(preds["vapt"] - preds["vapt_gelu"])) > 1e-2


def test_unknown_family_message_names_value():
    with pytest.raises(ValueError, match="'transformer'"):
        make_family("transformer", np.eye(2), np.ones(2))


def test_prepare_rejects_wrong_input_shape():
    model, _ = default_truth("vpt")
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        model.prepare(np.zeros((5, 3)))


def test_family_and_measure_validation():
    from theory.prompts_static import StaticPrompt

    with pytest.raises(ValueError, match="B must have shape"):
        StaticPrompt("vpt", np.ones((2, 3)), np.ones(2))
    with pytest.raises(ValueError, match=r"c must have shape \(2,\)"):
        StaticPrompt("vpt", np.eye(2), np.ones(3))
    with pytest.raises(ValueError, match="n_atoms=2"):
        MixingMeasure.from_vector(np.ones(7), 2)
