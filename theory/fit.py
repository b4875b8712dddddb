"""Least-squares estimation of prompt mixing measures, with initialization and failure records."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.optimize import least_squares

from theory.models import MixingMeasure, PromptMoE

INIT_MODES: tuple[str, ...] = ("noise", "random", "shrinking")
#: Least-squares solvers: ``lm`` (Levenberg-Marquardt on the normal equations, NumPy) and scipy's ``trf``.
SOLVERS: tuple[str, ...] = ("lm", "trf")
REGIMES: tuple[str, ...] = ("exact", "over", "misspecified")
#: Fixed initialization noise (s.d.) per regime; independent of n on purpose.
INIT_SCALE = {"exact": 0.1, "over": 0.3, "misspecified": 0.1}
#: Convergence tolerance (ftol = xtol = gtol) per regime.
TOLERANCE = {"exact": 1e-10, "over": 1e-12, "misspecified": 1e-10}


def derive_seed(key: str, n: int, replicate: int, base_seed: int = 0) -> np.random.SeedSequence:
    """A reproducible seed sequence for one (configuration key, n, replicate)."""
    for name, value in (("n", n), ("replicate", replicate), ("base_seed", base_seed)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return np.random.SeedSequence(int(base_seed), spawn_key=(zlib.crc32(key.encode()), int(n), int(replicate)))


def initial_points(
    center: MixingMeasure,
    n_atoms: int,
    *,
    mode: str,
    regime: str,
    n: int,
    n_starts: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Starting parameter vectors for ``n_starts`` fits.

    ``noise``: each fitted atom starts at an atom of ``center`` plus Gaussian noise of fixed s.d.
    (``INIT_SCALE[regime]``); extra atoms (over-specified) start in a randomly chosen true cell, whose
    weight is split evenly. ``shrinking``: the same with s.d. 0.005 * n^-0.083. ``random``: atoms
    N(0, 1), biases N(0, 0.5^2).
    """
    if mode not in INIT_MODES:
        raise ValueError(f"init mode must be one of {', '.join(INIT_MODES)}; got {mode!r}")
    if regime not in INIT_SCALE:
        raise ValueError(f"regime must be one of {', '.join(REGIMES)}; got {regime!r}")
    L0, P = center.atoms.shape
    if n_atoms < 1:
        raise ValueError(f"n_atoms must be >= 1, got {n_atoms!r}")
    if n_starts < 1:
        raise ValueError(f"n_starts must be >= 1, got {n_starts!r}")
    starts = []
    for _ in range(n_starts):
        if mode == "random":
            atoms = rng.standard_normal((n_atoms, P))
            biases = 0.5 * rng.standard_normal(n_atoms)
        else:
            scale = INIT_SCALE[regime] if mode == "noise" else 0.005 * float(n) ** -0.083
            cells = list(range(min(n_atoms, L0)))
            cells += list(rng.choice(L0, size=max(0, n_atoms - L0), replace=True))
            counts = np.bincount(cells, minlength=L0)
            atoms = center.atoms[cells] + scale * rng.standard_normal((n_atoms, P))
            biases = center.biases[cells] - np.log(counts[cells]) + scale * rng.standard_normal(n_atoms)
        starts.append(MixingMeasure(atoms, biases).to_vector())
    return starts


@dataclass(frozen=True)
class FitResult:
    """Outcome of a (best-of-several-starts) least-squares fit; failures are kept, not dropped."""

    estimate: MixingMeasure | None
    cost: float
    status: int
    converged: bool
    failed: bool
    nfev: int
    njev: int
    n_starts: int
    n_converged_starts: int
    message: str


class _Objective:
    """Residuals and analytic Jacobian sharing one forward pass per parameter vector."""

    def __init__(self, model: PromptMoE, X: np.ndarray, Y: np.ndarray, n_atoms: int):
        self.model, self.design, self.Y, self.n_atoms = model, model.prepare(X), Y, n_atoms
        self._z: np.ndarray | None = None
        self._fwd = None

    def _forward(self, z: np.ndarray):
        if self._z is None or not np.array_equal(z, self._z):
            self._fwd = self.model.forward(self.design, MixingMeasure.from_vector(z, self.n_atoms))
            self._z = np.array(z, copy=True)
        return self._fwd

    def residuals(self, z: np.ndarray) -> np.ndarray:
        return self._forward(z).f - self.Y

    def jacobian(self, z: np.ndarray) -> np.ndarray:
        return self.model.jacobian(self.design, self._forward(z))


