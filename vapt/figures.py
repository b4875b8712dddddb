"""Every figure of the paper, drawn from result tables, with the paper's numbers beside ours where known.

Figures: low-data curve (F-low), backbone-scale bars (F-scale), Grad-CAM grid (F-cam), ablations
(A-len, A-kernel, A-parts), efficiency (E, from a `python -m vapt bench` CSV) and the theory
figure (TH, from a `python -m theory.sample_efficiency` run's summary.csv). Each is written as PNG
and PDF (atomically) under the output folder; a figure without runs is skipped with a printed line
naming the runs or command it needs.

`python -m vapt figures --runs DIR --out figures/ [--theory DIR] [--bench FILE.csv] [--smoke]`
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from vapt import results as R  # noqa: E402
from vapt.io import atomic_path  # noqa: E402

METHOD_COLORS: dict[str, str] = {
    "linear": "#8c8c8c",
    "full": "#4c4c4c",
    "vpt_shallow": "#8fb8de",
    "vpt_deep": "#1f77b4",
    "vapt": "#d62728",
    "e2vpt": "#9467bd",
    "gatevpt": "#2ca02c",
}
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
GRADCAM_TASKS: tuple[str, ...] = ("sun397", "svhn", "resisc45", "clevr_count", "kitti")
DATA = "<DATA>"
# The runs (or command) each figure needs, printed when it is skipped.
NEEDS: dict[str, str] = {
    "low_data": (
        "VPT-deep and VAPT runs on fgvc/stanford_dogs at training fractions 0.01 0.1 0.3 0.5 1.0, e.g. "
        f"`python -m vapt sweep --backbone vit_b16_in21k --method vapt --data fgvc/stanford_dogs --data-root {DATA} "
        "--fraction 0.1 --out runs` (and --method vpt_deep; one sweep per fraction)"
    ),
    "scale": (
        "VPT-deep and VAPT runs on fgvc/cub for vit_b16_in21k, vit_l16_in21k and vit_h14_in21k, e.g. "
        f"`python -m vapt sweep --backbone vit_l16_in21k --method vapt --data fgvc/cub --data-root {DATA} --out runs`"
    ),
    "gradcam": (
        "finished VPT and VAPT runs (trainable.pt) on the same task and its data, e.g. "
        f"`python -m vapt sweep --backbone vit_b16_in21k --method vapt --data vtab1k/sun397 --data-root {DATA} "
        "--out runs` (tasks of the paper's grid: sun397 svhn resisc45 clevr_count kitti)"
    ),
    "ablations": (
        "VAPT runs that vary the prompt length (--num-tokens), the kernel size (--set kernel_size=K) or remove "
        f"parts (--set conv=false / --set projector=false), e.g. `python -m vapt sweep --backbone vit_b16_in21k "
        f"--method vapt --data vtab1k/cifar --data-root {DATA} --set kernel_size=3 --out runs`"
    ),
    "efficiency": "a benchmark CSV: `python -m vapt bench --backbone vit_b16_in21k --out bench.csv`, then --bench",
    "theory": "a theory run: `python -m theory.sample_efficiency --out theory_runs`, then --theory theory_runs",
}


# The commands that produce each table / figure on a GPU machine (DATA = the data root).
T1_PROMPT_METHODS: tuple[str, ...] = ("linear", "full", "vpt_shallow", "vpt_deep", "vapt")
REPRODUCE: dict[str, list[str]] = {
    "T1": [
        *(f"python -m vapt sweep --backbone vit_b16_in21k --method {m} --data vtab1k fgvc --data-root {{data}} "
          f"--out {{runs}}" for m in T1_PROMPT_METHODS),
        "python -m vapt table --runs {runs} --out {runs}/results.csv --markdown {runs}/tables.md",
    ],
    "T2": [
        *(f"python -m vapt sweep --backbone vit_b16_mae --method {m} --data vtab1k --data-root {{data}} --out {{runs}}"
          for m in ("vpt_shallow", "vpt_deep", "vapt")),
        *(f"python -m vapt sweep --backbone vit_b16_mocov3 --weights <MoCo v3 linear-vit-b-300ep.pth.tar> "
          f"--method {m} --data vtab1k --data-root {{data}} --out {{runs}}"
          for m in ("vpt_shallow", "vpt_deep", "vapt")),
        "python -m vapt table --runs {runs} --markdown {runs}/tables.md",
    ],
    "F-low": [
        f"python -m vapt sweep --backbone vit_b16_in21k --method {m} --data fgvc/stanford_dogs --fraction {f} "
        "--data-root {data} --out {runs}" for m in ("vpt_deep", "vapt") for f in (0.01, 0.1, 0.3, 0.5, 1.0)
    ] + ["python -m vapt figures --runs {runs} --out figures"],
    "F-scale": [
        f"python -m vapt sweep --backbone {b} --method {m} --data fgvc/cub --data-root {{data}} --out {{runs}}"
        for b in SCALE_BACKBONES for m in ("vpt_deep", "vapt")
    ] + ["python -m vapt figures --runs {runs} --out figures"],
    "F-cam": [
        f"python -m vapt sweep --backbone vit_b16_in21k --method {m} --data "
        + " ".join(f"vtab1k/{t}" for t in GRADCAM_TASKS) + " --data-root {data} --out {runs}"
        for m in ("vpt_deep", "vapt")
    ] + ["python -m vapt figures --runs {runs} --out figures  # Grad-CAM from the runs' trainable.pt"],
    "A": [
        *(f"python -m vapt sweep --backbone vit_b16_in21k --method vapt --num-tokens {n} --data vtab1k --grid fast "
          "--data-root {data} --out {runs}" for n in (1, 5, 10, 50, 100)),
        *(f"python -m vapt sweep --backbone vit_b16_in21k --method vapt --set kernel_size={k} --data vtab1k "
          "--grid fast --data-root {data} --out {runs}" for k in (1, 3, 5, 7)),
        *(f"python -m vapt sweep --backbone vit_b16_in21k --method vapt --set {o} --data vtab1k --grid fast "
          "--data-root {data} --out {runs}" for o in ("conv=false", "projector=false")),
        "python -m vapt figures --runs {runs} --out figures",
    ],
    "E": [
        "python -m vapt bench --backbone vit_b16_in21k --methods linear,full,vpt_shallow,vpt_deep,vapt --batch 64 "
        "--device cuda --dtype bf16 --out {runs}/bench.csv",
        "python -m vapt figures --runs {runs} --out figures --bench {runs}/bench.csv",
    ],
    "TH": [
        "python -m theory.sample_efficiency --full --out {runs}/theory",
        "python -m vapt figures --runs {runs} --out figures --theory {runs}/theory",
    ],
}


def reproduce_commands(item: str, data_root: str = DATA, runs: str = "runs") -> list[str]:
    """The commands that produce a table or figure (T1, T2, F-low, F-scale, F-cam, A, E, TH) at full scale."""
    if item not in REPRODUCE:
        raise ValueError(f"unknown item {item!r}; expected one of {', '.join(REPRODUCE)}")
    return [command.format(data=data_root, runs=runs) for command in REPRODUCE[item]]


# ------------------------------------------------------------------------------------- helpers
def set_style() -> None:
    """The one style of every figure: seaborn whitegrid, paper context, readable sizes."""
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 200, "axes.titlesize": "medium"})


def save_figure(fig: plt.Figure, out_dir: str | os.PathLike, name: str, note: str | None = None) -> list[Path]:
    """Write `name.png` and `name.pdf` under `out_dir` atomically (with `note` under it); close the figure."""
    if note:
        fig.text(0.5, 0.0, note, ha="center", va="top", fontsize=8, style="italic", wrap=True)
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


def skip(name: str, reason: str) -> None:
    """Print the line that says a figure was skipped and what it needs."""
    print(f"skipped {name}: {reason}; needs {NEEDS.get(name, 'runs')}")


def _label(method: str) -> str:
    return R.METHOD_LABELS.get(method, method)


def _color(method: str) -> str:
    return METHOD_COLORS.get(method, "#17becf")


def _paper_fraction(metric: str) -> float:
    match = re.fullmatch(r"top1@fraction=([0-9.]+)", str(metric))
    return float(match.group(1)) if match else np.nan


def default_options(records: pd.DataFrame) -> pd.DataFrame:
    """Rows with the default VAPT options (every run that is not an ablation)."""
    return _with_defaults(records, R.ABLATION_OPTIONS)


# ------------------------------------------------------------------------------------ low data
def low_data_figure(
    tasks: pd.DataFrame,
    paper: pd.DataFrame,
    out_dir: str | os.PathLike,
    methods: Sequence[str] = ("vpt_deep", "vapt"),
    name: str = "low_data",
    note: str | None = None,
) -> list[Path] | None:
    """Top-1 vs training fraction (log x), VAPT vs VPT; the paper's Stanford Dogs curve in its own panel.

    `tasks` is a task table with a `fraction` column; the task with most fractions (Stanford Dogs when
    present) is drawn. When ours is the paper's setting, the paper's curve is also drawn dashed on ours.
    """
    if "fraction" not in tasks.columns:
        skip(name, "the task table has no fraction column")
        return None
    ours = tasks[tasks["method"].isin(methods) & tasks["fraction"].notna()]
    counts = ours.groupby(["backbone", "benchmark", "task"])["fraction"].nunique()
    counts = counts[counts >= 2]
    if counts.empty:
        skip(name, "no runs at two or more training fractions")
        return None
    preferred = [k for k in counts.index if (k[1], k[2]) == LOW_DATA_TASK and k[0] == R.MAIN_BACKBONE]
    backbone, benchmark, task = preferred[0] if preferred else counts.idxmax()
    ours = ours[(ours["backbone"] == backbone) & (ours["task"] == task) & (ours["benchmark"] == benchmark)]
    theirs = paper[(paper["table"] == "F-low") & paper["method"].isin(methods)].copy()
    theirs["fraction"] = theirs["metric"].map(_paper_fraction)
    same = (benchmark, task) == LOW_DATA_TASK and backbone == R.MAIN_BACKBONE
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=False)
    _curve(axes[0], theirs, "value", None, methods, dashed=True)
    axes[0].set_title(f"Paper: {BACKBONE_LABELS[R.MAIN_BACKBONE]}, Stanford Dogs (read off the figure)")
    _curve(axes[1], ours, "mean", "std", methods)
    if same:
        _curve(axes[1], theirs, "value", None, methods, dashed=True, suffix=" (paper)")
    title = R.TASK_TITLES.get(task, task)
    axes[1].set_title(f"Ours: {BACKBONE_LABELS.get(backbone, backbone)}, {title}")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("fraction of the training split")
        ax.set_ylabel("test top-1 (%)")
        ax.legend(frameon=False)
    fig.tight_layout()
    return save_figure(fig, out_dir, name, note)


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
    out_dir: str | os.PathLike,
    methods: Sequence[str] = ("vpt_deep", "vapt"),
    name: str = "backbone_scale",
    note: str | None = None,
) -> list[Path] | None:
    """VPT vs VAPT bars per backbone (ViT-B/L/H in the paper), paper panel beside ours."""
    ours = tasks[tasks["method"].isin(methods)]
    if "fraction" in ours.columns:
        ours = ours[ours["fraction"].isna() | np.isclose(ours["fraction"].astype(float), 1.0)]
    if ours.empty:
        skip(name, "no VPT/VAPT runs")
        return None
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
    axes[1].set_title(f"Ours: {R.TASK_TITLES.get(task, task)}")
    handles = [matplotlib.patches.Patch(color=_color(m), label=_label(m)) for m in methods]
    for ax in axes:
        ax.set_ylabel("test top-1 (%)")
        ax.legend(handles=handles, frameon=False, loc="upper left", ncol=len(handles))
    fig.tight_layout()
    return save_figure(fig, out_dir, name, note)


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


# ------------------------------------------------------------------------------------ grad-cam
def vit_reshape_transform(model: Any) -> Callable:
    """Grad-CAM reshape for a PromptedViT: drop prefix and prompt tokens, reshape to (B, C, H, W)."""
    height, width = model.grid_size

    def reshape(tokens: Any) -> Any:
        patches = tokens[:, -height * width:, :]
        return patches.reshape(tokens.shape[0], height, width, tokens.shape[2]).permute(0, 3, 1, 2)

    return reshape


def gradcam_maps(model: Any, images: Any, eigen_smooth: bool = True, aug_smooth: bool = True) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] of the predicted class (PROTOCOL.md §5's setup).

    Target layer: the norm before attention in the last block; prefix and prompt tokens dropped;
    eigen-smoothing and augmentation smoothing on.
    """
    from pytorch_grad_cam import GradCAM

    model.eval()
    with GradCAM(model=model, target_layers=[model.backbone.blocks[-1].norm1],
                 reshape_transform=vit_reshape_transform(model)) as cam:
        maps = cam(input_tensor=images, targets=None, eigen_smooth=eigen_smooth, aug_smooth=aug_smooth)
    return np.asarray(maps, dtype=np.float32)


