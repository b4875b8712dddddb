"""Strong-identifiability check: are the derivative functions of the prompt terms linearly independent?

With f* the true regression function and Phi(x; theta) = exp(s(x; theta)) (h(x; theta) - f*(x)),
f_G = f* exactly when sum_j exp(b_j) Phi(x; theta_j) = sum_j exp(b*_j) Phi(x; theta*_j),
so a Taylor expansion around the true atoms involves the functions d^alpha Phi(x; theta*_j) / d theta^alpha,
|alpha| <= 1 (exact-specified) or <= 2 (over-specified). They are evaluated on random points; the
ratio of the smallest to the largest singular value of the column-normalized matrix tells whether they
are linearly independent. Mixed second derivatives that coincide identically (for atoms acting
through W x, d2/dW_ab dW_ce = d2/dW_ae dW_cb) are merged first: only their sum is identified, and
the Voronoi loss D2 needs only the pure second-order terms.

    python -m theory.identifiability [--truth NAME|FILE.json] [--families vpt,vapt]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import pandas as pd

from theory.families import family_names, get_family
from theory.models import sample_inputs

#: Singular-value ratio below which the functions count as linearly dependent.
THRESHOLD = 1e-8


def derivative_functions(name: str, order: int, n_points: int = 4000, seed: int = 0, truth=None) -> np.ndarray:
    """Columns d^alpha Phi(x; theta*_j), |alpha| <= order, for every true atom j of ``truth``, at random points."""
    if order not in (0, 1, 2):
        raise ValueError(f"order must be 0, 1 or 2, got {order!r}")
    if n_points < 10:
        raise ValueError(f"n_points must be >= 10, got {n_points!r}")
    if truth is None:
        from theory.truths import DEFAULT_TRUTH as truth
    model, G = truth.model(name)
    X = sample_inputs(np.random.default_rng(seed), n_points, model.family.d)
    f_true = model.predict(X, G)
    s, h, ds, dh = model.family.derivatives(X, G.atoms)
    d2s, d2h = model.family.second_derivatives(X, G.atoms) if order >= 2 else (None, None)
    P = model.family.n_params
    columns = []
    for j in range(G.atoms.shape[0]):
        e = np.exp(s[:, j] - s[:, j].max())
        r = h[:, j] - f_true
        columns.append(e * r)
        if order >= 1:
            columns += [e * (ds[:, j, t] * r + dh[:, j, t]) for t in range(P)]
        if order >= 2:
            for t in range(P):
                for u in range(t, P):
                    curv = (d2s[:, j, t, u] + ds[:, j, t] * ds[:, j, u]) * r
                    cross = ds[:, j, t] * dh[:, j, u] + ds[:, j, u] * dh[:, j, t] + d2h[:, j, t, u]
                    columns.append(e * (curv + cross))
    return np.stack(columns, axis=1)


def singular_value_ratio(M: np.ndarray, merge_identical: bool = True) -> float:
    """Smallest over largest singular value of M with unit-norm columns (zero columns stay zero)."""
    M = np.asarray(M, dtype=float)
    if M.ndim != 2 or M.shape[0] < M.shape[1]:
        raise ValueError(f"M must be a 2-d array with at least as many rows as columns, got shape {M.shape}")
    norms = np.linalg.norm(M, axis=0)
    unit = np.where(norms > 0, M / np.where(norms > 0, norms, 1.0), 0.0)
    if merge_identical:
        keep: list[int] = []
        for i in range(unit.shape[1]):
            same = norms[i] > 0 and any(norms[k] > 0 and np.linalg.norm(unit[:, i] - unit[:, k]) < 1e-9 for k in keep)
            if not same:
                keep.append(i)
        unit = unit[:, keep]
    sv = np.linalg.svd(unit, compute_uv=False)
    return float(sv[-1] / sv[0])


def identifiability_table(
    families: Sequence[str] | None = None, n_points: int = 4000, seed: int = 0, truth=None
) -> pd.DataFrame:
    """Singular-value ratios at orders 1 and 2 per family, with the verdict and the registered expectation."""
    rows = []
    for name in family_names() if families is None else families:
        r1 = singular_value_ratio(derivative_functions(name, 1, n_points, seed, truth))
        second = derivative_functions(name, 2, n_points, seed, truth)
        r2 = singular_value_ratio(second)
        expected = get_family(name).strongly_identifiable
        rows.append(
            {
                "family": name,
                "ratio_order1": r1,
                "ratio_order2": r2,
                "ratio_order2_unmerged": singular_value_ratio(second, merge_identical=False),
                "identifiable_order1": r1 > THRESHOLD,
                "strongly_identifiable": r2 > THRESHOLD,
                "expected": "n/a" if expected is None else ("yes" if expected else "no"),
            }
        )
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the singular-value ratio table for the families of a truth."""
    from theory.config import _family_list, _Parser, _truth_arg
    from theory.truths import DEFAULT_TRUTH

    p = _Parser(prog="python -m theory.identifiability",
                description="Which prompt families are (strongly) identifiable at the true atoms of a truth.")
    p.add_argument("--truth", type=_truth_arg, default=None,
                   help="a named truth or a truth JSON file (default: default)")
    p.add_argument("--families", type=_family_list, default=None,
                   help="comma-separated families (default: every family the truth has atoms for)")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    truth = args.truth or DEFAULT_TRUTH
    families = args.families or [f for f in family_names(optional=True) if truth.has_family(f)]
    missing = [f for f in families if not truth.has_family(f)]
    if missing:
        p.error(f"--truth {truth.name}: it has no atoms for family {missing[0]!r}")
    table = identifiability_table(families, truth=truth)
    print(f"== Identifiability check of the simulated prompt-MoE framework (not a paper result); truth {truth.name} ==")
    print(f"smallest/largest singular value of the derivative functions; dependent below {THRESHOLD:g}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2e}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
