"""A toy prompt family for the registry tests: a linear expert with a softmax gate, atom (k, a) in R^d x R^d."""

import numpy as np

NAME = "toy_linear"


def forward(X, theta, B, c):
    """s = k^T x, h = a^T x for every atom (k, a)."""
    d = X.shape[1]
    return X @ theta[:, :d].T, X @ theta[:, d:].T


def jacobian(X, theta, B, c):
    """ds/dk = x, ds/da = 0; dh/dk = 0, dh/da = x."""
    n, d, L = X.shape[0], X.shape[1], theta.shape[0]
    ds = np.zeros((n, L, 2 * d))
    dh = np.zeros((n, L, 2 * d))
    ds[:, :, :d] = X[:, None, :]
    dh[:, :, d:] = X[:, None, :]
    return ds, dh


def hessian(X, theta, B, c):
    """Score and expert are linear in the atom: every second derivative vanishes."""
    shape = (X.shape[0], theta.shape[0], theta.shape[1], theta.shape[1])
    return np.zeros(shape), np.zeros(shape)


TRUTH = {
    "B": [[1.0, 0.5], [-0.3, 1.0]],
    "c": [1.0, -2.0],
    "pretrained": {"B0": [[0.5, 0.2], [0.2, -0.4]], "c0": [0.0, 0.0], "a0": [1.0, -0.5], "e0": 0.2},
    "biases": [0.0, -0.5],
    "atoms": {NAME: [[1.0, -0.5, 0.5, 1.0], [-0.8, 0.6, -1.0, 0.3]]},
}
