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
# The authors' setup (docs/protocol.md): target layer = the norm before attention in the last block
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

from vapt.paper import catalog
from vapt.report import figures, gradcam

# %%
setup = catalog.prepare("F-cam", MODE, runs=RUNS, data_root=DATA_ROOT)
data = gradcam.gradcam_from_runs(setup.path, images=IMAGES)
if data is None:
    print(f"no finished VPT-deep and VAPT runs with trainable.pt on a common task under {setup.path}")
else:
    fig = figures.gradcam_figure(data.images, data.maps, data.titles, source=setup.source)
    display(Image(filename=str(figures.save_figure(fig, setup.out, "gradcam")[0])))
