"""Result records -> tables: per-task top-1, group means, [k], Tuned/Total, the paper's numbers beside ours.

The input is the long-format frame of `vapt.records.load_results` (one row per run and evaluated
split, `value` in percent). Selection follows PROTOCOL.md §4: for every cell (backbone, method, task,
variant) the learning rate and weight decay with the best mean **validation** top-1 win (ties -> the
smaller lr), and the **test** top-1 of that setting's runs (VTAB: the `train800val200` retrains) is
reported as mean ± std over seeds. The paper's numbers come from the bundled
`vapt/resources/paper_results.csv`; values it lacks stay blank (NaN), never guessed.

`python -m vapt table --runs DIR [--out FILE.csv] [--markdown FILE.md] [--latex FILE.tex]`
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections import deque
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vapt.config import VAPTConfig
from vapt.data.fgvc import FGVC_DATASETS, FGVC_TITLES
from vapt.data.vtab import VTAB_GROUPS, VTAB_TASKS
from vapt.errors import ConfigError
from vapt.io import write_text_atomic

MAIN_BACKBONE = "vit_b16_in21k"
GROUPS: tuple[str, ...] = (*VTAB_GROUPS, "fgvc")
GROUP_TASKS: dict[str, tuple[str, ...]] = {
    **{g: tuple(t for t, (group, _) in VTAB_TASKS.items() if group == g) for g in VTAB_GROUPS},
    "fgvc": tuple(FGVC_DATASETS),
}
VTAB_ORDER: tuple[str, ...] = tuple(t for g in VTAB_GROUPS for t in GROUP_TASKS[g])
GROUP_TITLES: dict[str, str] = {
    "natural": "VTAB-1K Natural",
    "specialized": "VTAB-1K Specialized",
    "structured": "VTAB-1K Structured",
    "fgvc": "FGVC",
}
TASK_TITLES: dict[str, str] = {
    "cifar": "CIFAR-100",
    "caltech101": "Caltech101",
    "dtd": "DTD",
    "oxford_flowers102": "Flowers102",
    "oxford_iiit_pet": "Pets",
    "svhn": "SVHN",
    "sun397": "Sun397",
    "patch_camelyon": "Camelyon",
    "eurosat": "EuroSAT",
    "resisc45": "Resisc45",
    "diabetic_retinopathy": "Retinopathy",
    "clevr_count": "Clevr-Count",
    "clevr_dist": "Clevr-Dist",
    "dmlab": "DMLab",
    "kitti": "KITTI-Dist",
    "dsprites_loc": "dSpr-Loc",
    "dsprites_ori": "dSpr-Ori",
    "smallnorb_azi": "sNORB-Azim",
    "smallnorb_ele": "sNORB-Elev",
    **FGVC_TITLES,
}
METHOD_LABELS: dict[str, str] = {
    "full": "Full",
    "linear": "Linear",
    "vpt_shallow": "VPT-Shallow",
    "vpt_deep": "VPT-Deep",
    "e2vpt": "E2VPT",
    "lora": "LoRA",
    "adapter": "Adapter",
    "vfpt": "VFPT",
    "sa2vp": "SA2VP",
    "gatevpt": "GateVPT",
    "vapt": "VAPT",
}
T1_METHODS: tuple[str, ...] = (
    "full",
    "linear",
    "vpt_shallow",
    "vpt_deep",
    "e2vpt",
    "lora",
    "adapter",
    "vfpt",
    "sa2vp",
    "vapt",
)
T2_METHODS: tuple[str, ...] = ("vpt_shallow", "vpt_deep", "gatevpt", "vapt")
T2_BACKBONES: tuple[str, ...] = ("vit_b16_mae", "vit_b16_mocov3")
VAL_SPLITS: dict[str, str] = {"vtab1k": "val200", "fgvc": "val"}
FINAL_TRAIN_SPLITS: dict[str, str] = {"vtab1k": "train800val200", "fgvc": "train"}
OK_STATUSES: tuple[str, ...] = ("ok", "done", "complete", "completed", "finished", "success")
# VAPT options varied by the ablations; read from each run's result.json when the records lack them.
ABLATION_OPTIONS: dict[str, Any] = {
    name: getattr(VAPTConfig(), name)
    for name in (
        "kernel_size",
        "padding",
        "conv",
        "shared_kernel",
        "projector",
        "shared_projector",
        "projector_dim",
        "activation",
        "static_depth",
    )
}
CELL_KEYS: tuple[str, ...] = (
    "backbone",
    "method",
    "benchmark",
    "group",
    "task",
    "fraction",
    "num_tokens",
    *ABLATION_OPTIONS,
)
PAPER_FILE = "paper_results.csv"


# ----------------------------------------------------------------------------------------- inputs
def paper_results(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The paper's published numbers (bundled CSV, or `path`), with their `source` and `status`."""
    if path is None:
        with resources.files("vapt.resources").joinpath(PAPER_FILE).open("r", encoding="utf-8") as handle:
            frame = pd.read_csv(handle)
    else:
        frame = pd.read_csv(path)
    expected = {
        "table",
        "backbone",
        "method",
        "benchmark",
        "group",
        "task",
        "metric",
        "value",
        "source",
        "status",
    }
    missing = expected - set(frame.columns)
    if missing:
        raise ConfigError(f"paper results {path or PAPER_FILE} lack column(s) {sorted(missing)}")
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    return frame


