"""Smoke mode: every experiment of the paper at toy scale on CPU, on a small but real transfer problem.

A tiny ViT (`vit_test`: 32 px, patch 4, depth 4, width 64) is pre-trained here on scikit-learn's
bundled handwritten digits 0-5 (supervised, or self-supervised by predicting image rotations), saved,
and reloaded through the local-weights path (`weights=PATH`). It is then adapted to the held-out
digits 6-9, written as a custom task in the VTAB-1K and FGVC folder layouts: the tables (T1, T2) go
through the real `vapt.sweep.sweep` protocol (grid on validation, final runs on test), the low-data
and ablation runs are final runs at a fixed lr / wd through the same `vapt.train.train`. The numbers
are real but small-scale: they exercise the code path of every table and figure, they do not
reproduce the paper.

The pre-trained checkpoint, the transfer data and the runs live in a cache folder: the `cache`
argument, else `$VAPT_SMOKE_CACHE`, else `~/.cache/vapt/smoke`; everything is reused when present.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "VAPT_SMOKE_CACHE"
SMOKE_LABEL = "SMOKE (tiny ViT pre-trained on digits 0-5, adapted to digits 6-9 on CPU; not the paper's setting)"
BENCH_LABEL = "SMOKE (tiny 32 px ViT on this CPU, batch 40; not ViT-B/16 on a GPU)"
THEORY_LABEL = "SMOKE (theory simulation on a reduced grid: n = 500-4000, 3 replicates; not the full run)"
TASK = "digits_6to9"
PRETRAIN_CLASSES: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
TRANSFER_CLASSES: tuple[int, ...] = (6, 7, 8, 9)
OBJECTIVES: tuple[str, ...] = ("supervised", "rotation")
# images per class in each split of the transfer task (train800val200 = train800 + val200).
VTAB_PER_CLASS: dict[str, int] = {"train800": 20, "val200": 5, "test": 25}
FGVC_PER_CLASS: dict[str, int] = {"train": 20, "val": 5, "test": 25}
THREADS_ENV = "VAPT_SMOKE_THREADS"


@dataclass(frozen=True)
class SmokeSettings:
    """Sizes of the smoke experiments (pre-training and adaptation)."""

    pretrain_epochs: int = 6
    pretrain_lr: float = 4e-3
    pretrain_batch_size: int = 32
    pretrain_seed: int = 0
    epochs: int = 8
    batch_size: int = 40
    seeds: tuple[int, ...] = (42,)
    prompt_grid: str = "5:0.0001"
    full_grid: str = "0.005:0.0001"
    lr: float = 5.0
    wd: float = 0.0001
    num_tokens: int = 5
    fractions: tuple[float, ...] = (0.1, 0.3, 1.0)

    def key(self) -> str:
        """A short hash of the settings that change the pre-trained weights and data."""
        text = json.dumps([self.pretrain_epochs, self.pretrain_lr, self.pretrain_batch_size, self.pretrain_seed,
                           VTAB_PER_CLASS,
                           FGVC_PER_CLASS, PRETRAIN_CLASSES, TRANSFER_CLASSES], sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:8]


DEFAULT = SmokeSettings()


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """The cache folder: `cache`, else $VAPT_SMOKE_CACHE, else ~/.cache/vapt/smoke (created)."""
    path = Path(cache or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "vapt" / "smoke").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def _root(cache: str | os.PathLike | None, settings: SmokeSettings) -> Path:
    root = cache_dir(cache) / f"v{settings.key()}"
    root.mkdir(parents=True, exist_ok=True)
    return root


# ----------------------------------------------------------------------------------- pre-training
def _digits(classes: Sequence[int], image_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    from vapt.data.fixtures import digits_images

    images, labels = digits_images(image_size)
    keep = np.isin(labels, classes)
    return images[keep], labels[keep]


def _normalize(images: np.ndarray) -> Any:
    """uint8 (N, H, W, 3) -> the VTAB preprocessing's tensors (ToTensor + ImageNet normalization)."""
    import torch
    from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _pretext(images: Any, labels: Any, objective: str, generator: Any) -> tuple[Any, Any]:
    """Inputs and targets of one batch: the digit label, or the rotation (0/90/180/270°) of the image."""
    import torch

    if objective == "supervised":
        return images, labels
    turns = torch.randint(0, 4, (images.shape[0],), generator=generator)
    rotated = torch.stack([torch.rot90(im, int(k), dims=(1, 2)) for im, k in zip(images, turns, strict=True)])
    return rotated, turns


