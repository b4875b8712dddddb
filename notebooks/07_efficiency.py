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
# source). Below, the trainable-parameter counts of ViT-B/16 are checked against METHOD.md's formula
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
from vapt import figures, results, smoke

# %%
if MODE == "full":
    print("\n".join(figures.reproduce_commands("E")))
    bench, out, note = BENCH, "../figures", None
else:
    bench, out, note = smoke.efficiency(), smoke.cache_dir() / "figures", smoke.BENCH_LABEL
table = pd.read_csv(bench)
table

# %%
paths = figures.efficiency_figure(table, results.paper_results(), out, note=note)
if paths:
    display(Image(filename=str(paths[0])))

# %%
with torch.device("meta"):
    counts = {(m, n): vapt.count_parameters(vapt.create_model("vit_b16_in21k", m, 100, num_tokens=n))["prompt"]
              for m in ("vpt_deep", "vapt") for n in (10, 50, 100)}
pd.DataFrame([{"method": m, "Np": n, "prompt params": c, "formula": 9216 * n if m == "vpt_deep" else 2638 * n + 29228}
              for (m, n), c in counts.items()])
