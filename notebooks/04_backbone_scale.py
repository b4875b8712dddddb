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
# # F-scale: VPT-deep vs VAPT for ViT-B/16, ViT-L/16 and ViT-H/14 (supervised ImageNet-21k)
#
# The paper does not name the FGVC task of this figure (CUB-200-2011 is the likeliest); its bars are
# read off the figure (+-0.2). `MODE = "smoke"` has only the tiny ViT, so the smoke panel shows one
# backbone: it checks the code path, not the scaling claim.

# %% tags=["parameters"]
MODE = "smoke"  # "smoke" (CPU, minutes) or "full" (the paper's runs, read from RUNS)
RUNS = "../runs"  # the runs folder seen from notebooks/ (the commands below run from the repository root)
DATA_ROOT = "<DATA>"

# %%
from IPython.display import Image, display

from vapt.paper import catalog
from vapt.report import figures, paper, tables

# %%
setup = catalog.prepare("F-scale", MODE, runs=RUNS, data_root=DATA_ROOT)
tasks = tables.main_tasks(tables.load_records(setup.path))
tables.task_summary(tasks[tasks["method"].isin(["vpt_deep", "vapt"])])

# %%
fig = figures.scale_figure(tasks, paper.paper_results(), source=setup.source)
display(Image(filename=str(figures.save_figure(fig, setup.out, "backbone_scale")[0])))
