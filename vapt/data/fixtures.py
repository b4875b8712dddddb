"""Tiny datasets in the real VTAB-1K / FGVC layouts, made from scikit-learn's bundled digits.

`python -m vapt fixtures --out DIR` writes `DIR/vtab-1k/cifar/` and `DIR/cub/` by default; any
registered task can be written (`--tasks vtab1k/svhn fgvc/stanford_dogs`). The images are real
PNG (VTAB) and JPEG (FGVC) files, so the loaders, transforms and training loop run unchanged.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from vapt.cli import DOCS_HELP, HelpFormatter
from vapt.data.spec import parse_data
from vapt.data.vtab import VTAB_SPLITS
from vapt.errors import ConfigError

Arrays = tuple[np.ndarray, Sequence[int]]
DEFAULT_TASKS: tuple[str, ...] = ("vtab1k/cifar", "fgvc/cub")
FIXTURES_MARKER = "vapt_fixtures.json"  # written in a data root of fixtures: its tasks are not the real datasets
# images per class in each split the fixtures write (train800val200 is train800 + val200).
PER_CLASS: dict[str, dict[str, int]] = {
    "vtab1k": {"train800": 4, "val200": 2, "test": 2},
    "fgvc": {"train": 4, "val": 2, "test": 2},
}


def digits_images(image_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 scikit-learn digits as uint8 RGB images (N, size, size, 3) and their labels 0-9."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = to_uint8_rgb(digits.images / 16.0, image_size)
    return images, digits.target.astype(np.int64)


def to_uint8_rgb(images: np.ndarray, image_size: int | None = None) -> np.ndarray:
    """Convert (N, H, W) or (N, H, W, 3) images, uint8 or floats in [0, 1], to uint8 RGB, resized."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ConfigError(f"images must have shape (N, H, W) or (N, H, W, 3), got {images.shape}")
    if images.dtype != np.uint8:
        images = np.clip(np.rint(images.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if image_size is None or images.shape[1:3] == (image_size, image_size):
        return images
    size = (image_size, image_size)
    return np.stack([np.asarray(Image.fromarray(im).resize(size, Image.BILINEAR)) for im in images])


def _write_images(folder: Path, prefix: str, images: np.ndarray, suffix: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index, image in enumerate(images):
        name = f"{prefix}_{index:05d}.{suffix}"
        Image.fromarray(image).save(folder / name)
        names.append(name)
    return names


def _checked(split: str, arrays: Arrays) -> tuple[np.ndarray, list[int]]:
    images, labels = arrays
    images, labels = to_uint8_rgb(images), [int(label) for label in labels]
    if len(images) != len(labels):
        raise ConfigError(f"split {split!r}: {len(images)} images but {len(labels)} labels")
    return images, labels


def write_vtab_task(
    out_dir: str | Path, task: str, splits: Mapping[str, Arrays], image_format: str = "png"
) -> Path:
    """Write (images, labels) arrays as a VTAB-1K task folder `<out_dir>/vtab-1k/<task>`; returns it.

    `splits` maps `train800`, `val200` and `test` (and optionally `train800val200`, otherwise the
    union of the first two) to (images, labels); images are (N, H, W[, 3]), uint8 or floats in [0, 1].
    """
    missing = {"train800", "val200", "test"} - set(splits)
    unknown = set(splits) - set(VTAB_SPLITS)
    if missing or unknown:
        raise ConfigError(
            f"splits must provide train800, val200 and test (and optionally train800val200); "
            f"missing {sorted(missing)}, unknown {sorted(unknown)}"
        )
    task_dir = Path(out_dir) / "vtab-1k" / task
    lines: dict[str, list[str]] = {}
    for split, arrays in splits.items():
        images, labels = _checked(split, arrays)
        names = _write_images(task_dir / "images", split, images, image_format)
        lines[split] = [f"images/{name} {label}" for name, label in zip(names, labels, strict=True)]
    lines.setdefault("train800val200", lines["train800"] + lines["val200"])
    for split in VTAB_SPLITS:
        (task_dir / f"{split}.txt").write_text("\n".join(lines[split]) + "\n", encoding="utf-8")
    return task_dir


def write_fgvc_dataset(
    out_dir: str | Path, name: str, splits: Mapping[str, Arrays], image_format: str = "jpg"
) -> Path:
    """Write (images, labels) arrays as an FGVC dataset folder `<out_dir>/<name>` with JSON splits."""
    if set(splits) != {"train", "val", "test"}:
        raise ConfigError(f"splits must be exactly train, val and test, got {sorted(splits)}")
    dataset_dir = Path(out_dir) / name
    for split, arrays in splits.items():
        images, labels = _checked(split, arrays)
        entries: dict[str, int] = {}
        for label in sorted(set(labels)):
            members = [i for i, y in enumerate(labels) if y == label]
            folder = f"images/{label:03d}.class"
            names = _write_images(dataset_dir / folder, split, images[members], image_format)
            entries.update({f"{folder}/{n}": label for n in names})
        (dataset_dir / f"{split}.json").write_text(json.dumps(entries, indent=1), encoding="utf-8")
    return dataset_dir


def write_fixtures(
    out_dir: str | Path,
    tasks: Sequence[str] = DEFAULT_TASKS,
    num_classes: int = 10,
    image_size: int = 32,
    seed: int = 0,
) -> dict[str, Path]:
    """Write tiny digit datasets for `tasks` (e.g. `vtab1k/cifar`, `fgvc/cub`) under `out_dir`.

    Each task gets min(num_classes, the task's classes, 10) classes and a few disjoint images per
    class and split (PER_CLASS); returns task name -> folder written.
    """
    images, labels = digits_images(image_size)
    written: dict[str, Path] = {}
    for name in tasks:
        spec = parse_data(name)
        classes = min(num_classes, spec.num_classes, 10)
        rng = np.random.default_rng(seed)
        pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in range(classes)}
        splits: dict[str, Arrays] = {}
        for split, count in PER_CLASS[spec.benchmark].items():
            chosen = [pools[c].pop() for c in range(classes) for _ in range(count)]
            splits[split] = (images[chosen], labels[chosen].tolist())
        if spec.benchmark == "vtab1k":
            written[name] = write_vtab_task(out_dir, spec.task, splits)
        else:
            written[name] = write_fgvc_dataset(out_dir, spec.task, splits)
    marker = Path(out_dir) / FIXTURES_MARKER
    known = json.loads(marker.read_text(encoding="utf-8"))["tasks"] if marker.is_file() else []
    marker.write_text(json.dumps({"fixtures": "digits", "tasks": sorted({*known, *written})}), encoding="utf-8")
    return written


def is_fixture_root(data_root: str | Path) -> bool:
    """Whether a data root was written by `write_fixtures` (its tasks hold digits, not the real datasets)."""
    return (Path(data_root) / FIXTURES_MARKER).is_file()


def main(argv: list[str] | None = None) -> int:
    """`python -m vapt fixtures --out DIR [--tasks ...]`: write tiny datasets in the real layouts."""
    parser = argparse.ArgumentParser(prog="python -m vapt fixtures", epilog=DOCS_HELP, description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--out", required=True, help="data root to write (DIR/vtab-1k/<task>, DIR/<name>)")
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), help="vtab1k/<task>, fgvc/<name>")
    parser.add_argument("--num-classes", type=int, default=10, help="classes per task (at most 10 digits)")
    parser.add_argument("--image-size", type=int, default=32, help="side of the square images in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image draw")
    args = parser.parse_args(argv)
    written = write_fixtures(args.out, args.tasks, args.num_classes, args.image_size, args.seed)
    for name, folder in written.items():
        print(f"wrote {name} -> {folder}")
    return 0
