"""A-priori float32 rounding-error bounds, so that tolerances follow from the computation, not from one machine.

The standard bound for a float32 dot product of length n (any summation order, fused or not) is
|fl(a·b) - a·b| <= gamma(n) * sum|a_i||b_i|, with gamma(n) = n u / (1 - n u) and u = 2^-24 the unit
roundoff. It holds on every machine and every BLAS; measured errors are usually far below it.
"""

from __future__ import annotations

import torch

UNIT_ROUNDOFF = 2.0 ** -24  # float32: half the distance from 1 to the next representable number


def gamma(n: int, u: float = UNIT_ROUNDOFF) -> float:
    """The worst-case relative error factor of n successive roundings."""
    return n * u / (1 - n * u)


def matmul_bound(a: torch.Tensor, b: torch.Tensor, extra_terms: int = 0) -> torch.Tensor:
    """Elementwise bound on the float32 rounding error of a @ b (float64 magnitudes; `extra_terms` added terms)."""
    n = a.shape[-1] + extra_terms
    return gamma(n) * (a.double().abs() @ b.double().abs())


def elementwise_atol(magnitude: float, operations: int) -> float:
    """Bound on the error of `operations` successive float32 roundings of values up to `magnitude`."""
    return gamma(operations) * magnitude
