"""Grad-CAM on trained prompted models: which image regions drive the predicted class (no drawing here).

Setup as in the paper: the target layer is the norm before attention in the last block, prefix and
prompt tokens are dropped before the maps are reshaped to the patch grid, and eigen-smoothing and
augmentation smoothing are on. `gradcam_from_runs` finds finished VPT and VAPT runs, rebuilds their
trained models (`vapt.report.runs`, shared with the MoE lens), and returns inputs and maps for
`vapt.report.figures.gradcam_figure`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vapt.config import prompted_methods
from vapt.data import parse_data
from vapt.report.paper import method_label
from vapt.report.runs import best_runs, load_run_model, model_runs, run_config, run_split

GRADCAM_TASKS: tuple[str, ...] = ("sun397", "svhn", "resisc45", "clevr_count", "kitti")


@dataclass
class GradcamData:
    """Images (N, H, W, 3) in [0, 1], one map stack (N, H, W) per method label, and a title per image."""

    images: np.ndarray
    maps: dict[str, np.ndarray]
    titles: list[str]


def vit_reshape_transform(model: Any) -> Callable:
    """Grad-CAM reshape for a PromptedViT: drop prefix and prompt tokens, reshape to (B, C, H, W)."""
    height, width = model.grid_size

    def reshape(tokens: Any) -> Any:
        patches = tokens[:, -height * width:, :]
        return patches.reshape(tokens.shape[0], height, width, tokens.shape[2]).permute(0, 3, 1, 2)

    return reshape


def gradcam_maps(model: Any, images: Any, eigen_smooth: bool = True, aug_smooth: bool = True) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] of the predicted class (the paper's setup).

    Target layer: the norm before attention in the last block; prefix and prompt tokens dropped;
    eigen-smoothing and augmentation smoothing on.
    """
    from pytorch_grad_cam import GradCAM

    model.eval()
    with GradCAM(model=model, target_layers=[model.backbone.blocks[-1].norm1],
                 reshape_transform=vit_reshape_transform(model)) as cam:
        maps = cam(input_tensor=images, targets=None, eigen_smooth=eigen_smooth, aug_smooth=aug_smooth)
    return np.asarray(maps, dtype=np.float32)


def gradcam_from_runs(runs: str | os.PathLike, images: int = 5,
                      methods: Sequence[str] | None = None) -> GradcamData | None:
    """Inputs and Grad-CAM maps of finished runs, for the grid of an input row and one row per method.

    `methods` defaults to the registered prompted methods that have finished runs (the paper's figure
    shows VPT-deep and VAPT).

    Columns are one test image per task of the paper's grid (Sun397, SVHN, Resisc45, Clevr-count, KITTI)
    where at least two of them have VPT and VAPT runs on one backbone; otherwise `images` test images
    of the one task that has both. None when no task has finished runs of every method.
    """
    if methods is None:
        ran = {m for by_method in best_runs(runs, prompted_methods()).values() for m in by_method}
        methods = [m for m in prompted_methods() if m in ran]
    found = model_runs(runs, methods)
    if not found:
        return None
    by_backbone: dict[str, list[tuple[str, str]]] = {}
    for backbone, data in found:
        if data.split("/", 1)[-1] in GRADCAM_TASKS:
            by_backbone.setdefault(backbone, []).append((backbone, data))
    grid = max(by_backbone.values(), key=len, default=[])
    if len(grid) >= 2:
        order = {t: i for i, t in enumerate(GRADCAM_TASKS)}
        keys = sorted(grid, key=lambda k: order[k[1].split("/", 1)[-1]])[:images]
        per_key = 1
    else:
        keys = [min(found, key=lambda k: (k[1].split("/", 1)[-1] not in GRADCAM_TASKS, k))]
        per_key = images
    pixels, titles, maps = [], [], {method_label(m): [] for m in methods}
    for key in keys:
        image, inputs, names = load_run_images(found[key][methods[0]], count=per_key)
        pixels.append(image)
        titles += names
        for method in methods:
            maps[method_label(method)].append(gradcam_maps(load_run_model(found[key][method]), inputs))
    stacked = {label: np.concatenate(parts) for label, parts in maps.items()}
    return GradcamData(np.concatenate(pixels), stacked, titles)


def load_run_images(run_dir: str | os.PathLike, count: int = 5, split: str = "test") -> tuple[
        np.ndarray, Any, list[str]]:
    """`count` test images of a run's dataset, one per class where possible: pixels, model inputs, titles.

    Images are resized as the run's were (its recorded `resize`; PIL for records that predate the option).
    """
    import torch
    from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    config = run_config(run_dir)
    spec = parse_data(config.data, config.num_classes)
    dataset = run_split(config, split, image_size=config.image_size or 224)
    targets = dataset.targets
    chosen: list[int] = []
    for label in dict.fromkeys(targets):
        chosen.append(targets.index(label))
        if len(chosen) == count:
            break
    chosen += [i for i in range(len(targets)) if i not in chosen][: count - len(chosen)]
    inputs = torch.stack([dataset[i][0] for i in chosen])
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    pixels = (inputs * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return pixels, inputs, [f"{spec.task}: class {targets[i]}" for i in chosen]


__all__ = [
    "GRADCAM_TASKS",
    "GradcamData",
    "gradcam_from_runs",
    "gradcam_maps",
    "load_run_images",
    "vit_reshape_transform",
]
