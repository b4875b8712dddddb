"""Result records -> one long-format pandas frame: a row per (run, evaluated split)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from vapt.data import CUSTOM_GROUP, FGVC_DATASETS, VTAB_TASKS
from vapt.errors import DataLayoutError

COLUMNS: tuple[str, ...] = (
    "run_id", "backbone", "method", "benchmark", "task", "group", "train_split", "split", "seed", "lr", "wd",
    "fraction", "epochs", "batch_size", "num_tokens", "metric", "value", "status", "trainable_params",
    "prompt_params", "head_params", "backbone_params", "weights", "wall_time_s", "path",
)


def _group(benchmark: str, task: str) -> str:
    registry = VTAB_TASKS if benchmark == "vtab1k" else FGVC_DATASETS
    return registry[task][0] if task in registry else CUSTOM_GROUP


def _rows(record: dict[str, Any], path: Path, runs_dir: Path) -> list[dict[str, Any]]:
    config, params = record["config"], record.get("params") or {}
    benchmark, _, task = str(config["data"]).partition("/")
    num_tokens = (record.get("method_config") or {}).get("num_tokens", config.get("num_tokens"))
    base = {
        "run_id": record.get("run_id") or path.parent.relative_to(runs_dir).as_posix(),
        "backbone": config["backbone"], "method": config["method"], "benchmark": benchmark, "task": task,
        "group": _group(benchmark, task), "train_split": config.get("train_split"), "seed": config["seed"],
        "lr": config["lr"], "wd": config["wd"], "fraction": config.get("fraction", 1.0),
        "epochs": config["epochs"], "batch_size": config.get("batch_size"),
        "num_tokens": math.nan if num_tokens is None else num_tokens, "metric": "top1",
        "status": record.get("status"), "trainable_params": params.get("trainable"),
        "prompt_params": params.get("prompt"), "head_params": params.get("head"),
        "backbone_params": params.get("backbone"), "weights": config.get("weights"),
        "wall_time_s": record.get("wall_time_s"), "path": str(path),
    }
    final = record.get("final") or {}
    splits = config.get("eval_splits") or list(final)
    return [{**base, "split": split, "value": final.get(split, math.nan)} for split in splits]


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """One result.json; a file that is not a result record raises DataLayoutError naming it."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataLayoutError(f"result record {path} cannot be read as JSON ({err})") from err
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise DataLayoutError(f"result record {path} is not a JSON object with a 'config' object")
    missing = [k for k in ("backbone", "method", "data", "seed", "lr", "wd", "epochs") if k not in record["config"]]
    if missing:
        raise DataLayoutError(f"result record {path}: config lacks {', '.join(missing)}")
    return record


def load_results(runs_dir: str | os.PathLike) -> pd.DataFrame:
    """Every `**/result.json` under `runs_dir` as long-format rows (value = top-1 in percent; NaN if failed)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise DataLayoutError(f"runs folder {runs_dir} does not exist")
    rows = [row for path in sorted(runs_dir.glob("**/result.json"))
            for row in _rows(read_record(path), path, runs_dir)]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.astype({"value": float, "num_tokens": "Int64"}) if not frame.empty else frame