@dataclass(frozen=True)
class SolverResult:
    """One start's outcome, with scipy's field names: x, cost = 0.5 * ||r||^2, status (> 0: converged)."""

    x: np.ndarray
    cost: float
    status: int
    nfev: int
    njev: int
    message: str


_LM_MESSAGES = {
    0: "the maximum number of function evaluations is exceeded",
    1: "gtol termination condition is satisfied",
    2: "ftol termination condition is satisfied",
    3: "xtol termination condition is satisfied",
}


def levenberg_marquardt(
    residuals, jacobian, z0: np.ndarray, *, tol: float = 1e-10, max_nfev: int = 200
) -> SolverResult:
    """Levenberg-Marquardt on the normal equations: (J^T J + mu D) step = -J^T r by Cholesky.

    D is Marquardt's scaling (the running maximum of diag(J^T J)); mu follows Nielsen's rule
    (shrink by max(1/3, 1 - (2 rho - 1)^3) after an accepted step, grow by nu = 2, 4, 8, ... after a
    rejected one). The Jacobian is recomputed only after an accepted step. Stops like MINPACK/scipy:
    gtol on the scaled gradient, ftol on the actual and predicted relative reductions, xtol on the step.
    """
    z = np.array(z0, dtype=float)
    r = residuals(z)
    nfev, njev = 1, 0
    cost = 0.5 * float(r @ r)
    if not np.isfinite(cost):
        return SolverResult(z, cost, -1, nfev, njev, "the objective is not finite at the start")
    mu, nu, status = 1e-3, 2.0, 0
    scale = None
    while nfev < max_nfev:
        J = jacobian(z)
        njev += 1
        A = J.T @ J
        g = J.T @ r
        diag = np.diag(A).copy()
        scale = diag if scale is None else np.maximum(scale, diag)
        scale = np.where(scale > 0, scale, 1.0)
        if np.max(np.abs(g) / np.sqrt(scale)) <= tol * max(np.sqrt(2.0 * cost), np.finfo(float).tiny):
            status = 1
            break
        accepted = False
        while nfev < max_nfev:
            M = A + mu * np.diag(scale)
            try:
                factor = scipy.linalg.cho_factor(M, check_finite=False)
                step = -scipy.linalg.cho_solve(factor, g, check_finite=False)
            except (np.linalg.LinAlgError, ValueError):
                mu, nu = mu * nu, 2.0 * nu
                continue
            if not np.all(np.isfinite(step)):
                mu, nu = mu * nu, 2.0 * nu
                continue
            predicted = -float(step @ g) - 0.5 * float(step @ (A @ step))
            z_new = z + step
            r_new = residuals(z_new)
            nfev += 1
            cost_new = 0.5 * float(r_new @ r_new)
            actual = cost - cost_new if np.isfinite(cost_new) else -np.inf
            rho = actual / predicted if predicted > 0 else -1.0
            small_step = np.linalg.norm(np.sqrt(scale) * step) <= tol * (np.linalg.norm(np.sqrt(scale) * z) + tol)
            if rho > 0:
                z, r, cost = z_new, r_new, cost_new
                mu *= max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
                nu = 2.0
                accepted = True
                if abs(actual) <= tol * cost and predicted <= tol * cost:
                    status = 2
                elif small_step:
                    status = 3
                break
            mu, nu = mu * nu, 2.0 * nu
            if predicted <= tol * cost and abs(actual) <= tol * cost or small_step:
                status = 2 if not small_step else 3
                break
            if mu > 1e30:
                status = 3
                break
        if status or not accepted:
            break
    return SolverResult(z, cost, status, nfev, njev, _LM_MESSAGES.get(status, "stopped"))


