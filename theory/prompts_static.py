"""Static prompt families: VPT (shared key and value) and prefix tuning (non-shared key and value)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theory.models import PromptFamily


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
