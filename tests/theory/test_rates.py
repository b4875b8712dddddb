"""Slope estimation, bootstrap intervals, verdicts and sample complexity on synthetic power laws."""

import math

import numpy as np
import pandas as pd
import pytest

from theory.rates import (
    RateEstimate,
    estimate_rate,
    predicted_slope,
    prediction_kind,
    sample_complexity,
    separates,
    verdict,
)


def _power_law(exponent, scale=2.0, noise=0.2, reps=20, seed=0, ns=(1000, 2000, 4000, 8000, 16000, 32000)):
    rng = np.random.default_rng(seed)
    n = np.repeat(np.asarray(ns, dtype=float), reps)
    return n, scale * n**exponent * np.exp(noise * rng.standard_normal(n.size))


@pytest.mark.parametrize("exponent", [-0.5, -0.25, -1.0])
def test_recovers_known_exponent(exponent):
    n, loss = _power_law(exponent)
    rate = estimate_rate(n, loss, n_boot=2000, seed=1)
    assert abs(rate.slope - exponent) < 0.05
    assert rate.ci_low < exponent < rate.ci_high
    assert rate.ci_high - rate.ci_low < 0.2
    assert rate.r2 > 0.9
    assert math.exp(rate.intercept) == pytest.approx(2.0, rel=0.3)


def test_interval_narrows_with_more_replicates():
    widths = []
    for reps in (5, 80):
        n, loss = _power_law(-0.5, reps=reps, noise=0.5, seed=3)
        r = estimate_rate(n, loss, n_boot=1000, seed=0)
        widths.append(r.ci_high - r.ci_low)
    assert widths[1] < 0.5 * widths[0]


def test_log_corrected_slope():
    ns = np.array([1e3, 1e4, 1e5])
    loss = np.sqrt(np.log(ns) / ns)
    rate = estimate_rate(ns.repeat(2), loss.repeat(2), n_boot=10)
    assert rate.slope_nlogn == pytest.approx(-0.5, abs=1e-9)
    assert -0.5 < rate.slope < -0.4


def test_failed_losses_are_counted_not_used():
    n, loss = _power_law(-0.5, reps=5)
    loss[0], loss[7] = np.nan, np.inf
    rate = estimate_rate(n, loss, n_boot=200)
    assert rate.n_dropped == 2
    assert rate.n_losses == n.size - 2
    assert abs(rate.slope + 0.5) < 0.1


def _rate(lo, hi, slope=None):
    s = (lo + hi) / 2 if slope is None else slope
    return RateEstimate(s, 0.0, lo, hi, 1.0, s, s, 5, 50, 0)


def test_verdicts():
    assert verdict(_rate(-0.65, -0.45), -0.5, l2_slope=-0.5) == "consistent"
    assert verdict(_rate(-0.70, -0.55), -0.5, l2_slope=-0.5) == "consistent"  # meets the band at its edge
    assert verdict(_rate(-0.70, -0.56), -0.5, l2_slope=-0.5) == "inconsistent"
    assert verdict(_rate(-0.80, -0.61), -0.5, l2_slope=-0.5) == "inconsistent"
    assert verdict(_rate(-0.30, -0.10), -0.5, l2_slope=-0.5) == "inconsistent"
    assert verdict(_rate(-0.60, -0.40), -0.5, l2_slope=-0.2) == "fit failed"
    assert verdict(_rate(-0.01, 0.01), 0.0) == "consistent"
    # no polynomial rate predicted: reported, never judged
    assert verdict(_rate(-0.20, -0.05), float("nan"), l2_slope=-0.5) == "reported"
    assert verdict(_rate(-0.60, -0.40), float("nan"), l2_slope=-0.5) == "reported"


def test_rate_band_tells_a_half_from_a_quarter():
    # the v2 band (p +- 0.1, half-width up to 0.15) called this CI consistent with both -1/2 and -1/4
    ci = _rate(-0.496, -0.304)
    assert verdict(ci, -0.5, l2_slope=-0.5, kind="rate") == "consistent"
    assert verdict(ci, -0.25, l2_slope=-0.5, kind="rate") == "inconsistent"
    assert separates(ci, -0.25) == 1.0 and separates(ci, -0.5) == 0.0
    assert math.isnan(separates(ci, float("nan")))


def test_rate_kind_is_two_sided():
    assert verdict(_rate(-0.62, -0.42), -0.5, l2_slope=-0.5, kind="rate") == "consistent"
    assert verdict(_rate(-0.90, -0.65), -0.5, l2_slope=-0.5, kind="rate") == "inconsistent"  # faster
    assert verdict(_rate(-0.35, -0.15), -0.5, l2_slope=-0.5, kind="rate") == "inconsistent"  # slower


def test_bound_kind_is_decided_one_sided_first():
    # the whole CI faster than p + 0.05: consistent, however wide (v2 printed this one inconclusive)
    assert verdict(_rate(-0.63, -0.31), -0.25, l2_slope=-0.5, kind="bound") == "consistent"
    assert verdict(_rate(-0.60, -0.45), -0.25, l2_slope=-0.5, kind="bound") == "consistent"
    assert verdict(_rate(-0.30, -0.21), -0.25, l2_slope=-0.5, kind="bound") == "consistent"
    # the whole CI slower than p + 0.05: inconsistent
    assert verdict(_rate(-0.19, -0.02), -0.25, l2_slope=-0.5, kind="bound") == "inconsistent"
    # neither: inconclusive
    assert verdict(_rate(-0.30, -0.15), -0.25, l2_slope=-0.5, kind="bound") == "inconclusive"
    # the same faster CI is inconsistent when read as a two-sided rate
    assert verdict(_rate(-0.60, -0.45), -0.25, l2_slope=-0.5, kind="rate") == "inconsistent"


