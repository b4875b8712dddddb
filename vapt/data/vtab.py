"""VTAB-1K in its pre-split layout: `<root>/vtab-1k/<task>/{train800,val200,train800val200,test}.txt`.

Widely shared copies of this layout were re-encoded as JPEG, which can move accuracy slightly
against the TFDS originals; results record which copy was used only through `data_root`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vapt.data.images import ImageListDataset, check_label, dataset_folder, find_image, read_split_text, split_classes
from vapt.errors import DataLayoutError

# task -> (group, number of classes); see docs/protocol.md (KITTI uses its 4 classes).
VTAB_TASKS: dict[str, tuple[str, int]] = {
    "cifar": ("natural", 100),
    "caltech101": ("natural", 102),
    "dtd": ("natural", 47),
    "oxford_flowers102": ("natural", 102),
    "oxford_iiit_pet": ("natural", 37),
    "svhn": ("natural", 10),
    "sun397": ("natural", 397),
    "patch_camelyon": ("specialized", 2),
    "eurosat": ("specialized", 10),
    "resisc45": ("specialized", 45),
    "diabetic_retinopathy": ("specialized", 5),
    "clevr_count": ("structured", 8),
    "clevr_dist": ("structured", 6),
    "dmlab": ("structured", 6),
    "kitti": ("structured", 4),
    "dsprites_loc": ("structured", 16),
    "dsprites_ori": ("structured", 16),
    "smallnorb_azi": ("structured", 18),
    "smallnorb_ele": ("structured", 9),
}
LABEL = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: int() would also take other scripts' digits
VTAB_GROUPS: tuple[str, ...] = ("natural", "specialized", "structured")
VTAB_SPLITS: tuple[str, ...] = ("train800", "val200", "train800val200", "test")
VTAB_LAYOUT = (
    "<root>/vtab-1k/<task>/{train800,val200,train800val200,test}.txt, each line "
    "'<image path relative to the task folder> <integer label>'"
)


def vtab_task_dir(root: str | Path, task: str) -> Path:
    """The folder of one VTAB-1K task under a data root (`<root>/vtab-1k/<task>`, or `<root>/<task>`)."""
    return dataset_folder(root, (Path("vtab-1k") / task, task), "VTAB-1K task", VTAB_LAYOUT)


def split_lines(split_file: Path) -> list[tuple[int, str, int | None]]:
    """Each non-blank line of a split file as (line number, image path, label); label None: a malformed line.

    UTF-8 with or without a byte-order mark; LF, CRLF or CR line endings; blank lines anywhere are skipped; the
    label is the last whitespace-separated field, so paths may hold spaces and any Unicode character.
    """
    text = read_split_text(split_file).replace("\r\n", "\n").replace("\r", "\n")
    entries: list[tuple[int, str, int | None]] = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if not line:
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) == 2 and LABEL.fullmatch(parts[1]):
            entries.append((number, parts[0], int(parts[1])))
        else:
            entries.append((number, line, None))
    return entries


def read_vtab_split(task_dir: Path, split: str, num_classes: int) -> list[tuple[Path, int]]:
    """Parse and validate one split file: every line, label range and image file is checked."""
    split_file = task_dir / f"{split}.txt"
    if not split_file.is_file():
        raise DataLayoutError(f"split file {split_file} does not exist; expected {VTAB_LAYOUT}")
    samples: list[tuple[Path, int]] = []
    for number, relative, label in split_lines(split_file):
        where = f"{split_file}, line {number}"
        if label is None:
            raise DataLayoutError(f"{where}: malformed line {relative!r}; expected '<image path> <integer label>'")
        check_label(label, num_classes, where, VTAB_LAYOUT)
        path = find_image(task_dir / relative)
        if path is None:
            raise DataLayoutError(f"{where}: image file {task_dir / relative} does not exist")
        samples.append((path, label))
    if not samples:
        raise DataLayoutError(f"split file {split_file} has no samples; expected {VTAB_LAYOUT}")
    return samples


class VTABDataset(ImageListDataset):
    """One split of a VTAB-1K task, validated eagerly at construction."""

    def __init__(
        self,
        root: str | Path,
        task: str,
        split: str,
        transform: Callable[[Any], Any] | None = None,
        num_classes: int | None = None,
        decode: str = "pil",
    ) -> None:
        num_classes = split_classes("VTAB-1K", "task", task, split, VTAB_SPLITS, VTAB_TASKS, num_classes)
        self.task, self.split = task, split
        self.task_dir = vtab_task_dir(root, task)
        super().__init__(read_vtab_split(self.task_dir, split, num_classes), num_classes, transform, decode)
