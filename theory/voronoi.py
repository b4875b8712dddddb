"""Voronoi cells and losses between a fitted and a true mixing measure, plus fit diagnostics."""

from __future__ import annotations

import numpy as np

from theory.models import MixingMeasure, PromptFamily, PromptMoE


def _check_pair(G_hat: MixingMeasure, G_true: MixingMeasure) -> None:
    if G_hat.atoms.shape[1] != G_true.atoms.shape[1]:
        raise ValueError(
            f"fitted atoms have {G_hat.atoms.shape[1]} parameters but true atoms have "
            f"{G_true.atoms.shape[1]}; Voronoi losses need atoms of the same family"
        )


def voronoi_cells(G_hat: MixingMeasure, G_true: MixingMeasure) -> np.ndarray:
    """Index of the nearest true atom for every fitted atom (cell A_j = fitted atoms labelled j)."""
    _check_pair(G_hat, G_true)
    dist = np.linalg.norm(G_hat.atoms[:, None, :] - G_true.atoms[None, :, :], axis=2)
    return np.argmin(dist, axis=1)


def _cell_terms(G_hat: MixingMeasure, G_true: MixingMeasure):
    labels = voronoi_cells(G_hat, G_true)
    w_hat, w_true = G_hat.weights, G_true.weights
    dist = np.linalg.norm(G_hat.atoms - G_true.atoms[labels], axis=1)
    sizes = np.bincount(labels, minlength=G_true.atoms.shape[0])
    mass = np.bincount(labels, weights=w_hat, minlength=G_true.atoms.shape[0])
    return labels, w_hat, dist, sizes, np.abs(mass - w_true).sum()


def voronoi_d1(G_hat: MixingMeasure, G_true: MixingMeasure) -> float:
    """D1: sum_j |sum_{A_j} e^b - e^b*| + sum_j sum_{A_j} e^b ||theta - theta*_j||."""
    _, w_hat, dist, _, mass_term = _cell_terms(G_hat, G_true)
    return float(mass_term + np.sum(w_hat * dist))


def voronoi_d2(G_hat: MixingMeasure, G_true: MixingMeasure) -> float:
    """D2: as D1 but with squared distances inside cells holding more than one atom."""
    labels, w_hat, dist, sizes, mass_term = _cell_terms(G_hat, G_true)
    power = np.where(sizes[labels] > 1, 2.0, 1.0)
    return float(mass_term + np.sum(w_hat * dist**power))


def cell_parameter_errors(G_hat: MixingMeasure, G_true: MixingMeasure) -> np.ndarray:
    """Per true cell: weight-averaged ||theta_i - theta*_j|| over its fitted atoms (NaN if empty)."""
    labels, w_hat, dist, _, _ = _cell_terms(G_hat, G_true)
    L = G_true.atoms.shape[0]
    num = np.bincount(labels, weights=w_hat * dist, minlength=L)
    den = np.bincount(labels, weights=w_hat, minlength=L)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def smallest_multi_atom_weight(G_hat: MixingMeasure, G_true: MixingMeasure) -> float:
    """Smallest fitted weight among atoms in cells holding more than one atom (NaN if none)."""
    labels, w_hat, _, sizes, _ = _cell_terms(G_hat, G_true)
    in_multi = sizes[labels] > 1
    return float(w_hat[in_multi].min()) if in_multi.any() else float("nan")


def l2_error(
    model_hat: PromptMoE, G_hat: MixingMeasure, model_true: PromptMoE, G_true: MixingMeasure, X: np.ndarray
) -> float:
    """Root mean squared difference of the regression functions on evaluation points X."""
    diff = model_hat.predict(X, G_hat) - model_true.predict(X, G_true)
    return float(np.sqrt(np.mean(diff * diff)))


def _selected_cells(sizes: np.ndarray, multi_atom_only: bool) -> np.ndarray:
    """Cells the parameter errors are taken over: multi-atom cells (over-specified) or all non-empty cells."""
    return sizes > 1 if multi_atom_only else sizes > 0


def cell_shares(G_hat: MixingMeasure, G_true: MixingMeasure) -> np.ndarray:
    """Each fitted atom's share of its cell's fitted weight."""
    labels = voronoi_cells(G_hat, G_true)
    w = G_hat.weights
    total = np.bincount(labels, weights=w, minlength=G_true.atoms.shape[0])
    return w / total[labels]


