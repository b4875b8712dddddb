"""The smoke transfer problem: a tiny ViT pre-trained on digits 0-5, and digits 6-9 as a new task.

Pre-training uses scikit-learn's bundled handwritten digits (supervised labels, or self-supervised
rotation prediction); the held-out digits 6-9 are written as a custom task in the VTAB-1K and FGVC
folder layouts, so the real loaders, training loop and sweep run on them unchanged.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PRETRAIN_CLASSES: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
TRANSFER_CLASSES: tuple[int, ...] = (6, 7, 8, 9)
OBJECTIVES: tuple[str, ...] = ("supervised", "rotation")
TASK = "digits_6to9"
# images per class in each split of the transfer task (train800val200 = train800 + val200).
VTAB_PER_CLASS: dict[str, int] = {"train800": 20, "val200": 5, "test": 25}
FGVC_PER_CLASS: dict[str, int] = {"train": 20, "val": 5, "test": 25}
THREADS_ENV = "VAPT_SMOKE_THREADS"


def use_threads() -> int:
    """Limit torch to $VAPT_SMOKE_THREADS CPU threads (default 1: the tiny model gains nothing from more)."""
    import torch

    threads = int(os.environ.get(THREADS_ENV, "1"))
    torch.set_num_threads(max(1, threads))
    return threads



def _digits(classes: Sequence[int], image_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    from vapt.data.fixtures import digits_images

    images, labels = digits_images(image_size)
    keep = np.isin(labels, classes)
    return images[keep], labels[keep]


def _normalize(images: np.ndarray) -> Any:
    """uint8 (N, H, W, 3) -> the VTAB preprocessing's tensors (ToTensor + ImageNet normalization)."""
    import torch
    from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _pretext(images: Any, labels: Any, objective: str, generator: Any) -> tuple[Any, Any]:
    """Inputs and targets of one batch: the digit label, or the rotation (0/90/180/270°) of the image."""
    import torch

    if objective == "supervised":
        return images, labels
    turns = torch.randint(0, 4, (images.shape[0],), generator=generator)
    rotated = torch.stack([torch.rot90(im, int(k), dims=(1, 2)) for im, k in zip(images, turns, strict=True)])
    return rotated, turns


def pretrain(path: Path, objective: str, settings: Any) -> Path:
    """Pre-train the tiny ViT on digits 0-5 (`supervised` labels or `rotation` prediction) and save it to `path`.

    A JSON file beside it records the held-out pre-training accuracy. `settings` is a `SmokeSettings`.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    import torch
    from torch import nn

    from vapt.io import save_torch_atomic, write_json_atomic
    from vapt.models.backbones import create_backbone

    use_threads()
    started = time.perf_counter()
    torch.manual_seed(settings.pretrain_seed)
    generator = torch.Generator().manual_seed(settings.pretrain_seed)
    images, labels = _digits(PRETRAIN_CLASSES)
    order = np.random.default_rng(settings.pretrain_seed).permutation(len(labels))
    held_out, train_idx = order[: len(order) // 10], order[len(order) // 10:]
    x, y = _normalize(images), torch.from_numpy(labels)
    backbone, _ = create_backbone("vit_test")
    classes = len(PRETRAIN_CLASSES) if objective == "supervised" else 4
    model = nn.Sequential(backbone, nn.Linear(backbone.num_features, classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.pretrain_lr, weight_decay=0.05)
    batch_size = settings.pretrain_batch_size
    steps = settings.pretrain_epochs * int(np.ceil(len(train_idx) / batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.pretrain_lr, total_steps=steps, pct_start=0.15)
    train_idx_t = torch.from_numpy(train_idx)
    for _ in range(settings.pretrain_epochs):
        model.train()
        for batch in train_idx_t[torch.randperm(len(train_idx_t), generator=generator)].split(batch_size):
            inputs, targets = _pretext(x[batch], y[batch], objective, generator)
            loss = nn.functional.cross_entropy(model(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        inputs, targets = _pretext(x[held_out], y[held_out], objective, torch.Generator().manual_seed(1))
        accuracy = 100.0 * float((model(inputs).argmax(1) == targets).float().mean())
    save_torch_atomic(path, backbone.state_dict())
    write_json_atomic(path.with_suffix(".json"), {
        "objective": objective, "classes": list(PRETRAIN_CLASSES), "held_out_top1": accuracy,
        "train_images": len(train_idx), "held_out_images": len(held_out), "epochs": settings.pretrain_epochs,
        "wall_time_s": time.perf_counter() - started,
    })
    print(f"pre-trained vit_test on digits 0-5 ({objective}): held-out top-1 {accuracy:.1f} % -> {path}")
    return path


def pretraining_summary(path: str | os.PathLike) -> dict[str, Any]:
    """The record written beside a pre-trained checkpoint (objective, held-out accuracy, time)."""
    return json.loads(Path(path).with_suffix(".json").read_text(encoding="utf-8"))



def write_transfer_data(root: Path, settings: Any) -> Path:
    """A data root holding digits 6-9 (labels 0-3) as `vtab-1k/digits_6to9/` and FGVC `digits_6to9/`."""
    from vapt.data.fixtures import write_fgvc_dataset, write_vtab_task
    from vapt.io import write_json_atomic

    marker = root / "complete.json"
    if marker.is_file():
        return root
    images, labels = _digits(TRANSFER_CLASSES)
    labels = labels - min(TRANSFER_CLASSES)
    rng = np.random.default_rng(settings.pretrain_seed)
    pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in range(len(TRANSFER_CLASSES))}

    def draw(per_class: dict[str, int]) -> dict[str, tuple[np.ndarray, list[int]]]:
        splits, taken = {}, {c: 0 for c in pools}
        for split, count in per_class.items():
            chosen = []
            for c in pools:
                chosen += pools[c][taken[c]: taken[c] + count]
                taken[c] += count
            splits[split] = (images[chosen], labels[chosen].tolist())
        return splits

    write_vtab_task(root, TASK, draw(VTAB_PER_CLASS))
    write_fgvc_dataset(root, TASK, draw(FGVC_PER_CLASS))
    write_json_atomic(marker, {"task": TASK, "classes": list(TRANSFER_CLASSES), "vtab1k": VTAB_PER_CLASS,
                               "fgvc": FGVC_PER_CLASS})
    return root