def load_records(runs_dir: str | os.PathLike) -> pd.DataFrame:
    """Long-format result records of every run under `runs_dir`, with the VAPT ablation options added."""
    from vapt.records import load_results

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
    for path in sorted(runs_dir.rglob("result.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(record, dict):
            continue
        found = _find_keys([record.get("method_config", {}), record.get("config", {})], ABLATION_OPTIONS)
        if found:
            run_id = record.get("run_id") or path.parent.relative_to(runs_dir).as_posix()
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
    """Rows of finished runs with a value (`status` in OK_STATUSES, or no status column)."""
    frame = records[records["value"].notna()]
    if "status" in frame.columns:
        frame = frame[frame["status"].isna() | frame["status"].astype(str).str.lower().isin(OK_STATUSES)]
    return frame.copy()


def main_records(records: pd.DataFrame) -> pd.DataFrame:
    """Rows of the main setting: full training data and the default VAPT options (no ablations)."""
    frame = records
    if "fraction" in frame.columns:
        frame = frame[frame["fraction"].isna() | np.isclose(frame["fraction"].astype(float), 1.0)]
    for name, default in ABLATION_OPTIONS.items():
        if name in frame.columns:
            column = frame[name]
            frame = frame[column.isna() | matches(column, default)]
    return frame.copy()


# -------------------------------------------------------------------------------------- per task
def _cell_keys(records: pd.DataFrame, select_over: Sequence[str]) -> list[str]:
    return [k for k in CELL_KEYS if k in records.columns and k not in select_over]


def setting_key(frame: pd.DataFrame, keys: list[str]) -> pd.Series:
    """One text key per row from the `keys` columns (see `value_text`)."""
    if not keys:
        return pd.Series("", index=frame.index)
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
        return values.map(lambda v: not _missing(v) and truth.get(value_text(v).lower()) is bool(target)).astype(bool)
    wanted = value_text(target)
    return values.map(lambda v: not _missing(v) and value_text(v) == wanted).astype(bool)


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def select_final(
    records: pd.DataFrame, split: str = "test", select_over: Sequence[str] = ("lr", "wd")
) -> pd.DataFrame:
    """The `split` rows of the setting chosen on validation for every cell (PROTOCOL.md §4).

    Adds `selection`: `val` when chosen on validation, `no validation runs` when the cell had none
    (every `split` row then counts).
    """
    frame = completed(records)
    select_over = [c for c in select_over if c in frame.columns]
    keys = _cell_keys(frame, select_over)
    frame = frame.assign(_cell=setting_key(frame, keys))
    chosen = []
    for _, cell in frame.groupby("_cell", sort=False):
        benchmark = str(cell["benchmark"].iloc[0])
        targets = cell[cell["split"] == split]
        if targets.empty:
            continue
        val = cell[cell["split"] == VAL_SPLITS.get(benchmark, "val")]
        if val.empty or not select_over:
            chosen.append(targets.assign(selection="no validation runs"))
            continue
        scores = val.groupby(select_over, dropna=False)["value"].mean().reset_index()
        order = ["value"] + select_over
        ascending = [False] + [True] * len(select_over)
        best = scores.sort_values(order, ascending=ascending, kind="mergesort").iloc[[0]][select_over]
        picked = targets[_matches(targets, best, select_over)]
        final_split = FINAL_TRAIN_SPLITS.get(benchmark)
        if "train_split" in picked.columns and (picked["train_split"] == final_split).any():
            picked = picked[picked["train_split"] == final_split]
        if not picked.empty:
            chosen.append(picked.assign(selection="val"))
    if not chosen:
        return frame.iloc[0:0].drop(columns=["_cell"]).assign(selection=pd.Series(dtype=str))
    return pd.concat(chosen).drop(columns=["_cell"])


def _matches(frame: pd.DataFrame, best: pd.DataFrame, columns: list[str]) -> np.ndarray:
    mask = np.ones(len(frame), dtype=bool)
    for column in columns:
        target = best[column].iloc[0]
        values = frame[column]
        mask &= values.isna().to_numpy() if pd.isna(target) else (values == target).to_numpy()
    return mask


def task_table(
    records: pd.DataFrame, split: str = "test", select_over: Sequence[str] = ("lr", "wd")
) -> pd.DataFrame:
    """Per-task top-1 over seeds (mean, std, n_seeds) of the selected setting, with Tuned/Total (%).

    One row per cell (backbone, method, benchmark, group, task and any varied fraction / prompt length /
    VAPT option); `tuned_total_pct` = trainable parameters / backbone parameters x 100.
    """
    final = select_final(records, split=split, select_over=select_over)
    keys = _cell_keys(final, select_over)
    if final.empty:
        return pd.DataFrame(columns=[*keys, "mean", "std", "n_seeds", "tuned_total_pct"])
    agg: dict[str, tuple[str, str]] = {
        "mean": ("value", "mean"),
        "std": ("value", "std"),
        "n_seeds": ("value", "size"),
    }
    for column in ("lr", "wd"):
        if column in final.columns:
            agg[column] = (column, "first")
    for column in ("trainable_params", "prompt_params", "backbone_params"):
        if column in final.columns:
            agg[column] = (column, "mean")
    if "wall_time_s" in final.columns:
        agg["wall_time_s"] = ("wall_time_s", "mean")
    agg["selection"] = ("selection", "first")
    table = final.groupby(keys, dropna=False, sort=False).agg(**agg).reset_index()
    if {"trainable_params", "backbone_params"} <= set(table.columns):
        table["tuned_total_pct"] = 100.0 * table["trainable_params"] / table["backbone_params"]
    else:
        table["tuned_total_pct"] = np.nan
    optional = [c for c in ("lr", "wd", "trainable_params", "prompt_params", "backbone_params", "wall_time_s")
                if c in table.columns and table[c].isna().all()]
    table = table.drop(columns=optional)
    return _sort_tasks(table)


def _sort_tasks(table: pd.DataFrame) -> pd.DataFrame:
    order = {t: i for i, t in enumerate((*VTAB_ORDER, *GROUP_TASKS["fgvc"]))}
    methods = {m: i for i, m in enumerate((*T1_METHODS, "gatevpt"))}
    rank = pd.DataFrame(
        {
            "_m": table["method"].map(methods).fillna(len(methods)),
            "_t": table["task"].map(order).fillna(len(order)),
        },
        index=table.index,
    )
    sort_cols = [c for c in ("backbone",) if c in table.columns] + ["_m", "method", "_t", "task"]
    return (
        table.join(rank)
        .sort_values(sort_cols, kind="mergesort")
        .drop(columns=["_m", "_t"])
        .reset_index(drop=True)
    )


def full_reference(tasks: pd.DataFrame, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Full fine-tuning: ours where we ran it, else the paper's (`reference` says which)."""
    ours = tasks[tasks["method"] == "full"][["backbone", "task", "mean"]].rename(columns={"mean": "full"})
    ours = ours.groupby(["backbone", "task"], as_index=False)["full"].mean().assign(reference="ours")
    if paper is None:
        return ours
    theirs = paper[(paper["method"] == "full") & (paper["metric"] == "top1") & (paper["table"] == "T1")]
    theirs = theirs[["backbone", "task", "value"]].rename(columns={"value": "full"}).assign(reference="paper")
    merged = pd.concat([ours, theirs], ignore_index=True)
    return merged.drop_duplicates(["backbone", "task"], keep="first").reset_index(drop=True)


# ---------------------------------------------------------------------------------- group means
def group_table(tasks: pd.DataFrame, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Group means of per-task means, [k] wins vs full fine-tuning, Tuned/Total, and VTAB's Mean Total.

    Rows: one per (backbone, method, variant, group), plus group `all` (benchmark vtab1k) whose mean
    is the Mean Total over the VTAB tasks present; `complete` says whether every task of the group ran.
    [k] compares with our full fine-tuning of the same task, or the paper's when we have none.
    """
    columns = ["group", "mean", "n_tasks", "complete", "wins_vs_full", "wins_reference", "tuned_total_pct"]
    if tasks.empty:
        return pd.DataFrame(columns=["backbone", "method", "benchmark", *columns])
    variant = [k for k in CELL_KEYS if k in tasks.columns and k not in ("benchmark", "group", "task")]
    reference = full_reference(tasks, paper)
    frame = tasks.merge(reference, on=["backbone", "task"], how="left")
    frame["win"] = np.where(
        frame["full"].notna() & (frame["method"] != "full"), frame["mean"] > frame["full"], np.nan
    )
    rows = []
    for key, part in frame.groupby([*variant, "benchmark", "group"], dropna=False, sort=False):
        rows.append(_group_row(dict(zip([*variant, "benchmark", "group"], key, strict=False)), part))
    for key, part in frame[frame["task"].isin(VTAB_ORDER)].groupby(variant, dropna=False, sort=False):
        head = dict(zip(variant, key if isinstance(key, tuple) else (key,), strict=False))
        rows.append(_group_row({**head, "benchmark": "vtab1k", "group": "all"}, part))
    table = pd.DataFrame(rows)
    group_rank = {g: i for i, g in enumerate((*VTAB_GROUPS, "all", "fgvc"))}
    table["_g"] = table["group"].map(group_rank).fillna(len(group_rank))
    sort_cols = [c for c in ("backbone", "method") if c in table.columns] + ["_g", "group"]
    return table.sort_values(sort_cols, kind="mergesort").drop(columns="_g").reset_index(drop=True)


def _group_row(head: dict[str, Any], part: pd.DataFrame) -> dict[str, Any]:
    group = head["group"]
    expected = set(VTAB_ORDER) if group == "all" else set(GROUP_TASKS.get(group, ()))
    compared = part["win"].dropna()
    references = sorted(set(part.loc[part["full"].notna(), "reference"].astype(str)))
    return {
        **head,
        "mean": part["mean"].mean(),
        "n_tasks": int(part["task"].nunique()),
        "complete": bool(expected) and expected <= set(part["task"]),
        "wins_vs_full": int(compared.astype(bool).sum()) if len(compared) else np.nan,
        "wins_reference": "+".join(references) if references else "",
        "tuned_total_pct": part["tuned_total_pct"].mean() if "tuned_total_pct" in part else np.nan,
    }


# ------------------------------------------------------------------------------- paper vs ours
def paper_vs_ours(
    tasks: pd.DataFrame, groups: pd.DataFrame, paper: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Ours beside the paper for every per-task top-1 and group number either side has; diff = ours - paper.

    Long format: backbone, method, benchmark, group, task, metric, ours, ours_std, n_seeds, paper,
    diff, paper_status, paper_source. Paper values the CSV lacks are NaN.
    """
    paper = paper_results() if paper is None else paper
    ours_parts = []
    if not tasks.empty:
        ours_parts.append(tasks.assign(metric="top1", ours=tasks["mean"], ours_std=tasks["std"]))
    if not groups.empty:
        for metric, column, where in (
            ("group_mean", "mean", groups["group"] != "all"),
            ("mean_total", "mean", groups["group"] == "all"),
            ("wins_vs_full", "wins_vs_full", groups["group"] != "all"),
        ):
            part = groups[where]
            ours_parts.append(part.assign(metric=metric, ours=part[column], task=np.nan, ours_std=np.nan))
        tuned = groups.groupby(["backbone", "method"], as_index=False)["tuned_total_pct"].mean()
        ours_parts.append(
            tuned.assign(
                metric="tuned_total_pct",
                ours=tuned["tuned_total_pct"],
                benchmark="all",
                group="all",
                task=np.nan,
                ours_std=np.nan,
            )
        )
    keep = ["backbone", "method", "benchmark", "group", "task", "metric", "ours", "ours_std"]
    ours = pd.concat(ours_parts, ignore_index=True) if ours_parts else pd.DataFrame(columns=keep)
    if "n_seeds" in ours.columns:
        keep.append("n_seeds")
    variant = [
        k for k in CELL_KEYS if k in ours.columns and k not in keep and ours[k].nunique(dropna=True) > 1
    ]
    ours = ours[[*keep, *variant]].copy()
    theirs = paper[paper["table"].isin(["T1", "T2"])][
        ["backbone", "method", "benchmark", "group", "task", "metric", "value", "status", "source"]
    ].rename(columns={"value": "paper", "status": "paper_status", "source": "paper_source"})
    join = ["backbone", "method", "benchmark", "group", "task", "metric"]
    for frame in (ours, theirs):
        frame["task"] = frame["task"].astype(object).where(frame["task"].notna(), "")
        for column in join:
            frame[column] = frame[column].astype(str)
    merged = ours.merge(theirs, on=join, how="outer")
    merged["diff"] = merged["ours"] - merged["paper"]
    merged["task"] = merged["task"].replace("", np.nan)
    merged = merged[merged["backbone"].isin(set(ours["backbone"])) | merged["ours"].notna()]
    columns = [*join, *variant, "ours", "ours_std"] + (["n_seeds"] if "n_seeds" in merged else [])
    columns += ["paper", "diff", "paper_status", "paper_source"]
    return merged[columns].reset_index(drop=True)


# -------------------------------------------------------------------------------- paper formats
def t1_columns(extra_tasks: Sequence[tuple[str, str]] = ()) -> pd.MultiIndex:
    """The columns of the paper's main table: (section, column), tasks grouped, then any extra tasks."""
    columns: list[tuple[str, str]] = [("", "Tuned/Total (%)")]
    for group in VTAB_GROUPS:
        columns += [(GROUP_TITLES[group], TASK_TITLES[t]) for t in GROUP_TASKS[group]]
        columns += [(GROUP_TITLES[group], "Mean"), (GROUP_TITLES[group], "[k]")]
    columns.append(("VTAB-1K", "Mean Total"))
    columns += [("FGVC", TASK_TITLES[t]) for t in GROUP_TASKS["fgvc"]]
    columns += [("FGVC", "Mean"), ("FGVC", "[k]")]
    columns += [(f"Other tasks ({group})", task) for group, task in extra_tasks]
    columns.append(("", "Paper status"))
    return pd.MultiIndex.from_tuples(columns, names=["section", "column"])


def _paper_row(paper: pd.DataFrame, backbone: str, method: str, table: str) -> tuple[dict, set[str]]:
    rows = paper[(paper["table"] == table) & (paper["backbone"] == backbone) & (paper["method"] == method)]
    cells: dict[tuple[str, str], float] = {}
    statuses: set[str] = set()
    per_task = rows[rows["metric"] == "top1"].set_index("task")["value"]
    for group in GROUPS:
        title = GROUP_TITLES[group]
        for task in GROUP_TASKS[group]:
            if task in per_task.index:
                cells[(title, TASK_TITLES[task])] = per_task[task]
    for _, row in rows.iterrows():
        group, metric = row["group"], row["metric"]
        if metric == "group_mean" and group in GROUP_TITLES:
            cells[(GROUP_TITLES[group], "Mean")] = row["value"]
        elif metric == "wins_vs_full" and group in GROUP_TITLES:
            cells[(GROUP_TITLES[group], "[k]")] = row["value"]
        elif metric == "mean_total":
            cells[("VTAB-1K", "Mean Total")] = row["value"]
        elif metric == "tuned_total_pct":
            cells[("", "Tuned/Total (%)")] = row["value"]
        else:
            continue
    statuses.update(str(s) for s in rows["status"].dropna().unique())
    return cells, statuses


def _derived_paper_cells(cells: dict, full_cells: dict, method: str) -> list[str]:
    """Group means, Mean Total and [k] computed from the paper's own per-task numbers where not printed."""
    notes = []
    vtab_values = []
    for group in GROUPS:
        title = GROUP_TITLES[group]
        values = [cells.get((title, TASK_TITLES[t])) for t in GROUP_TASKS[group]]
        complete = all(v is not None and not pd.isna(v) for v in values)
        if group != "fgvc":
            vtab_values.append(values if complete else None)
        if not complete:
            continue
        if (title, "Mean") not in cells:
            cells[(title, "Mean")] = float(np.mean(values))
            notes.append(f"{title} mean derived")
        full = [full_cells.get((title, TASK_TITLES[t])) for t in GROUP_TASKS[group]]
        if (title, "[k]") not in cells and method != "full" and all(f is not None for f in full):
            cells[(title, "[k]")] = float(sum(v > f for v, f in zip(values, full, strict=False)))
            notes.append(f"{title} [k] derived")
    if ("VTAB-1K", "Mean Total") not in cells and all(v is not None for v in vtab_values):
        cells[("VTAB-1K", "Mean Total")] = float(np.mean([x for v in vtab_values for x in v]))
        notes.append("Mean Total derived")
    return notes


def t1_table(
    tasks: pd.DataFrame,
    groups: pd.DataFrame,
    paper: pd.DataFrame | None = None,
    backbone: str = MAIN_BACKBONE,
    methods: Sequence[str] = T1_METHODS,
    table: str = "T1",
) -> pd.DataFrame:
    """The main table in the paper's format: rows (method, source), paper rows from the CSV, ours marked.

    Paper rows use the numbers printed in `paper` for `backbone`; group means, Mean Total and [k] that
    the paper's per-task numbers determine but the CSV lacks are computed from them and noted in
    `Paper status`. Our rows (source `ours (<backbone>)`) come from `tasks` / `groups`; tasks outside
    the paper's columns get extra columns under `Other tasks (<group>)`. Missing values are NaN.
    """
    paper = paper_results() if paper is None else paper
    extra = []
    if not tasks.empty:
        known = set(VTAB_ORDER) | set(GROUP_TASKS["fgvc"])
        for _, row in tasks[~tasks["task"].isin(known)][["group", "task"]].drop_duplicates().iterrows():
            extra.append((str(row["group"]), str(row["task"])))
    columns = t1_columns(extra)
    index, rows = [], []
    full_cells, _ = _paper_row(paper, backbone, "full", table)
    ours_methods = list(dict.fromkeys(tasks["method"])) if not tasks.empty else []
    for method in [*methods, *[m for m in ours_methods if m not in methods]]:
        label = METHOD_LABELS.get(method, method)
        cells, statuses = _paper_row(paper, backbone, method, table)
        if cells:
            notes = _derived_paper_cells(cells, full_cells, method)
            cells[("", "Paper status")] = "; ".join(sorted(statuses) + notes)
            index.append((label, "paper"))
            rows.append(cells)
        for ours_backbone in (
            sorted(set(tasks.loc[tasks["method"] == method, "backbone"])) if ours_methods else []
        ):
            index.append((label, f"ours ({ours_backbone})"))
            rows.append(_ours_cells(tasks, groups, method, ours_backbone, extra))
    frame = pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["method", "source"]))
    return frame.reindex(columns=columns)


def _ours_cells(
    tasks: pd.DataFrame, groups: pd.DataFrame, method: str, backbone: str, extra: Sequence[tuple[str, str]]
) -> dict:
    mine = tasks[(tasks["method"] == method) & (tasks["backbone"] == backbone)]
    mine = mine.groupby(["group", "task"], as_index=False, sort=False).agg(
        mean=("mean", "mean"), tuned=("tuned_total_pct", "mean")
    )
    cells: dict[tuple[str, str], Any] = {}
    for _, row in mine.iterrows():
        group, task = str(row["group"]), str(row["task"])
        if group in GROUP_TITLES and task in TASK_TITLES:
            cells[(GROUP_TITLES[group], TASK_TITLES[task])] = row["mean"]
        elif (group, task) in extra:
            cells[(f"Other tasks ({group})", task)] = row["mean"]
    mygroups = groups[(groups["method"] == method) & (groups["backbone"] == backbone)]
    for group, part in mygroups.groupby("group", sort=False):
        mean, wins = part["mean"].mean(), part["wins_vs_full"].mean()
        if group == "all":
            cells[("VTAB-1K", "Mean Total")] = mean
        elif group in GROUP_TITLES:
            cells[(GROUP_TITLES[group], "Mean")] = mean
            cells[(GROUP_TITLES[group], "[k]")] = wins
    if mine["tuned"].notna().any():
        cells[("", "Tuned/Total (%)")] = mine["tuned"].mean()
    incomplete = sorted(str(g) for g in mygroups.loc[~mygroups["complete"].astype(bool), "group"])
    incomplete = [g for g in incomplete if g in GROUP_TITLES or g == "all"]
    cells[("", "Paper status")] = "ours" + (
        f"; incomplete groups: {', '.join(incomplete)}" if incomplete else ""
    )
    return cells


def t2_table(
    groups: pd.DataFrame,
    paper: pd.DataFrame | None = None,
    backbones: Sequence[str] = T2_BACKBONES,
    methods: Sequence[str] = T2_METHODS,
) -> pd.DataFrame:
    """The self-supervised table: VTAB-1K group means per backbone (MAE, MoCo v3), paper and ours.

    Our group means on other backbones or groups (e.g. a smoke run's custom task) get extra columns
    `ours: <backbone>`; missing values are NaN.
    """
    paper = paper_results() if paper is None else paper

    def column(backbone: str, group: str) -> tuple[str, str]:
        title = GROUP_TITLES.get(group, group).replace("VTAB-1K ", "")
        return (backbone if backbone in backbones else f"ours: {backbone}", title)

    mine_all = groups[groups["method"].isin(methods) & (groups["group"] != "all")] if not groups.empty else groups
    extra = []
    if not mine_all.empty:
        for _, row in mine_all[["backbone", "group"]].drop_duplicates().iterrows():
            if not (row["backbone"] in backbones and row["group"] in VTAB_GROUPS):
                extra.append(column(row["backbone"], row["group"]))
    columns = pd.MultiIndex.from_tuples(
        [(b, GROUP_TITLES[g].replace("VTAB-1K ", "")) for b in backbones for g in VTAB_GROUPS]
        + extra + [("", "Paper status")],
        names=["backbone", "group"],
    )
    index, rows = [], []
    for method in [*methods, *[m for m in dict.fromkeys(mine_all.get("method", [])) if m not in methods]]:
        label = METHOD_LABELS.get(method, method)
        cells: dict[tuple[str, str], Any] = {}
        part = paper[(paper["table"] == "T2") & (paper["method"] == method) & (paper["metric"] == "group_mean")]
        for _, row in part.iterrows():
            if row["backbone"] in backbones and row["group"] in VTAB_GROUPS:
                cells[column(row["backbone"], row["group"])] = row["value"]
        if cells:
            cells[("", "Paper status")] = "; ".join(sorted(str(s) for s in part["status"].dropna().unique()))
            index.append((label, "paper"))
            rows.append(cells)
        mine = mine_all[mine_all["method"] == method] if not mine_all.empty else mine_all
        if not mine.empty:
            ours: dict[tuple[str, str], Any] = {
                column(r["backbone"], r["group"]): r["mean"] for _, r in mine.iterrows()
            }
            incomplete = sorted(
                {str(g) for g in mine.loc[~mine["complete"].astype(bool), "group"] if g in VTAB_GROUPS})
            note = f"; incomplete groups: {', '.join(incomplete)}" if incomplete else ""
            ours[("", "Paper status")] = "ours" + note
            index.append((label, "ours"))
            rows.append(ours)
    frame = pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["method", "source"]))
    return frame.reindex(columns=columns)


