"""Dataset names (`vtab1k/<task>`, `fgvc/<dataset>`) -> DataSpec, and one split of a dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vapt.data.fgvc import FGVC_DATASETS, FGVC_SPLITS, FGVCDataset
from vapt.data.images import ImageListDataset, resolve_decode
from vapt.data.transforms import BENCHMARKS, build_transform
from vapt.data.vtab import VTAB_SPLITS, VTAB_TASKS, VTABDataset
from vapt.errors import ConfigError

CUSTOM_GROUP = "custom"


@dataclass(frozen=True)
class DataSpec:
    """A dataset named `<benchmark>/<task>`: its group, number of classes and split names."""

    benchmark: str
    task: str
    group: str
    num_classes: int

    @property
    def name(self) -> str:
        """The dataset's name as written on the command line, e.g. `vtab1k/cifar`."""
        return f"{self.benchmark}/{self.task}"

    @property
    def splits(self) -> tuple[str, ...]:
        """The split files this benchmark's layout provides."""
        return VTAB_SPLITS if self.benchmark == "vtab1k" else FGVC_SPLITS

    @property
    def default_train_split(self) -> str:
        """The split the grid search trains on (`train800` for VTAB-1K, `train` for FGVC)."""
        return "train800" if self.benchmark == "vtab1k" else "train"

    def default_eval_splits(self, train_split: str) -> tuple[str, ...]:
        """The splits evaluated after training on `train_split` (docs/protocol.md)."""
        if self.benchmark == "vtab1k":
            return ("val200",) if train_split == "train800" else ("test",)
        return ("val", "test")


# Head widths the authors' configuration used that differ from the class count (KITTI: 196 outputs for 4 classes);
# `--num-classes` may ask for them to reproduce their runs.
AUTHORS_HEAD_WIDTHS: dict[str, int] = {"vtab1k/kitti": 196}


def parse_data(name: str, num_classes: int | None = None) -> DataSpec:
    """Parse `vtab1k/<task>` or `fgvc/<dataset>`; tasks outside the registries need `num_classes`."""
    benchmark, _, task = str(name).partition("/")
    if benchmark not in BENCHMARKS or not task or "/" in task:
        raise ConfigError(f"dataset {name!r} is not of the form vtab1k/<task> or fgvc/<dataset>")
    registry = VTAB_TASKS if benchmark == "vtab1k" else FGVC_DATASETS
    if task in registry:
        group, classes = registry[task]
        wider = AUTHORS_HEAD_WIDTHS.get(f"{benchmark}/{task}")
        if num_classes is not None and num_classes not in (classes, wider):
            also = f" (or {wider}, the authors' head width)" if wider else ""
            raise ConfigError(f"{name} has {classes} classes, but num_classes={num_classes} was given; "
                              f"expected {classes}{also}")
        return DataSpec(benchmark, task, group, classes if num_classes is None else num_classes)
    if num_classes is None:
        raise ConfigError(
            f"unknown {benchmark} dataset {task!r}; known: {', '.join(registry)} "
            "(a custom dataset in the same layout needs num_classes)"
        )
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return DataSpec(benchmark, task, CUSTOM_GROUP, num_classes)


def build_dataset(
    spec: DataSpec, root: str | Path, split: str, image_size: int = 224, train: bool = False,
    resize: str | None = None,
    decode: str | None = None,
) -> ImageListDataset:
    """One split of a dataset with the paper's preprocessing (`train` selects FGVC's augmentation).

    `resize`: `tf1` or `pil` (default: `tf1` for VTAB-1K, `pil` for FGVC; see `vapt.data.resize`).
    `decode`: `tfds` or `pil` (default: `tfds` for VTAB-1K, `pil` for FGVC; see `vapt.data.images`).
    """
    transform = build_transform(spec.benchmark, train=train, image_size=image_size, resize=resize)
    decode = resolve_decode(spec.benchmark, decode)
    if spec.benchmark == "vtab1k":
        return VTABDataset(root, spec.task, split, transform, num_classes=spec.num_classes, decode=decode)
    return FGVCDataset(root, spec.task, split, transform, num_classes=spec.num_classes, decode=decode)
