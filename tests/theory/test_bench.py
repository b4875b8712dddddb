"""The solver benchmark runs on a small problem and prints both tables (speed is not asserted here)."""

import numpy as np

from theory.bench import bench_family, compare_solvers, iteration_costs, main


def test_bench_prints_solver_and_iteration_tables(capsys):
    assert main(["--n", "300", "--fits", "1", "--families", "vpt"]) == 0
    out = capsys.readouterr().out
    assert "lm_fits_per_s" in out and "trf_fits_per_s" in out and "speedup" in out
    assert "lm_same_or_lower" in out and "objective: lm within 1e-06 relative of trf or lower in" in out
    assert "jac_analytic_ms" in out and "svd_ms" in out and "normal_eq_ms" in out


def test_compare_solvers_counts_every_fit():
    row = compare_solvers("vapt", "exact", 400, 2)
    assert row["lm_same_or_lower"] + row["trf_lower"] == 2
    assert row["lm_same_or_lower"] == 2 and row["max_rel_gap"] < 1e-6  # an easy problem: the same minimum
    assert row["lm_nfev"] > 0 and row["trf_nfev"] > 0 and row["lm_cpu_s"] > 0


def test_both_jacobians_reach_the_same_fit():
    row = bench_family("vapt", "exact", 400, 1)
    assert row["max_D1_gap"] < 1e-4
    assert row["analytic_nfev"] > 0 and row["2-point_nfev"] > 0


def test_iteration_costs_are_measured_for_the_family():
    row = iteration_costs("vapt", "over", 300, repeats=2)
    assert row["params"] == 3 * 5  # three atoms, four weights and one bias each
    for key in ("jac_analytic_ms", "jac_2point_ms", "svd_ms", "normal_eq_ms", "jac_speedup", "iteration_speedup"):
        assert np.isfinite(row[key]) and row[key] > 0
    assert row["jac_max_abs_gap"] < 1e-5  # both time the same Jacobian


def test_tolerance_comparison_measures_the_same_fits():
    from theory.bench import compare_tolerances
    from theory.experiment import TOLERANCE

    before = dict(TOLERANCE)
    rows = compare_tolerances("vpt", [300, 600], 1, [1e-12, 1e-4])
    assert TOLERANCE == before  # the experiment's tolerances are restored
    assert rows[0]["max_mean_log_change"] == 0.0 and rows[1]["nfev_per_fit"] <= rows[0]["nfev_per_fit"]
    assert np.isfinite(rows[1]["max_mean_log_change"]) and rows[1]["worst_metric"] in ("D2", "D1", "L2", "param_err",
                                                                                       "expert_sup")


def test_bounds_comparison_has_three_designs():
    from theory.bench import compare_bounds

    rows = compare_bounds("vpt", [300, 600], 1)
    assert [r["design"] for r in rows] == ["unbounded", "projected LM", "smooth tanh"]
    assert all(0 <= r["boundary_share"] <= 1 and r["nfev_per_fit"] > 0 for r in rows)
