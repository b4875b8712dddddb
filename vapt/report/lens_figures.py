"""Figures of the MoE lens: each function takes lens tables and returns a matplotlib figure (nothing is saved).

Tables carry the run columns of `vapt.report.lens_command` (`run`: a readable label per model, `method`,
`backbone`, `data`, `split`, `images`) beside the columns of `vapt.report.lens`. The titles say what
was measured (backbone, task, split, images); `source` (`vapt.report.figures.DataSource`) is written
under the figure, and a task carries a paper dataset's title only when `source` says it is the paper's
data. Runs are drawn in their method's colour (`vapt.report.paper.method_colour`).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from vapt.report.figures import DataSource, _finish, task_title  # noqa: E402
from vapt.report.paper import method_colour  # noqa: E402

QUERY_TITLES = {"cls": "CLS query", "patch": "patch queries"}


def _runs(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame["run"]))


def _palette(frame: pd.DataFrame) -> dict[str, object]:
    """Run -> colour: its method's colour when every run has its own method, else one colour per run."""
    runs = _runs(frame)
    methods = frame.drop_duplicates("run").set_index("run")["method"] if "method" in frame else None
    if methods is not None and methods.nunique() == len(runs):
        return {run: method_colour(str(methods[run])) for run in runs}
    return dict(zip(runs, sns.color_palette("deep", n_colors=max(len(runs), 1)), strict=False))


def describe_runs(table: pd.DataFrame, source: DataSource | None = None) -> str:
    """What the numbers were measured on, for titles: backbone(s), task(s), split and image count.

    Tasks are named by `vapt.report.figures.task_title`: a paper dataset's title only when `source`
    says the data is the paper's.
    """
    def join(values) -> str:
        return ", ".join(str(v) for v in dict.fromkeys(values))

    tasks = join(task_title(str(data).split("/", 1)[-1], source) for data in table["data"])
    return f"{join(table['backbone'])} on {tasks} ({join(table['split'])} split, {join(table['images'])} images)"


def prompt_mass_figure(gates: pd.DataFrame, source: DataSource | None = None) -> plt.Figure:
    """Layer x head heatmaps of the mean gate mass on prompt keys: one column per run, one row per query kind."""
    runs = _runs(gates)
    kinds = [k for k in QUERY_TITLES if k in set(gates["query"])]
    heads, layers = gates["head"].nunique(), gates["layer"].nunique()
    vmax = max(float(gates["prompt_mass"].max()), 1e-6)
    size = (1.0 + max(2.6, 0.45 * heads) * len(runs), 0.8 + max(2.2, 0.32 * layers) * len(kinds))
    fig, axes = plt.subplots(len(kinds), len(runs), squeeze=False, sharey=True, figsize=size)
    annotate = heads * layers <= 64
    for col, run in enumerate(runs):
        for row, kind in enumerate(kinds):
            part = gates[(gates["run"] == run) & (gates["query"] == kind)]
            grid = part.pivot_table(index="layer", columns="head", values="prompt_mass", aggfunc="mean")
            ax = axes[row, col]
            sns.heatmap(grid, ax=ax, vmin=0.0, vmax=vmax, cmap="rocket_r", annot=annotate, fmt=".2f",
                        annot_kws={"fontsize": 6}, cbar=col == len(runs) - 1,
                        cbar_kws={"label": "prompt mass"} if col == len(runs) - 1 else None)
            ax.set_title(f"{run}\n{QUERY_TITLES[kind]}", fontsize=9)
            ax.set_xlabel("head")
            ax.set_ylabel("layer" if col == 0 else "")
    fig.suptitle(f"Gate mass on prompt keys per layer and head: {describe_runs(gates, source)}", fontsize=10)
    return _finish(fig, source)


def dependence_figure(dependence: pd.DataFrame, source: DataSource | None = None) -> plt.Figure:
    """Input-dependent share of the prompt tokens (left) and of the prompt experts' values (right) per layer."""
    runs = _runs(dependence)
    palette = _palette(dependence)
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6), sharey=True)
    for ax, column, title in zip(axes, ("dependence", "value_dependence"),
                                 ("prompt tokens P(x)", "prompt experts' values W_V P(x)"), strict=True):
        for run in runs:
            part = dependence[dependence["run"] == run].sort_values("layer")
            ax.plot(part["layer"], part[column], marker="o", color=palette[run], label=run)
            undefined = part[part[column].isna()]
            if len(undefined):
                ax.scatter(undefined["layer"], np.zeros(len(undefined)), marker="x", color=palette[run])
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("layer (block index)")
        ax.set_xticks(sorted(dependence["layer"].unique()))
        ax.set_yscale("symlog", linthresh=1e-3)  # static prompts (exactly 0) and small shares both visible
    axes[0].set_ylabel("E‖P(x) − E P‖² / E‖P(x)‖² (symlog)")
    axes[0].legend(frameon=False, fontsize=8)
    fig.suptitle(f"Input dependence of the prompts per layer: {describe_runs(dependence, source)}\n"
                 f"(x: prompts all zero, share undefined)", fontsize=10)
    return _finish(fig, source)


