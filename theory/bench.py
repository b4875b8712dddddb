"""Benchmark: Levenberg-Marquardt (``lm``, NumPy, normal equations) against scipy's ``trf`` on the same fits.

python -m theory.bench [--n 8000] [--fits 4] [--families vpt,vapt,vapt_linear] [--regime exact]
python -m theory.bench --bounds [--n 1000,10000] [--fits 3] [--families vpt,vapt]   # how to keep fits bounded

For each family both solvers run the same best-of-starts fits (same data, same starts); the table gives
fits per second, CPU-seconds, the speed-up, and how the objectives agree: the number of fits where lm
is within 1e-6 relative of trf or lower, where trf is lower by more than that, and the largest relative
gap. A second table times the parts of one iteration: the Jacobian (analytic vs forward differences),
trf's thin SVD of the Jacobian, and lm's normal equations (J^T J, J^T r and a Cholesky solve).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.linalg

from theory.config import _family_list, _int_at_least, _Parser
from theory.experiment import MAX_NFEV, N_STARTS, make_config
from theory.fit import DEFAULT_THETA_BOUND, SOLVERS, TOLERANCE, derive_seed, fit_least_squares, initial_points
from theory.models import MixingMeasure, sample_data
from theory.threads import limit_blas_threads
from theory.truths import default_truth
from theory.voronoi import voronoi_d1

#: Relative objective gap within which two solvers count as reaching the same fit.
AGREEMENT_RTOL = 1e-6


def _sizes(text: str) -> list[int]:
    parse = _int_at_least(50)
    return [parse(t) for t in text.split(",") if t.strip()]


def _problems(family: str, regime: str, n: int, n_fits: int, seed: int):
    cfg = make_config(family, regime)
    model, G = default_truth(family)
    problems = []
    for rep in range(n_fits):
        rng = np.random.default_rng(derive_seed(f"bench|{cfg.key}", n, rep, seed))
        X, Y = sample_data(model, G, n, 0.1, rng)
        starts = initial_points(G, cfg.n_atoms, mode="noise", regime=regime, n=n, n_starts=N_STARTS[regime], rng=rng)
        problems.append((X, Y, starts))
    return cfg, model, problems


def compare_solvers(family: str, regime: str, n: int, n_fits: int, seed: int = 0) -> dict:
    """Run the same ``n_fits`` best-of-starts fits with ``lm`` and ``trf``; speed and objective agreement."""
    cfg, model, problems = _problems(family, regime, n, n_fits, seed)
    row = {"family": family, "regime": regime, "n": n, "fits": n_fits}
    costs = {}
    for solver in SOLVERS:
        wall, cpu = time.perf_counter(), time.process_time()
        results = [
            fit_least_squares(
                model, X, Y, starts, n_atoms=cfg.n_atoms, tol=TOLERANCE[regime], max_nfev=MAX_NFEV[regime],
                method=solver,
            )
            for X, Y, starts in problems
        ]
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        row[f"{solver}_fits_per_s"] = n_fits / wall
        row[f"{solver}_cpu_s"] = cpu
        row[f"{solver}_nfev"] = float(np.mean([r.nfev for r in results]))
        costs[solver] = np.array([r.cost for r in results])
    row["speedup"] = row["lm_fits_per_s"] / row["trf_fits_per_s"]
    rel = (costs["lm"] - costs["trf"]) / np.abs(costs["trf"])
    row["lm_same_or_lower"] = int(np.sum(rel <= AGREEMENT_RTOL))
    row["trf_lower"] = int(np.sum(rel > AGREEMENT_RTOL))
    row["max_rel_gap"] = float(np.max(np.abs(rel)))
    return row


def bench_family(family: str, regime: str, n: int, n_fits: int, seed: int = 0, method: str = "trf") -> dict:
    """Time ``n_fits`` identical scipy fits with the analytic Jacobian and with scipy's '2-point' differences."""
    cfg = make_config(family, regime)
    model, G = default_truth(family)
    problems = []
    for rep in range(n_fits):
        rng = np.random.default_rng(derive_seed(f"bench|{cfg.key}", n, rep, seed))
        X, Y = sample_data(model, G, n, 0.1, rng)
        starts = initial_points(G, cfg.n_atoms, mode="noise", regime=regime, n=n, n_starts=N_STARTS[regime], rng=rng)
        problems.append((X, Y, starts))
    row = {"family": family, "regime": regime, "n": n, "fits": n_fits}
    estimates = {}
    for jac in ("analytic", "2-point"):
        t0 = time.perf_counter()
        results = [
            fit_least_squares(
                model,
                X,
                Y,
                starts,
                n_atoms=cfg.n_atoms,
                tol=TOLERANCE[regime],
                max_nfev=MAX_NFEV[regime],
                jacobian=jac,
                method=method,
            )
            for X, Y, starts in problems
        ]
        elapsed = time.perf_counter() - t0
        row[f"{jac}_fits_per_s"] = n_fits / elapsed
        row[f"{jac}_nfev"] = float(np.mean([r.nfev for r in results]))
        estimates[jac] = results
    row["speedup"] = row["analytic_fits_per_s"] / row["2-point_fits_per_s"]
    row["max_D1_gap"] = max(
        abs(voronoi_d1(a.estimate, G) - voronoi_d1(b.estimate, G))
        for a, b in zip(estimates["analytic"], estimates["2-point"], strict=True)
    )
    return row


