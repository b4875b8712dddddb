"""Datasets in their real layouts (VTAB-1K, FGVC), the paper's preprocessing, fractions and fixtures.

A dataset is named `vtab1k/<task>` or `fgvc/<dataset>`; `parse_data` turns the name into a
`DataSpec` (benchmark, task, group, classes) and `build_dataset` reads one split of it.
"""

from __future__ import annotations

from vapt.data.fgvc import FGVC_DATASETS, FGVC_LAYOUT, FGVC_SPLITS, FGVC_TITLES, FGVCDataset
from vapt.data.fixtures import write_fgvc_dataset, write_fixtures, write_vtab_task
from vapt.data.fractions import stratified_fraction
from vapt.data.images import ImageListDataset, read_rgb
from vapt.data.spec import CUSTOM_GROUP, DataSpec, build_dataset, parse_data
from vapt.data.transforms import BENCHMARKS, build_transform
from vapt.data.vtab import VTAB_GROUPS, VTAB_LAYOUT, VTAB_SPLITS, VTAB_TASKS, VTABDataset

__all__ = [
    "BENCHMARKS",
    "CUSTOM_GROUP",
    "FGVC_DATASETS",
    "FGVC_LAYOUT",
    "FGVC_SPLITS",
    "FGVC_TITLES",
    "VTAB_GROUPS",
    "VTAB_LAYOUT",
    "VTAB_SPLITS",
    "VTAB_TASKS",
    "DataSpec",
    "FGVCDataset",
    "ImageListDataset",
    "VTABDataset",
    "build_dataset",
    "build_transform",
    "parse_data",
    "read_rgb",
    "stratified_fraction",
    "write_fgvc_dataset",
    "write_fixtures",
    "write_vtab_task",
]
