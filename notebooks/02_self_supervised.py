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
# # T2: self-supervised backbones (MAE and MoCo v3 ViT-B/16), VTAB-1K group means
#
# VPT-shallow, VPT-deep, GateVPT (paper only; not implemented here) and VAPT. Paper rows come from the
# bundled CSV with their status (several values are secondary sources). `MODE = "smoke"` pre-trains the
# tiny ViT **without labels** (predicting image rotations of digits 0-5), reloads it from the file, and
# adapts it to digits 6-9 with the prompt methods; those columns are marked `ours: vit_test`. At this
# scale the rotation-pretrained features can transfer close to chance (4 classes: 25 %); the smoke run
# checks the code path, not the paper's claim.

# %% tags=["parameters"]
MODE = "smoke"  # "smoke" (CPU, minutes) or "full" (the paper's runs, read from RUNS)
RUNS = "../runs"  # the runs folder seen from notebooks/ (the commands below run from the repository root)
DATA_ROOT = "<DATA>"

# %%
from IPython.display import Markdown, display

from vapt.paper import catalog
from vapt.report import tables as results

# %%
setup = catalog.prepare("T2", MODE, runs=RUNS, data_root=DATA_ROOT)
tables = results.build_tables(results.load_records(setup.path))

# %%
display(Markdown(results.to_markdown(results.format_table(tables.t2, digits={"Natural": 2, "Specialized": 2,
                                                                             "Structured": 2}))))

# %%
display(Markdown(results.to_markdown(results.task_summary(tables.tasks))))
