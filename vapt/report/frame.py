"""Run records -> one long-format pandas frame: a row per (run, evaluated split)."""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vapt.config import METHODS
from vapt.data import CUSTOM_GROUP, FGVC_DATASETS, VTAB_TASKS
from vapt.errors import DataLayoutError
from vapt.run.record import FINISHED, RunRecord, scan_records

COLUMNS: tuple[str, ...] = (
    "run_id", "backbone", "method", "benchmark", "task", "group", "train_split", "split", "seed", "lr", "wd",
    "fraction", "epochs", "batch_size", "num_tokens", "metric", "value", "status", "trainable_params",
    "prompt_params", "head_params", "backbone_params", "weights", "wall_time_s", "path",
)

SETTING_KEYS: tuple[str, ...] = ("backbone", "method", "benchmark", "group", "task", "fraction", "num_tokens")


def ablation_options() -> tuple[str, ...]:
    """The method options varied by ablations, of every registered method (each method's spec names its own)."""
    return tuple(dict.fromkeys(name for spec in METHODS.values() for name in spec.ablations))


def cell_key_columns() -> tuple[str, ...]:
    """Every column that can tell one table cell from another: the settings and the ablation options."""
    return (*SETTING_KEYS, *ablation_options())


def _group(benchmark: str, task: str) -> str:
    registry = VTAB_TASKS if benchmark == "vtab1k" else FGVC_DATASETS
    return registry[task][0] if task in registry else CUSTOM_GROUP


def _rows(record: RunRecord, path: Path, runs_dir: Path) -> list[dict[str, Any]]:
    config, params = record.config, record.params
    benchmark, _, task = str(config["data"]).partition("/")
    num_tokens = record.method_config.get("num_tokens", config.get("num_tokens"))
    base = {
        "run_id": record.run_id or path.parent.relative_to(runs_dir).as_posix(),
        "backbone": config["backbone"], "method": config["method"], "benchmark": benchmark, "task": task,
        "group": _group(benchmark, task), "train_split": config.get("train_split"), "seed": config["seed"],
        "lr": config["lr"], "wd": config["wd"], "fraction": config.get("fraction", 1.0),
        "epochs": config["epochs"], "batch_size": config.get("batch_size"),
        "num_tokens": math.nan if num_tokens is None else num_tokens, "metric": "top1",
        "status": record.status, "trainable_params": params.get("trainable"),
        "prompt_params": params.get("prompt"), "head_params": params.get("head"),
        "backbone_params": params.get("backbone"), "weights": config.get("weights"),
        "wall_time_s": record.wall_time_s, "path": str(path),
    }
    final = record.final
    splits = config.get("eval_splits") or list(final)
    return [{**base, "split": split, "value": final.get(split, math.nan)} for split in splits]


def load_results(runs_dir: str | os.PathLike) -> pd.DataFrame:
    """Every `**/result.json` under `runs_dir` as long-format rows (value = top-1 in percent; NaN if failed).

    A file that is not a readable run record is reported by name on stderr and left out.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise DataLayoutError(f"runs folder {runs_dir} does not exist")
    rows = [row for path, record in scan_records(runs_dir) for row in _rows(record, path, runs_dir)]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.astype({"value": float, "num_tokens": "Int64"}) if not frame.empty else frame


def load_records(runs_dir: str | os.PathLike) -> pd.DataFrame:
    """Long-format result records of every run under `runs_dir`, with the methods' ablation options added."""
    runs_dir = Path(runs_dir)
    records = load_results(runs_dir)
    options = run_options(runs_dir)
    if not options.empty and "run_id" in records.columns:
        extra = [c for c in options.columns if c != "run_id" and c not in records.columns]
        if extra:
            records = records.merge(options[["run_id", *extra]], on="run_id", how="left")
    return records


def run_options(runs_dir: str | os.PathLike) -> pd.DataFrame:
    """The ablation options (kernel size, conv, projector, ...) of each run's `result.json`, by run_id."""
    rows = []
    runs_dir = Path(runs_dir)
    for path, record in scan_records(runs_dir, warn=False):
        found = _find_keys([record.method_config, record.config], ablation_options())
        if found:
            run_id = record.run_id or path.parent.relative_to(runs_dir).as_posix()
            rows.append({"run_id": run_id, **found})
    return pd.DataFrame(rows)


def _find_keys(tree: Any, keys: Iterable[str]) -> dict[str, Any]:
    """The first value of each key in a nested dict/list, breadth first."""
    found: dict[str, Any] = {}
    queue = deque([tree])
    while queue:
        node = queue.popleft()
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, (dict, list)):
                    queue.append(value)
                elif key in keys and key not in found:
                    found[key] = value
        elif isinstance(node, list):
            queue.extend(node)
    return found


def completed(records: pd.DataFrame) -> pd.DataFrame:
    """Rows of finished runs with a value (status `finished`, or no status column)."""
    frame = records[records["value"].notna()]
    if "status" in frame.columns:
        frame = frame[frame["status"].isna() | (frame["status"] == FINISHED)]
    return frame.copy()


def main_records(records: pd.DataFrame) -> pd.DataFrame:
    """Rows of the main setting: full training data and each method's default options (no ablations)."""
    frame = records
    if "fraction" in frame.columns:
        frame = frame[frame["fraction"].isna() | np.isclose(frame["fraction"].astype(float), 1.0)]
    return default_options(frame).copy()


def default_options(records: pd.DataFrame) -> pd.DataFrame:
    """Rows whose ablation options are their method's defaults (or missing); methods not registered are kept."""
    if records.empty or "method" not in records.columns:
        return records
    keep = pd.Series(True, index=records.index)
    for method, spec in METHODS.items():
        rows = records["method"] == method
        if spec.ablations and rows.any():
            kept = with_options(records[rows], spec.default_options()).index
            keep &= ~rows | records.index.isin(kept)
    return records[keep]


def with_options(frame: pd.DataFrame, options: dict[str, Any]) -> pd.DataFrame:
    """Rows whose option columns equal `options` (or are missing, i.e. the default)."""
    for name, value in options.items():
        if name in frame.columns:
            frame = frame[frame[name].isna() | matches(frame[name], value)]
    return frame


def cell_keys(records: pd.DataFrame, select_over: Sequence[str]) -> list[str]:
    """The columns that tell one table cell from another (every setting except those selected over)."""
    return [k for k in cell_key_columns() if k in records.columns and k not in select_over]


def setting_key(frame: pd.DataFrame, keys: list[str]) -> pd.Series:
    """One text key per row from the `keys` columns (see `value_text`)."""
    if not keys or frame.empty:
        return pd.Series("", index=frame.index, dtype=object)
    return frame[keys].apply(lambda column: column.map(value_text)).agg("|".join, axis=1)


def value_text(value: Any) -> str:
    """A setting as text for grouping: numbers normalized (10 == 10.0), booleans and missing values spelled out."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "nan"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return format(float(value), "g")
    return str(value)


def matches(values: pd.Series, target: Any) -> pd.Series:
    """Element-wise `values == target` for option settings (numbers, booleans, text), missing -> False."""
    if isinstance(target, (bool, np.bool_)):
        truth = {"true": True, "1": True, "false": False, "0": False}
        return values.map(lambda v: not is_missing(v) and truth.get(value_text(v).lower()) is bool(target)).astype(bool)
    wanted = value_text(target)
    return values.map(lambda v: not is_missing(v) and value_text(v) == wanted).astype(bool)


def is_missing(value: Any) -> bool:
    """Whether a cell value is absent (None or NaN)."""
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))
