"""Convergence-rate estimates: log-log slopes, bootstrap intervals, verdicts and sample complexity."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Half-width of the band around a predicted (or competing) slope that a confidence interval must meet.
TOLERANCE = 0.05
#: An L2 slope above this means the optimizer did not track the truth.
FIT_FAILED_L2_SLOPE = -0.35
#: More than this share of a row's fits failed (no estimate or not converged): the row's verdict is "fit failed".
FIT_FAILED_SHARE = 0.5
#: A CI wider than this on each side leaves a rate's verdict open: more replicates are needed.
MAX_HALF_WIDTH = 0.15
#: Mean-log and median-log slopes further apart than this are flagged (a few diverging fits).
MEDIAN_GAP = 0.2
#: Kinds of prediction: a tight rate (two-sided test), an upper bound (one-sided), or none (reported).
KINDS: tuple[str, ...] = ("rate", "bound", "none")


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
    ci_low_nlogn: float = float("nan")
    ci_high_nlogn: float = float("nan")


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
    x_nlogn = np.log(levels / np.log(levels))
    x = np.log(levels)
    means = np.array([g.mean() for g in groups])
    slope, intercept, r2 = _ols(x, means)
    slope_nlogn, _, _ = _ols(x_nlogn, means)
    slope_median, _, _ = _ols(x, np.array([np.median(g) for g in groups]))
    rng = np.random.default_rng(seed)
    boot_means = np.stack([g[rng.integers(0, g.size, size=(n_boot, g.size))].mean(axis=1) for g in groups], axis=1)
    centred = boot_means - boot_means.mean(axis=1, keepdims=True)
    alpha = (1.0 - level) / 2.0
    xc = x - x.mean()
    lo, hi = np.quantile(centred @ xc / np.dot(xc, xc), [alpha, 1.0 - alpha])
    xc = x_nlogn - x_nlogn.mean()
    lo_nlogn, hi_nlogn = np.quantile(centred @ xc / np.dot(xc, xc), [alpha, 1.0 - alpha])
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
        float(lo_nlogn),
        float(hi_nlogn),
    )


def _prediction(family: str, regime: str, metric: str, fitted_family: str | None):
    from theory.families import REGIME_METRICS, Prediction, prediction

    if regime not in REGIME_METRICS:
        raise ValueError(f"regime must be one of {', '.join(REGIME_METRICS)}; got {regime!r}")
    if metric not in REGIME_METRICS[regime]:
        raise ValueError(f"metric must be one of {', '.join(REGIME_METRICS[regime])} in the {regime} regime; "
                         f"got {metric!r}")
    if regime == "misspecified" and fitted_family is not None and fitted_family != family:
        return Prediction("rate", 0.0, claim="expressiveness-floor")
    return prediction(fitted_family or family, regime, metric)


def predicted_slope(family: str, regime: str, metric: str, fitted_family: str | None = None) -> float:
    """Slope the theory predicts for (family, regime, metric); NaN when no polynomial rate is predicted.

    Predictions come from the family's registration (:mod:`theory.families`). In the ``misspecified``
    regime ``family`` is the true family and ``fitted_family`` the fitted one; a fitted family other than
    the truth has an approximation floor (predicted L2 slope 0).
    """
    return _prediction(family, regime, metric, fitted_family).slope


def prediction_kind(family: str, regime: str, metric: str, fitted_family: str | None = None) -> str:
    """``rate`` (tight for a fixed truth), ``bound`` (an upper bound, tight only in the worst case) or ``none``."""
    return _prediction(family, regime, metric, fitted_family).kind


def prediction_of(family: str, regime: str, metric: str, fitted_family: str | None = None):
    """The full registered :class:`theory.families.Prediction` (kind, slope, competitor, log factor, claim)."""
    return _prediction(family, regime, metric, fitted_family)


def half_width(rate: RateEstimate) -> float:
    """Half the width of the slope's confidence interval."""
    return 0.5 * (rate.ci_high - rate.ci_low)


def judged_interval(rate: RateEstimate, log_factor: bool = False) -> tuple[float, float]:
    """The CI a verdict uses: against log n, or against log(n / log n) where the bound carries a log factor."""
    return (rate.ci_low_nlogn, rate.ci_high_nlogn) if log_factor else (rate.ci_low, rate.ci_high)


def verdict(
    rate: RateEstimate,
    predicted: float,
    l2_slope: float | None = None,
    kind: str | None = None,
    *,
    log_factor: bool = False,
    failed_share: float = 0.0,
) -> str:
    """The verdict for one measured slope against its prediction, by kind.

    ``fit failed``: more than half of the row's fits failed, the L2 slope is above -0.35 (not applied
    where an L2 plateau is predicted: pass ``l2_slope=None``), or the slope could not be measured.
    Kind ``none`` (the default when ``predicted`` is NaN): ``reported``. Kind ``rate`` (default):
    ``inconsistent`` when the CI misses [p - 0.05, p + 0.05], else ``consistent``, or ``inconclusive``
    when its half-width exceeds 0.15. Kind ``bound`` (one-sided, decided first): ``consistent`` when the
    whole CI is faster than p + 0.05, ``inconsistent`` when the whole CI is slower, else ``inconclusive``.
    ``log_factor``: judge the slope against log(n / log n) (a bound like sqrt(log n / n)).
    """
    kind = kind or ("none" if math.isnan(predicted) else "rate")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    if failed_share > FIT_FAILED_SHARE:
        return "fit failed"
    if l2_slope is not None and (not math.isfinite(l2_slope) or l2_slope > FIT_FAILED_L2_SLOPE):
        return "fit failed"
    low, high = judged_interval(rate, log_factor)
    if not (math.isfinite(low) and math.isfinite(high)):
        return "fit failed"
    if kind == "none":
        return "reported"
    if kind == "bound":
        if high < predicted + TOLERANCE:
            return "consistent"
        return "inconsistent" if low > predicted + TOLERANCE else "inconclusive"
    if high < predicted - TOLERANCE or low > predicted + TOLERANCE:
        return "inconsistent"
    return "inconclusive" if 0.5 * (high - low) > MAX_HALF_WIDTH else "consistent"


def separates(rate: RateEstimate, competitor: float) -> float:
    """Whether the CI excludes the competing rate's band [c - 0.05, c + 0.05]: 1.0, 0.0, or NaN (no competitor)."""
    if not math.isfinite(competitor) or not (math.isfinite(rate.ci_low) and math.isfinite(rate.ci_high)):
        return float("nan")
    return float(rate.ci_high < competitor - TOLERANCE or rate.ci_low > competitor + TOLERANCE)


def sample_complexity(rate: RateEstimate, target: float) -> float:
    """Sample size at which the fitted line reaches loss ``target`` (inf if the line does not fall)."""
    if not target > 0:
        raise ValueError(f"target must be a positive loss, got {target!r}")
    if not math.isfinite(rate.slope) or rate.slope >= 0:
        return float("inf")
    log_n = (math.log(target) - rate.intercept) / rate.slope
    return float(math.exp(log_n)) if log_n < 700 else float("inf")
