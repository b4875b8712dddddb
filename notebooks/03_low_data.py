# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # F-low: accuracy vs training fraction (Stanford Dogs, ViT-B/16), VAPT vs VPT-deep
#
# Fractions 1 %, 10 %, 30 %, 50 % and 100 % of the training split, drawn per class from a seed. The
# paper's curve (read off its figure, +-0.4) is drawn in its own panel, and on ours when ours is the
# same setting. `MODE = "smoke"` uses fractions of the digits 6-9 task in the FGVC layout, at a fixed
# learning rate (no grid).

# %% tags=["parameters"]
MODE = "smoke"  # "smoke" (CPU, minutes) or "full" (the paper's runs, read from RUNS)
RUNS = "../runs"  # the runs folder seen from notebooks/ (the commands below run from the repository root)
DATA_ROOT = "<DATA>"

# %%
from IPython.display import Image, display

from vapt.paper import catalog
from vapt.report import figures, paper, tables

# %%
setup = catalog.prepare("F-low", MODE, runs=RUNS, data_root=DATA_ROOT)
tasks = tables.main_tasks(tables.load_records(setup.path))
tables.task_summary(tasks)

# %%
fig = figures.low_data_figure(tasks, paper.paper_results(), source=setup.source)
display(Image(filename=str(figures.save_figure(fig, setup.out, "low_data")[0])))
