"""Shared pieces of the dataset loaders: a list of (image path, label) samples read as RGB images."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from vapt.errors import DataLayoutError


def read_rgb(path: Path) -> Image.Image:
    """Read one image file as an RGB PIL image; an unreadable file raises DataLayoutError naming it."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except FileNotFoundError as err:
        raise DataLayoutError(f"image file {path} does not exist") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataLayoutError(f"image file {path} is corrupt or not an image ({err})") from err


def check_label(label: int, num_classes: int, where: str, layout: str) -> None:
    """Raise DataLayoutError naming `where` unless 0 <= label < num_classes."""
    if not 0 <= label < num_classes:
        raise DataLayoutError(
            f"{where}: label {label} is outside [0, {num_classes}); expected layout: {layout}"
        )


class ImageListDataset(Dataset):
    """Images and integer labels from a validated list of (path, label) samples."""

    def __init__(
        self,
        samples: Sequence[tuple[Path, int]],
        num_classes: int,
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        self.samples = list(samples)
        self.num_classes = num_classes
        self.transform = transform

    @property
    def targets(self) -> list[int]:
        """The label of every sample, in order."""
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        image = read_rgb(path)
        return (self.transform(image) if self.transform is not None else image), label


def dataset_folder(root: str | Path, candidates: Sequence[str | Path], what: str, layout: str) -> Path:
    """The first of `candidates` (paths under `root`) that is a folder; a DataLayoutError naming `what` otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"data root {root} does not exist or is not a folder; expected {layout}")
    for candidate in candidates:
        if (root / candidate).is_dir():
            return root / candidate
    raise DataLayoutError(f"{what} folder {root / candidates[0]} does not exist; expected {layout}")


def split_classes(benchmark: str, noun: str, name: str, split: str, splits: Sequence[str],
                  registry: Mapping[str, tuple[str, int]], num_classes: int | None) -> int:
    """The number of classes of `name` (given, or from `registry`), once `split` is known to be one of `splits`."""
    if split not in splits:
        raise DataLayoutError(f"unknown {benchmark} split {split!r}; expected one of {', '.join(splits)}")
    if num_classes is not None:
        return num_classes
    if name not in registry:
        raise DataLayoutError(f"unknown {benchmark} {noun} {name!r} and no number of classes given; "
                              f"known {noun}s: {', '.join(registry)}")
    return registry[name][1]