# -------------------------------------------------------------------------------------- export
def format_table(table: pd.DataFrame, digits: dict[str, int] | None = None) -> pd.DataFrame:
    """Numbers as text in the paper's precision: tasks 1 decimal, means 2, [k] integers; NaN blank."""
    digits = {"Mean": 2, "Mean Total": 2, "Tuned/Total (%)": 2, "[k]": 0, **(digits or {})}
    out = pd.DataFrame(index=table.index, columns=table.columns, dtype=object)
    for column in table.columns:
        name = column[-1] if isinstance(column, tuple) else column
        places = digits.get(str(name), 1 if isinstance(column, tuple) and column[0] else 2)
        out[column] = [_fmt(v, places) for v in table[column]]
    return out


def _fmt(value: Any, places: int) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return f"{float(value):.{places}f}"
    return str(value)


def mean_std(tasks: pd.DataFrame, places: int = 1) -> pd.Series:
    """Per-task cells as `mean ± std` text (just the mean when there is one seed)."""
    return pd.Series(
        [
            f"{m:.{places}f}" if pd.isna(s) else f"{m:.{places}f} ± {s:.{places}f}"
            for m, s in zip(tasks["mean"], tasks["std"], strict=False)
        ],
        index=tasks.index,
    )


COUNT_COLUMNS: tuple[str, ...] = ("n_seeds", "n_tasks", "wins_vs_full", "num_tokens", "kernel_size", "seed", "epochs",
                                  "projector_dim", "padding", "static_depth")
