"""Log-log figures of the simulated losses with their fitted lines."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from theory.io import atomic_write

SIMULATION_LABEL = "Simulation of the least-squares prompt-MoE framework (not a reproduced paper figure)"
_PANEL_METRICS = {"exact": ("D1", "L2"), "over": ("D2", "L2"), "misspecified": ("L2",), "local": ("W1", "L2")}
_STYLE = {"exact": "-", "over": "--", "misspecified": "-", "local": ":"}


def _geometric_means(group: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    values = group[["n", metric]].dropna()
    values = values[values[metric] > 0]
    stats = values.groupby("n")[metric].apply(lambda v: float(np.exp(np.mean(np.log(v)))))
    return stats.index.to_numpy(dtype=float), stats.to_numpy()


def plot_sample_efficiency(fits: pd.DataFrame, summary: pd.DataFrame, path: str | os.PathLike) -> Path:
    """One panel per fitted family (plus the expressiveness experiment); lines labelled c * n^slope."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    from theory.families import family_names

    order = {name: i for i, name in enumerate(family_names(optional=True))}
    present = fits.loc[fits["regime"] != "misspecified", "family"].unique()
    panels = [("family", f) for f in sorted(present, key=lambda f: order.get(f, len(order)))]
    if (fits["regime"] == "misspecified").any():
        panels.append(("misspecified", None))
    ncols = min(3, len(panels))
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.2 * nrows), squeeze=False)
    for ax, (kind, family) in zip(axes.ravel(), panels, strict=False):
        if kind == "family":
            sub = fits[(fits["family"] == family) & (fits["regime"] != "misspecified")]
            ax.set_title(f"{family}: true family fitted")
        else:
            sub = fits[fits["regime"] == "misspecified"]
            truth = ", ".join(sub["truth"].unique())
            ax.set_title(f"expressiveness: truth {truth}")
        keys = ["family", "regime", "fitted_atoms"]
        for color_index, ((fam, regime, L), group) in enumerate(sub.groupby(keys, sort=False)):
            for metric_index, metric in enumerate(_PANEL_METRICS[regime]):
                if metric not in group:
                    continue
                ns, gm = _geometric_means(group, metric)
                row = summary[
                    (summary["family"] == fam)
                    & (summary["regime"] == regime)
                    & (summary["fitted_atoms"] == L)
                    & (summary["metric"] == metric)
                ]
                name = f"{metric} {regime}" if kind == "family" else f"{fam} L={L}"
                color = f"C{(color_index * 2 + metric_index) % 10}"
                ax.loglog(ns, gm, "o", color=color, ms=4)
                if len(row) and np.isfinite(row["slope"].iloc[0]):
                    slope, icpt = float(row["slope"].iloc[0]), float(row["intercept"].iloc[0])
                    grid = np.geomspace(ns.min(), ns.max(), 50)
                    label = f"{name}: {np.exp(icpt):.3g} n^{slope:+.2f}"
                    ax.loglog(grid, np.exp(icpt) * grid**slope, _STYLE[regime], color=color, label=label)
                else:
                    ax.loglog(ns, gm, _STYLE[regime], color=color, label=f"{name}: no fit")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("sample size n")
        ax.set_ylabel("loss (geometric mean over replicates)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    fig.suptitle(SIMULATION_LABEL, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    finally:
        plt.close(fig)
