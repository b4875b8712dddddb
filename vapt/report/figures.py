"""Every figure of the paper as a function of data: a task table, a bench CSV or a theory summary in, a figure out.

Figures: low-data curve (F-low), backbone-scale bars (F-scale), Grad-CAM grid (F-cam), ablations
(A-len, A-kernel, A-parts), efficiency (E) and the theory figure (TH). Drawing never trains or runs a
model: Grad-CAM maps are computed by `vapt.report.gradcam`, experiments by the commands that say so.
Each figure carries a footnote saying where its data came from (`DataSource`); a figure drawn from
data that is not the paper's datasets (fixtures, smoke runs) never uses a paper dataset's title. A
figure the data cannot support raises `NotDrawable` with the reason.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from vapt.config import METHODS, prompted_methods  # noqa: E402
from vapt.io import atomic_path  # noqa: E402
from vapt.report.frame import matches, setting_key, with_options  # noqa: E402
from vapt.report.paper import MAIN_BACKBONE, TASK_TITLES, method_colour, method_label, method_order  # noqa: E402

PAPER_STYLE = dict(linestyle="--", alpha=0.8)
SCALE_BACKBONES: tuple[str, ...] = ("vit_b16_in21k", "vit_l16_in21k", "vit_h14_in21k")
BACKBONE_LABELS: dict[str, str] = {
    "vit_b16_in21k": "ViT-B/16",
    "vit_l16_in21k": "ViT-L/16",
    "vit_h14_in21k": "ViT-H/14",
    "vit_b16_mae": "ViT-B/16 MAE",
    "vit_b16_mocov3": "ViT-B/16 MoCo v3",
    "vit_test": "tiny test ViT",
}
LOW_DATA_TASK = ("fgvc", "stanford_dogs")


class NotDrawable(Exception):
    """The data given cannot support this figure (the message says what is missing)."""


@dataclass(frozen=True)
class DataSource:
    """Where a figure's data came from: a footnote label, and whether it is the paper's datasets."""

    label: str
    paper_datasets: bool = True


def set_style() -> None:
    """The one style of every figure: seaborn whitegrid, paper context, readable sizes."""
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 200, "axes.titlesize": "medium"})


def save_figure(fig: plt.Figure, out_dir: str | os.PathLike, name: str) -> list[Path]:
    """Write `name.png` and `name.pdf` under `out_dir` atomically; close the figure."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix in ("png", "pdf"):
        path = out_dir / f"{name}.{suffix}"
        metadata = {"CreationDate": None} if suffix == "pdf" else None  # reproducible bytes
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=suffix, bbox_inches="tight", metadata=metadata)
        paths.append(path)
    plt.close(fig)
    return paths


def _finish(fig: plt.Figure, source: DataSource | None) -> plt.Figure:
    """Lay out the figure and write its data source under it."""
    fig.tight_layout()
    if source is not None:
        fig.text(0.5, 0.0, f"data: {source.label}", ha="center", va="top", fontsize=8, style="italic", wrap=True)
    return fig


def task_title(task: str, source: DataSource | None) -> str:
    """A task's title: the paper's dataset name only when the data is the paper's dataset."""
    if source is not None and not source.paper_datasets:
        return f"task {task}"
    return TASK_TITLES.get(task, task)


def _with_runs(tasks: pd.DataFrame, methods: Sequence[str] | None) -> list[str]:
    """`methods`, or the registered prompted methods with rows in `tasks` (VPT-deep and VAPT when none has)."""
    if methods is not None:
        return list(methods)
    ran = set(tasks["method"]) if "method" in tasks.columns else set()
    return [m for m in prompted_methods() if m in ran] or ["vpt_deep", "vapt"]


def _label(method: str) -> str:
    return method_label(method)


def _color(method: str) -> str:
    return method_colour(method)


def _paper_fraction(metric: str) -> float:
    match = re.fullmatch(r"top1@fraction=([0-9.]+)", str(metric))
    return float(match.group(1)) if match else np.nan