def gradcam_figure(
    images: np.ndarray,
    maps: dict[str, np.ndarray],
    out_dir: str | os.PathLike,
    titles: Sequence[str] | None = None,
    name: str = "gradcam",
    note: str | None = None,
) -> list[Path]:
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
    fig.tight_layout()
    return save_figure(fig, out_dir, name, note)


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
    return R.matches(series, True)


def ablation_figure(tasks: pd.DataFrame, out_dir: str | os.PathLike, name: str = "ablations",
                    note: str | None = None) -> list[Path] | None:
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
        panels.append(("prompt length $N_p$", lambda ax: _lines(ax, length, "num_tokens", "prompt length Np")))
    kernel = ablation_rows(frame, ("kernel_size",))
    if kernel is not None:
        panels.append(("kernel size $K$", lambda ax: _lines(ax, kernel, "kernel_size", "kernel size K")))
    parts = ablation_rows(frame, ("conv", "projector"))
    if parts is not None:
        panels.append(("components", lambda ax: _component_bars(ax, parts)))
    if not panels:
        skip(name, "no runs vary the prompt length, the kernel size or VAPT's components")
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (title, draw) in zip(axes[0], panels, strict=True):
        draw(ax)
        ax.set_title(f"Ablation: {title}")
    fig.tight_layout()
    return save_figure(fig, out_dir, name, note)


