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
# # Ablations: prompt length N_p, kernel size K, and VAPT without its convolution or feature projector
#
# The paper's ablation numbers are not public, so only ours are drawn. `MODE = "smoke"` runs VAPT on
# the digits 6-9 task at a fixed learning rate with N_p in {1, 5, 10}, K in {2, 3}, and without the
# convolution or the feature projector.

# %% tags=["parameters"]
MODE = "smoke"  # "smoke" (CPU, minutes) or "full" (the paper's runs, read from RUNS)
RUNS = "../runs"  # the runs folder seen from notebooks/ (the commands below run from the repository root)
DATA_ROOT = "<DATA>"

# %%
from IPython.display import Image, display

from vapt.paper import catalog
from vapt.report import figures, tables

# %%
setup = catalog.prepare("A", MODE, runs=RUNS, data_root=DATA_ROOT)
tasks = tables.ablation_tasks(tables.load_records(setup.path))
tables.task_summary(tasks)

# %%
fig = figures.ablation_figure(tasks, source=setup.source)
display(Image(filename=str(figures.save_figure(fig, setup.out, "ablations")[0])))
