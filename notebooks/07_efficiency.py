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
# # E: efficiency (trainable parameters, FLOPs, memory, step time, throughput)
#
# From `python -m vapt bench` (one worker process per method; FLOPs by
# `torch.utils.flop_counter`). The paper reports VAPT at about +0.6 % FLOPs over VPT-deep (secondary
# source). Below, the trainable-parameter counts of ViT-B/16 are checked against the formula in docs/method.md
# (VAPT: 2638 N_p + 29228; VPT-deep: 9216 N_p, heads excluded). `MODE = "smoke"` benchmarks the tiny
# ViT on this CPU.

# %% tags=["parameters"]
MODE = "smoke"  # "smoke" (CPU, minutes) or "full" (reads BENCH)
BENCH = "../runs/bench.csv"

# %%
import pandas as pd
import torch
from IPython.display import Image, display

import vapt
from vapt.paper import catalog
from vapt.report import figures, paper

# %%
setup = catalog.prepare("E", MODE, runs=BENCH)
table = pd.read_csv(setup.path)
table

# %%
fig = figures.efficiency_figure(table, paper.paper_results(), source=setup.source)
display(Image(filename=str(figures.save_figure(fig, setup.out, "efficiency")[0])))

# %%
with torch.device("meta"):
    counts = {(m, n): vapt.count_parameters(vapt.create_model("vit_b16_in21k", m, 100, num_tokens=n))["prompt"]
              for m in ("vpt_deep", "vapt") for n in (10, 50, 100)}
pd.DataFrame([{"method": m, "Np": n, "prompt params": c, "formula": 9216 * n if m == "vpt_deep" else 2638 * n + 29228}
              for (m, n), c in counts.items()])