def ablation_rows(tasks: pd.DataFrame, varied: Sequence[str],
                  methods: Sequence[str] = ("vapt",)) -> pd.DataFrame | None:
    """Rows of an ablation that varies `varied`, every other setting held at the varied runs' values.

    Missing option values are filled with VAPT's defaults; None when fewer than two settings ran.
    """
    frame = tasks[tasks["method"].isin(methods)]
    if frame.empty or not set(varied) & set(frame.columns):
        return None
    defaults = {**R.ABLATION_OPTIONS}
    frame = frame.copy()
    for column in varied:
        if column in defaults:
            values = frame[column] if column in frame.columns else pd.Series(np.nan, index=frame.index)
            frame[column] = values.astype(object).where(values.notna(), defaults[column])
    frame = _with_defaults(frame, {k: v for k, v in defaults.items() if k not in varied})
    if "num_tokens" not in varied and "num_tokens" in frame.columns:
        changed = np.zeros(len(frame), dtype=bool)
        for column in varied:
            changed |= ~R.matches(frame[column], defaults.get(column)).to_numpy()
        if changed.any():
            frame = frame[frame["num_tokens"].isin(frame.loc[changed, "num_tokens"].unique())]
    frame = frame.assign(_setting=R.setting_key(frame, list(varied)))
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


