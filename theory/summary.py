"""The summary of a run: slopes, verdicts, separation and claims per row, the degenerate table, sample complexity.

``python -m theory.summary FITS.csv [--n-min N] [--out DIR]`` summarises the fits of an earlier run again
(for example with another n_min) without refitting.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import pandas as pd

from theory.experiment import SOURCE
from theory.families import REGIME_METRICS, family_names
from theory.rates import (
    MEDIAN_GAP,
    RateEstimate,
    estimate_rate,
    prediction_of,
    sample_complexity,
    separates,
    verdict,
)

#: The leading columns of summary.csv (the others follow).
SUMMARY_COLUMNS = [
    "family",
    "regime",
    "metric",
    "kind",
    "slope",
    "median_slope",
    "ci_low",
    "ci_high",
    "predicted",
    "verdict",
    "degenerate_share",
    "boundary_share",
    "separates",
    "claim",
]
#: Rows of atom losses (not L2) whose slope moves by more than this when the fits with an escaped atom are
#: left out are dominated by those atoms: "reported" (with the share), not judged by a mean-log slope.
ESCAPE_SHIFT = 0.1
#: Losses measured on the atoms (escaped atoms dominate them); L2 is measured on the regression function.
ATOM_METRICS = frozenset({"D1", "D2", "param_err", "expert_sup", "W1", "mass_err", "max_pair_err"})


def _flag_share(group: pd.DataFrame, column: str) -> float:
    if column not in group:
        return float("nan")
    values = group[column].dropna()
    return float(values.astype(bool).mean()) if len(values) else float("nan")


def degenerate_table(fits: pd.DataFrame) -> pd.DataFrame:
    """Share of degenerate (and, in the local experiment, resolved) fits per (family, regime, atoms, n)."""
    keys = ["family", "regime", "fitted_atoms", "n"]
    rows = []
    for (family, regime, L, n), group in fits.groupby(keys, sort=True):
        if "degenerate" not in group or group["degenerate"].isna().all():
            continue
        rows.append(
            {
                "family": family,
                "regime": regime,
                "fitted_atoms": int(L),
                "n": int(n),
                "fits": len(group),
                "degenerate_share": _flag_share(group, "degenerate"),
                "resolved_share": _flag_share(group, "resolved") if regime == "local" else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=keys[:3] + ["n", "fits", "degenerate_share", "resolved_share"])


def reading(family: str, regime: str, metric: str, verdict_text: str, separated: object, competitor: float) -> str:
    """What the row shows about the competing rates, in words (empty for rows without a competitor)."""
    if not math.isfinite(competitor) or separated is None:
        return ""
    if regime == "local" and metric == "W1":
        if verdict_text == "consistent" and separated:
            return "slow rate shown"
        if not separated:
            return "not separated from -1/2: pre-asymptotic at these n"
        return f"{verdict_text} with -1/4 and separated from -1/2"
    return f"{'separated from' if separated else 'not separated from'} {competitor:+.2f}"


def summarize(fits: pd.DataFrame, n_boot: int = 2000, seed: int = 0, n_min: int = 0) -> pd.DataFrame:
    """One row per (configuration, metric): kind, slope, CI, prediction, verdict, separation and claim.

    Slopes use the fits with n >= ``n_min`` (smaller n are pre-asymptotic); shares (degenerate, boundary,
    escaped, failed) are taken over the same fits.
    """
    rows = []
    keys = ["truth", "family", "regime", "fitted_atoms"]
    used = fits[fits["n"] >= n_min] if len(fits) else fits
    for (truth, family, regime, L), group in used.groupby(keys, sort=False):
        failed = int(group["failed"].sum())
        failed_share = failed / len(group)
        ns = group["n"].to_numpy()
        l2 = estimate_rate(ns, group["L2"].to_numpy(), n_boot=n_boot, seed=seed)
        plateau = prediction_of(truth, regime, "L2", fitted_family=family).slope == 0.0
        degenerate = _flag_share(group, "degenerate") if regime != "misspecified" else float("nan")
        boundary = _flag_share(group, "boundary")
        escaped_share = _flag_share(group, "escaped")
        kept = ~group["escaped"].fillna(False).astype(bool) if "escaped" in group else pd.Series(True, group.index)
        resolved = _flag_share(group, "resolved") if regime == "local" else float("nan")
        for metric in REGIME_METRICS[regime]:
            if metric not in group:
                continue
            rate = l2 if metric == "L2" else estimate_rate(ns, group[metric].to_numpy(), n_boot=n_boot, seed=seed)
            pred = prediction_of(truth, regime, metric, fitted_family=family)
            text = verdict(rate, pred.slope, None if plateau else l2.slope, kind=pred.kind, log_factor=pred.log_factor,
                           failed_share=failed_share)
            slope_kept = float("nan")
            if metric in ATOM_METRICS and escaped_share > 0:
                slope_kept = estimate_rate(ns[kept.to_numpy()], group.loc[kept, metric].to_numpy(), n_boot=1).slope
                dominated = not math.isfinite(slope_kept) or abs(slope_kept - rate.slope) > ESCAPE_SHIFT
                if dominated and text != "fit failed":
                    text = "reported"
            sep = separates(rate, pred.competitor)
            separated = None if math.isnan(sep) else bool(sep)
            rows.append(
                {
                    "family": family,
                    "regime": regime,
                    "metric": metric,
                    "kind": pred.kind,
                    "slope": rate.slope,
                    "median_slope": rate.slope_median,
                    "ci_low": rate.ci_low,
                    "ci_high": rate.ci_high,
                    "predicted": pred.slope,
                    "verdict": text,
                    "degenerate_share": degenerate,
                    "boundary_share": boundary,
                    "separates": separated,
                    "claim": pred.claim,
                    "reading": reading(family, regime, metric, text, separated, pred.competitor),
                    "competitor": pred.competitor,
                    "escaped_share": escaped_share,
                    "slope_without_escaped": slope_kept,
                    "log_factor": pred.log_factor,
                    "median_differs": bool(abs(rate.slope - rate.slope_median) > MEDIAN_GAP),
                    "resolved_share": resolved,
                    "fitted_atoms": int(L),
                    "truth": truth,
                    "truth_name": str(group["truth_name"].iloc[0]) if "truth_name" in group else "default",
                    "n_min": int(ns.min()),
                    "n_levels": rate.n_levels,
                    "r2": rate.r2,
                    "slope_nlogn": rate.slope_nlogn,
                    "ci_low_nlogn": rate.ci_low_nlogn,
                    "ci_high_nlogn": rate.ci_high_nlogn,
                    "slope_median": rate.slope_median,
                    "intercept": rate.intercept,
                    "n_fits": len(group),
                    "n_failed": failed,
                    "n_dropped": rate.n_dropped,
                    "source": SOURCE,
                }
            )
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    table = table[SUMMARY_COLUMNS + [c for c in table.columns if c not in SUMMARY_COLUMNS]]
    rank = {name: i for i, name in enumerate(family_names(optional=True))}
    regime_rank = {"exact": 0, "over": 1, "local": 2, "misspecified": 3}
    table["_order"] = [
        (regime_rank.get(r, 4) >= 2, regime_rank.get(r, 4) if regime_rank.get(r, 4) >= 2 else 0, rank.get(f, len(rank)),
         regime_rank.get(r, 4), L)
        for f, r, L in zip(table["family"], table["regime"], table["fitted_atoms"], strict=False)
    ]
    return table.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)


def sample_complexity_table(summary: pd.DataFrame, targets: dict[str, float]) -> pd.DataFrame:
    """n needed to reach each target loss, read off the fitted lines (inf where a plateau is predicted)."""
    rows = []
    for _, r in summary[summary["metric"].isin(list(targets))].iterrows():
        rate = RateEstimate(r.slope, r.intercept, r.ci_low, r.ci_high, r.r2, r.slope_nlogn, r.slope_median, 0, 0, 0)
        plateau = r.predicted == 0.0
        rows.append(
            {
                "family": r.family,
                "regime": r.regime,
                "fitted_atoms": r.fitted_atoms,
                "metric": r.metric,
                "target": targets[r.metric],
                "n_needed": float("inf") if plateau else sample_complexity(rate, targets[r.metric]),
            }
        )
    return pd.DataFrame(rows)


def comparison_table(before: pd.DataFrame, after: pd.DataFrame) -> str:
    """A markdown table of two summaries row by row: slope [CI] and verdict of each, and the slope's change."""
    keys = ["family", "fitted_atoms", "regime", "metric"]
    merged = before.merge(after.assign(_pos=range(len(after))), on=keys, how="outer", suffixes=("_before", "_after"))
    merged = merged.sort_values("_pos", kind="stable", na_position="last")
    lines = ["| family | L | regime | metric | before: slope [95% CI] | verdict | after: slope [95% CI] | verdict | "
             "change |", "|---|---|---|---|---|---|---|---|---|"]

    def cell(r, side):
        slope = r[f"slope_{side}"]
        if not isinstance(slope, float) or math.isnan(slope):
            return "-", str(r.get(f"verdict_{side}", "-"))
        return f"{slope:+.2f} [{r[f'ci_low_{side}']:+.2f}, {r[f'ci_high_{side}']:+.2f}]", str(r[f"verdict_{side}"])

    for _, r in merged.iterrows():
        b, bv = cell(r, "before")
        a, av = cell(r, "after")
        change = r["slope_after"] - r["slope_before"]
        lines.append(f"| {r.family} | {int(r.fitted_atoms)} | {r.regime} | {r.metric} | {b} | {bv} | {a} | {av} | "
                     f"{'-' if math.isnan(change) else f'{change:+.2f}'} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Summarise a run's fits.csv again (e.g. with another n_min); print the table, write the outputs with --out."""
    from theory.config import DEFAULT_N_MIN, TARGETS, _int_in, _Parser
    from theory.io import OutputError, check_output_folder, write_csv, write_set
    from theory.report import print_report

    p = _Parser(prog="python -m theory.summary", description="Summarise the fits of a theory run again, without "
                "refitting: slopes on n >= --n-min, verdicts, separation and claims.")
    p.add_argument("fits", help="a run's fits.csv")
    p.add_argument("--n-min", type=_int_in("n_min"), default=DEFAULT_N_MIN,
                   help=f"slopes on n >= N_MIN (default {DEFAULT_N_MIN})")
    p.add_argument("--bootstrap", type=_int_in("bootstrap"), default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=_int_in("seed"), default=0, help="the run's base seed (default 0)")
    p.add_argument("--out", default=None, help="write summary.csv, sample_complexity.csv, degenerate.csv and "
                   "sample_efficiency.png there (as a set); default: print only")
    p.add_argument("--compare", default=None, metavar="SUMMARY_CSV",
                   help="also print a markdown table of another run's summary.csv beside this one, row by row")
    args = p.parse_args(argv)
    try:
        fits = pd.read_csv(args.fits)
    except (OSError, ValueError) as err:
        p.error(f"cannot read fits {args.fits}: {err}")
    missing = {"family", "truth", "regime", "fitted_atoms", "n", "failed", "L2"} - set(fits.columns)
    if missing:
        p.error(f"{args.fits}: not a theory run's fits.csv (missing columns {sorted(missing)})")
    if fits.loc[fits["n"] >= args.n_min, "n"].nunique() < 2:
        p.error(f"--n-min {args.n_min}: at least two sample sizes of the run must reach it; they are "
                f"{sorted(fits['n'].unique().tolist())}")
    summary = summarize(fits, n_boot=args.bootstrap, seed=args.seed, n_min=args.n_min)
    complexity = sample_complexity_table(summary, TARGETS)
    degenerate = degenerate_table(fits)
    print_report(summary, fits, complexity, degenerate, TARGETS)
    if args.compare is not None:
        try:
            other = pd.read_csv(args.compare)
        except (OSError, ValueError) as err:
            p.error(f"cannot read --compare {args.compare}: {err}")
        print(comparison_table(other, summary))
    if args.out is not None:
        from theory.figures import plot_sample_efficiency

        try:
            check_output_folder(args.out)
            paths = write_set(args.out, {
                "summary.csv": lambda path: write_csv(summary, path),
                "sample_complexity.csv": lambda path: write_csv(complexity, path),
                "degenerate.csv": lambda path: write_csv(degenerate, path),
                "sample_efficiency.png": lambda path: plot_sample_efficiency(fits, summary, path),
            })
        except OutputError as err:
            print(f"{p.prog}: error: {err}", file=sys.stderr)
            return 2
        print(f"wrote: {', '.join(str(path) for path in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
