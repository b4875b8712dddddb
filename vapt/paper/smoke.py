"""Smoke mode: every experiment of the paper at toy scale on CPU, on a small but real transfer problem.

A tiny ViT (`vit_test`: 32 px, patch 4, depth 4, width 64) is pre-trained here on scikit-learn's
bundled handwritten digits 0-5 (supervised, or self-supervised by predicting image rotations), saved,
and reloaded through the local-weights path (`weights=PATH`). It is then adapted to the held-out
digits 6-9, written as a custom task in the VTAB-1K and FGVC folder layouts: the tables (T1, T2) go
through the real `vapt.run.sweep.sweep` protocol (grid on validation, final runs on test), the low-data
and ablation runs are final runs at a fixed lr / wd through the same `vapt.run.train.train`. The numbers
are real but small-scale: they exercise the code path of every table and figure, they do not
reproduce the paper.

Smoke runs are made only by an explicit command, `python -m vapt smoke` (`make smoke`), or by a
notebook in smoke mode; `python -m vapt figures --smoke` only reads them. The pre-trained checkpoint,
the transfer data and the runs live in a cache folder (the `cache` argument, else `$VAPT_SMOKE_CACHE`,
else `~/.cache/vapt/smoke`), in a subfolder keyed by the smoke settings and by a hash of the code that
makes the numbers (models, data, training, sweep, smoke, theory): a changed library never reuses
stale smoke results.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vapt.cli import DOCS_HELP, HelpFormatter
from vapt.config import METHODS, prompted_methods
from vapt.errors import ConfigError
from vapt.paper.digits import (
    FGVC_PER_CLASS,
    PRETRAIN_CLASSES,
    TASK,
    TRANSFER_CLASSES,
    VTAB_PER_CLASS,
    pretrain,
    use_threads,
    write_transfer_data,
)

CACHE_ENV = "VAPT_SMOKE_CACHE"
SMOKE_LABEL = "SMOKE (tiny ViT pre-trained on digits 0-5, adapted to digits 6-9 on CPU; not the paper's setting)"
BENCH_LABEL = "SMOKE (tiny 32 px ViT on this CPU, batch 40; not ViT-B/16 on a GPU)"
THEORY_LABEL = "SMOKE (theory simulation on a reduced grid: n = 500-4000, 3 replicates; not the full run)"


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


CODE_PARTS: tuple[str, ...] = ("vapt/config.py", "vapt/methods", "vapt/models", "vapt/data", "vapt/run/config.py",
                               "vapt/run/record.py", "vapt/run/selection.py", "vapt/run/train.py",
                               "vapt/run/sweep.py", "vapt/run/jobs.py", "vapt/run/lock.py",
                               "vapt/run/bench.py", "vapt/run/memory.py", "vapt/paper/smoke.py",
                               "vapt/paper/digits.py", "theory")


def code_version() -> str:
    """A short hash of the source files that determine smoke results (the cache key's code part)."""
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha1()
    for part in CODE_PARTS:
        path = root / part
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            if file.is_file():
                digest.update(file.relative_to(root).as_posix().encode())
                digest.update(file.read_bytes())
    return digest.hexdigest()[:8]


def _root(cache: str | os.PathLike | None, settings: SmokeSettings) -> Path:
    root = cache_dir(cache) / f"v{settings.key()}-code{code_version()}"
    root.mkdir(parents=True, exist_ok=True)
    return root


# ------------------------------------------------------------------------------ the transfer problem
def pretrained_backbone(
    cache: str | os.PathLike | None = None, objective: str = "supervised", settings: SmokeSettings = DEFAULT
) -> Path:
    """The tiny ViT pre-trained on digits 0-5 (`supervised` or `rotation`), as a .pth file (trained once, cached)."""
    path = _root(cache, settings) / f"vit_test_digits0-5_{objective}.pth"
    return path if path.is_file() else pretrain(path, objective, settings)


def transfer_data(cache: str | os.PathLike | None = None, settings: SmokeSettings = DEFAULT) -> Path:
    """The data root of the digits 6-9 task in both layouts (written once, cached)."""
    return write_transfer_data(_root(cache, settings) / "data", settings)


# ------------------------------------------------------------------------------------ adaptation
def runs_dir(experiment: str, cache: str | os.PathLike | None = None, settings: SmokeSettings = DEFAULT) -> Path:
    """The runs folder of one smoke experiment (`main`, `self_supervised`, `low_data`, `ablations`)."""
    return _root(cache, settings) / "runs" / experiment


@dataclass(frozen=True)
class SmokeJob:
    """One method's smoke runs: where they go, the task's benchmark layout, the backbone's pre-training and options."""

    method: str
    runs: str | os.PathLike
    benchmark: str = "vtab1k"
    cache: str | os.PathLike | None = None
    objective: str = "supervised"
    fraction: float = 1.0
    num_tokens: int | None = None
    options: dict[str, Any] | None = None
    settings: SmokeSettings = DEFAULT

    def config(self) -> Any:
        """The TrainConfig every run of this job starts from (lr, wd and seed are the smoke settings')."""
        from vapt.run.config import TrainConfig

        settings, prompted = self.settings, METHODS[self.method].prompted
        return TrainConfig(
            backbone="vit_test", method=self.method, data=f"{self.benchmark}/{TASK}",
            data_root=str(transfer_data(self.cache, settings)), out=str(self.runs), lr=settings.lr, wd=settings.wd,
            epochs=settings.epochs, batch_size=settings.batch_size, fraction=self.fraction,
            num_tokens=(self.num_tokens or settings.num_tokens) if prompted else None,
            method_options=tuple(sorted((self.options or {}).items())), num_classes=len(TRANSFER_CLASSES),
            weights=str(pretrained_backbone(self.cache, self.objective, settings)), pretrained=False, device="cpu",
            num_workers=0, eval_every=settings.epochs,
        )


def sweep_method(method: str, runs: str | os.PathLike, benchmark: str = "vtab1k", **job: Any) -> list[dict[str, Any]]:
    """Run the paper's protocol (`vapt.run.sweep.sweep`: grid on validation, final seeds) on the digits task.

    `job`: the other fields of `SmokeJob` (cache, objective, fraction, num_tokens, options, settings).
    """
    from vapt.run.sweep import sweep

    use_threads()
    spec = SmokeJob(method, runs, benchmark, **job)
    base, settings = spec.config(), spec.settings
    grid = settings.full_grid if METHODS[method].trains_backbone else settings.prompt_grid
    return sweep(base, [base.data], grid=grid, seeds=settings.seeds, launcher=_InProcess(folder=str(runs)))


def train_method(method: str, runs: str | os.PathLike, benchmark: str = "vtab1k", **job: Any) -> list[dict[str, Any]]:
    """Final runs only (train800val200 -> test, or FGVC train -> val/test) at the fixed smoke lr and wd.

    `job`: the other fields of `SmokeJob` (cache, objective, fraction, num_tokens, options, settings).
    """
    from vapt.run.config import run_dir
    from vapt.run.record import RECORD_NAME, RunRecord
    from vapt.run.sweep import TaskPlan, is_run_done

    use_threads()
    spec = SmokeJob(method, runs, benchmark, **job)
    base, settings = spec.config(), spec.settings
    plan = TaskPlan.for_task(base, base.data)
    configs = [plan.final_config(settings.lr, settings.wd, seed) for seed in settings.seeds]
    todo = [c for c in configs if not is_run_done(c)]
    if todo:
        _InProcess(folder=str(runs)).run(todo)
    return [RunRecord.read_if_present(run_dir(c) / RECORD_NAME) for c in configs]


class _InProcess:
    """Runs a sweep's training runs one after another in this process (a `Launcher` without submitit)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def run(self, configs: Sequence[Any]) -> None:
        """Train every config here; a run's own output goes to its result record, not to the notebook."""
        from vapt.run.jobs import run_configs

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
                 methods: Sequence[str] | None = None) -> Path:
    """T1 at toy scale: every registered method (or `methods`) on the VTAB-layout digits task; the runs folder."""
    runs = runs_dir("main", cache, settings)
    for method in tuple(METHODS) if methods is None else methods:
        sweep_method(method, runs, "vtab1k", cache=cache, settings=settings)
    return runs