def _with_defaults(frame: pd.DataFrame, options: dict[str, Any]) -> pd.DataFrame:
    for name, default in options.items():
        if name in frame.columns:
            frame = frame[frame[name].isna() | R.matches(frame[name], default)]
    return frame


def _setting_label(method: str, benchmark: str, task: str, several_benchmarks: bool) -> str:
    task_title = R.TASK_TITLES.get(task, task)
    return f"{_label(method)}, {task_title}" + (f" ({benchmark})" if several_benchmarks else "")


def _lines(ax: plt.Axes, frame: pd.DataFrame, x: str, xlabel: str) -> None:
    several = frame["benchmark"].nunique() > 1
    for (method, benchmark, task), part in frame.groupby(["method", "benchmark", "task"]):
        part = part.sort_values(x)
        ax.errorbar(part[x].astype(float), part["mean"], yerr=part["std"].fillna(0), marker="o", capsize=3,
                    color=_color(method), label=_setting_label(method, benchmark, task, several))
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("test top-1 (%)")
    ax.legend(frameon=False, fontsize=8)


def _component_bars(ax: plt.Axes, frame: pd.DataFrame) -> None:
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
               label=_setting_label("vapt", benchmark, task, several))
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


def efficiency_figure(bench: pd.DataFrame, paper: pd.DataFrame, out_dir: str | os.PathLike,
                      name: str = "efficiency", note: str | None = None) -> list[Path] | None:
    """Bars of parameters, FLOPs, memory, step time and throughput per method (a bench CSV)."""
    metrics = [m for m in BENCH_METRICS if m in bench.columns and bench[m].notna().any()]
    if bench.empty or "method" not in bench.columns or not metrics:
        skip(name, "the benchmark CSV has no rows or no known columns")
        return None
    order = [m for m in (*R.T1_METHODS, "gatevpt") if m in set(bench["method"])]
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
    fig.tight_layout()
    return save_figure(fig, out_dir, name, note)