def pretrained_backbone(
    cache: str | os.PathLike | None = None, objective: str = "supervised", settings: SmokeSettings = DEFAULT
) -> Path:
    """The tiny ViT pre-trained on digits 0-5 (`supervised` labels or `rotation` prediction), as a .pth file.

    Trained once and cached; a JSON file beside it records the held-out pre-training accuracy.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    path = _root(cache, settings) / f"vit_test_digits0-5_{objective}.pth"
    if path.is_file():
        return path
    import torch
    from torch import nn

    from vapt.io import save_torch_atomic, write_json_atomic
    from vapt.models.backbones import create_backbone

    use_threads()
    started = time.perf_counter()
    torch.manual_seed(settings.pretrain_seed)
    generator = torch.Generator().manual_seed(settings.pretrain_seed)
    images, labels = _digits(PRETRAIN_CLASSES)
    order = np.random.default_rng(settings.pretrain_seed).permutation(len(labels))
    held_out, train_idx = order[: len(order) // 10], order[len(order) // 10:]
    x, y = _normalize(images), torch.from_numpy(labels)
    backbone, _ = create_backbone("vit_test")
    classes = len(PRETRAIN_CLASSES) if objective == "supervised" else 4
    model = nn.Sequential(backbone, nn.Linear(backbone.num_features, classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.pretrain_lr, weight_decay=0.05)
    batch_size = settings.pretrain_batch_size
    steps = settings.pretrain_epochs * int(np.ceil(len(train_idx) / batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.pretrain_lr, total_steps=steps, pct_start=0.15)
    train_idx_t = torch.from_numpy(train_idx)
    for _ in range(settings.pretrain_epochs):
        model.train()
        for batch in train_idx_t[torch.randperm(len(train_idx_t), generator=generator)].split(batch_size):
            inputs, targets = _pretext(x[batch], y[batch], objective, generator)
            loss = nn.functional.cross_entropy(model(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        inputs, targets = _pretext(x[held_out], y[held_out], objective, torch.Generator().manual_seed(1))
        accuracy = 100.0 * float((model(inputs).argmax(1) == targets).float().mean())
    save_torch_atomic(path, backbone.state_dict())
    write_json_atomic(path.with_suffix(".json"), {
        "objective": objective, "classes": list(PRETRAIN_CLASSES), "held_out_top1": accuracy,
        "train_images": len(train_idx), "held_out_images": len(held_out), "epochs": settings.pretrain_epochs,
        "wall_time_s": time.perf_counter() - started,
    })
    print(f"pre-trained vit_test on digits 0-5 ({objective}): held-out top-1 {accuracy:.1f} % -> {path}")
    return path


def pretraining_summary(path: str | os.PathLike) -> dict[str, Any]:
    """The record written beside a pre-trained checkpoint (objective, held-out accuracy, time)."""
    return json.loads(Path(path).with_suffix(".json").read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------- transfer task
def transfer_data(cache: str | os.PathLike | None = None, settings: SmokeSettings = DEFAULT) -> Path:
    """A data root holding digits 6-9 (labels 0-3) as `vtab-1k/digits_6to9/` and FGVC `digits_6to9/`."""
    from vapt.data.fixtures import write_fgvc_dataset, write_vtab_task
    from vapt.io import write_json_atomic

    root = _root(cache, settings) / "data"
    marker = root / "complete.json"
    if marker.is_file():
        return root
    images, labels = _digits(TRANSFER_CLASSES)
    labels = labels - min(TRANSFER_CLASSES)
    rng = np.random.default_rng(settings.pretrain_seed)
    pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in range(len(TRANSFER_CLASSES))}

    def draw(per_class: dict[str, int]) -> dict[str, tuple[np.ndarray, list[int]]]:
        splits, taken = {}, {c: 0 for c in pools}
        for split, count in per_class.items():
            chosen = []
            for c in pools:
                chosen += pools[c][taken[c]: taken[c] + count]
                taken[c] += count
            splits[split] = (images[chosen], labels[chosen].tolist())
        return splits

    write_vtab_task(root, TASK, draw(VTAB_PER_CLASS))
    write_fgvc_dataset(root, TASK, draw(FGVC_PER_CLASS))
    write_json_atomic(marker, {"task": TASK, "classes": list(TRANSFER_CLASSES), "vtab1k": VTAB_PER_CLASS,
                               "fgvc": FGVC_PER_CLASS})
    return root


# ------------------------------------------------------------------------------------ adaptation
def runs_dir(experiment: str, cache: str | os.PathLike | None = None, settings: SmokeSettings = DEFAULT) -> Path:
    """The runs folder of one smoke experiment (`main`, `self_supervised`, `low_data`, `ablations`)."""
    return _root(cache, settings) / "runs" / experiment


def _base_config(method: str, runs: str | os.PathLike, benchmark: str, cache: str | os.PathLike | None,
                 objective: str, fraction: float, num_tokens: int | None, options: dict[str, Any] | None,
                 settings: SmokeSettings) -> Any:
    from vapt.train import TrainConfig

    prompted = method in ("vpt_shallow", "vpt_deep", "vapt")
    return TrainConfig(
        backbone="vit_test", method=method, data=f"{benchmark}/{TASK}", data_root=str(transfer_data(cache, settings)),
        out=str(runs), lr=settings.lr, wd=settings.wd, epochs=settings.epochs, batch_size=settings.batch_size,
        fraction=fraction, num_tokens=(num_tokens or settings.num_tokens) if prompted else None,
        method_options=tuple(sorted((options or {}).items())), num_classes=len(TRANSFER_CLASSES),
        weights=str(pretrained_backbone(cache, objective, settings)), pretrained=False, device="cpu",
        num_workers=0, eval_every=settings.epochs,
    )


def sweep_method(
    method: str,
    runs: str | os.PathLike,
    benchmark: str = "vtab1k",
    cache: str | os.PathLike | None = None,
    objective: str = "supervised",
    fraction: float = 1.0,
    num_tokens: int | None = None,
    options: dict[str, Any] | None = None,
    settings: SmokeSettings = DEFAULT,
) -> list[dict[str, Any]]:
    """Run the paper's protocol (`vapt.sweep.sweep`: grid on validation, final seeds) on the digits task."""
    from vapt.sweep import sweep

    use_threads()
    base = _base_config(method, runs, benchmark, cache, objective, fraction, num_tokens, options, settings)
    grid = settings.full_grid if method == "full" else settings.prompt_grid
    return sweep(base, [base.data], grid=grid, seeds=settings.seeds, launcher=_InProcess(folder=str(runs)))


