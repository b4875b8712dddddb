"""Seeds, initialization and failure records of the least-squares fits."""

import numpy as np
import pandas as pd
import pytest

from theory.fit import derive_seed, fit_least_squares, initial_points
from theory.models import MixingMeasure, sample_data
from theory.summary import summarize
from theory.truths import default_truth
from theory.voronoi import voronoi_d1


def test_seed_is_deterministic_and_distinct():
    a = np.random.default_rng(derive_seed("vapt|exact", 1000, 3)).random(4)
    b = np.random.default_rng(derive_seed("vapt|exact", 1000, 3)).random(4)
    c = np.random.default_rng(derive_seed("vapt|exact", 1000, 4)).random(4)
    d = np.random.default_rng(derive_seed("vpt|exact", 1000, 3)).random(4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, d)
    with pytest.raises(ValueError, match="replicate"):
        derive_seed("x", 10, -1)


@pytest.mark.parametrize("regime,scale", [("exact", 0.1), ("over", 0.3)])
def test_noise_init_scale_is_fixed_in_n(regime, scale):
    _, G = default_truth("vapt")
    L = 2 if regime == "exact" else 3
    spreads = []
    for n in (1000, 100_000):
        rng = np.random.default_rng(0)
        starts = initial_points(G, L, mode="noise", regime=regime, n=n, n_starts=400, rng=rng)
        atoms = np.stack([s[: L * 4].reshape(L, 4) for s in starts])
        spreads.append(np.std(atoms[:, 0, :] - G.atoms[0]))
    assert spreads[0] == pytest.approx(scale, rel=0.1)
    assert spreads[1] == pytest.approx(spreads[0], rel=1e-12)


def test_shrinking_init_scale_depends_on_n():
    _, G = default_truth("vpt")
    spreads = []
    for n in (1000, 100_000):
        starts = initial_points(G, 2, mode="shrinking", regime="exact", n=n, n_starts=400, rng=np.random.default_rng(0))
        spreads.append(np.std([s[:2] - G.atoms[0] for s in starts]))
    assert spreads[0] == pytest.approx(0.005 * 1000**-0.083, rel=0.1)
    assert spreads[1] < spreads[0]


def test_over_specified_start_splits_a_true_cell():
    _, G = default_truth("vpt")
    start = initial_points(G, 3, mode="noise", regime="over", n=1000, n_starts=1, rng=np.random.default_rng(5))[0]
    biases = start[6:]
    atoms = start[:6].reshape(3, 2)
    nearest = np.argmin(np.linalg.norm(atoms[:, None] - G.atoms[None], axis=2), axis=1)
    assert sorted(set(nearest)) == [0, 1]
    # the total start weight is close to the true total weight
    assert np.exp(biases).sum() == pytest.approx(G.weights.sum(), rel=0.8)


def test_fit_recovers_truth_and_matches_finite_differences():
    model, G = default_truth("vapt")
    X, Y = sample_data(model, G, 4000, 0.1, np.random.default_rng(0))
    starts = initial_points(G, 2, mode="noise", regime="exact", n=4000, n_starts=1, rng=np.random.default_rng(1))
    a = fit_least_squares(model, X, Y, starts, n_atoms=2)
    b = fit_least_squares(model, X, Y, starts, n_atoms=2, jacobian="2-point", method="trf")
    assert a.converged and not a.failed
    # a least-squares minimizer near the truth fits the data at least as well as the truth itself
    assert a.cost <= 0.5 * np.sum((Y - model.predict(X, G)) ** 2)
    assert voronoi_d1(a.estimate, G) < 1.0
    assert voronoi_d1(a.estimate, G) == pytest.approx(voronoi_d1(b.estimate, G), rel=1e-4)


def test_non_converged_fit_is_flagged_not_dropped():
    model, G = default_truth("vpt")
    X, Y = sample_data(model, G, 500, 0.1, np.random.default_rng(0))
    starts = initial_points(G, 2, mode="random", regime="exact", n=500, n_starts=2, rng=np.random.default_rng(0))
    res = fit_least_squares(model, X, Y, starts, n_atoms=2, max_nfev=1)
    assert res.failed and not res.converged and res.status == 0
    assert res.estimate is not None and res.n_converged_starts == 0


def test_summary_counts_failed_fits():
    rng = np.random.default_rng(0)
    rows = []
    for n in (1000, 2000, 4000):
        for rep in range(4):
            loss = n**-0.5 * np.exp(0.1 * rng.standard_normal())
            failed = n == 2000 and rep == 0
            rows.append(
                {
                    "truth": "vpt",
                    "family": "vpt",
                    "regime": "exact",
                    "fitted_atoms": 2,
                    "n": n,
                    "replicate": rep,
                    "failed": failed,
                    "L2": np.nan if failed else loss,
                    "D1": loss,
                    "param_err": loss,
                    "expert_sup": loss,
                }
            )
    summary = summarize(pd.DataFrame(rows), n_boot=200)
    l2 = summary[summary["metric"] == "L2"].iloc[0]
    assert l2["n_failed"] == 1 and l2["n_dropped"] == 1
    assert list(summary.columns[:11]) == [
        "family",
        "regime",
        "metric",
        "kind",
        "slope",
        "median_slope",
        "ci_low",
        "ci_high",
        "predicted",
        "verdict",
        "degenerate_share",
    ]


def test_fit_argument_validation():
    model, G = default_truth("vpt")
    X, Y = sample_data(model, G, 50, 0.1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="jacobian"):
        fit_least_squares(model, X, Y, [G.to_vector()], n_atoms=2, jacobian="magic")
    with pytest.raises(ValueError, match="entries"):
        fit_least_squares(model, X, Y, [G.to_vector()[:-1]], n_atoms=2)
    with pytest.raises(ValueError, match="'sideways'"):
        initial_points(G, 2, mode="sideways", regime="exact", n=10, n_starts=1, rng=np.random.default_rng())


@pytest.mark.parametrize("name", ["vpt", "prefix", "vapt", "vapt_gelu", "vapt_faithful"])
def test_objective_jacobian_is_not_stale_after_residuals_at_another_point(name):
    from scipy.optimize._numdiff import approx_derivative

    from theory.fit import _Objective

    model, G = default_truth(name)
    X, Y = sample_data(model, G, 300, 0.1, np.random.default_rng(0))
    obj = _Objective(model, X, Y, G.atoms.shape[0])
    rng = np.random.default_rng(1)
    z_a = G.to_vector() + 0.2 * rng.standard_normal(G.to_vector().size)
    z_b = G.to_vector() + 0.2 * rng.standard_normal(G.to_vector().size)
    obj.residuals(z_a)
    J_b = obj.jacobian(z_b)  # the last forward pass was at z_a
    expected = approx_derivative(
        lambda z: model.predict(X, MixingMeasure.from_vector(z, G.atoms.shape[0])), z_b, method="3-point"
    )
    np.testing.assert_allclose(J_b, expected, rtol=1e-6, atol=1e-8)
    # the solver may mutate its vector in place; the cache must not alias it
    z_c = z_b.copy()
    r_c = obj.residuals(z_c)
    z_c += 0.1
    np.testing.assert_allclose(
        obj.residuals(z_c), model.predict(X, MixingMeasure.from_vector(z_c, G.atoms.shape[0])) - Y
    )
    assert not np.allclose(obj.residuals(z_c), r_c)
