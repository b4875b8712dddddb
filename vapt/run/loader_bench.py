"""`python -m vapt bench --loader`: images/s of the cold data path and the cached one, measured in one run.

Cold = what `train --no-cache` does: decode every image, resize, normalise, through a DataLoader (0
workers on CPU, min(8, CPUs) on CUDA, as `train`). Cached = what `train` does by default: the split's
preprocessed uint8 images from the cache (built first, in a fresh folder unless `--cache-dir` is
given; the build time is reported separately), normalised per batch on the device. Both read the
same split in the same shuffled order, one epoch each.

The data wait share: a few training steps of `--backbone` (random weights) with each path; the share
of the step (batch fetch + forward + backward + SGD step) spent fetching the batch.

`--synthetic WxH` first writes a synthetic task in the VTAB-1K layout into `--data-root` (smooth
random JPEG images of W x H pixels, 800 / 200 / 200 images): numbers measured on it are labelled
synthetic.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from vapt.cli import DOCS_HELP
from vapt.config import METHODS
from vapt.data import VTAB_SPLITS, parse_data
from vapt.data.images import DECODE_MODES
from vapt.data.resize import RESIZE_MODES
from vapt.errors import ConfigError
from vapt.io import atomic_path
from vapt.run.builder import build_loader, build_model, loader_workers, resolve_device
from vapt.run.config import TrainConfig

COLUMNS = ("path", "images_per_s", "data_wait_share", "images", "seconds")
SYNTHETIC_COUNTS: dict[str, int] = {"train800": 800, "val200": 200, "test": 200}

# the last line of --help: where the documentation is
ENGINE_HELP = f"{DOCS_HELP} Data pipeline, cache and checks: docs/engine.md."


def write_synthetic_vtab_task(
    root: str | os.PathLike, task: str, width: int, height: int, counts: dict[str, int] | None = None,
    num_classes: int = 10, seed: int = 0, image_format: str = "jpg",
) -> Path:
    """Write smooth random images (JPEG by default) in the VTAB-1K layout: `<root>/vtab-1k/<task>`; returns it."""
    counts = dict(SYNTHETIC_COUNTS if counts is None else counts)
    task_dir = Path(root) / "vtab-1k" / task
    if task_dir.exists():
        raise ConfigError(f"{task_dir} already exists; synthetic data is only written into an empty place")
    (task_dir / "images").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    lines: dict[str, list[str]] = {}
    for split, count in counts.items():
        lines[split] = []
        for index in range(count):
            label = index % num_classes
            coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
            image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.int16)
            image = np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
            name = f"images/{split}_{index:05d}.{image_format}"
            Image.fromarray(image).save(task_dir / name, quality=90)
            lines[split].append(f"{name} {label}")
    lines.setdefault("train800val200", lines.get("train800", []) + lines.get("val200", []))
    for split in VTAB_SPLITS:
        (task_dir / f"{split}.txt").write_text("\n".join(lines.get(split, [])) + "\n", encoding="utf-8")
    return task_dir


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(loader: Iterable, device: torch.device) -> tuple[float, int, float]:
    """Iterate one epoch of (images, labels), moving them to `device`; returns (images/s, images, seconds)."""
    _sync(device)
    start = time.perf_counter()
    seen = 0
    for images, _ in loader:
        images = images.to(device, non_blocking=True)
        seen += len(images)
    _sync(device)
    seconds = time.perf_counter() - start
    return seen / seconds, seen, seconds


def data_wait_share(loader: Iterable, model: torch.nn.Module, device: torch.device, steps: int,
                    precision: str) -> float:
    """Share of `steps` training steps (after one untimed step) spent waiting for the next batch."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=1e-3, momentum=0.9)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and precision == "bf16" else None
    waits, totals = [], []
    iterator = iter(loader)
    for step in range(steps + 1):
        _sync(device)
        start = time.perf_counter()
        try:
            images, labels = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            images, labels = next(iterator)
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        _sync(device)
        fetched = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        if autocast is not None:
            with autocast:
                logits = model(images)
        else:
            logits = model(images)
        F.cross_entropy(logits.float(), labels).backward()
        optimizer.step()
        _sync(device)
        if step > 0:
            waits.append(fetched - start)
            totals.append(time.perf_counter() - start)
    return sum(waits) / sum(totals)


def bench_config(args: argparse.Namespace) -> TrainConfig:
    """The run config whose loaders (and, for the data-wait steps, model: random weights, seed 0) are measured."""
    spec = parse_data(args.data, args.num_classes)
    return TrainConfig(
        backbone=args.backbone, method=args.method, data=args.data, data_root=args.data_root, seed=0,
        batch_size=args.batch_size, image_size=args.image_size, train_split=spec.default_train_split,
        eval_splits=(args.split,), num_classes=args.num_classes, pretrained=False, device=args.device,
        num_workers=args.num_workers, resize=args.resize, decode=args.decode, precision=args.precision,
        cache_dir=args.cache_dir,
    ).resolved()