def _flops_increase(frame: pd.DataFrame) -> float | None:
    if "gflops_per_image" not in frame.columns or not {"vapt", "vpt_deep"} <= set(frame.index):
        return None
    vpt, vapt = frame.loc["vpt_deep", "gflops_per_image"], frame.loc["vapt", "gflops_per_image"]
    return float(100.0 * (vapt - vpt) / vpt) if vpt else None


# -------------------------------------------------------------------------------------- theory
def theory_figure(summary: pd.DataFrame, out_dir: str | os.PathLike, name: str = "theory",
                  note: str | None = None) -> list[Path] | None:
    """Estimated convergence slopes with bootstrap CIs beside the predicted rates, per prompt family."""
    needed = {"family", "regime", "metric", "slope", "ci_low", "ci_high", "predicted"}
    if summary.empty or not needed <= set(summary.columns):
        skip(name, f"the theory summary lacks column(s) {sorted(needed - set(summary.columns))}")
        return None
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
                if isinstance(verdict, str) and verdict != "consistent" and np.isfinite(yi):
                    ax.annotate(verdict, (xi, yi), textcoords="offset points", xytext=(0, 4), ha="center",
                                fontsize=7)
    ax.set_xticks(np.arange(len(settings)), settings)
    ax.set_ylabel("log-log slope of error vs n")
    ax.axhline(0, color="0.6", linewidth=0.8)
    ax.legend(frameon=False, fontsize=8, ncol=2)
    verdicts = frame["verdict"].astype(str) if "verdict" in frame else pd.Series(dtype=str)
    agree = f"; {int((verdicts == 'consistent').sum())} of {len(verdicts)} rows consistent" if len(verdicts) else ""
    ax.set_title(f"Theory: estimation rates of prompt experts (simulation){agree}")
    fig.tight_layout()
    return save_figure(fig, out_dir, name, note)


