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
# # T1: main results (VTAB-1K and FGVC, ViT-B/16 supervised ImageNet-21k)
#
# The paper's main table: per-task top-1 on the 19 VTAB-1K tasks and 5 FGVC datasets, group means,
# [k] = tasks of a group where a method beats full fine-tuning, Tuned/Total = trainable / backbone
# parameters (%), Mean Total = mean over the 19 VTAB tasks. Paper rows come from
# `vapt/resources/paper_results.csv` (each value with its source and status; values that are not
# public stay blank); our rows come from the result records of `python -m vapt sweep`.
#
# `MODE = "full"` prints the GPU commands and reads the runs in `RUNS`. `MODE = "smoke"` runs the
# same code path on CPU in a few minutes: a tiny ViT pre-trained here on digits 0-5, adapted to digits
# 6-9 (a custom task in the VTAB-1K layout, shown under "Other tasks"). Smoke numbers are real but
# toy-scale and say nothing about the paper's claims.

# %% tags=["parameters"]
MODE = "smoke"  # "smoke" (CPU, minutes) or "full" (the paper's runs, read from RUNS)
RUNS = "../runs"  # the runs folder seen from notebooks/ (the commands below run from the repository root)
DATA_ROOT = "<DATA>"

# %%
from IPython.display import Markdown, display

from vapt.paper import catalog
from vapt.report import tables as results

# %%
setup = catalog.prepare("T1", MODE, runs=RUNS, data_root=DATA_ROOT)
tables = results.build_tables(results.load_records(setup.path))

# %% [markdown]
# ## Per-task top-1 (mean ± std over seeds, setting chosen on validation) and group means

# %%
display(Markdown(results.to_markdown(results.task_summary(tables.tasks))))
display(Markdown(results.to_markdown(results.group_summary(tables.groups))))

# %% [markdown]
# ## Table 1 in the paper's format (paper rows from the CSV, ours marked)

# %%
display(Markdown(results.to_markdown(results.format_table(tables.t1))))

# %% [markdown]
# ## Paper vs ours, number by number (diff = ours - paper; blank where the paper's value is not public)

# %%
tables.comparison.dropna(subset=["ours"])
