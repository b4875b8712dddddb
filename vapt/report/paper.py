"""The paper's side of every report: its published numbers, titles and labels, and the T1 / T2 formats.

The paper's numbers come from the bundled `vapt/resources/paper_results.csv`; values it lacks stay
blank (NaN), never guessed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from vapt.config import METHODS
from vapt.data.fgvc import FGVC_DATASETS, FGVC_TITLES
from vapt.data.vtab import VTAB_GROUPS, VTAB_TASKS
from vapt.errors import ConfigError
from vapt.report.frame import cell_key_columns

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
PAPER_METHOD_LABELS: dict[str, str] = {  # methods the paper compares with that this library does not implement
    "e2vpt": "E2VPT",
    "lora": "LoRA",
    "adapter": "Adapter",
    "vfpt": "VFPT",
    "sa2vp": "SA2VP",
    "gatevpt": "GateVPT",
}
PAPER_METHOD_COLOURS: dict[str, str] = {"e2vpt": "#9467bd", "gatevpt": "#2ca02c"}
OTHER_COLOUR = "#17becf"


def method_label(method: str) -> str:
    """The label of a method in tables and figures (the registry's, or the paper's for methods not here)."""
    if method in METHODS:
        return METHODS[method].label
    return PAPER_METHOD_LABELS.get(method, method)


def method_colour(method: str) -> str:
    """The colour of a method in figures (the registry's, or a fixed one for the paper's other methods)."""
    if method in METHODS:
        return METHODS[method].colour
    return PAPER_METHOD_COLOURS.get(method, OTHER_COLOUR)
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


def method_order() -> tuple[str, ...]:
    """Methods in table and legend order: the paper's T1 rows, then every other registered method, then T2's."""
    return tuple(dict.fromkeys((*T1_METHODS, *METHODS, *T2_METHODS)))
T2_BACKBONES: tuple[str, ...] = ("vit_b16_mae", "vit_b16_mocov3")
PAPER_FILE = "paper_results.csv"


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
        k for k in cell_key_columns() if k in ours.columns and k not in keep and ours[k].nunique(dropna=True) > 1
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
        label = method_label(method)
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

    mine_all = groups[groups["group"] != "all"] if not groups.empty else groups
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
        label = method_label(method)
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