def train_method(
    method: str,
    runs: str | os.PathLike,
    benchmark: str = "vtab1k",
    cache: str | os.PathLike | None = None,
    objective: str = "supervised",
    fraction: float = 1.0,
    num_tokens: int | None = None,
    options: dict[str, Any] | None = None,
    settings: SmokeSettings = DEFAULT,
) -> list[dict[str, Any]]:
    """Final runs only (train800val200 -> test, or FGVC train -> val/test) at the fixed smoke lr and wd."""
    from vapt.sweep import TaskPlan
    from vapt.train import is_done, read_result, run_dir

    use_threads()
    base = _base_config(method, runs, benchmark, cache, objective, fraction, num_tokens, options, settings)
    plan = TaskPlan.for_task(base, base.data)
    configs = [plan.final_config(settings.lr, settings.wd, seed) for seed in settings.seeds]
    todo = [c for c in configs if not is_done(read_result(run_dir(c) / "result.json"))]
    if todo:
        _InProcess(folder=str(runs)).run(todo)
    return [read_result(run_dir(c) / "result.json") or {} for c in configs]


def use_threads() -> int:
    """Limit torch to $VAPT_SMOKE_THREADS CPU threads (default 1: the tiny model gains nothing from more)."""
    import torch

    threads = int(os.environ.get(THREADS_ENV, "1"))
    torch.set_num_threads(max(1, threads))
    return threads


class _InProcess:
    """Runs a sweep's training runs one after another in this process (a `Launcher` without submitit)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def run(self, configs: Sequence[Any]) -> None:
        """Train every config here; a run's own output goes to its result record, not to the notebook."""
        from vapt.sweep import run_configs

        with _quiet():
            lines = run_configs(list(configs))
        failed = [line for line in lines if not line.endswith(": finished")]
        print(f"trained {len(lines)} run(s) on CPU" + (f"; not finished: {failed}" if failed else ""))


class _quiet:
    """Silence stdout and stderr (per-epoch lines and progress bars) inside a `with` block."""

    def __enter__(self) -> None:
        self._saved = sys.stdout, sys.stderr
        self._sink = open(os.devnull, "w")  # noqa: SIM115
        sys.stdout = sys.stderr = self._sink

    def __exit__(self, *exc: Any) -> None:
        sys.stdout, sys.stderr = self._saved
        self._sink.close()


# ----------------------------------------------------------------------------------- experiments
def main_results(cache: str | os.PathLike | None = None, settings: SmokeSettings = DEFAULT,
                 methods: Sequence[str] = ("linear", "full", "vpt_shallow", "vpt_deep", "vapt")) -> Path:
    """T1 at toy scale: every method on the VTAB-layout digits task; returns the runs folder."""
    runs = runs_dir("main", cache, settings)
    for method in methods:
        sweep_method(method, runs, "vtab1k", cache, settings=settings)
    return runs


