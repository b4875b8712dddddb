"""The Jacobian benchmark runs on a small problem and prints both tables (speed is not asserted here)."""

import numpy as np

from theory.bench import bench_family, iteration_costs, main


def test_bench_prints_fit_and_iteration_tables(capsys):
    assert main(["--n", "300", "--fits", "1", "--families", "vpt"]) == 0
    out = capsys.readouterr().out
    assert "analytic_fits_per_s" in out and "2-point_fits_per_s" in out and "speedup" in out
    assert "jac_analytic_ms" in out and "jac_2point_ms" in out and "svd_ms" in out


def test_both_jacobians_reach_the_same_fit():
    row = bench_family("vapt", "exact", 400, 1)
    assert row["max_D1_gap"] < 1e-4
    assert row["analytic_nfev"] > 0 and row["2-point_nfev"] > 0


def test_iteration_costs_are_measured_for_the_family():
    row = iteration_costs("vapt", "over", 300, repeats=2)
    assert row["params"] == 3 * 5  # three atoms, four weights and one bias each
    for key in ("jac_analytic_ms", "jac_2point_ms", "svd_ms", "jac_speedup", "iteration_speedup"):
        assert np.isfinite(row[key]) and row[key] > 0
    assert row["jac_max_abs_gap"] < 1e-5  # both time the same Jacobian