def expert_sup_error(
    family: PromptFamily,
    G_hat: MixingMeasure,
    G_true: MixingMeasure,
    grid: np.ndarray,
    multi_atom_only: bool | None = None,
) -> float:
    """Max over cells j of sum_{i in A_j} share_i * sup_x |h(x; theta_i) - h(x; theta*_j)|.

    share_i is atom i's share of its cell's fitted weight, so an atom carrying almost no weight counts
    almost nothing. Cells: multi-atom cells when ``multi_atom_only`` (default: when G_hat has more atoms
    than G_true), else all cells.
    """
    labels = voronoi_cells(G_hat, G_true)
    L = G_true.atoms.shape[0]
    sizes = np.bincount(labels, minlength=L)
    multi = G_hat.atoms.shape[0] > L if multi_atom_only is None else multi_atom_only
    _, h_hat = family.scores_experts(grid, G_hat.atoms)
    _, h_true = family.scores_experts(grid, G_true.atoms)
    sup = np.max(np.abs(h_hat - h_true[:, labels]), axis=0)
    per_cell = np.bincount(labels, weights=cell_shares(G_hat, G_true) * sup, minlength=L)
    chosen = _selected_cells(sizes, multi)
    return float(per_cell[chosen].max()) if chosen.any() else float("nan")


def parameter_error(G_hat: MixingMeasure, G_true: MixingMeasure, multi_atom_only: bool | None = None) -> float:
    """Weight-averaged ||theta_i - theta*_j|| over the fitted atoms of multi-atom cells (or of all cells).

    ``multi_atom_only`` defaults to True when G_hat has more atoms than G_true (over-specified).
    """
    labels, w_hat, dist, sizes, _ = _cell_terms(G_hat, G_true)
    multi = G_hat.atoms.shape[0] > G_true.atoms.shape[0] if multi_atom_only is None else multi_atom_only
    chosen = _selected_cells(sizes, multi)[labels]
    if not chosen.any():
        return float("nan")
    return float(np.sum(w_hat[chosen] * dist[chosen]) / np.sum(w_hat[chosen]))


#: A fitted atom with less than this share of its multi-atom cell's weight makes the fit degenerate.
DEGENERATE_SHARE = 0.10
#: A fitted atom farther than this (in theta) from its true atom makes the fit degenerate.
DEGENERATE_DISTANCE = 1.0


def is_degenerate(G_hat: MixingMeasure, G_true: MixingMeasure) -> bool:
    """Some multi-atom cell has an atom with < 10 % of the cell's weight, or an atom lies > 1 from its true atom.

    A degenerate over-specified fit has in effect one atom per true atom: it behaves like an exact fit.
    """
    labels, _, dist, sizes, _ = _cell_terms(G_hat, G_true)
    small = (sizes[labels] > 1) & (cell_shares(G_hat, G_true) < DEGENERATE_SHARE)
    return bool(small.any() or (dist > DEGENERATE_DISTANCE).any())


#: An atom farther than this (in theta) from every true atom, carrying more than ESCAPE_SHARE of the
#: fitted weight, has escaped.
ESCAPE_DISTANCE = 3.0
ESCAPE_SHARE = 0.01


def escaped(G_hat: MixingMeasure, G_true: MixingMeasure) -> bool:
    """Some fitted atom lies farther than 3 from every true atom while carrying more than 1 % of the weight."""
    _check_pair(G_hat, G_true)
    dist = np.linalg.norm(G_hat.atoms[:, None, :] - G_true.atoms[None, :, :], axis=2).min(axis=1)
    share = G_hat.weights / G_hat.weights.sum()
    return bool(np.any((dist > ESCAPE_DISTANCE) & (share > ESCAPE_SHARE)))


def evaluation_grid(d: int, points_per_axis: int = 41) -> np.ndarray:
    """A regular grid on [-1, 1]^d (at most about 70,000 points)."""
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d!r}")
    k = max(2, min(points_per_axis, int(70_000 ** (1.0 / d))))
    axes = [np.linspace(-1.0, 1.0, k)] * d
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, d)