def self_supervised(cache: str | os.PathLike | None = None, settings: SmokeSettings = DEFAULT,
                    methods: Sequence[str] = ("vpt_shallow", "vpt_deep", "vapt")) -> Path:
    """T2 at toy scale: prompt methods on a backbone pre-trained without labels (rotation prediction)."""
    runs = runs_dir("self_supervised", cache, settings)
    for method in methods:
        sweep_method(method, runs, "vtab1k", cache, objective="rotation", settings=settings)
    return runs


def low_data(cache: str | os.PathLike | None = None, settings: SmokeSettings = DEFAULT,
             methods: Sequence[str] = ("vpt_deep", "vapt")) -> Path:
    """F-low at toy scale: VPT-deep and VAPT on fractions of the FGVC-layout digits training split (fixed lr/wd)."""
    runs = runs_dir("low_data", cache, settings)
    for method in methods:
        for fraction in settings.fractions:
            train_method(method, runs, "fgvc", cache, fraction=fraction, settings=settings)
    return runs


def ablations(cache: str | os.PathLike | None = None, settings: SmokeSettings = DEFAULT,
              lengths: Sequence[int] = (1, 5, 10), kernels: Sequence[int] = (2, 3)) -> Path:
    """A-len / A-kernel / A-parts at toy scale (fixed lr/wd): VAPT's prompt length, kernel size, parts removed."""
    runs = runs_dir("ablations", cache, settings)
    for length in lengths:
        train_method("vapt", runs, "vtab1k", cache, num_tokens=length, settings=settings)
    for kernel in kernels:
        if kernel != 2:
            train_method("vapt", runs, "vtab1k", cache, options={"kernel_size": kernel}, settings=settings)
    for options in ({"conv": False}, {"projector": False}):
        train_method("vapt", runs, "vtab1k", cache, options=options, settings=settings)
    return runs


def efficiency(cache: str | os.PathLike | None = None, settings: SmokeSettings = DEFAULT,
               methods: Sequence[str] = ("linear", "full", "vpt_shallow", "vpt_deep", "vapt")) -> Path:
    """E at toy scale: `vapt.bench` on the tiny ViT (CPU); returns the CSV (measured once, then cached)."""
    from vapt.bench import BenchSettings, run_bench, write_csv

    path = _root(cache, settings) / "bench_vit_test_cpu.csv"
    if not path.is_file():
        table = run_bench(BenchSettings(backbone="vit_test", batch=settings.batch_size, steps=3,
                                        num_tokens=settings.num_tokens, num_classes=len(TRANSFER_CLASSES)),
                          list(methods))
        write_csv(table, path)
    return path


def theory_quick(cache: str | os.PathLike | None = None, settings: SmokeSettings = DEFAULT,
                 ns: Sequence[int] = (500, 1000, 2000, 4000), replicates: int = 3) -> Path:
    """The theory simulation on a reduced grid (a few seconds); returns its output folder."""
    out = _root(cache, settings) / "theory"
    if not (out / "summary.csv").is_file():
        from theory.sample_efficiency import main as theory_main

        args = ["--out", str(out), "--n", ",".join(str(n) for n in ns), "--replicates", str(replicates),
                "--bootstrap", "200", "--jobs", "1", "--no-expressiveness", "--no-progress"]
        with _quiet():
            code = theory_main(args)
        if code:
            raise RuntimeError(f"python -m theory.sample_efficiency {' '.join(args)} exited with {code}")
    return out


def build_all(cache: str | os.PathLike | None = None, settings: SmokeSettings = DEFAULT) -> dict[str, Path]:
    """Every smoke experiment with runs (T1, T2, F-low, ablations); returns experiment -> runs folder."""
    return {
        "main": main_results(cache, settings),
        "self_supervised": self_supervised(cache, settings),
        "low_data": low_data(cache, settings),
        "ablations": ablations(cache, settings),
    }


__all__ = [
    "BENCH_LABEL",
    "CACHE_ENV",
    "SMOKE_LABEL",
    "THEORY_LABEL",
    "TASK",
    "SmokeSettings",
    "ablations",
    "build_all",
    "cache_dir",
    "efficiency",
    "low_data",
    "main_results",
    "pretrained_backbone",
    "pretraining_summary",
    "runs_dir",
    "self_supervised",
    "sweep_method",
    "train_method",
    "use_threads",
    "theory_quick",
    "transfer_data",
]
