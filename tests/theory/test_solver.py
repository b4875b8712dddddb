"""The Levenberg-Marquardt solver against scipy's trf on the same fits, and the slopes each gives."""

import numpy as np
import pytest

from theory.experiment import MAX_NFEV, N_STARTS, make_config
from theory.families import family_names
from theory.fit import TOLERANCE, derive_seed, fit_least_squares, initial_points, levenberg_marquardt
from theory.models import sample_data
from theory.runner import run_experiment
from theory.summary import summarize
from theory.truths import default_truth

FAMILY_NAMES = family_names()


def test_lm_reaches_trf_objective_on_the_same_fits():
    # the same data, starts and evaluation budget for both (a reduced budget over-specified, for speed)
    budget = {"exact": MAX_NFEV["exact"], "over": 150}
    lm_ok = trf_better = 0
    for family in FAMILY_NAMES:
        for regime in ("exact", "over"):
            for n in (300, 2000):
                cfg = make_config(family, regime)
                model, G = default_truth(family)
                rng = np.random.default_rng(derive_seed(f"test-solver|{cfg.key}", n, 0))
                X, Y = sample_data(model, G, n, 0.1, rng)
                starts = initial_points(G, cfg.n_atoms, mode="noise", regime=regime, n=n,
                                        n_starts=N_STARTS[regime], rng=rng)
                costs = {}
                for solver in ("lm", "trf"):
                    fit = fit_least_squares(model, X, Y, starts, n_atoms=cfg.n_atoms, tol=TOLERANCE[regime],
                                            max_nfev=budget[regime], method=solver)
                    assert fit.estimate is not None and np.isfinite(fit.cost)
                    costs[solver] = fit.cost
                rel = (costs["lm"] - costs["trf"]) / costs["trf"]
                lm_ok += rel <= 1e-6
                trf_better += rel > 1e-6
    assert lm_ok + trf_better == len(FAMILY_NAMES) * 4
    assert lm_ok >= trf_better
    assert lm_ok >= 0.75 * (lm_ok + trf_better)


def test_lm_solves_a_linear_least_squares_problem_exactly():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((200, 5))
    b = rng.standard_normal(200)
    res = levenberg_marquardt(lambda z: A @ z - b, lambda z: A, np.zeros(5), tol=1e-12, max_nfev=50)
    np.testing.assert_allclose(res.x, np.linalg.lstsq(A, b, rcond=None)[0], rtol=1e-8, atol=1e-10)
    assert res.status > 0 and res.nfev < 50


def test_best_start_is_the_lowest_objective_even_if_it_did_not_converge():
    model, G = default_truth("vpt")
    X, Y = sample_data(model, G, 500, 0.1, np.random.default_rng(0))
    far = G.to_vector() + 3.0
    # the start at the truth stops early (max_nfev) with a low cost; the far start cannot get there
    fit = fit_least_squares(model, X, Y, [far, G.to_vector()], n_atoms=2, max_nfev=3)
    alone = fit_least_squares(model, X, Y, [G.to_vector()], n_atoms=2, max_nfev=3)
    assert fit.cost == pytest.approx(alone.cost) and not fit.converged and fit.failed


def test_slopes_with_lm_and_trf_agree_within_their_intervals():
    kwargs = dict(expressiveness=False, jobs=1, base_seed=3)
    rows = {}
    for solver in ("lm", "trf"):
        fits = run_experiment(["vpt"], ["exact"], [1000, 2000, 4000, 8000], 5, solver=solver, **kwargs)
        assert (fits["solver"] == solver).all()
        rows[solver] = summarize(fits, n_boot=500).set_index("metric")
    for metric in ("D1", "L2"):
        a, b = rows["lm"].loc[metric], rows["trf"].loc[metric]
        assert b["ci_low"] <= a["slope"] <= b["ci_high"], metric
        assert a["ci_low"] <= b["slope"] <= a["ci_high"], metric
