"""Trained models of finished runs: finding the best run per method and rebuilding its model (no drawing here).

Shared by Grad-CAM (`vapt.report.gradcam`) and the MoE lens (`vapt.report.lens_command`). A run folder
holds `result.json` (read through `RunRecord`) and `trainable.pt`; its model is rebuilt from the
record's config by the builder `python -m vapt train` uses (`vapt.run.builder`), including the random
draw of a backbone that has no weights file (e.g. `vit_test`), and then given the trained prompts and head.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vapt.data.images import ImageListDataset
from vapt.errors import DataLayoutError
from vapt.run.builder import build_model, split_dataset
from vapt.run.config import TrainConfig
from vapt.run.record import RECORD_NAME, RunRecord, scan_records

WEIGHTS_NAME = "trainable.pt"
# Splits a run is ranked by, in order of preference: a run's score on one split is only compared with
# other runs' scores on the same split.
RANKING_SPLITS: tuple[str, ...] = ("test", "val")


def finished_runs(runs: str | os.PathLike) -> list[tuple[Path, RunRecord]]:
    """(run folder, record) of every finished run under `runs` that saved its trained weights."""
    return [(path.parent, record) for path, record in scan_records(runs, warn=False)
            if record.finished and (path.parent / WEIGHTS_NAME).is_file()]


def _rank(record: RunRecord, splits: Sequence[str]) -> tuple[int, float] | None:
    """(preference of the first split in `splits` the run has a score on, that score); None without one."""
    for position, split in enumerate(splits):
        score = record.score(split)
        if score is not None:
            return (len(splits) - position, float(score))
    return None


def best_runs(runs: str | os.PathLike, methods: Sequence[str],
              splits: Sequence[str] = RANKING_SPLITS) -> dict[tuple[str, str], dict[str, Path]]:
    """(backbone, dataset) -> method -> the best finished full-data run (default options) with trainable.pt.

    Runs are ranked by their last-epoch top-1 on the first split of `splits` they were evaluated on:
    a run with a test score beats one with only a validation score, and a test score is never compared
    with a validation score. Runs with no score on any of `splits` are left out.
    """
    best: dict[tuple[str, str], dict[str, tuple[tuple[int, float], Path]]] = {}
    for folder, record in finished_runs(runs):
        config = record.config
        method = config.get("method")
        if method not in methods or config.get("fraction", 1.0) != 1.0 or config.get("method_options"):
            continue
        rank = _rank(record, splits)
        if rank is None:
            continue
        chosen = best.setdefault((str(config.get("backbone")), str(config.get("data"))), {})
        if method not in chosen or rank > chosen[method][0]:
            chosen[method] = (rank, folder)
    return {key: {m: chosen[m][1] for m in methods if m in chosen} for key, chosen in sorted(best.items())}


def model_runs(runs: str | os.PathLike, methods: Sequence[str]) -> dict[tuple[str, str], dict[str, Path]]:
    """`best_runs` restricted to the (backbone, dataset) pairs where every method in `methods` has a run."""
    return {key: found for key, found in best_runs(runs, methods).items() if set(methods) <= set(found)}


def find_model_runs(runs: str | os.PathLike, methods: Sequence[str],
                    preferred_tasks: Sequence[str] = ()) -> dict[str, Path] | None:
    """One finished run per method on a common (backbone, dataset); datasets in `preferred_tasks` first."""
    found = model_runs(runs, methods)
    if not found:
        return None
    rank = {t: i for i, t in enumerate(preferred_tasks)}
    key = min(found, key=lambda k: (rank.get(k[1].split("/", 1)[-1], len(rank)), k))
    return found[key]


def read_run(run_dir: str | os.PathLike) -> RunRecord:
    """The record of a run folder; DataLayoutError naming the folder when it is not a run folder."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise DataLayoutError(f"run folder {str(folder)!r} does not exist")
    if not (folder / RECORD_NAME).is_file():
        raise DataLayoutError(f"run folder {str(folder)!r} has no {RECORD_NAME}; expected a run written by "
                              f"`python -m vapt train`")
    return RunRecord.read(folder / RECORD_NAME)


def run_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The training config of a run folder."""
    return TrainConfig.from_dict(read_run(run_dir).config)


def load_run_model(run_dir: str | os.PathLike, record: RunRecord | None = None) -> Any:
    """The trained model of a finished run (eval mode): its backbone, method options and trainable.pt.

    The backbone is built by `vapt.run.builder.build_model`, as `train` built it, so a backbone without
    a weights file (`vit_test`) is the same random draw; the global random state is left as it was.
    Raises DataLayoutError naming the folder or file when the run cannot be rebuilt.
    """
    folder = Path(run_dir)
    record = record if record is not None else read_run(folder)
    config = TrainConfig.from_dict(record.config)
    weights_path = folder / WEIGHTS_NAME
    if not weights_path.is_file():
        raise DataLayoutError(f"run folder {str(folder)!r} has no {WEIGHTS_NAME} (status {record.status!r}); "
                              f"expected a finished run")
    model, _ = build_model(config, keep_random_state=True)
    try:
        model.load_trainable(weights_path)
    except (KeyError, ValueError, RuntimeError, OSError) as err:
        raise DataLayoutError(f"{str(weights_path)!r} does not fit the model of its run "
                              f"({config.backbone}, {config.method}): {' '.join(str(err).split())}") from err
    return model.eval()


def run_split(config: TrainConfig, split: str, **fields: Any) -> ImageListDataset:
    """One split of a run's dataset, preprocessed as the run's evaluation images were (its input size, decoder and
    resize mode; records made before `--decode` / `--resize` read as PIL). `fields` replace config fields."""
    config = dataclasses.replace(config, **fields).resolved() if fields else config.resolved()
    return split_dataset(config, split)


__all__ = [
    "RANKING_SPLITS",
    "WEIGHTS_NAME",
    "best_runs",
    "find_model_runs",
    "finished_runs",
    "load_run_model",
    "model_runs",
    "read_run",
    "run_config",
    "run_split",
]
