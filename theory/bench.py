"""Benchmark: least-squares fits per second with the analytic Jacobian vs finite differences.

python -m theory.bench [--n 8000] [--fits 4] [--families vpt,vapt,vapt_linear] [--regime exact]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from theory.experiment import MAX_NFEV, N_STARTS, limit_blas_threads, make_config
from theory.fit import TOLERANCE, derive_seed, fit_least_squares, initial_points
from theory.models import default_truth, sample_data
from theory.sample_efficiency import _family_list, _int_at_least, _Parser
from theory.voronoi import voronoi_d1


def bench_family(family: str, regime: str, n: int, n_fits: int, seed: int = 0, method: str = "trf") -> dict:
    """Time ``n_fits`` identical fits with the analytic Jacobian and with scipy's '2-point' differences."""
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


def main(argv: Sequence[str] | None = None) -> int:
    """Print fits per second for both Jacobians and their ratio."""
    p = _Parser(prog="python -m theory.bench", description="Analytic Jacobian vs finite differences.")
    p.add_argument("--n", type=_int_at_least(50), default=8000, help="sample size (default 8000)")
    p.add_argument("--fits", type=_int_at_least(1), default=4, help="fits per family and method (default 4)")
    p.add_argument("--families", type=_family_list, default=["vpt", "vapt", "vapt_linear"])
    p.add_argument("--regime", choices=("exact", "over"), default="exact")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--method", choices=("trf", "lm"), default="trf", help="least-squares method (default trf)")
    args = p.parse_args(argv)
    limit_blas_threads()
    print("== Benchmark of the least-squares fits in the prompt-MoE simulation ==")
    rows = [bench_family(f, args.regime, args.n, args.fits, args.seed, args.method) for f in args.families]
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    total_a = sum(args.fits / r["analytic_fits_per_s"] for r in rows)
    total_f = sum(args.fits / r["2-point_fits_per_s"] for r in rows)
    print(
        f"overall: analytic {len(rows) * args.fits / total_a:.3g} fits/s, 2-point "
        f"{len(rows) * args.fits / total_f:.3g} fits/s, speedup {total_f / total_a:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