# ------------------------------------------------------------------------------------ low data
def low_data_figure(
    tasks: pd.DataFrame,
    paper: pd.DataFrame,
    methods: Sequence[str] | None = None,
    source: DataSource | None = None,
) -> plt.Figure:
    """Top-1 vs training fraction (log x) per method; the paper's Stanford Dogs curve in its own panel.

    `methods` defaults to every registered prompted method (those without runs are left out).

    `tasks` is a task table with a `fraction` column; the task with most fractions (Stanford Dogs when
    present) is drawn. When ours is the paper's setting, the paper's curve is also drawn dashed on ours.
    """
    if "fraction" not in tasks.columns:
        raise NotDrawable("the task table has no fraction column")
    methods = _with_runs(tasks, methods)
    ours = tasks[tasks["method"].isin(methods) & tasks["fraction"].notna()]
    counts = ours.groupby(["backbone", "benchmark", "task"])["fraction"].nunique()
    counts = counts[counts >= 2]
    if counts.empty:
        raise NotDrawable("no runs at two or more training fractions")
    preferred = [k for k in counts.index if (k[1], k[2]) == LOW_DATA_TASK and k[0] == MAIN_BACKBONE]
    backbone, benchmark, task = preferred[0] if preferred else counts.idxmax()
    ours = ours[(ours["backbone"] == backbone) & (ours["task"] == task) & (ours["benchmark"] == benchmark)]
    theirs = paper[(paper["table"] == "F-low") & paper["method"].isin(methods)].copy()
    theirs["fraction"] = theirs["metric"].map(_paper_fraction)
    same = (benchmark, task) == LOW_DATA_TASK and backbone == MAIN_BACKBONE
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=False)
    _curve(axes[0], theirs, "value", None, methods, dashed=True)
    axes[0].set_title(f"Paper: {BACKBONE_LABELS[MAIN_BACKBONE]}, Stanford Dogs (read off the figure)")
    _curve(axes[1], ours, "mean", "std", methods)
    if same:
        _curve(axes[1], theirs, "value", None, methods, dashed=True, suffix=" (paper)")
    axes[1].set_title(f"Ours: {BACKBONE_LABELS.get(backbone, backbone)}, {task_title(task, source)}")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("fraction of the training split")
        ax.set_ylabel("test top-1 (%)")
        ax.legend(frameon=False)
    return _finish(fig, source)


def _curve(ax: plt.Axes, frame: pd.DataFrame, value: str, err: str | None, methods: Sequence[str],
           dashed: bool = False, suffix: str = "") -> None:
    for method in methods:
        part = frame[frame["method"] == method].sort_values("fraction")
        if part.empty:
            continue
        yerr = part[err].fillna(0).to_numpy() if err and err in part else None
        style = PAPER_STYLE if dashed else {}
        ax.errorbar(part["fraction"], part[value], yerr=yerr, marker="o", capsize=3, color=_color(method),
                    label=_label(method) + suffix, **style)


# --------------------------------------------------------------------------------------- scale
def scale_figure(
    tasks: pd.DataFrame,
    paper: pd.DataFrame,
    methods: Sequence[str] | None = None,
    source: DataSource | None = None,
) -> plt.Figure:
    """Bars per backbone (ViT-B/L/H in the paper) and prompted method (default: every registered one that ran)."""
    methods = _with_runs(tasks, methods)
    ours = tasks[tasks["method"].isin(methods)]
    if "fraction" in ours.columns:
        ours = ours[ours["fraction"].isna() | np.isclose(ours["fraction"].astype(float), 1.0)]
    if ours.empty:
        raise NotDrawable(f"no runs of {', '.join(methods)}")
    spread = ours.groupby(["benchmark", "task"]).agg(backbones=("backbone", "nunique"), rows=("mean", "size"))
    spread["cub"] = [key == ("fgvc", "cub") for key in spread.index]
    benchmark, task = spread.sort_values(["cub", "backbones", "rows"], ascending=False).index[0]
    ours = ours[(ours["benchmark"] == benchmark) & (ours["task"] == task)]
    backbones = [b for b in SCALE_BACKBONES if b in set(ours["backbone"])]
    backbones += sorted(set(ours["backbone"]) - set(backbones))
    theirs = paper[(paper["table"] == "F-scale") & paper["method"].isin(methods)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    _bars(axes[0], theirs, "value", None, [b for b in SCALE_BACKBONES if b in set(theirs["backbone"])], methods)
    axes[0].set_title("Paper: FGVC task not stated (probably CUB), read off the bars")
    _bars(axes[1], ours, "mean", "std", backbones, methods)
    axes[1].set_title(f"Ours: {task_title(task, source)}")
    handles = [matplotlib.patches.Patch(color=_color(m), label=_label(m)) for m in methods]
    for ax in axes:
        ax.set_ylabel("test top-1 (%)")
        ax.legend(handles=handles, frameon=False, loc="upper left", ncol=len(handles))
    return _finish(fig, source)


def _bars(ax: plt.Axes, frame: pd.DataFrame, value: str, err: str | None, backbones: Sequence[str],
          methods: Sequence[str]) -> None:
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(backbones))
    lows = []
    for i, method in enumerate(methods):
        part = frame[frame["method"] == method].groupby("backbone")[[value] + ([err] if err else [])].mean()
        heights = np.array([part[value].get(b, np.nan) for b in backbones], dtype=float)
        errors = np.array([part[err].get(b, np.nan) for b in backbones], dtype=float) if err else None
        if errors is not None:
            errors = np.nan_to_num(errors)
        bars = ax.bar(x + (i - (len(methods) - 1) / 2) * width, heights, width, yerr=errors, capsize=3,
                      color=_color(method), label=_label(method))
        ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
        lows.extend(h for h in heights if np.isfinite(h))
    ax.set_xticks(x, [BACKBONE_LABELS.get(b, b) for b in backbones])
    if lows:
        ax.set_ylim(max(0.0, min(lows) - 10), max(lows) + 6)



