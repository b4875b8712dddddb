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
# # The MoE lens: prompt experts inside trained VPT and VAPT models, beside the theory
#
# Every attention head mixes experts (the value vectors of its keys) with softmax gates; prompts add
# experts. For VPT-shallow, VPT-deep and VAPT models trained by `python -m vapt train` / `sweep`, the
# lens (`vapt.gate_mass`, `vapt.prompt_dependence`, `python -m vapt lens`) shows per layer and head
# how much gate mass goes to the prompt experts, how many prompts share it, and how much the prompt
# tokens and their values change with the input image. Beside it: the theory simulation's
# expressiveness result, read from the committed full run (static prompt experts fitted to data from
# input-adaptive ones do not improve with more samples).
#
# `MODE = "smoke"` uses the digits 6-9 runs of the T1 smoke experiment (a tiny ViT on CPU; made or
# reused by `python -m vapt smoke`); `MODE = "full"` prints the commands and reads the T1 runs of
# `TASKS` under `RUNS` (ViT-B/16, ImageNet-21k). The lens itself is described in docs/lens.md.

# %% tags=["parameters"]
MODE = "smoke"  # "smoke" (CPU, minutes) or "full" (the T1 runs under RUNS)
RUNS = "../runs"  # the runs folder seen from notebooks/
DATA_ROOT = "<DATA>"
TASKS = ["cifar", "dtd", "svhn"]  # VTAB-1K tasks of the T1 runs looked at in full mode
BACKBONE = "vit_b16_in21k"
IMAGES = 256
THEORY = "../figures/theory_full/summary.csv"  # the committed full theory run (not re-run here)
FIGURES = "../figures/lens"  # where lens.csv and the figures go in full mode (one folder per dataset)

# %%
import pandas as pd
from IPython.display import Image, display

from vapt.paper import catalog
from vapt.report import lens_command, lens_figures
from vapt.report.figures import save_figure

# %%
setup = catalog.prepare("lens", MODE, runs=RUNS, data_root=DATA_ROOT, out=FIGURES)
if setup.mode == "full":
    data_root = DATA_ROOT
    found = lens_command.find_lens_runs(setup.path, tasks=TASKS, backbone=BACKBONE)
else:  # the smoke runs read the data root they were trained on
    data_root = None
    found = lens_command.find_lens_runs(setup.path)
for data, folders in found.items():
    flags = " ".join(f"--run {folder}" for folder in folders)
    root = f" --data-root {data_root}" if data_root else ""
    print(f"python -m vapt lens {flags}{root} --images {IMAGES} --out {setup.out / data.replace('/', '-')}")

# %%
tables = {}
for data, folders in found.items():
    table, paths = lens_command.lens_from_runs(folders, data_root, setup.out / data.replace("/", "-"),
                                               images=IMAGES, source=setup.source)
    tables[data] = table
    for path in paths:
        if path.suffix == ".png":
            display(Image(filename=str(path)))

# %% [markdown]
# Per layer: mean prompt mass of the patch queries (over heads), effective number of prompts (by gate
# mass), the input-dependent share of the prompt tokens and of their values, and how many distinct prompts
# the block holds (1 when its prompts are copies of each other, as VAPT's adaptive prompts stay: see
# docs/lens.md).

# %%
lens = pd.concat(tables.values(), ignore_index=True) if tables else pd.DataFrame()
if not lens.empty:
    patch = lens[lens["query"] == "patch"]
    per_layer = patch.groupby(["data", "run", "layer"], sort=False).agg(
        prompt_mass=("prompt_mass", "mean"), effective_prompts=("effective_prompts", "mean"),
        dependence=("dependence", "first"), value_dependence=("value_dependence", "first"),
        distinct_prompts=("distinct_prompts", "first"), prompt_spread=("prompt_spread", "first"))
    display(per_layer.round(4))

# %% [markdown]
# The theory beside the models: the simulation's misspecified fits (left; slope 0 = more samples do
# not help, the model family cannot express the truth) and the measured input dependence of the prompt
# experts' values (right).

# %%
summary = pd.read_csv(THEORY)
display(summary[summary["regime"] == "misspecified"][["family", "fitted_atoms", "truth", "metric", "slope", "ci_low",
                                                      "ci_high", "predicted", "verdict"]])
for data, table in tables.items():
    figure = lens_figures.expressiveness_figure(summary, lens_command.dependence_rows(table),
                                                "committed full simulation run", source=setup.source)
    paths = save_figure(figure, setup.out / data.replace("/", "-"), "lens_vs_theory")
    display(Image(filename=str(paths[0])))
