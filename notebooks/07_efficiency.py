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
# source). Below, the prompt parameters of ViT-B/16 are counted for every registered prompted method
# (heads excluded; `per_prompt` is the count added by each prompt, to read beside docs/method.md's table).
# `MODE = "smoke"` benchmarks the tiny ViT on this CPU.

# %% tags=["parameters"]
MODE = "smoke"  # "smoke" (CPU, minutes) or "full" (reads BENCH)
BENCH = "../runs/bench.csv"

# %%
import pandas as pd
import torch
from IPython.display import Image, display

import vapt
from vapt.config import prompted_methods
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
    counts = [{"method": m, "Np": n, "prompt params": vapt.count_parameters(
                   vapt.create_model("vit_b16_in21k", m, 100, num_tokens=n))["prompt"]}
              for m in prompted_methods() for n in (10, 50, 100)]
counts = pd.DataFrame(counts)
counts.assign(per_prompt=counts.groupby("method")["prompt params"].diff() / counts.groupby("method")["Np"].diff())