def _best_time(fn, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def iteration_costs(family: str, regime: str, n: int, seed: int = 0, repeats: int = 5) -> dict:
    """Milliseconds for the parts of one solver iteration at the true atoms plus start noise.

    ``jac_analytic_ms``: forward pass and analytic Jacobian; ``jac_2point_ms``: forward pass and the P
    extra forward passes of a forward-difference Jacobian (scipy's '2-point' step); ``svd_ms``: the
    thin SVD of the Jacobian that every trf iteration computes, whichever Jacobian is used;
    ``normal_eq_ms``: what lm does with the Jacobian instead (J^T J, J^T r, Cholesky);
    ``jac_max_abs_gap``: the largest entry-wise difference between the two Jacobians.
    """
    cfg = make_config(family, regime)
    model, G = default_truth(family)
    rng = np.random.default_rng(derive_seed(f"bench-iter|{cfg.key}", n, 0, seed))
    X, _ = sample_data(model, G, n, 0.1, rng)
    z = initial_points(G, cfg.n_atoms, mode="noise", regime=regime, n=n, n_starts=1, rng=rng)[0]
    design = model.prepare(X)
    step = np.sqrt(np.finfo(float).eps) * np.maximum(1.0, np.abs(z))

    def predict(v: np.ndarray):
        return model.forward(design, MixingMeasure.from_vector(v, cfg.n_atoms))

    def analytic() -> np.ndarray:
        return model.jacobian(design, predict(z))

    def two_point() -> np.ndarray:
        f0 = predict(z).f
        J = np.empty((f0.size, z.size), order="F")
        for j in range(z.size):
            zj = z.copy()
            zj[j] += step[j]
            J[:, j] = (predict(zj).f - f0) / step[j]
        return J

    J = analytic()
    t_an, t_fd = _best_time(analytic, repeats), _best_time(two_point, repeats)
    t_svd = _best_time(lambda: scipy.linalg.svd(J, full_matrices=False), repeats)
    r = predict(z).f

    def normal_equations() -> np.ndarray:
        A = J.T @ J
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(A + 1e-3 * np.diag(np.diag(A))), J.T @ r)

    t_ne = _best_time(normal_equations, repeats)
    return {
        "family": family,
        "regime": regime,
        "n": n,
        "params": z.size,
        "jac_analytic_ms": 1e3 * t_an,
        "jac_2point_ms": 1e3 * t_fd,
        "jac_speedup": t_fd / t_an,
        "svd_ms": 1e3 * t_svd,
        "normal_eq_ms": 1e3 * t_ne,
        "iteration_speedup": (t_fd + t_svd) / (t_an + t_svd),
        "lm_vs_trf_iteration": (t_an + t_svd) / (t_an + t_ne),
        "jac_max_abs_gap": float(np.abs(J - two_point()).max()),
    }


def compare_bounds(family: str, ns: Sequence[int], n_fits: int, factor: float = DEFAULT_THETA_BOUND,
                   regime: str = "over") -> list[dict]:
    """The same fits unbounded, with the projected LM in the box and with the smooth (tanh) reparametrisation.

    Per design: CPU-seconds, function evaluations per fit, the share of fits that converged, that end with
    an atom on the box's boundary (within 1e-3 of its width, so the smooth design, which only approaches
    it, is counted alike) and that have an escaped atom, and the mean log D2 (over-specified) or D1.
    """
    import math

    from theory.experiment import build_tasks, run_task
    from theory.fit import on_boundary, theta_box

    metric = "D2" if regime == "over" else "D1"
    rows = []
    for label, bound, mode in (("unbounded", math.inf, "project"), ("projected LM", factor, "project"),
                               ("smooth tanh", factor, "smooth")):
        tasks = build_tasks([family], [regime], ns, n_fits, expressiveness=False, theta_bound=bound, bound_mode=mode)
        cpu = time.process_time()
        fits = pd.DataFrame([run_task(t) for t in tasks])
        cpu = time.process_time() - cpu
        _, G = default_truth(family)
        lower, upper = theta_box(G, tasks[0].config.n_atoms, factor)
        near = [bool(on_boundary(np.array(p.split(), dtype=float), lower, upper, rtol=1e-3).any())
                for p in fits["params"]]
        rows.append({"family": family, "design": label, "fits": len(fits), "cpu_s": cpu,
                     "nfev_per_fit": fits["nfev"].mean(), "converged": fits["converged"].mean(),
                     "boundary_share": float(np.mean(near)), "escaped_share": fits["escaped"].mean(),
                     f"mean_log_{metric}": float(np.log(fits[metric]).mean()),
                     "mean_log_L2": float(np.log(fits["L2"]).mean())})
    return rows