GENERAL_COLUMNS: tuple[str, ...] = ("lr", "wd", "fraction")


def to_markdown(table: pd.DataFrame, places: int = 2) -> str:
    """A GitHub-flavoured Markdown table (MultiIndex columns joined as `section: column`).

    Numbers get `places` decimals, except counts (integers) and lr / wd / fraction (shortest form);
    a named or multi-level index becomes leading columns, an unnamed one is dropped.
    """
    named = any(name is not None for name in table.index.names)
    frame = table.reset_index() if named else table.reset_index(drop=True)
    headers = []
    for column in frame.columns:
        if isinstance(column, tuple):
            headers.append(": ".join(str(c) for c in column if str(c)))
        else:
            headers.append(str(column))
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    kinds = [_column_kind(frame[column], header) for column, header in zip(frame.columns, headers, strict=True)]
    for row in frame.itertuples(index=False):
        cells = [_fmt_kind(v, kind, places).replace("|", "\\|") for v, kind in zip(row, kinds, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _column_kind(values: pd.Series, header: str) -> str:
    if header in GENERAL_COLUMNS:
        return "general"
    if pd.api.types.is_integer_dtype(values) or header in COUNT_COLUMNS:
        return "count"
    return "number"


def _fmt_kind(value: Any, kind: str, places: int) -> str:
    if _missing(value):
        return ""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return str(value)
    if kind == "general":
        return format(float(value), "g")
    if kind == "count" and float(value).is_integer():
        return str(int(value))
    return f"{float(value):.{places}f}"


def to_latex(table: pd.DataFrame, caption: str | None = None) -> str:
    """A LaTeX tabular (booktabs) of a formatted table, multi-level headers kept."""
    text = table if (table.dtypes == "object").all() else format_table(table)
    styler = text.style
    return styler.to_latex(hrules=True, multicol_align="c", caption=caption, clines=None)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text atomically (temporary file in the same folder, then rename)."""
    return write_text_atomic(path, text)


# ------------------------------------------------------------------------------------- reports
@dataclasses.dataclass
class Tables:
    """Everything `python -m vapt table` derives from a runs folder."""

    records: pd.DataFrame
    tasks: pd.DataFrame
    groups: pd.DataFrame
    comparison: pd.DataFrame
    t1: pd.DataFrame
    t2: pd.DataFrame


def build_tables(records: pd.DataFrame, paper: pd.DataFrame | None = None, split: str = "test") -> Tables:
    """Per-task, group, paper-vs-ours, T1 and T2 tables of the main setting (full data, default options)."""
    paper = paper_results() if paper is None else paper
    main = main_records(records)
    tasks = task_table(main, split=split, select_over=("lr", "wd", "num_tokens"))
    groups = group_table(tasks, paper)
    return Tables(
        records=records,
        tasks=tasks,
        groups=groups,
        comparison=paper_vs_ours(tasks, groups, paper),
        t1=t1_table(tasks, groups, paper),
        t2=t2_table(groups, paper),
    )


TASK_COLUMNS: tuple[str, ...] = (
    "backbone", "method", "benchmark", "group", "task", "fraction", "num_tokens", *ABLATION_OPTIONS,
    "top1 (mean ± std)", "n_seeds", "lr", "wd", "tuned_total_pct", "selection",
)
GROUP_COLUMNS: tuple[str, ...] = (
    "backbone", "method", "benchmark", "group", "mean", "n_tasks", "complete", "wins_vs_full", "wins_reference",
    "tuned_total_pct",
)


def task_summary(tasks: pd.DataFrame) -> pd.DataFrame:
    """The per-task table for reading: top-1 as `mean ± std`, seeds, chosen lr/wd, Tuned/Total (%)."""
    shown = tasks.assign(**{"top1 (mean ± std)": mean_std(tasks)}) if not tasks.empty else tasks
    varied = [c for c in ("fraction", "num_tokens", *ABLATION_OPTIONS) if c in shown and shown[c].nunique() > 1]
    keep = [c for c in TASK_COLUMNS if c in shown.columns and (c in varied or c not in CELL_KEYS[5:])]
    return shown[keep].reset_index(drop=True)


def group_summary(groups: pd.DataFrame) -> pd.DataFrame:
    """The group table for reading: group means, tasks present, [k] and its reference, Tuned/Total (%)."""
    return groups[[c for c in GROUP_COLUMNS if c in groups.columns]].reset_index(drop=True)


def report_markdown(tables: Tables) -> str:
    """A Markdown report: per-task (mean ± std), group means, paper vs ours, the T1 and T2 tables."""
    sections = ["# Results", ""]
    if tables.tasks.empty:
        sections += ["No finished runs with test results were found.", ""]
    else:
        sections += ["## Per-task top-1 (%)", "", to_markdown(task_summary(tables.tasks)), ""]
        sections += ["## Group means", "", to_markdown(group_summary(tables.groups)), ""]
        compared = tables.comparison[tables.comparison["ours"].notna()].drop(columns=["paper_source"])
        sections += ["## Paper vs ours", "", to_markdown(compared), ""]
    sections += ["## Table 1 (paper's format; paper rows from the bundled CSV)", "",
                 to_markdown(format_table(tables.t1)), ""]
    t2_digits = {c: 2 for c in ("Natural", "Specialized", "Structured")}
    sections += ["## Table 2 (self-supervised backbones, VTAB-1K group means)", "",
                 to_markdown(format_table(tables.t2, digits=t2_digits)), ""]
    return "\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    """`python -m vapt table --runs DIR`: long-format CSV, per-task and group tables, paper beside ours."""
    parser = argparse.ArgumentParser(prog="python -m vapt table", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="folder of runs (each with a result.json)")
    parser.add_argument("--out", help="write the long-format records here (CSV)")
    parser.add_argument(
        "--markdown", help="write per-task, group, paper-vs-ours and T1/T2 tables here (Markdown)"
    )
    parser.add_argument("--latex", help="write the T1 table here (LaTeX)")
    parser.add_argument("--split", default="test", help="split reported after selection (default: test)")
    args = parser.parse_args(argv)
    runs = Path(args.runs)
    if not runs.is_dir():
        raise ConfigError(
            f"runs folder {runs} does not exist; run `python -m vapt sweep ... --out {runs}` first"
        )
    records = load_records(runs)
    if args.out:
        write_text(args.out, records.to_csv(index=False))
        print(f"wrote {len(records)} records -> {args.out}")
    tables = build_tables(records, split=args.split)
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_rows", 200):
        if tables.tasks.empty:
            print(f"no finished runs with {args.split} results under {runs}")
        else:
            print(task_summary(tables.tasks).to_string(index=False))
            print()
            print(group_summary(tables.groups).to_string(index=False))
    if args.markdown:
        write_text(args.markdown, report_markdown(tables))
        print(f"wrote tables -> {args.markdown}")
    if args.latex:
        write_text(args.latex, to_latex(format_table(tables.t1), caption="Main results (top-1, %)"))
        print(f"wrote T1 -> {args.latex}")
    return 0