def self_supervised(cache: str | os.PathLike | None = None, settings: SmokeSettings = DEFAULT,
                    methods: Sequence[str] | None = None) -> Path:
    """T2 at toy scale: prompted methods on a backbone pre-trained without labels (rotation prediction)."""
    runs = runs_dir("self_supervised", cache, settings)
    for method in prompted_methods() if methods is None else methods:
        sweep_method(method, runs, "vtab1k", cache=cache, objective="rotation", settings=settings)
    return runs


def low_data(cache: str | os.PathLike | None = None, settings: SmokeSettings = DEFAULT,
             methods: Sequence[str] = ("vpt_deep", "vapt")) -> Path:
    """F-low at toy scale: VPT-deep and VAPT on fractions of the FGVC-layout digits training split (fixed lr/wd)."""
    runs = runs_dir("low_data", cache, settings)
    for method in methods:
        for fraction in settings.fractions:
            train_method(method, runs, "fgvc", cache=cache, fraction=fraction, settings=settings)
    return runs


def ablations(cache: str | os.PathLike | None = None, settings: SmokeSettings = DEFAULT,
              lengths: Sequence[int] = (1, 5, 10), kernels: Sequence[int] = (2, 3)) -> Path:
    """A-len / A-kernel / A-parts at toy scale (fixed lr/wd): VAPT's prompt length, kernel size, parts removed."""
    runs = runs_dir("ablations", cache, settings)
    for length in lengths:
        train_method("vapt", runs, "vtab1k", cache=cache, num_tokens=length, settings=settings)
    for kernel in kernels:
        if kernel != 2:
            train_method("vapt", runs, "vtab1k", cache=cache, options={"kernel_size": kernel}, settings=settings)
    for options in ({"conv": False}, {"projector": False}):
        train_method("vapt", runs, "vtab1k", cache=cache, options=options, settings=settings)
    return runs


