"""Convergence-rate estimates: log-log slopes, bootstrap intervals, verdicts and sample complexity."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Families that are not strongly identifiable at order 2 (no polynomial rate when over-specified).
WEAKLY_IDENTIFIABLE: frozenset[str] = frozenset({"prefix", "vapt_linear"})
#: Half-width of the band around the prediction that a confidence interval must reach.
TOLERANCE = 0.1
#: An L2 slope above this means the optimizer did not track the truth.
FIT_FAILED_L2_SLOPE = -0.35
#: A CI wider than this on each side leaves the verdict open: more replicates are needed.
MAX_HALF_WIDTH = 0.15
#: Mean-log and median-log slopes further apart than this are flagged (a few diverging fits).
MEDIAN_GAP = 0.2
#: Kinds of prediction: a tight rate (two-sided test), an upper bound (one-sided), or none (reported).
KINDS: tuple[str, ...] = ("rate", "bound", "none")
#: Metrics of the local-alternative experiment and their predictions (NaN: reported, not judged).
LOCAL_PREDICTIONS = {"W1": -0.25, "L2": -0.5, "mass_err": float("nan"), "max_pair_err": float("nan")}


@dataclass(frozen=True)
class RateEstimate:
    """Slope of mean log loss on log n with a bootstrap CI, R^2, and the log-corrected slope."""

    slope: float
    intercept: float
    ci_low: float
    ci_high: float
    r2: float
    slope_nlogn: float
    slope_median: float
    n_levels: int
    n_losses: int
    n_dropped: int


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    xc = x - x.mean()
    slope = float(np.dot(xc, y - y.mean()) / np.dot(xc, xc))
    intercept = float(y.mean() - slope * x.mean())
    resid = y - (intercept + slope * x)
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / total if total > 0 else float("nan")
    return slope, intercept, r2


def _group(ns: np.ndarray, losses: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], int]:
    ns = np.asarray(ns, dtype=float)
    losses = np.asarray(losses, dtype=float)
    if ns.shape != losses.shape or ns.ndim != 1:
        raise ValueError(f"ns and losses must be 1-d arrays of equal length, got {ns.shape} and {losses.shape}")
    keep = np.isfinite(losses) & (losses > 0)
    levels = np.unique(ns[keep])
    groups = [np.log(losses[keep & (ns == level)]) for level in levels]
    return levels, groups, int(np.sum(~keep))


def estimate_rate(
    ns: np.ndarray, losses: np.ndarray, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> RateEstimate:
    """Estimate the exponent a in loss ~ C n^a from losses observed at sample sizes ns.

    The slope is the OLS fit of the per-n mean of log loss on log n; its CI resamples replicates
    with replacement within each n (``n_boot`` times). Non-finite or non-positive losses (failed
    fits) are left out of the fit and counted in ``n_dropped``.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    levels, groups, dropped = _group(ns, losses)
    nan = float("nan")
    if len(levels) < 2 or any(g.size == 0 for g in groups):
        return RateEstimate(nan, nan, nan, nan, nan, nan, nan, len(levels), sum(g.size for g in groups), dropped)
    x = np.log(levels)
    means = np.array([g.mean() for g in groups])
    slope, intercept, r2 = _ols(x, means)
    slope_nlogn, _, _ = _ols(np.log(levels / np.log(levels)), means)
    slope_median, _, _ = _ols(x, np.array([np.median(g) for g in groups]))
    rng = np.random.default_rng(seed)
    boot_means = np.stack([g[rng.integers(0, g.size, size=(n_boot, g.size))].mean(axis=1) for g in groups], axis=1)
    xc = x - x.mean()
    boot_slopes = (boot_means - boot_means.mean(axis=1, keepdims=True)) @ xc / np.dot(xc, xc)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(boot_slopes, [alpha, 1.0 - alpha])
    return RateEstimate(
        slope,
        intercept,
        float(lo),
        float(hi),
        r2,
        slope_nlogn,
        slope_median,
        len(levels),
        int(sum(g.size for g in groups)),
        dropped,
    )


