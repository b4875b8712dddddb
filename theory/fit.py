"""Least-squares estimation of prompt mixing measures, with initialization and failure records."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.optimize import least_squares

from theory.models import MixingMeasure, PromptMoE

INIT_MODES: tuple[str, ...] = ("noise", "random", "shrinking")
#: Least-squares solvers of the experiment: ``lm`` (Levenberg-Marquardt on the normal equations, NumPy)
#: and scipy's ``trf`` (the cross-check).
SOLVERS: tuple[str, ...] = ("lm", "trf")
REGIMES: tuple[str, ...] = ("exact", "over", "misspecified")
#: Fixed initialization noise (s.d.) per regime; independent of n on purpose.
INIT_SCALE = {"exact": 0.1, "over": 0.3, "misspecified": 0.1}
#: Convergence tolerance (ftol = xtol = gtol) per regime.
TOLERANCE = {"exact": 1e-10, "over": 1e-12, "misspecified": 1e-10}


#: Default size of the parameter box Theta, as a factor of the truth's largest coordinate (see :func:`theta_box`).
DEFAULT_THETA_BOUND = 3.0


def theta_box(center: MixingMeasure, n_atoms: int, factor: float = DEFAULT_THETA_BOUND):
    """The bounded parameter space Theta as a box (lower, upper) over the vector of :meth:`MixingMeasure.to_vector`.

    Every atom coordinate lies in [-R, R] with R = factor * max(1, largest |coordinate| of the centre's
    atoms), every bias in [-R_b, R_b] with R_b = factor * max(1, largest |bias|). ``factor`` inf: no box
    (returns None, None).
    """
    if not factor > 1:
        raise ValueError(f"the box factor must be > 1 (or inf for no box), got {factor!r}")
    if math.isinf(factor):
        return None, None
    P = center.atoms.shape[1]
    R = factor * max(1.0, float(np.max(np.abs(center.atoms))))
    R_b = factor * max(1.0, float(np.max(np.abs(center.biases))))
    upper = np.concatenate([np.full(n_atoms * P, R), np.full(n_atoms, R_b)])
    return -upper, upper


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
    n_failed_starts: int = 0
    boundary_atoms: int = 0


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
    -1: "the objective is not finite at the start",
    -2: "the Jacobian (or J^T J) is not finite",
    -3: "stalled: the damping grew past 1e30 without an acceptable step",
}
#: Damping beyond which no step can be found: the start ends as a stall (a failed start).
MAX_DAMPING = 1e30
#: Smallest damping (keeps Nielsen's shrinking from reaching 0, where a failed Cholesky could not grow it).
MIN_DAMPING = 1e-20


def levenberg_marquardt(
    residuals,
    jacobian,
    z0: np.ndarray,
    *,
    tol: float = 1e-10,
    max_nfev: int = 200,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
) -> SolverResult:
    """Levenberg-Marquardt on the normal equations: (J^T J + mu D) step = -J^T r by Cholesky.

    D is Marquardt's scaling (the running maximum of diag(J^T J)); mu follows Nielsen's rule
    (shrink by max(1/3, 1 - (2 rho - 1)^3) after an accepted step, grow by nu = 2, 4, 8, ... after a
    rejected one). The Jacobian is recomputed only after an accepted step. Stops like MINPACK/scipy:
    gtol on the scaled gradient, ftol on the actual and predicted relative reductions, xtol on the step.
    With ``lower``/``upper`` the iterate stays in the box: coordinates on a bound whose gradient points
    out of the box are held fixed for the step, and the step is projected onto the box (projected LM).
    Every start ends: a non-finite objective at the start (status -1), a non-finite Jacobian (-2) or a
    damping past 1e30 (-3, a stall) are failed starts, never reported as converged.
    """
    z = np.array(z0, dtype=float)
    bounded = lower is not None or upper is not None
    lo = np.full(z.shape, -np.inf) if lower is None else np.asarray(lower, dtype=float)
    hi = np.full(z.shape, np.inf) if upper is None else np.asarray(upper, dtype=float)
    if bounded:
        z = np.clip(z, lo, hi)
    r = residuals(z)
    nfev, njev = 1, 0
    cost = 0.5 * float(r @ r)
    if not np.isfinite(cost):
        return SolverResult(z, cost, -1, nfev, njev, _LM_MESSAGES[-1])
    mu, nu, status = 1e-3, 2.0, 0
    scale = None
    while nfev < max_nfev:
        J = jacobian(z)
        njev += 1
        with np.errstate(over="ignore", invalid="ignore"):
            A = J.T @ J
            g = J.T @ r
        if not (np.all(np.isfinite(A)) and np.all(np.isfinite(g))):
            status = -2
            break
        diag = np.diag(A).copy()
        scale = diag if scale is None else np.maximum(scale, diag)
        scale = np.where(scale > 0, scale, 1.0)
        free = ~(((z <= lo) & (g > 0)) | ((z >= hi) & (g < 0))) if bounded else np.ones(z.size, dtype=bool)
        if np.max(np.abs(g[free]) / np.sqrt(scale[free]), initial=0.0) <= tol * max(
            np.sqrt(2.0 * cost), np.finfo(float).tiny
        ):
            status = 1
            break
        A_free, g_free, scale_free = A[np.ix_(free, free)], g[free], scale[free]
        accepted = False
        while nfev < max_nfev:
            if not mu <= MAX_DAMPING:
                status = -3
                break
            try:
                factor = scipy.linalg.cho_factor(A_free + mu * np.diag(scale_free), check_finite=False)
                step_free = -scipy.linalg.cho_solve(factor, g_free, check_finite=False)
            except (np.linalg.LinAlgError, ValueError):
                step_free = None
            if step_free is None or not np.all(np.isfinite(step_free)):
                mu, nu = mu * nu, 2.0 * nu
                continue
            step = np.zeros_like(z)
            step[free] = step_free
            if bounded:
                step = np.clip(z + step, lo, hi) - z
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
                mu = max(mu * max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3), MIN_DAMPING)
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
        if status or not accepted:
            break
    return SolverResult(z, cost, status, nfev, njev, _LM_MESSAGES.get(status, "stopped"))


#: How a bounded fit keeps its parameters in the box: ``project`` (projected LM; scipy's trf takes the
#: bounds itself) or ``smooth`` (z = centre + half-width * tanh(u), an unconstrained fit in u).
BOUND_MODES: tuple[str, ...] = ("project", "smooth")
#: Solver names accepted by :func:`fit_least_squares` (``trf`` is an alias of ``scipy_trf``).
METHODS: tuple[str, ...] = (*SOLVERS, "scipy_trf", "scipy_lm")


def on_boundary(z: np.ndarray, lower: np.ndarray | None, upper: np.ndarray | None, rtol: float = 1e-6) -> np.ndarray:
    """Which coordinates of z lie on (within ``rtol`` of the box width of) a bound."""
    z = np.asarray(z, dtype=float)
    if lower is None or upper is None:
        return np.zeros(z.shape, dtype=bool)
    width = np.asarray(upper, dtype=float) - np.asarray(lower, dtype=float)
    return (z - lower <= rtol * width) | (upper - z <= rtol * width)


def boundary_atoms(z: np.ndarray, lower: np.ndarray | None, upper: np.ndarray | None, n_atoms: int) -> int:
    """Number of atoms with a coordinate or their bias on the box's boundary (vector layout of ``to_vector``)."""
    hit = on_boundary(z, lower, upper)
    P = hit.size // n_atoms - 1
    return int((hit[: n_atoms * P].reshape(n_atoms, P).any(axis=1) | hit[n_atoms * P :]).sum())