def efficiency(cache: str | os.PathLike | None = None, settings: SmokeSettings = DEFAULT,
               methods: Sequence[str] | None = None) -> Path:
    """E at toy scale: `vapt.run.bench` on the tiny ViT (CPU); returns the CSV (measured once, then cached)."""
    from vapt.run.bench import BenchSettings, run_bench, write_csv

    path = _root(cache, settings) / "bench_vit_test_cpu.csv"
    if not path.is_file():
        table = run_bench(BenchSettings(backbone="vit_test", batch=settings.batch_size, steps=3,
                                        num_tokens=settings.num_tokens, num_classes=len(TRANSFER_CLASSES)),
                          list(METHODS if methods is None else methods))
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


EXPERIMENTS: dict[str, Callable[..., Path]] = {
    "main": main_results, "self_supervised": self_supervised, "low_data": low_data, "ablations": ablations,
    "efficiency": efficiency, "theory": theory_quick,
}


def build_all(cache: str | os.PathLike | None = None, settings: SmokeSettings = DEFAULT,
              experiments: Sequence[str] = tuple(EXPERIMENTS)) -> dict[str, Path]:
    """Run (or reuse) the smoke experiments; returns experiment -> runs folder, CSV or theory folder."""
    from vapt.io import write_json_atomic

    unknown = [e for e in experiments if e not in EXPERIMENTS]
    if unknown:
        raise ConfigError(f"unknown smoke experiment(s) {', '.join(unknown)}; "
                          f"expected some of {', '.join(EXPERIMENTS)}")
    made = {}
    for name in experiments:
        made[name] = EXPERIMENTS[name](cache, settings)
        marker = _root(cache, settings) / "done" / f"{name}.json"
        write_json_atomic(marker, {"experiment": name, "path": str(made[name])})
    return made


def built(cache: str | os.PathLike | None = None, settings: SmokeSettings = DEFAULT) -> dict[str, Path]:
    """The smoke experiments already complete for this code version (read only: nothing is trained)."""
    root = cache_dir(cache) / f"v{settings.key()}-code{code_version()}" / "done"
    found = {}
    for name in EXPERIMENTS:
        marker = root / f"{name}.json"
        if marker.is_file():
            path = Path(json.loads(marker.read_text(encoding="utf-8"))["path"])
            if path.exists():
                found[name] = path
    return found


def main(argv: list[str] | None = None) -> int:
    """`python -m vapt smoke`: run every smoke experiment (or those named) on CPU, cached by code version."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m vapt smoke", epilog=DOCS_HELP, description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("experiments", nargs="*", default=list(EXPERIMENTS),
                        help=f"some of {', '.join(EXPERIMENTS)} (default: all)")
    parser.add_argument("--cache", default=None, help=f"cache folder (default: ${CACHE_ENV} or ~/.cache/vapt/smoke)")
    args = parser.parse_args(argv)
    for name, path in build_all(args.cache, experiments=args.experiments).items():
        print(f"smoke {name}: {path}")
    return 0


__all__ = [
    "BENCH_LABEL",
    "CACHE_ENV",
    "SMOKE_LABEL",
    "THEORY_LABEL",
    "SmokeSettings",
    "ablations",
    "EXPERIMENTS",
    "build_all",
    "built",
    "code_version",
    "cache_dir",
    "efficiency",
    "low_data",
    "main_results",
    "pretrained_backbone",
    "runs_dir",
    "self_supervised",
    "sweep_method",
    "train_method",
    "theory_quick",
    "transfer_data",
]