def compare_tolerances(family: str, ns: Sequence[int], n_fits: int, tolerances: Sequence[float],
                       regime: str = "over") -> list[dict]:
    """The same fits at each tolerance: CPU-seconds, evaluations, and the largest change of a per-n mean log loss.

    The change is taken against the first tolerance, over every n and every loss of the regime; the method
    allows a looser tolerance only where it stays below 0.01 (1 %).
    """
    import theory.experiment as experiment
    from theory.families import REGIME_METRICS

    key = "over" if regime == "local" else regime
    saved = experiment.TOLERANCE[key]
    rows, base = [], None
    try:
        for tol in tolerances:
            experiment.TOLERANCE[key] = tol
            tasks = experiment.build_tasks([family], [regime], ns, n_fits, expressiveness=False)
            cpu = time.process_time()
            fits = pd.DataFrame([experiment.run_task(t) for t in tasks])
            cpu = time.process_time() - cpu
            logs = {m: np.log(fits[m]).groupby(fits["n"]).mean() for m in REGIME_METRICS[regime] if m in fits}
            base = base or logs
            change = {m: float((logs[m] - base[m]).abs().max()) for m in logs}
            worst = max(change, key=change.get)
            rows.append({"family": family, "tolerance": tol, "cpu_s": cpu, "nfev_per_fit": fits["nfev"].mean(),
                         "converged": fits["converged"].mean(), "max_mean_log_change": change[worst],
                         "worst_metric": worst})
    finally:
        experiment.TOLERANCE[key] = saved
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Print fits per second and objective agreement of lm and trf, then the cost of one iteration by part."""
    p = _Parser(prog="python -m theory.bench", description="lm (normal equations) vs scipy trf on the same fits.")
    p.add_argument("--n", type=_sizes, default=None,
                   help="sample size (default 8000); with --bounds comma-separated sizes (default 1000,10000)")
    p.add_argument("--bounds", action="store_true",
                   help="compare unbounded fits, the projected LM and the smooth reparametrisation on the same fits")
    p.add_argument("--fits", type=_int_at_least(1), default=4, help="fits per family and solver (default 4)")
    p.add_argument("--families", type=_family_list, default=["vpt", "vapt", "vapt_linear"])
    p.add_argument("--regime", choices=("exact", "over"), default=None, help="default: exact (over with --bounds)")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--method", choices=SOLVERS, default=None, help="ignored: both solvers are timed")
    p.add_argument("--tolerances", default=None,
                   help="comma-separated tolerances: the same fits at each (default regime over, n 1000,10000,100000)")
    args = p.parse_args(argv)
    limit_blas_threads()
    if args.tolerances:
        try:
            tols = [float(t) for t in args.tolerances.split(",")]
        except ValueError:
            p.error(f"--tolerances: expected comma-separated numbers in (0, 1), got {args.tolerances!r}")
        if not all(0 < t < 1 for t in tols):
            p.error(f"--tolerances: expected comma-separated numbers in (0, 1), got {args.tolerances!r}")
        ns = args.n or [1000, 10000, 100000]
        rows = [r for f in args.families for r in compare_tolerances(f, ns, args.fits, tols, args.regime or "over")]
        print(f"== The same fits at each tolerance: n = {ns}, {args.fits} replicates each ==")
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        return 0
    if args.bounds:
        args.regime = args.regime or "over"
        print("== Bounded parameter space: the same over-specified fits unbounded, projected LM, smooth tanh ==")
        ns = args.n or [1000, 10000]
        rows = [r for f in args.families for r in compare_bounds(f, ns, args.fits, regime=args.regime)]
        print(f"n = {ns}, {args.fits} replicates each; box factor {DEFAULT_THETA_BOUND:g}")
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        return 0
    args.n = (args.n or [8000])[0]
    args.regime = args.regime or "exact"
    print("== Benchmark of the least-squares fits in the prompt-MoE simulation: lm vs trf on the same fits ==")
    rows = [compare_solvers(f, args.regime, args.n, args.fits, args.seed) for f in args.families]
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    lm_cpu, trf_cpu = table["lm_cpu_s"].sum(), table["trf_cpu_s"].sum()
    total = len(rows) * args.fits
    print(
        f"overall: lm {total / sum(args.fits / r['lm_fits_per_s'] for r in rows):.3g} fits/s, trf "
        f"{total / sum(args.fits / r['trf_fits_per_s'] for r in rows):.3g} fits/s; CPU-s lm {lm_cpu:.2f}, trf "
        f"{trf_cpu:.2f} ({trf_cpu / lm_cpu:.2f}x); objective: lm within {AGREEMENT_RTOL:g} relative of trf or lower "
        f"in {int(table['lm_same_or_lower'].sum())} of {total} fits, trf lower in {int(table['trf_lower'].sum())}"
    )
    costs = pd.DataFrame([iteration_costs(f, args.regime, args.n, args.seed) for f in args.families])
    print("one iteration, by part (ms): Jacobian analytic vs 2-point; trf's SVD vs lm's normal equations:")
    print(costs.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
