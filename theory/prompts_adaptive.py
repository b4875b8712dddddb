"""Adaptive prompt families: VAPT (atom W, u = W x, expert through g(u)) and the shared-projector variant."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from theory.activations import activation, activation_forward, activation_slope
from theory.models import PromptFamily


def _contract_t(g: np.ndarray, w: np.ndarray) -> np.ndarray:
    """sum_a g[l, a, n] w[a, n] (or w[a]), shape (L, n); an explicit loop is fastest for small d."""
    out = g[:, 0, :] * w[0]
    for a in range(1, g.shape[1]):
        out += g[:, a, :] * w[a]
    return out



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
