"""Prompt families of the softmax-gated mixture-of-experts view of prompt tuning.

Every family maps an input x in R^d and an atom theta to a gating score s(x; theta) and an expert
value h(x; theta), with analytic first derivatives (for the least-squares Jacobian) and second
derivatives (for the identifiability check). A fixed, known pre-trained part (quadratic score,
linear expert) completes the softmax, so the prompt biases are identifiable:

    f_G(x) = [exp(s_0(x)) h_0(x) + sum_j exp(s(x; theta_j) + b_j) h(x; theta_j)] / D(x).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr

_SQRT_2PI = np.sqrt(2.0 * np.pi)

#: Families fitted by default (``vapt`` uses g = tanh).
FAMILY_NAMES: tuple[str, ...] = ("vpt", "prefix", "vapt", "vapt_gelu", "vapt_linear")
#: Families that exist but are not part of the default run.
OPTIONAL_FAMILY_NAMES: tuple[str, ...] = ("vapt_faithful",)


def _check_matrix(name: str, value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr!r}")
    return arr


# ----------------------------------------------------------------------------------------------
# Activations g with first and second derivatives.
# ----------------------------------------------------------------------------------------------


def activation(name: str, u: np.ndarray, order: int = 2) -> tuple[np.ndarray, ...]:
    """Return g(u), g'(u) and, for order 2, g''(u) elementwise for ``tanh``, ``gelu`` or ``identity``."""
    if name == "tanh":
        t = np.tanh(u)
        d1 = 1.0 - t * t
        return (t, d1, -2.0 * t * d1) if order >= 2 else (t, d1)
    if name == "gelu":
        cdf = ndtr(u)
        pdf = np.exp(-0.5 * u * u) / _SQRT_2PI
        out = (u * cdf, cdf + u * pdf)
        return out + (pdf * (2.0 - u * u),) if order >= 2 else out
    if name == "identity":
        out = (u, np.ones_like(u))
        return out + (np.zeros_like(u),) if order >= 2 else out
    raise ValueError(f"activation must be one of 'tanh', 'gelu', 'identity', got {name!r}")


def fast_tanh(u: np.ndarray) -> np.ndarray:
    """tanh(u) as sign(u) (1 - e) / (1 + e) with e = exp(-2 |u|): about 1.5x faster than np.tanh here, same to 1 ulp."""
    e = np.abs(u)
    e *= -2.0
    np.exp(e, out=e)
    out = np.subtract(1.0, e)
    e += 1.0
    out /= e
    return np.copysign(out, u, out=out)


def activation_value(name: str, u: np.ndarray) -> np.ndarray:
    """g(u) alone (the residual needs no derivative)."""
    if name == "tanh":
        return fast_tanh(u)
    if name == "gelu":
        return u * ndtr(u)
    if name == "identity":
        return u
    raise ValueError(f"activation must be one of 'tanh', 'gelu', 'identity', got {name!r}")