def run_loader_bench(args: argparse.Namespace) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Measure the cold and the cached path on one split; returns the table and the settings measured.

    Both loaders come from the run builder (`vapt.run.builder`), as `train --no-cache` and `train` build them.
    """
    config = bench_config(args)
    device = resolve_device(config.device)
    training = args.split == config.train_split  # FGVC's training split is read with its augmentation

    def loader(cache: bool, cache_dir: str | None = None) -> Any:
        run = dataclasses.replace(config, cache=cache, cache_dir=cache_dir).resolved()
        return build_loader(run, args.split, device, training, True, torch.Generator().manual_seed(0))

    cold, images = loader(cache=False)
    settings: dict[str, Any] = {"data": config.data, "split": args.split, "images": images,
                                "resize": config.resize, "decode": config.decode, "image_size": config.image_size,
                                "batch_size": config.batch_size, "device": str(device),
                                "workers": loader_workers(config, device), "torch_threads": torch.get_num_threads(),
                                "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="vapt-loader-bench-") as scratch:
        cache_dir = config.cache_dir or scratch

        def cached() -> Any:
            return loader(cache=True, cache_dir=cache_dir)[0]

        start = time.perf_counter()
        warm = cached()
        _ = warm.split  # build (or read) the cache and move it to the device
        settings["cache_build_s"] = time.perf_counter() - start
        rates = {"cold": images_per_second(cold, device), "cached": images_per_second(cached(), device)}
        shares = {path: float("nan") for path in rates}
        if args.steps > 0:
            model, _ = build_model(config)
            model = model.to(device).train()
            settings.update(backbone=args.backbone, method=args.method, steps=args.steps)
            shares = {"cold": data_wait_share(cold, model, device, args.steps, args.precision),
                      "cached": data_wait_share(cached(), model, device, args.steps, args.precision)}
    settings["load_average_after"] = os.getloadavg()
    rows = [{"path": path, "images_per_s": rate, "data_wait_share": shares[path], "images": seen, "seconds": seconds}
            for path, (rate, seen, seconds) in rates.items()]
    return pd.DataFrame(rows, columns=list(COLUMNS)), settings


def format_loader_report(table: pd.DataFrame, settings: dict[str, Any], synthetic: str | None) -> str:
    """The printed report: settings, the table, the cached / cold ratio and the load average."""
    rates = table.set_index("path")["images_per_s"]
    label = f" (synthetic {synthetic} JPEG images)" if synthetic else ""
    load = ", ".join(f"{v:.2f}" for v in settings["load_average_before"])
    after = ", ".join(f"{v:.2f}" for v in settings["load_average_after"])
    lines = [
        f"{settings['data']}{label}, split {settings['split']} ({settings['images']} images), "
        f"{settings['image_size']} px, decode {settings['decode']}, resize {settings['resize']}, "
        f"batch {settings['batch_size']}, "
        f"{settings['device']}, {settings['workers']} loader workers, {settings['torch_threads']} torch threads",
        f"cache build (decode + resize once): {settings['cache_build_s']:.2f} s",
        "",
        table.to_string(index=False, float_format=lambda v: f"{v:.4g}"),
        "",
        f"cached / cold images per second: {rates['cached'] / rates['cold']:.2f}",
        f"load average (1, 5, 15 min) before: {load}; after: {after}",
    ]
    if "backbone" in settings:
        lines.insert(2, f"data wait share: {settings['steps']} training steps of {settings['backbone']} "
                        f"{settings['method']} (random weights) per path")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m vapt bench --loader --data vtab1k/<task> --data-root DIR [--out FILE.csv]`."""
    parser = argparse.ArgumentParser(prog="python -m vapt bench --loader", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=ENGINE_HELP)
    parser.add_argument("--data", required=True, help="vtab1k/<task> or fgvc/<dataset>")
    parser.add_argument("--data-root", required=True, help="holds vtab-1k/<task>/ and FGVC <dataset>/")
    parser.add_argument("--split", default=None, help="split to read (default: train800 / train)")
    parser.add_argument("--image-size", type=int, default=224, help="model input size (default 224)")
    parser.add_argument("--resize", choices=RESIZE_MODES, default=None, help="default: tf1 (VTAB-1K), pil (FGVC)")
    parser.add_argument("--decode", choices=DECODE_MODES, default=None, help="default: tfds (VTAB-1K), pil (FGVC)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=None, help="cold-path workers (default: as train)")
    parser.add_argument("--cache-dir", default=None, help="cache folder (default: a fresh temporary folder)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                        help="CUDA autocast precision of the training steps (no effect on CPU)")
    parser.add_argument("--backbone", default="vit_tiny_patch16_224",
                        help="model of the data-wait steps (random weights; default vit_tiny_patch16_224)")
    parser.add_argument("--method", default="vapt", choices=list(METHODS), metavar="METHOD",
                        help=f"method of the data-wait steps, one of {', '.join(METHODS)} (default vapt)")
    parser.add_argument("--num-classes", type=int, default=None, help="for datasets outside the registries")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per path (0: skip)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: PyTorch's)")
    parser.add_argument("--synthetic", default=None, metavar="WxH",
                        help="first write a synthetic task of W x H JPEG images into --data-root")
    parser.add_argument("--out", default=None, help="write the table to this CSV file")
    args = parser.parse_args(argv)
    spec = parse_data(args.data, args.num_classes)
    if args.split is None:
        args.split = spec.default_train_split
    for name in ("image_size", "batch_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.steps < 0:
        raise ConfigError(f"--steps must be >= 0, got {args.steps}")
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.synthetic is not None:
        width, sep, height = args.synthetic.partition("x")
        if not (sep and width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
            raise ConfigError(f"--synthetic must be WxH in pixels, e.g. 500x375; got {args.synthetic!r}")
        if spec.benchmark != "vtab1k":
            raise ConfigError(f"--synthetic writes a VTAB-1K task; --data {args.data} is not vtab1k/<task>")
        folder = write_synthetic_vtab_task(args.data_root, spec.task, int(width), int(height),
                                           num_classes=min(spec.num_classes, 10))
        print(f"wrote synthetic task {folder}")
    table, settings = run_loader_bench(args)
    print(format_loader_report(table, settings, args.synthetic))
    if args.out is not None:
        with atomic_path(args.out) as tmp:
            table.to_csv(tmp, index=False)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