def predicted_slope(family: str, regime: str, metric: str, fitted_family: str | None = None) -> float:
    """Slope the theory predicts for (family, regime, metric); NaN when no polynomial rate is predicted.

    In the ``misspecified`` regime ``family`` is the true family and ``fitted_family`` the fitted one;
    a fitted family other than the truth has an approximation floor (predicted L2 slope 0). In the
    ``local`` regime (the local-alternative experiment) W1 is predicted at -1/4 and L2 at -1/2.
    """
    if regime not in ("exact", "over", "misspecified", "local"):
        raise ValueError(f"regime must be one of exact, over, misspecified, local; got {regime!r}")
    if regime == "local":
        if metric not in LOCAL_PREDICTIONS:
            known = ", ".join(LOCAL_PREDICTIONS)
            raise ValueError(f"metric must be one of {known} in the local regime; got {metric!r}")
        return LOCAL_PREDICTIONS[metric]
    if metric == "L2":
        if regime == "misspecified" and fitted_family is not None and fitted_family != family:
            return 0.0
        return -0.5
    if regime == "misspecified":
        raise ValueError(f"only the L2 metric is defined in the misspecified regime; got {metric!r}")
    if metric not in ("D1", "D2", "param_err", "expert_sup"):
        raise ValueError(f"metric must be one of D1, D2, L2, param_err, expert_sup; got {metric!r}")
    if regime == "exact":
        return -0.5
    if family in WEAKLY_IDENTIFIABLE:
        return float("nan")
    return -0.5 if metric == "D2" else -0.25


def prediction_kind(family: str, regime: str, metric: str, fitted_family: str | None = None) -> str:
    """``rate`` (tight for a fixed truth), ``bound`` (an upper bound, tight only in the worst case) or ``none``.

    The unsquared errors inside multi-atom cells of an over-specified fit (D1, param_err, expert_sup)
    are bounded by n^-1/4; a fit that leaves one atom per true atom (degenerate) beats that bound.
    """
    pred = predicted_slope(family, regime, metric, fitted_family)
    if math.isnan(pred):
        return "none"
    if regime == "over" and metric in ("D1", "param_err", "expert_sup"):
        return "bound"
    return "rate"


def half_width(rate: RateEstimate) -> float:
    """Half the width of the slope's confidence interval."""
    return 0.5 * (rate.ci_high - rate.ci_low)


def verdict(rate: RateEstimate, predicted: float, l2_slope: float | None = None, kind: str | None = None) -> str:
    """The verdict for one measured slope against its prediction, by kind.

    ``fit failed``: the L2 slope is above -0.35 (not applied where an L2 plateau is predicted, pass
    ``l2_slope=None`` there) or the slope could not be measured. Kind ``none`` (the default when
    ``predicted`` is NaN): ``reported``. Otherwise ``inconclusive`` when the CI half-width exceeds 0.15;
    kind ``rate`` (default): ``consistent`` when the CI overlaps [p - 0.1, p + 0.1], else ``inconsistent``;
    kind ``bound``: ``consistent`` unless the whole CI lies above p + 0.1 (significantly slower than the
    bound): a faster slope meets the bound.
    """
    kind = kind or ("none" if math.isnan(predicted) else "rate")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    if l2_slope is not None and (not math.isfinite(l2_slope) or l2_slope > FIT_FAILED_L2_SLOPE):
        return "fit failed"
    if not (math.isfinite(rate.ci_low) and math.isfinite(rate.ci_high)):
        return "fit failed"
    if kind == "none":
        return "reported"
    if half_width(rate) > MAX_HALF_WIDTH:
        return "inconclusive"
    if kind == "bound":
        return "inconsistent" if rate.ci_low > predicted + TOLERANCE else "consistent"
    overlaps = rate.ci_low <= predicted + TOLERANCE and rate.ci_high >= predicted - TOLERANCE
    return "consistent" if overlaps else "inconsistent"


def sample_complexity(rate: RateEstimate, target: float) -> float:
    """Sample size at which the fitted line reaches loss ``target`` (inf if the line does not fall)."""
    if not target > 0:
        raise ValueError(f"target must be a positive loss, got {target!r}")
    if not math.isfinite(rate.slope) or rate.slope >= 0:
        return float("inf")
    log_n = (math.log(target) - rate.intercept) / rate.slope
    return float(math.exp(log_n)) if log_n < 700 else float("inf")