def activation_forward(name: str, u: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """g(u) and what its slope can reuse: GELU's Phi(u), None for the other activations."""
    if name == "gelu":
        cdf = ndtr(u)
        return u * cdf, cdf
    return activation_value(name, u), None


def activation_slope(name: str, u: np.ndarray, g: np.ndarray, cdf: np.ndarray | None = None) -> np.ndarray:
    """g'(u), reusing g = g(u) (tanh' = 1 - g^2) and, for GELU, Phi(u) from the forward pass when given."""
    if name == "tanh":
        out = np.multiply(g, g)
        np.subtract(1.0, out, out=out)
        return out
    if name == "gelu":
        pdf = np.multiply(u, u)
        pdf *= -0.5
        np.exp(pdf, out=pdf)
        pdf *= u
        pdf /= _SQRT_2PI
        pdf += ndtr(u) if cdf is None else cdf
        return pdf
    if name == "identity":
        return np.ones_like(u)
    raise ValueError(f"activation must be one of 'tanh', 'gelu', 'identity', got {name!r}")


# ----------------------------------------------------------------------------------------------
# Families. Shapes: X (n, d); theta (L, P); s, h (n, L); ds, dh (n, L, P); d2s, d2h (n, L, P, P).
# The *_t methods used by the fit take XT (d, n) and return (L, n) / (L, P, n): samples last.
# ----------------------------------------------------------------------------------------------


def _contract_t(g: np.ndarray, w: np.ndarray) -> np.ndarray:
    """sum_a g[l, a, n] w[a, n] (or w[a]), shape (L, n); an explicit loop is fastest for small d."""
    out = g[:, 0, :] * w[0]
    for a in range(1, g.shape[1]):
        out += g[:, a, :] * w[a]
    return out


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


@dataclass(frozen=True)
class StaticPrompt(PromptFamily):
    """VPT: atom p in R^d, s = x^T B p, h = c^T p (shared key and value)."""

    @property
    def n_params(self) -> int:
        """Number of parameters of one atom (bias excluded)."""
        return self.d

    def forward_t(self, XT, theta):
        """Scores, experts and cached B^T x (d, n)."""
        q = self.B.T @ XT
        s = theta @ q
        h = np.broadcast_to((theta @ self.c)[:, None], s.shape)
        return s, h, (q,)

    def gradient_t(self, XT, theta, cache, wh, ws, out):
        """wh * c + ws * B^T x."""
        (q,) = cache
        np.multiply(ws[:, None, :], q[None, :, :], out=out)
        out += wh[:, None, :] * self.c[None, :, None]
        return out

    def second_derivatives(self, X, theta):
        """Second derivatives vanish: score and expert are linear in p."""
        return self._zero_hessians(X, theta)


@dataclass(frozen=True)
class PrefixPrompt(PromptFamily):
    """Prefix tuning: atom (k, v) in R^d x R, s = k^T x, h = v (non-shared key and value)."""

    @property
    def n_params(self) -> int:
        """Number of parameters of one atom (bias excluded)."""
        return self.d + 1

    def forward_t(self, XT, theta):
        """Scores and experts (no cache needed)."""
        s = theta[:, : self.d] @ XT
        h = np.broadcast_to(theta[:, self.d][:, None], s.shape)
        return s, h, ()

    def gradient_t(self, XT, theta, cache, wh, ws, out):
        """d/dk = ws * x, d/dv = wh."""
        np.multiply(ws[:, None, :], XT[None, :, :], out=out[:, : self.d])
        out[:, self.d] = wh
        return out

    def second_derivatives(self, X, theta):
        """Second derivatives vanish: score and expert are linear in (k, v)."""
        return self._zero_hessians(X, theta)


@dataclass(frozen=True)
class AdaptivePrompt(PromptFamily):
    """VAPT: atom W in R^{dxd} (row-major), u = W x, s = x^T B g(u), h = c^T g(u).

    With ``act='identity'`` this is the linear ablation ``vapt_linear``.
    """

    act: str = "tanh"

    @property
    def n_params(self) -> int:
        """Number of parameters of one atom (bias excluded)."""
        return self.d * self.d

    def _u(self, X, theta):
        n, L, d = X.shape[0], theta.shape[0], self.d
        return (X @ theta.reshape(L * d, d).T).reshape(n, L, d)  # u[n, l, a] = sum_b W_lab x_b

    def _u_t(self, XT, theta):
        L, d = theta.shape[0], self.d
        return (theta.reshape(L * d, d) @ XT).reshape(L, d, XT.shape[1])  # u[l, a, n] = sum_b W_lab x_b

    def forward_t(self, XT, theta):
        """Scores, experts and cached (B^T x, u, g(u), GELU's Phi(u) or None); g'(u) only when a gradient is needed."""
        u = self._u_t(XT, theta)
        g, cdf = activation_forward(self.act, u)
        q = self.B.T @ XT
        return _contract_t(g, q), _contract_t(g, self.c), (q, u, g, cdf)

    def gradient_t(self, XT, theta, cache, wh, ws, out):
        """d/dW_ab = [g'(u_a) (wh c_a + ws (B^T x)_a)] x_b."""
        q, u, g, cdf = cache
        L, d, n = u.shape
        r = np.multiply(ws[:, None, :], q[None, :, :])
        r += wh[:, None, :] * self.c[None, :, None]
        r *= activation_slope(self.act, u, g, cdf)
        np.multiply(r[:, :, None, :], XT[None, None, :, :], out=np.reshape(out, (L, d, d, n), copy=False))
        return out

    def second_derivatives(self, X, theta):
        """d2/dW_ab dW_ce = delta_ac (.)_a g''(u_a) x_b x_e."""
        _, _, g2 = activation(self.act, self._u(X, theta))
        q = X @ self.B
        n, L, d = g2.shape
        eye = np.eye(d)
        xx = X[:, :, None] * X[:, None, :]  # (n, b, e)

        def block(weight):  # weight (n, L, a)
            t = weight[:, :, :, None, None, None] * eye[None, None, :, None, :, None]
            t = t * xx[:, None, None, :, None, :]  # (n, L, a, b, c, e)
            return t.reshape(n, L, d * d, d * d)

        return block(q[:, None, :] * g2), block(self.c * g2)


@dataclass(frozen=True)
class FaithfulAdaptivePrompt(AdaptivePrompt):
    """VAPT with a shared feature projector: g(u) = u + W2 tanh(W1 u), W1 and W2 known; atom W."""

    W1: np.ndarray = field(default_factory=lambda: np.array([[0.8, -0.4], [0.3, 0.6]]))
    W2: np.ndarray = field(default_factory=lambda: np.array([[0.5, 0.2], [-0.3, 0.4]]))

    def _projector(self, X, theta):
        u = self._u(X, theta)
        t, t1, t2 = activation("tanh", u @ self.W1.T)
        return u + t @ self.W2.T, t1, t2

    def forward_t(self, XT, theta):
        """Scores, experts and cached (B^T x, tanh'(W1 u))."""
        u = self._u_t(XT, theta)
        t = np.tanh(np.matmul(self.W1, u))
        g = u + np.matmul(self.W2, t)
        q = self.B.T @ XT
        return _contract_t(g, q), _contract_t(g, self.c), (q, 1.0 - t * t)

    def gradient_t(self, XT, theta, cache, wh, ws, out):
        """d/dW_ab = (G^T w)_a x_b with G = I + W2 diag(tanh') W1 and w = wh c + ws B^T x."""
        q, t1 = cache
        L, d, n = t1.shape
        w = ws[:, None, :] * q[None, :, :] + wh[:, None, :] * self.c[None, :, None]
        r = w + np.matmul(self.W1.T, np.matmul(self.W2.T, w) * t1)
        np.multiply(r[:, :, None, :], XT[None, None, :, :], out=np.reshape(out, (L, d, d, n), copy=False))
        return out

    def second_derivatives(self, X, theta):
        """d2/dW_ab dW_ce = x_b x_e sum_m (W2^T w)_m tanh''_m W1_ma W1_mc."""
        _, _, t2 = self._projector(X, theta)
        q = X @ self.B
        n, L, d = t2.shape
        xx = X[:, :, None] * X[:, None, :]

        def block(w):  # w (n, 1, i) or (i,)
            wm = np.broadcast_to(w @ self.W2, (n, 1, d)) * t2  # (n, L, m)
            hac = np.einsum("nlm,ma,mc->nlac", wm, self.W1, self.W1)
            t = hac[:, :, :, None, :, None] * xx[:, None, None, :, None, :]
            return t.reshape(n, L, d * d, d * d)

        return block(q[:, None, :]), block(self.c)


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


# ----------------------------------------------------------------------------------------------
# The default truth (d = 2); presets and truth files live in theory.truths.
# ----------------------------------------------------------------------------------------------

_B_KEY = np.array([[1.0, 0.5], [-0.3, 1.0]])
_C_VALUE = np.array([1.0, -2.0])


def default_pretrained() -> Pretrained:
    """The pre-trained part of the default truth."""
    return Pretrained(B0=np.array([[0.5, 0.2], [0.2, -0.4]]), c0=np.zeros(2), a0=np.array([1.0, -0.5]), e0=0.2)


def make_family(name: str, B: np.ndarray | None = None, c: np.ndarray | None = None) -> PromptFamily:
    """Build a prompt family by name with key map B and read-out c (default: those of the default truth)."""
    B = _B_KEY.copy() if B is None else np.array(B, dtype=float)
    c = _C_VALUE.copy() if c is None else np.array(c, dtype=float)
    if name == "vpt":
        return StaticPrompt(name, B, c)
    if name == "prefix":
        return PrefixPrompt(name, B, c)
    if name == "vapt":
        return AdaptivePrompt(name, B, c, act="tanh")
    if name == "vapt_gelu":
        return AdaptivePrompt(name, B, c, act="gelu")
    if name == "vapt_linear":
        return AdaptivePrompt(name, B, c, act="identity")
    if name == "vapt_faithful":
        return FaithfulAdaptivePrompt(name, B, c)
    known = ", ".join(FAMILY_NAMES + OPTIONAL_FAMILY_NAMES)
    raise ValueError(f"family must be one of {known}; got {name!r}")


def default_truth(name: str) -> tuple[PromptMoE, MixingMeasure]:
    """The default model and true mixing measure G* for a family (see :mod:`theory.truths`)."""
    from theory.truths import DEFAULT_TRUTH

    make_family(name)  # a clear error for an unknown family
    return DEFAULT_TRUTH.model(name)


def sample_inputs(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Inputs X ~ Uniform[-1, 1]^d, shape (n, d)."""
    return rng.uniform(-1.0, 1.0, size=(n, d))


def sample_data(
    model: PromptMoE, G: MixingMeasure, n: int, sigma: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw (X, Y) with Y = f_G(X) + N(0, sigma^2) noise."""
    X = sample_inputs(rng, n, model.family.d)
    return X, model.predict(X, G) + sigma * rng.standard_normal(n)
