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


# Two float32 evaluations of the same function that differ only in summation order (batching, window
# packing, kernel choice) each carry a rounding error of the same order; MARGIN times the error one of them
# is measured to carry, against the same computation in float64, bounds their difference with room for the
# spread between orders, and stays orders of magnitude below what a real difference (a wrong mask, a
# leaked sample) produces.
MARGIN = 8


def float32_error(result32: torch.Tensor, result64: torch.Tensor) -> float:
    """The largest rounding error of a float32 result, measured against the same computation in float64."""
    return float((result32.double() - result64).abs().max())


def assert_equal_up_to_rounding(actual: torch.Tensor, expected32: torch.Tensor, expected64: torch.Tensor) -> None:
    """`actual` equals the float32 `expected32` up to MARGIN times the rounding error `expected32` carries."""
    error = float32_error(expected32, expected64)
    scale = float(expected64.abs().max())
    atol = MARGIN * error + elementwise_atol(scale, 1)
    assert atol < 1e-3 * scale, "the float32 rounding is too large for a meaningful comparison"
    torch.testing.assert_close(actual, expected32, rtol=0, atol=atol)
