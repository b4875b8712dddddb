"""FGVC datasets in the VPT JSON layout: `<root>/<dataset>/{train,val,test}.json`.

Image paths in the JSON files are relative to the dataset folder; paths written relative to an
`images/` or `Images/` subfolder (as in some VPT releases) are found too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vapt.data.images import ImageListDataset, check_label, dataset_folder, find_image, read_split_text, split_classes
from vapt.errors import DataLayoutError

# folder name -> (group, number of classes); see docs/protocol.md.
FGVC_DATASETS: dict[str, tuple[str, int]] = {
    "cub": ("fgvc", 200),
    "nabirds": ("fgvc", 555),
    "oxford_flowers": ("fgvc", 102),
    "stanford_dogs": ("fgvc", 120),
    "stanford_cars": ("fgvc", 196),
}
# folder name -> the dataset's usual title, for tables and figures.
FGVC_TITLES: dict[str, str] = {
    "cub": "CUB-200-2011",
    "nabirds": "NABirds",
    "oxford_flowers": "Oxford Flowers",
    "stanford_dogs": "Stanford Dogs",
    "stanford_cars": "Stanford Cars",
}
FGVC_SPLITS: tuple[str, ...] = ("train", "val", "test")
# where image paths are looked up, in order: the dataset folder, then the image folders of the VPT releases.
IMAGE_FOLDERS: tuple[str, ...] = ("", "images", "Images")
FGVC_LAYOUT = (
    "<root>/<dataset>/{train,val,test}.json, each a JSON object "
    '{"<image path relative to the dataset folder>": <integer class id>, ...}'
)


def fgvc_dataset_dir(root: str | Path, name: str) -> Path:
    """The folder of one FGVC dataset under a data root."""
    return dataset_folder(root, (name,), "FGVC dataset", FGVC_LAYOUT)


def find_in_image_folders(dataset_dir: Path, relative: str) -> Path | None:
    """The image file of a split entry: under the dataset folder, else under its `images/` or `Images/` folder."""
    return next((p for p in (find_image(dataset_dir / sub / relative) for sub in IMAGE_FOLDERS) if p), None)


def read_fgvc_split(dataset_dir: Path, split: str, num_classes: int) -> list[tuple[Path, int]]:
    """Parse and validate one JSON split: syntax, label type and range, and every image file."""
    split_file = dataset_dir / f"{split}.json"
    if not split_file.is_file():
        raise DataLayoutError(f"split file {split_file} does not exist; expected {FGVC_LAYOUT}")
    try:
        entries = json.loads(read_split_text(split_file))
    except json.JSONDecodeError as err:
        raise DataLayoutError(
            f"{split_file}, line {err.lineno}: malformed JSON ({err.msg}); expected {FGVC_LAYOUT}"
        ) from None
    if not isinstance(entries, dict) or not entries:
        raise DataLayoutError(f"{split_file}: expected a non-empty JSON object; expected {FGVC_LAYOUT}")
    samples: list[tuple[Path, int]] = []
    for relative, label in entries.items():
        where = f"{split_file}, entry {relative!r}"
        if isinstance(label, bool) or not isinstance(label, int):
            raise DataLayoutError(f"{where}: label {label!r} is not an integer class id")
        check_label(label, num_classes, where, FGVC_LAYOUT)
        path = find_in_image_folders(dataset_dir, relative)
        if path is None:
            raise DataLayoutError(
                f"{where}: image file {dataset_dir / relative} does not exist (nor under "
                f"{', '.join(repr(s) for s in IMAGE_FOLDERS if s)})"
            )
        samples.append((path, label))
    return samples


class FGVCDataset(ImageListDataset):
    """One split of an FGVC dataset, validated eagerly at construction."""

    def __init__(
        self,
        root: str | Path,
        name: str,
        split: str,
        transform: Callable[[Any], Any] | None = None,
        num_classes: int | None = None,
        decode: str = "pil",
    ) -> None:
        num_classes = split_classes("FGVC", "dataset", name, split, FGVC_SPLITS, FGVC_DATASETS, num_classes)
        self.name, self.split = name, split
        self.dataset_dir = fgvc_dataset_dir(root, name)
        super().__init__(read_fgvc_split(self.dataset_dir, split, num_classes), num_classes, transform, decode)