def fit_least_squares(
    model: PromptMoE,
    X: np.ndarray,
    Y: np.ndarray,
    starts: list[np.ndarray],
    *,
    n_atoms: int,
    tol: float = 1e-10,
    max_nfev: int = 200,
    jacobian: str = "analytic",
    method: str = "lm",
) -> FitResult:
    """Minimize sum_i (Y_i - f_G(X_i))^2 from each start; keep the start with the lowest objective.

    ``method``: ``lm`` (:func:`levenberg_marquardt`, analytic Jacobian only) or scipy's ``trf``/``lm``
    via ``scipy_trf``/``scipy_lm``; ``trf`` is an alias of ``scipy_trf``. A start that did not meet the
    tolerance can still be the best one: it is flagged (``converged`` False), never dropped.
    """
    X = np.asarray(X, dtype=float)
    Y = np.asarray(Y, dtype=float)
    if X.ndim != 2 or X.shape[1] != model.family.d:
        raise ValueError(f"X must have shape (n, {model.family.d}), got {X.shape}")
    if n_atoms < 1 or any(np.size(z) != n_atoms * (model.family.n_params + 1) for z in starts):
        raise ValueError(
            f"each start must have n_atoms * (P + 1) = {n_atoms * (model.family.n_params + 1)} entries "
            f"for n_atoms={n_atoms!r}, got sizes {[np.size(z) for z in starts]}"
        )
    if Y.shape != (X.shape[0],):
        raise ValueError(f"Y must have shape ({X.shape[0]},), got {Y.shape}")
    if jacobian not in ("analytic", "2-point", "3-point"):
        raise ValueError(f"jacobian must be 'analytic', '2-point' or '3-point'; got {jacobian!r}")
    if method not in ("lm", "trf", "scipy_trf", "scipy_lm"):
        raise ValueError(f"method must be 'lm', 'trf', 'scipy_trf' or 'scipy_lm'; got {method!r}")
    if method == "lm" and jacobian != "analytic":
        raise ValueError(f"method 'lm' uses the analytic Jacobian; got jacobian={jacobian!r} (use method='trf')")
    if not (0 < tol < 1):
        raise ValueError(f"tol must be in (0, 1), got {tol!r}")
    if not starts:
        raise ValueError("starts must contain at least one starting vector, got an empty list")
    objective = _Objective(model, X, Y, n_atoms)
    jac = objective.jacobian if jacobian == "analytic" else jacobian
    best, best_cost, messages = None, np.inf, []
    nfev = njev = n_conv = 0
    for z0 in starts:
        try:
            if method == "lm":
                res = levenberg_marquardt(objective.residuals, objective.jacobian, z0, tol=tol, max_nfev=max_nfev)
            else:
                res = least_squares(
                    objective.residuals,
                    z0,
                    jac=jac,
                    method="lm" if method == "scipy_lm" else "trf",
                    ftol=tol,
                    xtol=tol,
                    gtol=tol,
                    max_nfev=max_nfev,
                )
        except (ValueError, np.linalg.LinAlgError, FloatingPointError) as err:
            messages.append(f"{type(err).__name__}: {err}")
            continue
        nfev += int(res.nfev)
        njev += int(res.njev or 0)
        ok = res.status > 0 and np.all(np.isfinite(res.x)) and np.isfinite(res.cost)
        n_conv += int(ok)
        messages.append(res.message)
        # The lowest objective wins, whether or not its start met the tolerance.
        key = res.cost if np.isfinite(res.cost) and np.all(np.isfinite(res.x)) else np.inf
        if best is None or key < best[0]:
            best, best_cost = (key, res), res.cost
    if best is None:
        return FitResult(None, np.nan, -99, False, True, nfev, njev, len(starts), 0, "; ".join(messages))
    res = best[1]
    converged = bool(res.status > 0 and np.isfinite(best_cost))
    estimate = MixingMeasure.from_vector(res.x, n_atoms)
    return FitResult(
        estimate,
        float(best_cost),
        int(res.status),
        converged,
        not converged,
        nfev,
        njev,
        len(starts),
        n_conv,
        str(res.message),
    )