# ---------------------------------------------------------------------------------------- main
def has_runs(runs: str | os.PathLike | None) -> bool:
    """Whether a folder holds at least one result record."""
    return runs is not None and Path(runs).is_dir() and any(Path(runs).rglob("result.json"))


def load_all_records(runs: str | os.PathLike | Sequence[str | os.PathLike] | None) -> pd.DataFrame:
    """The records of one runs folder or several (a run found twice counts once); empty when there are none."""
    folders = [] if runs is None else [runs] if isinstance(runs, (str, os.PathLike)) else list(runs)
    frames = [R.load_records(folder) for folder in folders if has_runs(folder)]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame()
    records = pd.concat(frames, ignore_index=True)
    return records.drop_duplicates(["run_id", "split"]).reset_index(drop=True)


def draw_all(
    runs: str | os.PathLike | Sequence[str | os.PathLike] | None,
    out_dir: str | os.PathLike,
    theory: str | os.PathLike | None = None,
    bench: str | os.PathLike | None = None,
    gradcam_images: int = 5,
    note: str | None = None,
    bench_note: str | None = None,
    theory_note: str | None = None,
) -> dict[str, list[Path]]:
    """Every figure the runs folder(s), theory run and bench CSV allow; the others are skipped with a note.

    `note`, `bench_note` and `theory_note` are printed under the run, efficiency and theory figures.
    """
    set_style()
    paper = R.paper_results()
    written: dict[str, list[Path]] = {}
    records = load_all_records(runs)
    if records.empty:
        for figure in ("low_data", "scale", "gradcam", "ablations"):
            skip(figure, f"no runs under {runs}")
    else:
        main = R.task_table(default_options(records), select_over=("lr", "wd", "num_tokens"))
        ablate = R.task_table(records, select_over=("lr", "wd"))
        folders = [runs] if isinstance(runs, (str, os.PathLike)) else list(runs or [])
        for figure, draw in (
            ("low_data", lambda: low_data_figure(main, paper, out_dir, note=note)),
            ("scale", lambda: scale_figure(main, paper, out_dir, note=note)),
            ("ablations", lambda: ablation_figure(ablate, out_dir, note=note)),
            ("gradcam", lambda: _first(gradcam_from_runs(f, out_dir, images=gradcam_images, note=note, quiet=True)
                                       for f in folders) or _skip_gradcam(runs)),
        ):
            paths = draw()
            if paths:
                written[figure] = paths
    if bench is not None and Path(bench).is_file():
        paths = efficiency_figure(pd.read_csv(bench), paper, out_dir, note=bench_note)
        if paths:
            written["efficiency"] = paths
    else:
        skip("efficiency", f"no benchmark CSV{f' at {bench}' if bench else ''}")
    summary = Path(theory) / "summary.csv" if theory is not None else None
    if summary is not None and summary.is_file():
        paths = theory_figure(pd.read_csv(summary), out_dir, note=theory_note)
        if paths:
            written["theory"] = paths
    else:
        skip("theory", f"no summary.csv{f' in {theory}' if theory else ''}")
    for figure, paths in written.items():
        print(f"wrote {figure}: {', '.join(str(p) for p in paths)}")
    return written


def _first(items: Any) -> Any:
    return next((item for item in items if item), None)


def _skip_gradcam(runs: Any) -> None:
    skip("gradcam", f"no finished VPT-deep and VAPT runs with trainable.pt on a common task under {runs}")
    return None


