"""Run records -> tables: per-task top-1, group means, [k], Tuned/Total, the paper's numbers beside ours.

The input is the long-format frame of `vapt.report.frame.load_records` (one row per run and evaluated
split, `value` in percent). Selection follows the protocol (docs/protocol.md) with its one rule,
`vapt.run.selection.select_setting`: for every cell (backbone, method, task, variant) the learning rate
and weight decay with the best mean **validation** top-1 win (ties -> the larger lr, then the larger wd,
as the authors' loop), and the **test** top-1 of that setting's runs (VTAB: the `train800val200`
retrains) is reported as mean ± population std (ddof 0, as the authors) over seeds. The paper's numbers
come from the bundled `vapt/resources/paper_results.csv`; values it lacks stay blank (NaN), never
guessed.

`python -m vapt table --runs DIR [--out FILE.csv] [--markdown FILE.md] [--latex FILE.tex]`
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vapt.cli import DOCS_HELP, HelpFormatter
from vapt.data.vtab import VTAB_GROUPS
from vapt.errors import ConfigError
from vapt.io import check_writable_file, write_text_atomic
from vapt.report.frame import (
    ablation_options,
    cell_key_columns,
    cell_keys,
    completed,
    default_options,
    is_missing,
    load_records,
    main_records,
    setting_key,
)
from vapt.report.paper import GROUP_TASKS, VTAB_ORDER, method_order, paper_results, paper_vs_ours, t1_table, t2_table
from vapt.run.selection import PROTOCOL_SPLITS, select_setting


def select_final(
    records: pd.DataFrame, split: str = "test", select_over: Sequence[str] = ("lr", "wd")
) -> pd.DataFrame:
    """The `split` rows of the setting chosen on validation for every cell (docs/protocol.md).

    Adds `selection`: `val` when chosen on validation, `no validation runs` when the cell had none
    (every `split` row then counts).
    """
    frame = completed(records)
    select_over = [c for c in select_over if c in frame.columns]
    keys = cell_keys(frame, select_over)
    frame = frame.assign(_cell=setting_key(frame, keys))
    chosen = []
    for _, cell in frame.groupby("_cell", sort=False):
        benchmark = str(cell["benchmark"].iloc[0])
        targets = cell[cell["split"] == split]
        if targets.empty:
            continue
        splits = PROTOCOL_SPLITS.get(benchmark)
        val = cell[cell["split"] == (splits.select if splits else "val")]
        if val.empty or not select_over:
            chosen.append(targets.assign(selection="no validation runs"))
            continue
        best = select_setting(val, select_over)
        picked = targets[_matches(targets, best, select_over)]
        final_split = splits.final if splits else None
        if "train_split" in picked.columns and (picked["train_split"] == final_split).any():
            picked = picked[picked["train_split"] == final_split]
        if not picked.empty:
            chosen.append(picked.assign(selection="val"))
    if not chosen:
        return frame.iloc[0:0].drop(columns=["_cell"]).assign(selection=pd.Series(dtype=str))
    return pd.concat(chosen).drop(columns=["_cell"])


def _matches(frame: pd.DataFrame, best: dict[str, Any], columns: list[str]) -> np.ndarray:
    mask = np.ones(len(frame), dtype=bool)
    for column in columns:
        target = best[column]
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
    keys = cell_keys(final, select_over)
    if final.empty:
        return pd.DataFrame(columns=[*keys, "mean", "std", "n_seeds", "tuned_total_pct"])
    agg: dict[str, tuple[str, str]] = {
        "mean": ("value", "mean"),
        "std": ("value", population_std),
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
    methods = {m: i for i, m in enumerate(method_order())}
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


def group_table(tasks: pd.DataFrame, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Group means of per-task means, [k] wins vs full fine-tuning, Tuned/Total, and VTAB's Mean Total.

    Rows: one per (backbone, method, variant, group), plus group `all` (benchmark vtab1k) whose mean
    is the Mean Total over the VTAB tasks present; `complete` says whether every task of the group ran.
    [k] compares with our full fine-tuning of the same task, or the paper's when we have none.
    """
    columns = ["group", "mean", "n_tasks", "complete", "wins_vs_full", "wins_reference", "tuned_total_pct"]
    if tasks.empty:
        return pd.DataFrame(columns=["backbone", "method", "benchmark", *columns])
    variant = [k for k in cell_key_columns() if k in tasks.columns and k not in ("benchmark", "group", "task")]
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


def population_std(values: pd.Series) -> float:
    """The population standard deviation (ddof 0, as the authors report); NaN for a single value."""
    return float(values.std(ddof=0)) if len(values) > 1 else float("nan")


def mean_std(tasks: pd.DataFrame, places: int = 1) -> pd.Series:
    """Per-task cells as `mean ± std` text (population std, ddof 0; just the mean when there is one seed)."""
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
    if is_missing(value):
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


TOP1_COLUMN = "top1 (mean ± population std)"


def task_columns() -> tuple[str, ...]:
    """The columns of the per-task table for reading (settings, every method's ablation options, results)."""
    return (*cell_key_columns(), TOP1_COLUMN, "n_seeds", "lr", "wd", "tuned_total_pct", "selection")


GROUP_COLUMNS: tuple[str, ...] = (
    "backbone", "method", "benchmark", "group", "mean", "n_tasks", "complete", "wins_vs_full", "wins_reference",
    "tuned_total_pct",
)


def task_summary(tasks: pd.DataFrame) -> pd.DataFrame:
    """The per-task table for reading: top-1 as `mean ± std`, seeds, chosen lr/wd, Tuned/Total (%)."""
    shown = tasks.assign(**{TOP1_COLUMN: mean_std(tasks)}) if not tasks.empty else tasks
    optional = ("fraction", "num_tokens", *ablation_options())
    varied = [c for c in optional if c in shown and shown[c].nunique() > 1]
    keep = [c for c in task_columns() if c in shown.columns and (c in varied or c not in optional)]
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
        sections += ["## Per-task top-1 (%)", "", "Mean ± population standard deviation (ddof 0, as the authors "
                     "report) over the final seeds.", "", to_markdown(task_summary(tables.tasks)), ""]
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
    parser = argparse.ArgumentParser(prog="python -m vapt table", epilog=DOCS_HELP,
                                     description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
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
    for option in ("out", "markdown", "latex"):
        if getattr(args, option):
            check_writable_file(getattr(args, option), f"--{option} file")
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


def main_tasks(records: pd.DataFrame) -> pd.DataFrame:
    """The task table of the main setting's figures: default method options, chosen over lr, wd and prompt length."""
    return task_table(default_options(records), select_over=("lr", "wd", "num_tokens"))


def ablation_tasks(records: pd.DataFrame) -> pd.DataFrame:
    """The task table of the ablations: chosen over lr and wd only, so prompt lengths and options stay apart."""
    return task_table(records, select_over=("lr", "wd"))
