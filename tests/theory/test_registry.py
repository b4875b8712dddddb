"""A new prompt family is one registration: a toy family runs end to end (Jacobian, quick mode, identifiability)."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import theory
from theory.families import family_names, get_family, make_family
from theory.identifiability import identifiability_table
from theory.models import MixingMeasure, PromptMoE
from theory.rates import prediction_kind
from theory.truths import load_truth

sys.path.insert(0, str(Path(__file__).parent))
import toy_family as toy  # noqa: E402


@pytest.fixture
def toy_registered():
    spec = theory.register_family(toy.NAME, toy.forward, toy.jacobian, atom_size=lambda d: 2 * d, hessian=toy.hessian,
                                  strongly_identifiable=False)
    yield spec
    theory.unregister_family(toy.NAME)


@pytest.fixture
def toy_truth_file(tmp_path, toy_registered):
    path = tmp_path / "toy_truth.json"
    path.write_text(json.dumps(toy.TRUTH))
    return path


def test_registration_gives_names_kinds_and_atoms(toy_registered):
    assert toy.NAME in family_names(optional=True) and toy.NAME not in family_names()
    assert get_family(toy.NAME).atom_key == toy.NAME
    assert prediction_kind(toy.NAME, "exact", "D1") == "rate"
    assert prediction_kind(toy.NAME, "over", "D2") == "none"  # registered as not strongly identifiable
    with pytest.raises(ValueError, match="already registered"):
        theory.register_family(toy.NAME, toy.forward, toy.jacobian, atom_size=lambda d: 2 * d)


def test_kinds_come_from_the_registration_not_the_name(toy_registered):
    spec = theory.register_family("vapt_like_name", toy.forward, toy.jacobian, atom_size=lambda d: 2 * d,
                                  strongly_identifiable=True)
    try:
        assert spec.atom_key == "vapt_like_name"
        assert prediction_kind("vapt_like_name", "over", "D1") == "bound"
    finally:
        theory.unregister_family("vapt_like_name")


def test_toy_jacobian_matches_finite_differences(toy_truth_file):
    truth = load_truth(str(toy_truth_file))
    model, G = truth.model(toy.NAME)
    rng = np.random.default_rng(0)
    G = MixingMeasure(G.atoms + 0.2 * rng.standard_normal(G.atoms.shape), G.biases + 0.1)
    X = rng.uniform(-1, 1, size=(300, 2))
    f, J = model.predict_with_jacobian(X, G)
    z, L, eps = G.to_vector(), G.atoms.shape[0], 1e-6
    J_fd = np.stack([
        (model.predict(X, MixingMeasure.from_vector(z + eps * e, L))
         - model.predict(X, MixingMeasure.from_vector(z - eps * e, L))) / (2 * eps)
        for e in np.eye(z.size)
    ], axis=1)
    # central differences of a smooth function of order-one values: error about eps^2 + 1e-16 / eps
    np.testing.assert_allclose(J, J_fd, rtol=0, atol=1e-8)
    assert isinstance(model, PromptMoE) and model.family.n_params == 4
    assert isinstance(make_family(toy.NAME, np.eye(2), np.ones(2)), theory.families.FunctionFamily)


def test_toy_identifiability_matches_its_registration(toy_truth_file):
    table = identifiability_table([toy.NAME], n_points=1500, truth=load_truth(str(toy_truth_file))).iloc[0]
    assert table["identifiable_order1"]
    # linear gate and linear expert share x_t x_u at order 2: not strongly identifiable, as registered
    assert table["strongly_identifiable"] == get_family(toy.NAME).strongly_identifiable


@pytest.mark.slow
def test_toy_family_runs_quick_mode_end_to_end(toy_truth_file, tmp_path, capsys):
    from theory.sample_efficiency import main

    out = tmp_path / "toy"
    code = main(["--truth", str(toy_truth_file), "--families", toy.NAME, "--n", "2000,4000,8000,16000",
                 "--replicates", "6", "--jobs", "1", "--bootstrap", "300", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["family"]) == {toy.NAME} and set(summary["regime"]) == {"exact"}
    l2 = summary[summary["metric"] == "L2"].iloc[0]
    assert l2["verdict"] != "fit failed" and -0.75 < l2["slope"] < -0.3
    assert {"separates", "claim", "boundary_share"} <= set(summary.columns)
    assert (summary["claim"] != "").all()
    fits = pd.read_csv(out / "fits.csv")
    assert len(fits) == 24 and not fits["failed"].any()
