"""The solver ends every start: a non-finite Jacobian or step, or a damping that explodes, is a failed start."""

import signal
from contextlib import contextmanager

import numpy as np
import pytest

from theory.fit import fit_least_squares, levenberg_marquardt
from theory.models import sample_data
from theory.truths import default_truth


@contextmanager
def _deadline(seconds):
    def stop(*_):
        raise TimeoutError(f"the solver was still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _linear_problem():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((200, 5))
    return A, rng.standard_normal(200)


def test_a_non_finite_jacobian_ends_as_a_failed_start():
    A, b = _linear_problem()
    with _deadline(10):
        res = levenberg_marquardt(lambda z: A @ z - b, lambda z: np.full_like(A, np.nan), np.zeros(5), max_nfev=50)
    assert res.status < 0 and "not finite" in res.message


def test_a_non_finite_step_ends_as_a_failed_start():
    A, b = _linear_problem()
    huge = np.full_like(A, 1e200)  # J^T J overflows to inf: every step is non-finite
    with _deadline(10):
        res = levenberg_marquardt(lambda z: A @ z - b, lambda z: huge, np.zeros(5), max_nfev=50)
    assert res.status < 0


def test_exploding_damping_is_a_stall_not_convergence():
    A, b = _linear_problem()
    # a Jacobian that points the wrong way: no step ever reduces the objective, and a tolerance so tight
    # that the shrinking steps never meet it, so only the damping limit can end the start
    with _deadline(10):
        res = levenberg_marquardt(lambda z: A @ z - b, lambda z: -A, np.zeros(5), tol=1e-300, max_nfev=500)
    assert res.status <= 0 and "stall" in res.message
    assert res.nfev < 500


def test_failed_starts_are_counted_and_the_fit_still_ends():
    model, G = default_truth("vpt")
    X, Y = sample_data(model, G, 300, 0.1, np.random.default_rng(0))
    bad = G.to_vector().copy()
    bad[0] = np.nan  # the objective is not finite at this start
    with _deadline(20):
        fit = fit_least_squares(model, X, Y, [bad, G.to_vector()], n_atoms=2, max_nfev=50)
    assert fit.n_failed_starts == 1 and fit.n_starts == 2
    assert fit.estimate is not None and np.isfinite(fit.cost)


@pytest.mark.parametrize("max_nfev", [5, 50])
def test_nan_data_cannot_loop(max_nfev):
    model, G = default_truth("vapt")
    X, Y = sample_data(model, G, 300, 0.1, np.random.default_rng(0))
    Y[3] = np.nan
    with _deadline(20):
        fit = fit_least_squares(model, X, Y, [G.to_vector()], n_atoms=2, max_nfev=max_nfev)
    assert fit.failed and fit.n_failed_starts == 1
