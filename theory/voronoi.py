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


def expert_sup_error(family: PromptFamily, G_hat: MixingMeasure, G_true: MixingMeasure, grid: np.ndarray) -> float:
    """max over cells j, fitted atoms i in A_j and grid points x of |h(x; theta_i) - h(x; theta*_j)|."""
    labels = voronoi_cells(G_hat, G_true)
    _, h_hat = family.scores_experts(grid, G_hat.atoms)
    _, h_true = family.scores_experts(grid, G_true.atoms)
    return float(np.max(np.abs(h_hat - h_true[:, labels])))


def evaluation_grid(d: int, points_per_axis: int = 41) -> np.ndarray:
    """A regular grid on [-1, 1]^d (at most about 70,000 points)."""
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d!r}")
    k = max(2, min(points_per_axis, int(70_000 ** (1.0 / d))))
    axes = [np.linspace(-1.0, 1.0, k)] * d
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, d)


def parameter_metrics(
    family: PromptFamily, G_hat: MixingMeasure, G_true: MixingMeasure, grid: np.ndarray
) -> dict[str, float]:
    """All Voronoi losses and parameter diagnostics of one fit, as a flat dict."""
    errors = cell_parameter_errors(G_hat, G_true)
    sizes = np.bincount(voronoi_cells(G_hat, G_true), minlength=G_true.atoms.shape[0])
    out = {
        "D1": voronoi_d1(G_hat, G_true),
        "D2": voronoi_d2(G_hat, G_true),
        "param_err": float(np.nanmax(errors)) if np.isfinite(errors).any() else float("nan"),
        "expert_sup": expert_sup_error(family, G_hat, G_true, grid),
        "min_multi_weight": smallest_multi_atom_weight(G_hat, G_true),
        "empty_cells": int(np.sum(sizes == 0)),
    }
    for j, err in enumerate(errors):
        out[f"param_err_cell{j}"] = float(err)
    return out
