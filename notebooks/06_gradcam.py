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
# # F-cam: Grad-CAM of VPT-deep and VAPT (Sun397, SVHN, Resisc45, Clevr-count, KITTI)
#
# The authors' setup (PROTOCOL.md §5): target layer = the norm before attention in the last block
# (`model.backbone.blocks[-1].norm1`); a reshape that drops the prefix and prompt tokens and lays the
# patch tokens on their grid; eigen-smoothing and augmentation smoothing on; target = the predicted
# class. Models are rebuilt from each run's `trainable.pt`. `MODE = "smoke"` uses the digits 6-9 runs
# of the T1 smoke experiment.

# %% tags=["parameters"]
MODE = "smoke"  # "smoke" (CPU, minutes) or "full" (the paper's runs, read from RUNS)
RUNS = "../runs"  # the runs folder seen from notebooks/ (the commands below run from the repository root)
DATA_ROOT = "<DATA>"
IMAGES = 5

# %%
from IPython.display import Image, display

from vapt import figures, smoke

# %%
if MODE == "full":
    print("\n".join(figures.reproduce_commands("F-cam", data_root=DATA_ROOT)))
    runs, out, note = RUNS, "../figures", None
else:
    runs, out, note = smoke.main_results(), smoke.cache_dir() / "figures", smoke.SMOKE_LABEL
paths = figures.gradcam_from_runs(runs, out, images=IMAGES, note=note)
if paths:
    display(Image(filename=str(paths[0])))