def gradcam_from_runs(runs: str | os.PathLike, out_dir: str | os.PathLike, images: int = 5,
                      methods: Sequence[str] = ("vpt_deep", "vapt"), name: str = "gradcam",
                      note: str | None = None, quiet: bool = False) -> list[Path] | None:
    """The Grad-CAM grid from finished runs: input / VPT / VAPT rows.

    Columns are one test image per task of the paper's grid (Sun397, SVHN, Resisc45, Clevr-count, KITTI)
    where at least two of them have VPT and VAPT runs on one backbone; otherwise `images` test images
    of the one task that has both.
    """
    found = model_runs(runs, methods)
    if not found:
        if not quiet:
            skip(name, f"no finished {' and '.join(methods)} runs with trainable.pt on a common task under {runs}")
        return None
    by_backbone: dict[str, list[tuple[str, str]]] = {}
    for backbone, data in found:
        if data.split("/", 1)[-1] in GRADCAM_TASKS:
            by_backbone.setdefault(backbone, []).append((backbone, data))
    grid = max(by_backbone.values(), key=len, default=[])
    if len(grid) >= 2:
        order = {t: i for i, t in enumerate(GRADCAM_TASKS)}
        keys = sorted(grid, key=lambda k: order[k[1].split("/", 1)[-1]])[:images]
        per_key = 1
    else:
        keys = [min(found, key=lambda k: (k[1].split("/", 1)[-1] not in GRADCAM_TASKS, k))]
        per_key = images
    pixels, titles, maps = [], [], {_label(m): [] for m in methods}
    for key in keys:
        image, inputs, names = load_run_images(found[key][methods[0]], count=per_key)
        pixels.append(image)
        titles += names
        for method in methods:
            maps[_label(method)].append(gradcam_maps(load_run_model(found[key][method]), inputs))
    stacked = {label: np.concatenate(parts) for label, parts in maps.items()}
    return gradcam_figure(np.concatenate(pixels), stacked, out_dir, titles=titles, name=name, note=note)