def parameter_metrics(
    family: PromptFamily,
    G_hat: MixingMeasure,
    G_true: MixingMeasure,
    grid: np.ndarray,
    multi_atom_only: bool | None = None,
) -> dict[str, float]:
    """All Voronoi losses and parameter diagnostics of one fit, as a flat dict.

    ``param_err`` and ``expert_sup`` are taken over multi-atom cells when ``multi_atom_only`` (default:
    when G_hat has more atoms than G_true, i.e. over-specified) and over all cells otherwise.
    """
    errors = cell_parameter_errors(G_hat, G_true)
    sizes = np.bincount(voronoi_cells(G_hat, G_true), minlength=G_true.atoms.shape[0])
    out = {
        "D1": voronoi_d1(G_hat, G_true),
        "D2": voronoi_d2(G_hat, G_true),
        "param_err": parameter_error(G_hat, G_true, multi_atom_only),
        "expert_sup": expert_sup_error(family, G_hat, G_true, grid, multi_atom_only),
        "min_multi_weight": smallest_multi_atom_weight(G_hat, G_true),
        "empty_cells": int(np.sum(sizes == 0)),
        "degenerate": is_degenerate(G_hat, G_true),
    }
    for j, err in enumerate(errors):
        out[f"param_err_cell{j}"] = float(err)
    return out


def transport_w1(atoms_a: np.ndarray, weights_a: np.ndarray, atoms_b: np.ndarray, weights_b: np.ndarray) -> float:
    """Wasserstein-1 distance between two discrete measures (weights normalised to 1), by a small LP."""
    from scipy.optimize import linprog

    wa = np.asarray(weights_a, dtype=float)
    wb = np.asarray(weights_b, dtype=float)
    if wa.size == 0 or wb.size == 0 or wa.sum() <= 0 or wb.sum() <= 0:
        return float("nan")
    wa, wb = wa / wa.sum(), wb / wb.sum()
    cost = np.linalg.norm(np.asarray(atoms_a)[:, None, :] - np.asarray(atoms_b)[None, :, :], axis=2)
    m, k = cost.shape
    if m == 1 or k == 1:
        return float(np.sum(cost * (wa[:, None] * wb[None, :])))
    rows = np.kron(np.eye(m), np.ones(k))
    cols = np.kron(np.ones(m), np.eye(k))
    res = linprog(cost.ravel(), A_eq=np.vstack([rows, cols])[:-1], b_eq=np.concatenate([wa, wb])[:-1], bounds=(0, None))
    if not res.success:
        raise RuntimeError(f"the transport LP failed: {res.message}")
    return float(max(res.fun, 0.0))


def local_metrics(G_hat: MixingMeasure, G_fixed: MixingMeasure, G_local: MixingMeasure, atom: int = 0) -> dict:
    """Losses of a fit to the local alternative (atom ``atom`` of the fixed truth split into a pair).

    ``G_local`` is the n-dependent truth of :func:`theory.truths.local_truth` (the pair is its last two
    atoms). Cells are those of the fixed, n-independent truth ``G_fixed``:
    ``W1``: Wasserstein-1 between the fitted atoms in the split atom's cell (weights normalised within
    the cell) and the true pair (equal weights); ``mass_err``: |that cell's fitted weight - the pair's|;
    ``max_pair_err``: max over the pair of the distance to its fitted atom after optimal matching of all
    atoms; ``resolved``: the two fitted atoms matched to the pair lie a distance in [0.5, 2] x delta_n apart
    and each carries >= 10 % of their joint weight; ``degenerate``: :func:`is_degenerate` against G_fixed.
    """
    from scipy.optimize import linear_sum_assignment

    labels = voronoi_cells(G_hat, G_fixed)
    in_cell = labels == atom
    pair_atoms, pair_w = G_local.atoms[-2:], G_local.weights[-2:]
    w1 = transport_w1(G_hat.atoms[in_cell], G_hat.weights[in_cell], pair_atoms, pair_w)
    mass = abs(float(G_hat.weights[in_cell].sum() - pair_w.sum()))
    cost = np.linalg.norm(G_local.atoms[:, None, :] - G_hat.atoms[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(cost)
    match = dict(zip(rows.tolist(), cols.tolist(), strict=True))
    L = G_local.atoms.shape[0]
    pair_idx = [match.get(L - 2), match.get(L - 1)]
    if None in pair_idx:
        max_pair, resolved = float("nan"), False
    else:
        max_pair = float(max(cost[L - 2, pair_idx[0]], cost[L - 1, pair_idx[1]]))
        delta = float(np.linalg.norm(pair_atoms[0] - pair_atoms[1]))
        gap = float(np.linalg.norm(G_hat.atoms[pair_idx[0]] - G_hat.atoms[pair_idx[1]]))
        w = G_hat.weights[pair_idx]
        resolved = bool(0.5 <= gap / delta <= 2.0 and w.min() >= 0.1 * w.sum())
    return {
        "W1": w1,
        "mass_err": mass,
        "max_pair_err": max_pair,
        "resolved": resolved,
        "degenerate": is_degenerate(G_hat, G_fixed),
        "cell_atoms": int(in_cell.sum()),
    }
