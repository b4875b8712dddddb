"""A run's config -> its model and loaders, built in one place for `train`, the lens, Grad-CAM and `bench --loader`.

The data path of a run reads: `TrainConfig` -> `build_run` (model + loaders) -> `vapt.run.train.train`
-> `RunRecord.write`. The config is resolved once (resize mode, splits, warm-up) and the run id is
computed once, by `train`. The pretrained-weights rule lives here (`loads_hub_weights`): hub weights unless
a local `weights` file is given, `pretrained` is off, or the backbone is a tiny test architecture; the
backbone is drawn from `torch.manual_seed(config.seed)`, so a backbone without weights is the same
random draw wherever a run's model is rebuilt. With the cache on (the default) the splits are read
from the preprocessed cache and no per-image transform is built; with `--no-cache` a DataLoader
decodes and transforms every image.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import DataLoader, Dataset, Subset

from vapt.data import parse_data, stratified_fraction
from vapt.data.cache import cached_loader, default_cache_dir
from vapt.data.check import run_data_warnings
from vapt.data.fgvc import FGVCDataset
from vapt.data.images import ImageListDataset
from vapt.data.resize import build_resized_transform
from vapt.data.vtab import VTABDataset
from vapt.errors import ConfigError
from vapt.models.backbones import TEST_BACKBONES
from vapt.run.config import TrainConfig

__all__ = ["BuiltRun", "build_loader", "build_model", "build_run", "loads_hub_weights", "loader_workers",
           "resolve_device", "split_dataset"]


@dataclass
class BuiltRun:
    """What one run trains: its resolved config (input size and weights as built), device, model and loaders."""

    config: TrainConfig
    device: torch.device
    model: Any
    train_loader: Iterable
    eval_loaders: dict[str, Iterable]
    loader_generator: torch.Generator
    samples: dict[str, int]
    warnings: list[str]  # about the training data (tiny or 16-bit images, classes it lacks), printed by train


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda when available, else cpu; asking for an absent GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for, but CUDA is not available; use --device cpu")
    return torch.device(name)


def loads_hub_weights(config: TrainConfig) -> bool:
    """The pretrained-weights rule: timm hub weights unless a weights file is given, `pretrained` is off or the
    backbone is a test architecture (random weights drawn from the seed)."""
    return bool(config.pretrained) and config.weights is None and config.backbone not in TEST_BACKBONES


def build_model(config: TrainConfig, keep_random_state: bool = False) -> tuple[Any, TrainConfig]:
    """The run's model, its backbone drawn from `torch.manual_seed(config.seed)`, and the config as built.

    The returned config carries the model's input size and whether hub weights were loaded; an
    `image_size` that does not match the backbone is a ConfigError. `keep_random_state` leaves torch's
    global random state as it was (for rebuilding a finished run's model).
    """
    config = config.resolved()
    spec = parse_data(config.data, config.num_classes)
    pretrained = loads_hub_weights(config)
    import vapt

    with torch.random.fork_rng(devices=[]) if keep_random_state else nullcontext():
        torch.manual_seed(config.seed)
        model = vapt.create_model(config.backbone, config.method, spec.num_classes, pretrained=pretrained,
                                  weights=config.weights, **config.method_overrides())
    if config.image_size not in (None, model.image_size):
        patch = int(model.backbone.patch_embed.patch_size[0])
        divisible = "" if config.image_size % patch == 0 else f" (nor is it a multiple of its patch size {patch})"
        raise ConfigError(f"image_size {config.image_size} does not match backbone {config.backbone!r}, "
                          f"which takes {model.image_size} px input{divisible}")
    return model, config.as_built(image_size=model.image_size, pretrained=pretrained)


def split_dataset(config: TrainConfig, split: str, training: bool = False, transform: bool = True) -> ImageListDataset:
    """One split of the run's dataset at the run's input size and resize mode (`config` resolved and built).

    `training` selects the benchmark's augmentation (FGVC's random crop and flip). `transform=False`
    leaves the images untransformed (the cache applies the same preprocessing itself).
    """
    spec = parse_data(config.data, config.num_classes)
    if config.image_size is None:
        raise ConfigError("image_size is not known yet; build the model first (build_model fills it)")
    steps = build_resized_transform(spec.benchmark, training, config.image_size, config.resize, IMAGENET_DEFAULT_MEAN,
                                    IMAGENET_DEFAULT_STD) if transform else None
    dataset_class = VTABDataset if spec.benchmark == "vtab1k" else FGVCDataset
    return dataset_class(config.data_root, spec.task, split, steps, num_classes=spec.num_classes, decode=config.decode)


def loader_workers(config: TrainConfig, device: torch.device) -> int:
    """DataLoader workers: `num_workers` when given, else 0 on CPU and min(8, CPUs) on CUDA."""
    if config.num_workers is not None:
        return config.num_workers
    return 0 if device.type == "cpu" else min(8, os.cpu_count() or 1)


def _split_data(config: TrainConfig, split: str, training: bool) -> Dataset:
    """A split as the run reads it: untransformed for the cache; the training split's stratified `fraction`."""
    dataset: Dataset = split_dataset(config, split, training, transform=not config.cache)
    if training and config.fraction < 1.0:
        dataset = Subset(dataset, stratified_fraction(dataset.targets, config.fraction, config.seed))
    return dataset


def build_loader(config: TrainConfig, split: str, device: torch.device, training: bool, shuffle: bool,
                 generator: torch.Generator) -> tuple[Iterable, int]:
    """(batches of one split, its number of images): from the cache when `config.cache`, else a decoding DataLoader.

    `training`: the benchmark's augmentation, and a stratified `fraction` of the images; `config` is
    resolved and built (`build_model`).
    """
    dataset = _split_data(config, split, training)
    return _loader(config, dataset, device, training, shuffle, generator), len(dataset)


def _loader(config: TrainConfig, dataset: Dataset, device: torch.device, training: bool, shuffle: bool,
            generator: torch.Generator) -> Iterable:
    if config.cache:
        benchmark = config.data.split("/", 1)[0]
        loader: Iterable = cached_loader(
            dataset, benchmark, training, config.image_size, config.resize, config.batch_size,
            shuffle, generator, device, config.cache_dir or default_cache_dir(config.data_root))
    else:
        loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=shuffle, generator=generator,
                            num_workers=loader_workers(config, device), pin_memory=device.type == "cuda",
                            drop_last=False)
    return loader


def build_run(config: TrainConfig) -> BuiltRun:
    """Seed the run, build its model (on its device) and loaders: the shuffled training split, then each eval split."""
    config = config.resolved()
    device = resolve_device(config.device)
    random.seed(config.seed)
    np.random.seed(config.seed)
    model, config = build_model(config)
    train_set = _split_data(config, config.train_split, training=True)
    eval_sets = {split: _split_data(config, split, training=False) for split in config.eval_splits}
    patch = int(model.backbone.patch_embed.patch_size[0])
    warnings = run_data_warnings(train_set, eval_sets, config.train_split, patch)
    model.to(device)
    generator = torch.Generator()
    train_loader = _loader(config, train_set, device, True, True, generator)
    eval_loaders = {s: _loader(config, d, device, False, False, torch.Generator()) for s, d in eval_sets.items()}
    samples = {"train": len(train_set), **{s: len(d) for s, d in eval_sets.items()}}
    return BuiltRun(config, device, model, train_loader, eval_loaders, generator, samples, warnings)