def effective_prompts_figure(gates: pd.DataFrame, source: DataSource | None = None) -> plt.Figure:
    """Effective number of prompts (exp entropy of the per-prompt gate mass), mean over heads, per layer."""
    runs = _runs(gates)
    palette = _palette(gates)
    kinds = [k for k in QUERY_TITLES if k in set(gates["query"])]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.8 * len(kinds), 3.6), sharey=True, squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for run in runs:
            part = gates[(gates["run"] == run) & (gates["query"] == kind)]
            mean = part.groupby("layer")["effective_prompts"].agg(["mean", "min", "max"]).reset_index()
            ax.plot(mean["layer"], mean["mean"], marker="o", color=palette[run], label=run)
            ax.fill_between(mean["layer"], mean["min"], mean["max"], color=palette[run], alpha=0.15)
            if "num_prompts" in part and part["num_prompts"].max() > 0:
                ax.axhline(float(part["num_prompts"].max()), color=palette[run], linestyle=":", linewidth=1)
        ax.set_title(QUERY_TITLES[kind], fontsize=9)
        ax.set_xlabel("layer (block index)")
        ax.set_xticks(sorted(gates["layer"].unique()))
    axes[0, 0].set_ylabel("effective number of prompts")
    top = float(gates["num_prompts"].max()) if "num_prompts" in gates else float(gates["effective_prompts"].max())
    axes[0, 0].set_ylim(0, max(top, 1.0) * 1.08)
    axes[0, 0].legend(frameon=False, fontsize=8)
    fig.suptitle(f"How many prompt experts share the prompt mass: {describe_runs(gates, source)}\n(mean over heads; "
                 f"band: min-max over heads; dotted: prompts available)", fontsize=10)
    return _finish(fig, source)


def expressiveness_figure(summary: pd.DataFrame, dependence: pd.DataFrame, theory_source: str,
                          source: DataSource | None = None) -> plt.Figure:
    """Theory beside the lens: misspecified-fit slopes (simulation, left) and measured input dependence (right).

    `summary` is a theory summary table (`python -m theory.sample_efficiency`); its `misspecified` rows
    fit VPT (static experts) and VAPT to data drawn from a VAPT model; `theory_source` names the
    simulation run in the left title, `source` is the data source of the trained models (right).
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 3.8), gridspec_kw={"width_ratios": [1, 1.3]})
    rows = summary[(summary["regime"] == "misspecified") & (summary["metric"] == "L2")].copy()
    labels = [f"{f} (L={a}) fitted\nto {t} data" for f, a, t in zip(rows["family"], rows["fitted_atoms"],
                                                                      rows["truth"], strict=True)]
    x = np.arange(len(rows))
    low = (rows["slope"] - rows["ci_low"]).clip(lower=0)
    high = (rows["ci_high"] - rows["slope"]).clip(lower=0)
    left.errorbar(x, rows["slope"], yerr=[low, high], fmt="o", capsize=3, color="#1f77b4",
                  label="estimated slope (95 % CI)")
    left.scatter(x, rows["predicted"], marker="_", s=300, color="#d62728", linewidths=2, label="predicted")
    left.axhline(0, color="0.6", linewidth=0.8)
    left.set_xticks(x, labels, fontsize=7)
    left.set_ylabel("log-log slope of L2 error vs n")
    left.set_title(f"Theory, {theory_source}:\nstatic experts cannot fit input-adaptive ones (slope 0)", fontsize=9)
    left.legend(frameon=False, fontsize=7)
    runs = _runs(dependence)
    palette = _palette(dependence)
    for run in runs:
        part = dependence[dependence["run"] == run].sort_values("layer")
        right.plot(part["layer"], part["value_dependence"], marker="o", color=palette[run], label=run)
    right.set_xticks(sorted(dependence["layer"].unique()))
    right.set_xlabel("layer (block index)")
    right.set_ylabel("input-dependent share of prompt values")
    right.set_title(f"Trained models, {describe_runs(dependence, source)}:\nhow input-dependent the prompt experts "
                    f"are", fontsize=9)
    right.legend(frameon=False, fontsize=8)
    return _finish(fig, source)


__all__ = [
    "dependence_figure", "describe_runs", "effective_prompts_figure", "expressiveness_figure", "prompt_mass_figure",
]