class _Smooth:
    """z = mid + half * tanh(u): residuals and Jacobian in u for a fit that cannot leave the open box."""

    def __init__(self, objective: _Objective, lower: np.ndarray, upper: np.ndarray):
        self.objective, self.mid, self.half = objective, 0.5 * (upper + lower), 0.5 * (upper - lower)

    def to_z(self, u: np.ndarray) -> np.ndarray:
        return self.mid + self.half * np.tanh(u)

    def to_u(self, z: np.ndarray) -> np.ndarray:
        return np.arctanh(np.clip((np.asarray(z) - self.mid) / self.half, -1 + 1e-12, 1 - 1e-12))

    def residuals(self, u: np.ndarray) -> np.ndarray:
        return self.objective.residuals(self.to_z(u))

    def jacobian(self, u: np.ndarray) -> np.ndarray:
        t = np.tanh(u)
        return self.objective.jacobian(self.to_z(u)) * (self.half * (1.0 - t * t))


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
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
    bound_mode: str = "project",
) -> FitResult:
    """Minimize sum_i (Y_i - f_G(X_i))^2 from each start; keep the start with the lowest objective.

    ``method``: ``lm`` (:func:`levenberg_marquardt`, analytic Jacobian only) or scipy's ``trf``/``lm``
    via ``scipy_trf``/``scipy_lm``; ``trf`` is an alias of ``scipy_trf``. A start that did not meet the
    tolerance can still be the best one: it is flagged (``converged`` False), never dropped. A start
    that cannot be computed (non-finite objective or Jacobian, a stall, an exception) is a failed start,
    counted in ``n_failed_starts``. ``lower``/``upper`` bound the parameter vector (a box), kept by
    ``bound_mode`` (:data:`BOUND_MODES`).
    """
    X = np.asarray(X, dtype=float)
    Y = np.asarray(Y, dtype=float)
    if X.ndim != 2 or X.shape[1] != model.family.d:
        raise ValueError(f"X must have shape (n, {model.family.d}), got {X.shape}")
    size = n_atoms * (model.family.n_params + 1)
    if n_atoms < 1 or any(np.size(z) != size for z in starts):
        raise ValueError(
            f"each start must have n_atoms * (P + 1) = {size} entries "
            f"for n_atoms={n_atoms!r}, got sizes {[np.size(z) for z in starts]}"
        )
    if Y.shape != (X.shape[0],):
        raise ValueError(f"Y must have shape ({X.shape[0]},), got {Y.shape}")
    if jacobian not in ("analytic", "2-point", "3-point"):
        raise ValueError(f"jacobian must be 'analytic', '2-point' or '3-point'; got {jacobian!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}")
    if method == "lm" and jacobian != "analytic":
        raise ValueError(f"method 'lm' uses the analytic Jacobian; got jacobian={jacobian!r} (use method='trf')")
    if not (0 < tol < 1):
        raise ValueError(f"tol must be in (0, 1), got {tol!r}")
    if not starts:
        raise ValueError("starts must contain at least one starting vector, got an empty list")
    if bound_mode not in BOUND_MODES:
        raise ValueError(f"bound_mode must be one of {', '.join(BOUND_MODES)}; got {bound_mode!r}")
    bounded = lower is not None and upper is not None
    if bounded:
        lower, upper = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
        if lower.shape != (size,) or upper.shape != (size,) or not np.all(lower < upper):
            raise ValueError(f"lower and upper must be vectors of {size} entries with lower < upper")
        if method == "scipy_lm":
            raise ValueError("scipy's lm takes no bounds; use method 'lm' or 'trf'")
    objective = _Objective(model, X, Y, n_atoms)
    smooth = _Smooth(objective, lower, upper) if bounded and bound_mode == "smooth" else None
    jac = objective.jacobian if jacobian == "analytic" else jacobian
    best, best_cost, messages = None, np.inf, []
    nfev = njev = n_conv = n_bad = 0
    for z0 in starts:
        try:
            if smooth is not None:
                res = levenberg_marquardt(smooth.residuals, smooth.jacobian, smooth.to_u(z0), tol=tol,
                                          max_nfev=max_nfev)
                res = SolverResult(smooth.to_z(res.x), res.cost, res.status, res.nfev, res.njev, res.message)
            elif method == "lm":
                res = levenberg_marquardt(objective.residuals, objective.jacobian, z0, tol=tol, max_nfev=max_nfev,
                                          lower=lower if bounded else None, upper=upper if bounded else None)
            else:
                res = least_squares(
                    objective.residuals,
                    np.clip(z0, lower, upper) if bounded else z0,
                    jac=jac,
                    method="lm" if method == "scipy_lm" else "trf",
                    ftol=tol,
                    xtol=tol,
                    gtol=tol,
                    max_nfev=max_nfev,
                    bounds=(lower, upper) if bounded else (-np.inf, np.inf),
                )
        except (ValueError, np.linalg.LinAlgError, FloatingPointError) as err:
            messages.append(f"{type(err).__name__}: {err}")
            n_bad += 1
            continue
        nfev += int(res.nfev)
        njev += int(res.njev or 0)
        finite = bool(np.all(np.isfinite(res.x)) and np.isfinite(res.cost))
        n_conv += int(res.status > 0 and finite)
        n_bad += int(res.status < 0 or not finite)
        messages.append(res.message)
        # The lowest objective wins, whether or not its start met the tolerance.
        key = res.cost if finite else np.inf
        if best is None or key < best[0]:
            best, best_cost = (key, res), res.cost
    if best is None or not np.isfinite(best[0]):
        return FitResult(None, np.nan, -99, False, True, nfev, njev, len(starts), 0, "; ".join(messages), n_bad)
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
        n_bad,
        boundary_atoms(res.x, lower, upper, n_atoms),
    )