def gradcam_figure(
    images: np.ndarray,
    maps: dict[str, np.ndarray],
    titles: Sequence[str] | None = None,
    source: DataSource | None = None,
) -> plt.Figure:
    """The Grad-CAM grid: input row, then one row of overlays per method (e.g. VPT, VAPT)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    images = np.asarray(images, dtype=np.float32)
    if images.max() > 1.0:
        images = images / 255.0
    rows, cols = 1 + len(maps), len(images)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.9 * rows), squeeze=False)
    for j, image in enumerate(images):
        axes[0, j].imshow(image)
        if titles is not None:
            axes[0, j].set_title(titles[j], fontsize=9)
        for i, cams in enumerate(maps.values(), start=1):
            cam = cams[j]
            if cam.shape != image.shape[:2]:
                cam = _resize(cam, image.shape[:2])
            axes[i, j].imshow(show_cam_on_image(image, cam, use_rgb=True))
    for i, label in enumerate(["input", *maps], start=0):
        axes[i, 0].set_ylabel(label, fontsize=10)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    return _finish(fig, source)


def _resize(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize(shape[::-1], Image.BILINEAR))



# ----------------------------------------------------------------------------------- ablations
COMPONENTS: tuple[tuple[str, dict[str, bool]], ...] = (
    ("VAPT", {"conv": True, "projector": True}),
    ("w/o conv", {"conv": False, "projector": True}),
    ("w/o feature\nprojector", {"conv": True, "projector": False}),
    ("w/o both", {"conv": False, "projector": False}),
)


def _truthy(series: pd.Series) -> pd.Series:
    return matches(series, True)


def ablation_figure(tasks: pd.DataFrame, source: DataSource | None = None) -> plt.Figure:
    """Prompt length, kernel size and component ablations of VAPT (and VPT for the prompt length).

    `tasks` is a task table selected over lr and wd only (so prompt length and options stay apart).
    Each panel holds the other settings at the values its varied runs used. Panels without varied
    runs are left out; the paper's ablation numbers are not public, so none are drawn.
    """
    frame = tasks
    if "fraction" in frame.columns:
        frame = frame[frame["fraction"].isna() | np.isclose(frame["fraction"].astype(float), 1.0)]
    panels: list[tuple[str, Callable[[plt.Axes], None]]] = []
    length = ablation_rows(frame, ("num_tokens",), methods=("vpt_deep", "vapt"))
    if length is not None:
        panels.append(("prompt length $N_p$", lambda ax: _lines(ax, length, "num_tokens", "prompt length Np", source)))
    kernel = ablation_rows(frame, ("kernel_size",))
    if kernel is not None:
        panels.append(("kernel size $K$", lambda ax: _lines(ax, kernel, "kernel_size", "kernel size K", source)))
    parts = ablation_rows(frame, ("conv", "projector"))
    if parts is not None:
        panels.append(("components", lambda ax: _component_bars(ax, parts, source)))
    if not panels:
        raise NotDrawable("no runs vary the prompt length, the kernel size or VAPT's components")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (title, draw) in zip(axes[0], panels, strict=True):
        draw(ax)
        ax.set_title(f"Ablation: {title}")
    return _finish(fig, source)


def ablation_rows(tasks: pd.DataFrame, varied: Sequence[str],
                  methods: Sequence[str] = ("vapt",)) -> pd.DataFrame | None:
    """Rows of an ablation that varies `varied`, every other setting held at the varied runs' values.

    Missing option values are filled with the methods' defaults; None when fewer than two settings ran.
    """
    frame = tasks[tasks["method"].isin(methods)]
    if frame.empty or not set(varied) & set(frame.columns):
        return None
    defaults = {k: v for m in methods if m in METHODS for k, v in METHODS[m].default_options().items()}
    frame = frame.copy()
    for column in varied:
        if column in defaults:
            values = frame[column] if column in frame.columns else pd.Series(np.nan, index=frame.index)
            frame[column] = values.astype(object).where(values.notna(), defaults[column])
    frame = with_options(frame, {k: v for k, v in defaults.items() if k not in varied})
    if "num_tokens" not in varied and "num_tokens" in frame.columns:
        changed = np.zeros(len(frame), dtype=bool)
        for column in varied:
            changed |= ~matches(frame[column], defaults.get(column)).to_numpy()
        if changed.any():
            frame = frame[frame["num_tokens"].isin(frame.loc[changed, "num_tokens"].unique())]
    frame = frame.assign(_setting=setting_key(frame, list(varied)))
    spread = frame.groupby(["method", "benchmark", "task"])["_setting"].transform("nunique")
    frame = frame[spread >= 2]
    if frame.empty:
        return None
    return frame.drop(columns="_setting").assign(
        variant=_component_labels(frame) if "conv" in varied else frame["_setting"])


def _component_labels(frame: pd.DataFrame) -> list[str]:
    labels = []
    for conv, projector in zip(_truthy(frame["conv"]), _truthy(frame["projector"]), strict=True):
        labels.append(next(lab for lab, o in COMPONENTS if o == {"conv": conv, "projector": projector}))
    return labels



def _setting_label(method: str, benchmark: str, task: str, several_benchmarks: bool,
                   source: DataSource | None) -> str:
    return f"{_label(method)}, {task_title(task, source)}" + (f" ({benchmark})" if several_benchmarks else "")


def _lines(ax: plt.Axes, frame: pd.DataFrame, x: str, xlabel: str, source: DataSource | None) -> None:
    several = frame["benchmark"].nunique() > 1
    for (method, benchmark, task), part in frame.groupby(["method", "benchmark", "task"]):
        part = part.sort_values(x)
        ax.errorbar(part[x].astype(float), part["mean"], yerr=part["std"].fillna(0), marker="o", capsize=3,
                    color=_color(method), label=_setting_label(method, benchmark, task, several, source))
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("test top-1 (%)")
    ax.legend(frameon=False, fontsize=8)


def _component_bars(ax: plt.Axes, frame: pd.DataFrame, source: DataSource | None) -> None:
    order = [label for label, _ in COMPONENTS if label in set(frame["variant"])]
    summary = frame.groupby(["variant", "benchmark", "task"], as_index=False).agg(
        mean=("mean", "mean"), std=("std", "mean"))
    settings = list(dict.fromkeys(zip(summary["benchmark"], summary["task"], strict=True)))
    several = summary["benchmark"].nunique() > 1
    width = 0.8 / len(settings)
    palette = sns.color_palette("Reds_r", n_colors=len(settings) + 1)
    for i, (benchmark, task) in enumerate(settings):
        part = summary[(summary["benchmark"] == benchmark) & (summary["task"] == task)]
        part = part.set_index("variant").reindex(order)
        ax.bar(np.arange(len(order)) + (i - (len(settings) - 1) / 2) * width, part["mean"], width,
               yerr=part["std"].fillna(0), capsize=3, color=palette[i],
               label=_setting_label("vapt", benchmark, task, several, source))
    ax.set_xticks(np.arange(len(order)), order)
    ax.set_ylabel("test top-1 (%)")
    ax.legend(frameon=False, fontsize=8)



# ---------------------------------------------------------------------------------- efficiency
BENCH_METRICS: dict[str, str] = {
    "trainable_params": "trainable parameters",
    "gflops_per_image": "GFLOPs / image",
    "peak_memory_mb": "peak memory (MB)",
    "step_time_s": "training step time (s)",
    "eval_images_per_s": "inference images / s",
}


def efficiency_figure(bench: pd.DataFrame, paper: pd.DataFrame, source: DataSource | None = None) -> plt.Figure:
    """Bars of parameters, FLOPs, memory, step time and throughput per method (a bench CSV)."""
    metrics = [m for m in BENCH_METRICS if m in bench.columns and bench[m].notna().any()]
    if bench.empty or "method" not in bench.columns or not metrics:
        raise NotDrawable("the benchmark CSV has no rows or no known columns")
    order = [m for m in method_order() if m in set(bench["method"])]
    order += [m for m in dict.fromkeys(bench["method"]) if m not in order]
    frame = bench.groupby("method").mean(numeric_only=True).reindex(order)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=False):
        ax.bar(range(len(order)), frame[metric], color=[_color(m) for m in order])
        ax.set_xticks(range(len(order)), [_label(m) for m in order], rotation=30, ha="right")
        ax.set_title(BENCH_METRICS[metric])
        if metric == "trainable_params":
            ax.set_yscale("log")
    flops = _flops_increase(frame)
    known = paper[(paper["table"] == "E") & (paper["metric"] == "flops_increase_vs_vpt_pct")]["value"]
    lines = []
    if flops is not None:
        lines.append(f"ours: VAPT FLOPs {flops:+.2f} % vs VPT-deep")
    if not known.empty:
        lines.append(f"paper: +{known.iloc[0]:g} %")
    if lines:
        fig.suptitle("; ".join(lines), fontsize=10)
    return _finish(fig, source)


def _flops_increase(frame: pd.DataFrame) -> float | None:
    if "gflops_per_image" not in frame.columns or not {"vapt", "vpt_deep"} <= set(frame.index):
        return None
    vpt, vapt = frame.loc["vpt_deep", "gflops_per_image"], frame.loc["vapt", "gflops_per_image"]
    return float(100.0 * (vapt - vpt) / vpt) if vpt else None


# -------------------------------------------------------------------------------------- theory
#: Verdicts not annotated on the theory figure: agreement, and rows with no predicted rate to judge.
UNREMARKABLE_VERDICTS = frozenset({"consistent", "reported"})


def theory_figure(summary: pd.DataFrame, source: DataSource | None = None) -> plt.Figure:
    """Estimated convergence slopes with bootstrap CIs beside the predicted rates, per prompt family."""
    needed = {"family", "regime", "metric", "slope", "ci_low", "ci_high", "predicted"}
    if summary.empty or not needed <= set(summary.columns):
        raise NotDrawable(f"the theory summary lacks column(s) {sorted(needed - set(summary.columns))}")
    frame = summary.copy()
    atoms = (" L=" + frame["fitted_atoms"].astype(str)) if "fitted_atoms" in frame.columns else ""
    frame["setting"] = frame["family"].astype(str) + atoms + "\n" + frame["regime"].astype(str)
    settings = list(dict.fromkeys(frame["setting"]))
    metrics = list(dict.fromkeys(frame["metric"].astype(str)))
    palette = dict(zip(metrics, sns.color_palette("deep", n_colors=len(metrics)), strict=False))
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(min(14.0, 3.0 + 1.4 * len(settings)), 4.2))
    for i, metric in enumerate(metrics):
        part = frame[frame["metric"].astype(str) == metric].set_index("setting").reindex(settings)
        x = np.arange(len(settings)) + (i - (len(metrics) - 1) / 2) * width
        low = (part["slope"] - part["ci_low"]).clip(lower=0)
        high = (part["ci_high"] - part["slope"]).clip(lower=0)
        ax.errorbar(x, part["slope"], yerr=[low, high], fmt="o", capsize=3, color=palette[metric],
                    label=f"{metric}: estimated slope (95 % CI)")
        ax.scatter(x, part["predicted"], marker="_", s=300, color=palette[metric], linewidths=2,
                   label=f"{metric}: predicted")
        if "verdict" in part:
            for xi, yi, verdict in zip(x, part["ci_high"], part["verdict"], strict=False):
                if isinstance(verdict, str) and verdict not in UNREMARKABLE_VERDICTS and np.isfinite(yi):
                    ax.annotate(verdict, (xi, yi), textcoords="offset points", xytext=(0, 4), ha="center",
                                fontsize=7)
    ax.set_xticks(np.arange(len(settings)), settings)
    ax.set_ylabel("log-log slope of error vs n")
    ax.axhline(0, color="0.6", linewidth=0.8)
    ax.legend(frameon=False, fontsize=8, ncol=2)
    verdicts = frame["verdict"].astype(str) if "verdict" in frame else pd.Series(dtype=str)
    counts = verdicts.value_counts()
    agree = ("; " + ", ".join(f"{counts[v]} {v}" for v in counts.index)) if len(verdicts) else ""
    ax.set_title(f"Theory: estimation rates of prompt experts (simulation){agree}")
    return _finish(fig, source)