def finished_runs(runs: str | os.PathLike) -> list[tuple[Path, dict[str, Any]]]:
    """(run folder, result record) of every finished run under `runs` that saved its trained weights."""
    import json

    found = []
    for path in sorted(Path(runs).rglob("result.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if record.get("status") == "finished" and (path.parent / "trainable.pt").is_file():
            found.append((path.parent, record))
    return found


def model_runs(runs: str | os.PathLike, methods: Sequence[str]) -> dict[tuple[str, str], dict[str, Path]]:
    """(backbone, dataset) -> method -> the best finished full-data run (default options) with trainable.pt.

    Only datasets where every method in `methods` has such a run; best = highest last reported top-1.
    """
    candidates: dict[tuple[str, str], dict[str, list[tuple[float, Path]]]] = {}
    for folder, record in finished_runs(runs):
        config = record.get("config", {})
        method = config.get("method")
        if method not in methods or config.get("fraction", 1.0) != 1.0 or config.get("method_options"):
            continue
        final = record.get("final") or {}
        score = final.get("test", max(final.values(), default=0.0))
        key = (str(config.get("backbone")), str(config.get("data")))
        candidates.setdefault(key, {}).setdefault(method, []).append((float(score), folder))
    return {
        key: {m: max(by_method[m], key=lambda item: item[0])[1] for m in methods}
        for key, by_method in sorted(candidates.items())
        if set(methods) <= set(by_method)
    }


def find_model_runs(runs: str | os.PathLike, methods: Sequence[str],
                    preferred_tasks: Sequence[str] = ()) -> dict[str, Path] | None:
    """One finished run per method on a common (backbone, dataset); datasets in `preferred_tasks` first."""
    found = model_runs(runs, methods)
    if not found:
        return None
    rank = {t: i for i, t in enumerate(preferred_tasks)}
    key = min(found, key=lambda k: (rank.get(k[1].split("/", 1)[-1], len(rank)), k))
    return found[key]


def _run_config(run_dir: str | os.PathLike) -> Any:
    import json

    from vapt.train import TrainConfig

    record = json.loads((Path(run_dir) / "result.json").read_text(encoding="utf-8"))
    return TrainConfig.from_dict(record["config"])


def load_run_model(run_dir: str | os.PathLike) -> Any:
    """The trained model of a finished run: its backbone and weights, method options and trainable.pt."""
    import vapt
    from vapt.data import parse_data

    config = _run_config(run_dir)
    spec = parse_data(config.data, config.num_classes)
    model = vapt.create_model(config.backbone, config.method, spec.num_classes,
                              pretrained=bool(config.pretrained) and config.weights is None,
                              weights=config.weights, **config.method_overrides())
    model.load_trainable(Path(run_dir) / "trainable.pt")
    return model.eval()


def load_run_images(run_dir: str | os.PathLike, count: int = 5, split: str = "test") -> tuple[
        np.ndarray, Any, list[str]]:
    """`count` test images of a run's dataset, one per class where possible: pixels, model inputs, titles."""
    import torch
    from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from vapt.data import build_dataset, parse_data

    config = _run_config(run_dir)
    spec = parse_data(config.data, config.num_classes)
    dataset = build_dataset(spec, config.data_root, split, image_size=config.image_size or 224)
    targets = dataset.targets
    chosen: list[int] = []
    for label in dict.fromkeys(targets):
        chosen.append(targets.index(label))
        if len(chosen) == count:
            break
    chosen += [i for i in range(len(targets)) if i not in chosen][: count - len(chosen)]
    inputs = torch.stack([dataset[i][0] for i in chosen])
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    pixels = (inputs * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    task = R.TASK_TITLES.get(spec.task, spec.task)
    return pixels, inputs, [f"{task}: class {targets[i]}" for i in chosen]


def main(argv: list[str] | None = None) -> int:
    """`python -m vapt figures`: draw every figure the runs, the theory run and the bench CSV allow."""
    parser = argparse.ArgumentParser(prog="python -m vapt figures", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="runs", help="folder of runs (default: runs)")
    parser.add_argument("--out", default="figures", help="output folder (default: figures)")
    parser.add_argument("--theory", default=None, help="folder of a theory run (with summary.csv)")
    parser.add_argument("--bench", default=None, help="CSV written by `python -m vapt bench`")
    parser.add_argument("--gradcam-images", type=int, default=5, help="images in the Grad-CAM grid")
    parser.add_argument("--smoke", action="store_true",
                        help="stand in for what is missing (runs under --runs, the --theory run, the --bench CSV) "
                             "with the CPU smoke versions (vapt.smoke, cached), labelled as smoke on the figures")
    parser.add_argument("--cache", default=None, help="smoke cache folder (default: $VAPT_SMOKE_CACHE or "
                                                      "~/.cache/vapt/smoke)")
    args = parser.parse_args(argv)
    runs: Any = args.runs
    theory, bench, notes = args.theory, args.bench, {}
    if args.smoke:
        from vapt import smoke

        if not has_runs(args.runs):
            print(f"no runs under {args.runs}; using the smoke runs ({smoke.SMOKE_LABEL})")
            made = smoke.build_all(args.cache)
            runs = [made[name] for name in ("main", "low_data", "ablations")]  # T2's backbone differs: table only
            notes["note"] = smoke.SMOKE_LABEL
        if theory is None or not (Path(theory) / "summary.csv").is_file():
            print(f"no theory run{f' in {theory}' if theory else ''}; using the smoke one ({smoke.THEORY_LABEL})")
            theory, notes["theory_note"] = smoke.theory_quick(args.cache), smoke.THEORY_LABEL
        if bench is None or not Path(bench).is_file():
            print(f"no benchmark CSV{f' at {bench}' if bench else ''}; using the smoke one ({smoke.BENCH_LABEL})")
            bench, notes["bench_note"] = smoke.efficiency(args.cache), smoke.BENCH_LABEL
    draw_all(runs, args.out, theory=theory, bench=bench, gradcam_images=args.gradcam_images, **notes)
    return 0