def test_log_factor_rows_are_judged_against_n_over_log_n():
    rate = RateEstimate(-0.5, 0.0, -0.52, -0.48, 1.0, -0.58, -0.5, 5, 50, 0, -0.60, -0.56)
    assert verdict(rate, -0.5, l2_slope=-0.5, kind="rate") == "consistent"
    assert verdict(rate, -0.5, l2_slope=-0.5, kind="rate", log_factor=True) == "inconsistent"
    n = np.repeat([1e3, 1e4, 1e5], 4)
    est = estimate_rate(n, np.sqrt(np.log(n) / n) * np.exp(0.01 * (np.arange(n.size) % 3)), n_boot=200)
    assert est.ci_low_nlogn <= -0.5 <= est.ci_high_nlogn


def test_none_kind_inconclusive_and_fit_failed():
    assert verdict(_rate(-0.6, -0.4), -0.5, l2_slope=-0.5, kind="none") == "reported"
    # a rate's CI that meets the band but is wider than 0.15 on each side: more replicates needed
    assert verdict(_rate(-0.70, -0.38), -0.5, l2_slope=-0.5, kind="rate") == "inconclusive"
    assert verdict(_rate(-0.64, -0.36), -0.5, l2_slope=-0.5, kind="rate") == "consistent"  # half-width 0.14
    # an L2 slope above -0.35 means the optimizer did not track the truth
    assert verdict(_rate(-0.6, -0.5), -0.25, l2_slope=-0.3, kind="bound") == "fit failed"
    assert verdict(_rate(-0.6, -0.5), -0.5, l2_slope=-0.3, kind="none") == "fit failed"
    # most fits failed: never "consistent", even where a plateau is predicted (no L2 slope check)
    assert verdict(_rate(-0.01, 0.01), 0.0, failed_share=0.9) == "fit failed"
    with pytest.raises(ValueError, match="'tight'"):
        verdict(_rate(-0.6, -0.5), -0.5, kind="tight")


def test_prediction_kinds():
    assert prediction_kind("vapt", "exact", "D1") == "rate"
    assert prediction_kind("vapt", "over", "D2") == "rate"
    assert prediction_kind("vapt", "over", "L2") == "rate"
    for metric in ("D1", "param_err", "expert_sup"):
        assert prediction_kind("vpt", "over", metric) == "bound"
        assert prediction_kind("prefix", "over", metric) == "none"
    assert prediction_kind("vapt_linear", "over", "D2") == "none"
    assert prediction_kind("vpt", "local", "W1") == "rate" and predicted_slope("vpt", "local", "W1") == -0.25
    assert prediction_kind("vpt", "local", "max_pair_err") == "none"
    assert prediction_kind("vapt", "misspecified", "L2", fitted_family="vpt") == "rate"


def test_summary_flags_median_slope_and_reports_degenerate_share():
    from theory.summary import summarize

    rng = np.random.default_rng(0)
    rows = []
    for n in (1000, 2000, 4000, 8000, 16000):
        for rep in range(10):
            loss = n**-0.5 * np.exp(0.05 * rng.standard_normal())
            # two diverging fits at the largest n pull the mean-log slope, not the median-log one
            d1 = loss * (1e4 if n == 16000 and rep < 2 else 1.0)
            rows.append(dict(truth="vpt", family="vpt", regime="over", fitted_atoms=3, n=n, replicate=rep,
                             failed=False, L2=loss, D1=d1, D2=loss, param_err=loss, expert_sup=loss,
                             degenerate=rep < 3))
    summary = summarize(pd.DataFrame(rows), n_boot=200)
    d1 = summary[summary["metric"] == "D1"].iloc[0]
    assert d1["kind"] == "bound" and d1["median_differs"]
    assert d1["median_slope"] == pytest.approx(-0.5, abs=0.05) and d1["slope"] > -0.3
    d2 = summary[summary["metric"] == "D2"].iloc[0]
    assert d2["kind"] == "rate" and not d2["median_differs"] and d2["verdict"] == "consistent"
    np.testing.assert_allclose(summary["degenerate_share"], 0.3)


def test_predictions():
    assert predicted_slope("vapt", "exact", "D1") == -0.5
    assert predicted_slope("vapt", "over", "D2") == -0.5
    assert predicted_slope("vapt", "over", "param_err") == -0.25
    assert math.isnan(predicted_slope("prefix", "over", "D2"))
    assert predicted_slope("prefix", "over", "L2") == -0.5
    assert predicted_slope("vapt", "misspecified", "L2", fitted_family="vpt") == 0.0
    assert predicted_slope("vapt", "misspecified", "L2", fitted_family="vapt") == -0.5
    with pytest.raises(ValueError, match="'sideways'"):
        predicted_slope("vapt", "sideways", "D1")


def test_sample_complexity_inverts_the_line():
    n, loss = _power_law(-0.5, scale=3.0, noise=0.0, reps=2)
    rate = estimate_rate(n, loss, n_boot=10)
    assert sample_complexity(rate, 0.003) == pytest.approx((3.0 / 0.003) ** 2, rel=1e-6)
    flat = RateEstimate(0.01, 0.0, 0.0, 0.02, 0.1, 0.01, 0.01, 5, 10, 0)
    assert sample_complexity(flat, 0.1) == math.inf
    with pytest.raises(ValueError, match="positive"):
        sample_complexity(rate, 0.0)
