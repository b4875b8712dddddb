"""The bounded parameter space: the projected LM stays in the box and finds the constrained minimum."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import lsq_linear

from theory.experiment import build_tasks, run_task
from theory.fit import boundary_atoms, levenberg_marquardt, on_boundary, theta_box
from theory.summary import summarize
from theory.truths import default_truth


def test_projected_lm_solves_a_box_constrained_linear_problem():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((200, 5))
    b = A @ np.array([3.0, -2.0, 0.5, 0.1, -0.4]) + 0.01 * rng.standard_normal(200)
    lower, upper = -np.ones(5), np.ones(5)  # the unconstrained solution lies outside in two coordinates
    res = levenberg_marquardt(lambda z: A @ z - b, lambda z: A, np.zeros(5), tol=1e-12, max_nfev=200,
                              lower=lower, upper=upper)
    expected = lsq_linear(A, b, bounds=(lower, upper), tol=1e-12).x
    np.testing.assert_allclose(res.x, expected, atol=1e-8)
    assert res.status > 0 and np.all(res.x >= lower) and np.all(res.x <= upper)
    assert on_boundary(res.x, lower, upper).tolist() == [True, True, False, False, False]


def test_box_is_a_fixed_factor_wider_than_the_truth():
    _, G = default_truth("vapt")
    lower, upper = theta_box(G, 3, 3.0)
    assert lower.shape == upper.shape == (3 * 5,)
    np.testing.assert_array_equal(upper[:12], 3.0 * max(1.0, np.abs(G.atoms).max()))
    np.testing.assert_array_equal(upper[12:], 3.0 * max(1.0, np.abs(G.biases).max()))
    assert theta_box(G, 3, math.inf) == (None, None)
    with pytest.raises(ValueError, match="factor"):
        theta_box(G, 3, 0.5)
    z = np.concatenate([np.zeros(12), [0.0, upper[13], 0.0]])
    assert boundary_atoms(z, lower, upper, 3) == 1


@pytest.mark.parametrize("bound", [3.0, 1.5])
def test_every_fitted_parameter_stays_in_the_box(bound):
    tasks = build_tasks(["vapt"], ["over"], [500], 2, expressiveness=False, theta_bound=bound)
    _, G = default_truth("vapt")
    lower, upper = theta_box(G, 3, bound)
    for task in tasks:
        row = run_task(task)
        z = np.array(row["params"].split(), dtype=float)
        assert np.all(z >= lower - 1e-12) and np.all(z <= upper + 1e-12)
        assert row["theta_bound"] == bound and isinstance(row["boundary"], bool) and "escaped" in row


def test_rows_dominated_by_escaped_atoms_are_reported_with_their_share():
    rng = np.random.default_rng(0)
    rows = []
    for n in (2000, 4000, 8000, 16000):
        for rep in range(10):
            loss = n**-0.5 * np.exp(0.05 * rng.standard_normal())
            esc = rep < 3 and n <= 4000  # escaped atoms at small n carry huge losses
            rows.append(dict(truth="vpt", family="vpt", regime="over", fitted_atoms=3, n=n, replicate=rep,
                             failed=False, L2=loss, D1=loss * (1e3 if esc else 1), D2=loss, param_err=loss,
                             expert_sup=loss, degenerate=False, boundary=esc, escaped=esc))
    summary = summarize(pd.DataFrame(rows), n_boot=200).set_index("metric")
    assert summary.loc["D1", "verdict"] == "reported" and summary.loc["D1", "escaped_share"] == pytest.approx(0.15)
    assert summary.loc["D1", "slope_without_escaped"] == pytest.approx(-0.5, abs=0.05)
    assert summary.loc["D2", "verdict"] == "consistent"  # escaped fits there do not move the slope
    assert summary.loc["L2", "verdict"] == "consistent"
    assert summary.loc["D1", "boundary_share"] == pytest.approx(0.15)


def test_summary_command_resummarises_a_run(tmp_path, capsys):
    from theory.sample_efficiency import main as run_main
    from theory.summary import main

    out = tmp_path / "run"
    args = ["--families", "vpt", "--n", "300,600,1200", "--replicates", "3", "--no-expressiveness", "--jobs", "1",
            "--bootstrap", "100", "--out", str(out)]
    assert run_main(args) == 0
    first = pd.read_csv(out / "summary.csv")
    again = tmp_path / "again"
    assert main([str(out / "fits.csv"), "--n-min", "300", "--bootstrap", "100", "--out", str(again)]) == 0
    pd.testing.assert_frame_equal(first, pd.read_csv(again / "summary.csv"))
    capsys.readouterr()
    assert main([str(out / "fits.csv"), "--n-min", "600", "--bootstrap", "100", "--compare",
                 str(out / "summary.csv")]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| vpt | 2 | exact | D1 |")]
    assert len(table) == 1 and table[0].count("|") == 10
    with pytest.raises(SystemExit):
        main([str(out / "fits.csv"), "--n-min", "1200"])
