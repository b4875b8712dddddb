"""Prompt families of the softmax-gated mixture-of-experts view of prompt tuning.

Every family maps an input x in R^d and an atom theta to a gating score s(x; theta) and an expert
value h(x; theta), with analytic first derivatives (for the least-squares Jacobian) and second
derivatives (for the identifiability check). A fixed, known pre-trained part (quadratic score,
linear expert) completes the softmax, so the prompt biases are identifiable:

    f_G(x) = [exp(s_0(x)) h_0(x) + sum_j exp(s(x; theta_j) + b_j) h(x; theta_j)] / D(x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _check_matrix(name: str, value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr!r}")
    return arr


# ----------------------------------------------------------------------------------------------
# Families. Shapes: X (n, d); theta (L, P); s, h (n, L); ds, dh (n, L, P); d2s, d2h (n, L, P, P).
# The *_t methods used by the fit take XT (d, n) and return (L, n) / (L, P, n): samples last.
# ----------------------------------------------------------------------------------------------



@dataclass(frozen=True)
class PromptFamily:
    """Base class: key map B and value read-out c are known; subclasses define the atom."""

    name: str
    B: np.ndarray
    c: np.ndarray

    def __post_init__(self):
        B = np.asarray(self.B, dtype=float)
        d = B.shape[0] if B.ndim == 2 else -1
        object.__setattr__(self, "B", _check_matrix("B", B, (d, d) if d > 0 else (-1, -1)))
        object.__setattr__(self, "c", _check_matrix("c", self.c, (d,)))

    @property
    def d(self) -> int:
        """Input dimension."""
        return int(self.B.shape[0])

    @property
    def n_params(self) -> int:
        """Number of parameters of one atom (bias excluded)."""
        raise NotImplementedError

    def forward_t(self, XT: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple]:
        """Scores s and expert values h, each (L, n), from inputs XT (d, n), and intermediates.

        The sample axis is last and contiguous: every per-atom quantity is a contiguous length-n row,
        which is how the least-squares Jacobian columns are laid out.
        """
        raise NotImplementedError

    def gradient_t(
        self, XT: np.ndarray, theta: np.ndarray, cache: tuple, wh: np.ndarray, ws: np.ndarray, out: np.ndarray
    ) -> np.ndarray:
        """Write wh * dh/dtheta + ws * ds/dtheta into ``out`` (L, P, n); wh and ws are (L, n)."""
        raise NotImplementedError

    def forward(self, X: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple]:
        """Scores s and expert values h, each (n, L), and intermediates for :meth:`weighted_gradient`."""
        s, h, cache = self.forward_t(np.ascontiguousarray(X.T), theta)
        return s.T, h.T, cache

    def weighted_gradient(
        self, X: np.ndarray, theta: np.ndarray, cache: tuple, wh: np.ndarray, ws: np.ndarray
    ) -> np.ndarray:
        """wh * dh/dtheta + ws * ds/dtheta, shape (n, L, P), for weights wh and ws of shape (n, L)."""
        out = np.empty((theta.shape[0], self.n_params, X.shape[0]))
        XT = np.ascontiguousarray(X.T)
        self.gradient_t(XT, theta, cache, np.ascontiguousarray(wh.T), np.ascontiguousarray(ws.T), out)
        return out.transpose(2, 0, 1)

    def second_derivatives(self, X: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Second derivatives d2s, d2h (n, L, P, P) with respect to the atom."""
        raise NotImplementedError

    def scores_experts(self, X: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores s and expert values h, each (n, L)."""
        s, h, _ = self.forward(X, theta)
        return s, h

    def derivatives(self, X: np.ndarray, theta: np.ndarray):
        """Return s, h (n, L) and their first derivatives ds, dh (n, L, P) with respect to the atom."""
        s, h, cache = self.forward(X, theta)
        ones, zeros = np.ones_like(s), np.zeros_like(s)
        ds = self.weighted_gradient(X, theta, cache, zeros, ones)
        dh = self.weighted_gradient(X, theta, cache, ones, zeros)
        return s, h, ds, dh

    def _zero_hessians(self, X, theta):
        shape = (X.shape[0], theta.shape[0], self.n_params, self.n_params)
        return np.zeros(shape), np.zeros(shape)


# ----------------------------------------------------------------------------------------------
# The pre-trained part, mixing measures and the regression function.
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pretrained:
    """Known pre-trained expert: s_0 = x^T B_0 x + c_0^T x, h_0 = a_0^T x + e_0."""

    B0: np.ndarray
    c0: np.ndarray
    a0: np.ndarray
    e0: float

    def score(self, X: np.ndarray) -> np.ndarray:
        """Pre-trained score s_0(x), shape (n,)."""
        return np.sum((X @ self.B0) * X, axis=1) + X @ self.c0

    def expert(self, X: np.ndarray) -> np.ndarray:
        """Pre-trained expert h_0(x), shape (n,)."""
        return X @ self.a0 + self.e0


@dataclass(frozen=True)
class MixingMeasure:
    """G = sum_j exp(b_j) delta_{theta_j}: atoms (L, P) and biases (L,)."""

    atoms: np.ndarray
    biases: np.ndarray

    def __post_init__(self):
        atoms = np.atleast_2d(np.asarray(self.atoms, dtype=float))
        biases = np.atleast_1d(np.asarray(self.biases, dtype=float))
        if biases.shape != (atoms.shape[0],):
            raise ValueError(f"biases must have shape ({atoms.shape[0]},), got {biases.shape}")
        object.__setattr__(self, "atoms", atoms)
        object.__setattr__(self, "biases", biases)

    @property
    def weights(self) -> np.ndarray:
        """Atom weights exp(b_j)."""
        return np.exp(self.biases)

    def to_vector(self) -> np.ndarray:
        """Flatten to the parameter vector [atoms.ravel(), biases] used by the fit."""
        return np.concatenate([self.atoms.ravel(), self.biases])

    @classmethod
    def from_vector(cls, z: np.ndarray, n_atoms: int) -> MixingMeasure:
        """Inverse of :meth:`to_vector`."""
        z = np.asarray(z, dtype=float)
        if n_atoms < 1 or z.ndim != 1 or z.size % n_atoms or z.size <= n_atoms:
            raise ValueError(f"z must be a vector of n_atoms * (P + 1) entries for n_atoms={n_atoms!r}, got {z.shape}")
        P = (z.size - n_atoms) // n_atoms
        return cls(z[: n_atoms * P].reshape(n_atoms, P), z[n_atoms * P :])


@dataclass(frozen=True)
class PromptMoE:
    """A prompt family together with the known pre-trained part: the regression model f_G."""

    family: PromptFamily
    pretrained: Pretrained

    def prepare(self, X: np.ndarray) -> Design:
        """Precompute the pre-trained score and expert on inputs X."""
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != self.family.d:
            raise ValueError(f"X must have shape (n, {self.family.d}), got {X.shape}")
        return Design(X, self.pretrained.score(X), self.pretrained.expert(X), np.ascontiguousarray(X.T))

    def forward(self, design: Design, G: MixingMeasure) -> Forward:
        """Gate weights and regression function on a prepared design."""
        s, h, cache = self.family.forward_t(design.XT, G.atoms)
        S = s + G.biases[:, None]
        top = np.maximum(S.max(axis=0), design.s0)
        S -= top
        w = np.exp(S, out=S)
        w0 = np.exp(design.s0 - top)
        total = w0 + w.sum(axis=0)
        w /= total
        f = (w0 * design.h0) / total + np.einsum("ln,ln->n", w, h)
        return Forward(G, f, w, h, cache)

    def jacobian(self, design: Design, fwd: Forward) -> np.ndarray:
        """Analytic Jacobian of f_G: pi_k [dh_k/dt + (h_k - f) dS_k/dt], with dS_k/db_k = 1.

        Columns follow :meth:`MixingMeasure.to_vector` (atoms row-major, then biases). The array is
        column-major (Fortran order): each column is one contiguous length-n vector.
        """
        n = design.X.shape[0]
        L, P = fwd.G.atoms.shape
        J = np.empty((n, L * (P + 1)), order="F")
        JT = J.T  # (L (P + 1), n), C-contiguous view
        ws = JT[L * P :]
        np.subtract(fwd.h, fwd.f, out=ws)
        ws *= fwd.pi
        atoms = np.reshape(JT[: L * P], (L, P, n), copy=False)
        self.family.gradient_t(design.XT, fwd.G.atoms, fwd.cache, fwd.pi, ws, atoms)
        return J

    def predict(self, X: np.ndarray, G: MixingMeasure) -> np.ndarray:
        """Regression function f_G(X), shape (n,)."""
        return self.forward(self.prepare(X), G).f

    def predict_with_jacobian(self, X: np.ndarray, G: MixingMeasure) -> tuple[np.ndarray, np.ndarray]:
        """f_G(X) and its analytic Jacobian with respect to :meth:`MixingMeasure.to_vector`."""
        design = self.prepare(X)
        fwd = self.forward(design, G)
        return fwd.f, self.jacobian(design, fwd)


@dataclass(frozen=True)
class Design:
    """Inputs with the pre-trained score s0 and expert h0 evaluated once."""

    X: np.ndarray
    s0: np.ndarray
    h0: np.ndarray
    XT: np.ndarray


@dataclass(frozen=True)
class Forward:
    """Result of a forward pass: prompt gate weights pi (L, n), f (n,), experts h (L, n) and family cache."""

    G: MixingMeasure
    f: np.ndarray
    pi: np.ndarray
    h: np.ndarray
    cache: tuple



def sample_inputs(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Inputs X ~ Uniform[-1, 1]^d, shape (n, d)."""
    return rng.uniform(-1.0, 1.0, size=(n, d))


def sample_data(
    model: PromptMoE, G: MixingMeasure, n: int, sigma: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw (X, Y) with Y = f_G(X) + N(0, sigma^2) noise."""
    X = sample_inputs(rng, n, model.family.d)
    return X, model.predict(X, G) + sigma * rng.standard_normal(n)
