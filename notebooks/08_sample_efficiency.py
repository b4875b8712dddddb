# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # TH: estimation rates of prompt experts (simulation)
#
# Log-log slopes of the estimation error against the sample size n, with bootstrap confidence
# intervals, beside the rates the theory predicts. Each prediction has a kind: `rate` (two-sided test),
# `bound` (an upper bound: a faster slope meets it) or `none` (reported, not judged); `separates` says
# whether a row tells -1/2 from -1/4, and `claim` names the statement it tests; `docs/theory.md`
# explains how to read the verdicts. `MODE = "full"` reads the full run
# (`python -m theory.sample_efficiency --full`; its committed outputs are in `figures/theory_full/`);
# `MODE = "smoke"` runs the simulation on a reduced grid
# (a few seconds), which is too small to test the rates.

# %% tags=["parameters"]
MODE = "smoke"  # "smoke" (seconds) or "full" (reads THEORY)
THEORY = "../figures/theory_full"  # the committed full run, or the --out folder of your own
FIGURES = "../figures"  # where the figure is written in full mode

# %%
import pandas as pd
from IPython.display import Image, display

from vapt.paper import catalog
from vapt.report import figures

# %%
setup = catalog.prepare("TH", MODE, runs=THEORY, out=FIGURES)
summary = pd.read_csv(setup.path / "summary.csv")
columns = ["family", "fitted_atoms", "regime", "metric", "kind", "slope", "median_slope", "ci_low", "ci_high",
           "predicted", "verdict", "separates", "claim", "degenerate_share", "boundary_share"]
summary[[c for c in columns if c in summary.columns]]  # runs written before kinds existed lack some columns

# %%
figure = figures.theory_figure(summary, source=setup.source if setup.mode == "smoke" else None)
paths = figures.save_figure(figure, setup.out, "theory")
display(Image(filename=str(paths[0])))
