"""The run's figure: per summary row, the mean log loss with its bootstrap band, the fitted line and the references.

One panel per (family, regime) (and one for the expressiveness experiment). Each drawn row shows the
per-n geometric mean of its loss (the mean of log loss) with a 95 % bootstrap band over replicates, the
fitted line c * n^slope over the n it was fitted on, and the reference slopes -1/2 (dashed) and -1/4
(dotted) through the line's first point. The marker gives the verdict (o consistent, x inconsistent,
s inconclusive, ^ reported, X fit failed); it is filled when the row separates from the competing rate,
hollow when it does not, and half-transparent where no competitor applies.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from theory.io import atomic_write

SIMULATION_LABEL = "Simulation of the least-squares prompt-MoE framework (not a reproduced paper figure)"
#: Metrics drawn per regime (the others are in summary.csv).
PANEL_METRICS = {"exact": ("D1", "L2"), "over": ("D2", "D1", "L2"), "misspecified": ("L2",), "local": ("W1", "L2")}
VERDICT_MARKERS = {"consistent": "o", "inconsistent": "x", "inconclusive": "s", "reported": "^", "fit failed": "X"}
REFERENCES = ((-0.5, "--"), (-0.25, ":"))


def mean_log_band(group: pd.DataFrame, metric: str, n_boot: int = 400, seed: int = 0):
    """Per n: the sample size, exp(mean log loss), and the 2.5 % and 97.5 % bootstrap quantiles of that mean."""
    values = group[["n", metric]].dropna()
    values = values[values[metric] > 0]
    rng = np.random.default_rng(seed)
    ns, centre, low, high = [], [], [], []
    for n, part in values.groupby("n"):
        logs = np.log(part[metric].to_numpy(dtype=float))
        boot = logs[rng.integers(0, logs.size, size=(n_boot, logs.size))].mean(axis=1)
        ns.append(float(n))
        centre.append(np.exp(logs.mean()))
        lo, hi = np.quantile(boot, [0.025, 0.975])
        low.append(np.exp(lo))
        high.append(np.exp(hi))
    return np.array(ns), np.array(centre), np.array(low), np.array(high)


def _row(summary: pd.DataFrame, family: str, regime: str, L: int, metric: str) -> pd.Series | None:
    match = summary[(summary["family"] == family) & (summary["regime"] == regime) & (summary["fitted_atoms"] == L)
                    & (summary["metric"] == metric)]
    return match.iloc[0] if len(match) else None


def _label(name: str, row: pd.Series | None) -> str:
    if row is None or not np.isfinite(row["slope"]):
        return f"{name}: no fit"
    sep = row.get("separates")
    sep_text = "" if not isinstance(sep, (bool, np.bool_)) else ("; separates" if sep else "; not separated")
    reading = row.get("reading")
    if isinstance(reading, str) and reading and "slow rate shown" in reading:
        sep_text += "; slow rate shown"
    return f"{name}: n^{row['slope']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}], {row['verdict']}{sep_text}"


def _draw_row(ax, group: pd.DataFrame, row: pd.Series | None, metric: str, name: str, color: str) -> None:
    ns, centre, low, high = mean_log_band(group, metric)
    if not ns.size:
        return
    ax.fill_between(ns, low, high, color=color, alpha=0.18, linewidth=0)
    verdict = row["verdict"] if row is not None else "fit failed"
    sep = row.get("separates") if row is not None else None
    marker = VERDICT_MARKERS.get(verdict, "o")
    filled = isinstance(sep, (bool, np.bool_)) and bool(sep)
    hollow = isinstance(sep, (bool, np.bool_)) and not sep
    ax.loglog(ns, centre, marker, color=color, ms=5, mfc="none" if hollow else color,
              alpha=1.0 if filled or hollow else 0.6)
    if row is None or not np.isfinite(row["slope"]):
        return
    fitted = ns[ns >= float(row.get("n_min", ns.min()))]
    grid = np.geomspace(fitted.min(), fitted.max(), 50)
    line = np.exp(float(row["intercept"])) * grid ** float(row["slope"])
    ax.loglog(grid, line, "-", color=color, label=_label(name, row))
    for slope, style in REFERENCES:
        ax.loglog(grid, line[0] * (grid / grid[0]) ** slope, style, color="0.45", linewidth=0.9)


def plot_sample_efficiency(fits: pd.DataFrame, summary: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Draw the run's figure (see the module docstring) and write it atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullFormatter

    from theory.families import family_names

    order = {name: i for i, name in enumerate(family_names(optional=True))}
    regime_order = {"exact": 0, "over": 1, "local": 2}
    pairs = fits.loc[fits["regime"] != "misspecified", ["family", "regime"]].drop_duplicates()
    panels = sorted(((f, r) for f, r in zip(pairs["family"], pairs["regime"], strict=True)),
                    key=lambda p: (regime_order.get(p[1], 3) == 2, order.get(p[0], len(order)), regime_order.get(p[1])))
    if (fits["regime"] == "misspecified").any():
        panels.append(("*", "misspecified"))
    ncols = min(4, max(1, len(panels)))
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.0 * ncols, 4.0 * nrows), squeeze=False)
    for ax, (family, regime) in zip(axes.ravel(), panels, strict=False):
        sub = fits[fits["regime"] == regime] if family == "*" else fits[(fits["family"] == family)
                                                                        & (fits["regime"] == regime)]
        ax.set_title(f"expressiveness: truth {', '.join(sub['truth'].unique())}" if family == "*"
                     else f"{family}, {regime}", fontsize=10)
        for i, ((fam, L), group) in enumerate(sub.groupby(["family", "fitted_atoms"], sort=False)):
            for j, metric in enumerate(PANEL_METRICS[regime]):
                if metric not in group:
                    continue
                name = metric if family != "*" else f"{fam} L={L}"
                _draw_row(ax, group, _row(summary, fam, regime, L, metric), metric, name, f"C{(i * 3 + j) % 10}")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("sample size n")
        ax.set_ylabel("loss: exp(mean log) over replicates")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower left")
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    keys = [Line2D([], [], color="0.45", linestyle=s, label=f"reference slope {p:+.2f}") for p, s in REFERENCES]
    keys += [Line2D([], [], color="0.2", marker=m, linestyle="none", label=v) for v, m in VERDICT_MARKERS.items()]
    keys += [Line2D([], [], color="0.2", marker="o", linestyle="none", mfc="none", label="hollow: not separated")]
    fig.legend(handles=keys, loc="lower center", ncol=len(keys), fontsize=8, frameon=False)
    fig.suptitle(f"{SIMULATION_LABEL}\nbands: 95 % bootstrap over replicates; lines fitted on n >= n_min",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)
