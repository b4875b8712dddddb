"""`python -m vapt gpu-check --out DIR`: the prepared GPU check, then a cost summary from its own measurements.

Everything runs through the project's command line, in this order:

1. a synthetic task in the VTAB-1K layout (smooth random 224 x 224 JPEG images, 800 / 200 / 200) in DIR/data;
2. `bench --loader` on it: cold vs cached images/s and the data-wait share of a ViT-B/16 VAPT step
   (it also builds the cache that step 4 reuses);
3. `bench` of the five methods on ViT-B/16, batch 64: bf16 without and with `--recompute`, fp32, and
   VAPT / VPT-deep under `--compile`;
4. `train` for 2 epochs with ViT-B/16 random weights (VAPT): cached, `--no-cache`, and cached with `--compile`;
5. DIR/summary.csv and DIR/summary.md: images/s, step time, peak memory, and the projected GPU-hours of
   T1 and T2 per method.

Projection: GPU-hours = sum over the sweep's runs of (epochs x training images / training images/s
+ epochs x evaluated images / evaluation images/s), with the bench's bf16 step time (batch / step time)
and evaluation throughput, the paper's grid (VTAB-1K: 40 grid runs on train800 scored on val200 + 5
final runs on train800val200 scored on test; FGVC: 36 grid runs + 5 final runs on train, scored on
val and test; full fine-tuning: 16 grid runs), 100 epochs and evaluation after every epoch. T1 = 19
VTAB-1K tasks + 5 FGVC datasets on one backbone; T2 = 19 VTAB-1K tasks on each of two backbones
(MAE, MoCo v3). Data loading is taken as free (the cached path; step 2 measures its share), and
start-up and checkpoint time are left out.

Designed to finish in about 8 minutes on an H100 / H200. `--smoke` runs the same steps on the CPU with
the tiny `vit_test` backbone at 32 px, a batch of 8 and small splits: its numbers say nothing about GPUs
and the summary is labelled as such.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from vapt.cli import DOCS_HELP
from vapt.config import METHODS, prompted_methods
from vapt.data.check import FGVC_SIZES, VTAB_TEST_SIZES
from vapt.errors import ConfigError
from vapt.io import atomic_path, write_text_atomic
from vapt.run.config import PAPER_EPOCHS

SYNTHETIC_TASK = "vtab1k/cifar"
SUMMARY_COLUMNS = ("section", "name", "precision", "recompute", "compile", "images_per_s", "step_time_s",
                   "peak_memory_mb", "t1_gpu_hours", "t2_gpu_hours", "note")
# the last line of --help: where the documentation is
ENGINE_HELP = f"{DOCS_HELP} Data pipeline, cache and checks: docs/engine.md."


@dataclass(frozen=True)
class CheckPlan:
    """The sizes of one check: backbone, device, batch, image size, synthetic split sizes, bench steps."""

    backbone: str
    device: str
    batch: int
    image_size: int
    counts: tuple[int, int, int]  # train800, val200, test
    steps: int
    warmup: int
    epochs: int = 2
    smoke: bool = False
    compile: bool = True  # include the torch.compile bench and train runs

    @classmethod
    def full(cls) -> CheckPlan:
        """The GPU check: ViT-B/16, batch 64, 224 px, on CUDA."""
        return cls("vit_b16_in21k", "cuda", 64, 224, (800, 200, 200), steps=10, warmup=3)

    @classmethod
    def smoke_plan(cls) -> CheckPlan:
        """The same steps on the CPU with the tiny test ViT."""
        return cls("vit_test", "cpu", 8, 32, (32, 16, 16), steps=2, warmup=1, smoke=True)


def _run(command: list[str], log: Path, timed_lines: bool = False) -> tuple[list[tuple[float, str]], float]:
    """Run `python -m vapt ...`, appending its output to `log`; returns (time-stamped output lines, seconds)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    lines: list[tuple[float, str]] = []
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"$ python -m vapt {' '.join(command)}\n")
        process = subprocess.Popen([sys.executable, "-m", "vapt", *command], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, env=env)
        for line in process.stdout:
            lines.append((time.perf_counter() - start, line.rstrip("\n")))
            handle.write(line)
        code = process.wait()
    seconds = time.perf_counter() - start
    if code != 0:
        tail = "; ".join(text for _, text in lines[-3:])
        raise ConfigError(f"`python -m vapt {' '.join(command[:2])} ...` failed with exit status {code} "
                          f"(log: {log}): {tail}")
    return lines, seconds


def check_methods() -> tuple[str, ...]:
    """The methods the check benchmarks in bf16 and fp32: every registered method."""
    return tuple(METHODS)


def bench_variants(plan: CheckPlan) -> list[dict[str, Any]]:
    """The bench runs of the check: (label, precision, recompute, compile, methods)."""
    variants = [
        {"precision": "bf16", "recompute": False, "compile": False, "methods": check_methods()},
        {"precision": "bf16", "recompute": True, "compile": False, "methods": ("vapt",)},
        {"precision": "fp32", "recompute": False, "compile": False, "methods": check_methods()},
        {"precision": "bf16", "recompute": False, "compile": True, "methods": ("vpt_deep", "vapt")},
    ]
    variants = [v for v in variants if plan.compile or not v["compile"]]
    for variant in variants:
        variant["label"] = (f"bench_{variant['precision']}" + ("_recompute" if variant["recompute"] else "")
                            + ("_compile" if variant["compile"] else ""))
    return variants


def run_benches(plan: CheckPlan, out: Path, log: Path) -> pd.DataFrame:
    """Every bench variant through `python -m vapt bench`; one long table."""
    tables = []
    for variant in bench_variants(plan):
        csv = out / f"{variant['label']}.csv"
        command = ["bench", "--backbone", plan.backbone, "--methods", ",".join(variant["methods"]), "--batch",
                   str(plan.batch), "--device", plan.device, "--precision", variant["precision"], "--steps",
                   str(plan.steps), "--warmup", str(plan.warmup), "--out", str(csv)]
        command += ["--recompute" if variant["recompute"] else "--no-recompute"]
        command += ["--compile"] if variant["compile"] else []
        _run(command, log)
        table = pd.read_csv(csv)
        for key in ("precision", "recompute", "compile"):
            table[key] = variant[key]
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def run_trains(plan: CheckPlan, data_root: Path, out: Path, log: Path) -> list[dict[str, Any]]:
    """2-epoch VAPT runs through `python -m vapt train`: cached, uncached, cached under torch.compile."""
    rows = []
    runs = [("cached", []), ("uncached", ["--no-cache"])]
    runs += [("cached_compile", ["--compile"])] if plan.compile else []
    for name, extra in runs:
        command = ["train", "--backbone", plan.backbone, "--no-pretrained", "--method", "vapt", "--data",
                   SYNTHETIC_TASK, "--data-root", str(data_root), "--out", str(out / "runs" / name), "--epochs",
                   str(plan.epochs), "--batch-size", str(plan.batch), "--lr", "1", "--wd", "0", "--device",
                   plan.device, "--precision", "bf16", *extra]
        lines, seconds = _run(command, log)
        epochs = [t for t, text in lines if text.startswith("epoch ")]
        last_epoch = epochs[-1] - epochs[-2] if len(epochs) >= 2 else float("nan")
        train_images, eval_images = plan.counts[0], plan.counts[1]
        rows.append({"section": "train", "name": f"vapt_{name}", "precision": "bf16", "recompute": False,
                     "compile": "compile" in name, "images_per_s": (train_images + eval_images) / last_epoch,
                     "step_time_s": last_epoch / math.ceil(train_images / plan.batch),
                     "note": f"last of {plan.epochs} epochs: {last_epoch:.2f} s for {train_images} training + "
                             f"{eval_images} evaluation images; whole command {seconds:.1f} s"})
    return rows


def run_loader(plan: CheckPlan, data_root: Path, out: Path, log: Path) -> list[dict[str, Any]]:
    """`python -m vapt bench --loader` on the synthetic task; builds the cache the cached train runs reuse."""
    csv = out / "loader.csv"
    command = ["bench", "--loader", "--data", SYNTHETIC_TASK, "--data-root", str(data_root), "--image-size",
               str(plan.image_size), "--batch-size", str(plan.batch), "--device", plan.device, "--backbone",
               plan.backbone, "--method", "vapt", "--steps", str(plan.steps), "--cache-dir",
               str(data_root / ".vapt-cache"), "--out", str(csv)]
    _run(command, log)
    table = pd.read_csv(csv)
    return [{"section": "loader", "name": row["path"], "precision": "bf16", "recompute": False, "compile": False,
             "images_per_s": row["images_per_s"],
             "note": f"data wait {100 * row['data_wait_share']:.1f} % of a {plan.backbone} VAPT training step"}
            for _, row in table.iterrows()]


def sweep_images(method: str) -> dict[str, tuple[float, float]]:
    """Per benchmark of T1: (training images, evaluated images) of one method's whole sweep at 100 epochs."""
    vtab_grid, fgvc_grid = (16, 16) if METHODS[method].trains_backbone else (40, 36)
    finals = 5
    vtab_train = len(VTAB_TEST_SIZES) * (vtab_grid * 800 + finals * 1000) * PAPER_EPOCHS
    vtab_eval = sum(vtab_grid * 200 + finals * test for test in VTAB_TEST_SIZES.values()) * PAPER_EPOCHS
    fgvc_train = sum((fgvc_grid + finals) * train for train, _, _ in FGVC_SIZES.values()) * PAPER_EPOCHS
    fgvc_eval = sum((fgvc_grid + finals) * (val + test) for _, val, test in FGVC_SIZES.values()) * PAPER_EPOCHS
    return {"vtab1k": (vtab_train, vtab_eval), "fgvc": (fgvc_train, fgvc_eval)}


def projected_hours(method: str, train_images_per_s: float, eval_images_per_s: float) -> tuple[float, float | None]:
    """Projected GPU-hours of T1 (VTAB-1K + FGVC) and T2 (VTAB-1K on two backbones; None unless prompted)."""
    images = sweep_images(method)

    def hours(train: float, evaluated: float) -> float:
        return (train / train_images_per_s + evaluated / eval_images_per_s) / 3600

    t1 = hours(*images["vtab1k"]) + hours(*images["fgvc"])
    t2 = 2 * hours(*images["vtab1k"]) if method in prompted_methods() else None
    return t1, t2


def bench_rows(bench: pd.DataFrame, batch: int) -> list[dict[str, Any]]:
    """Summary rows of the bench table; bf16 rows without recompute or compile carry the projections."""
    rows = []
    for _, row in bench.iterrows():
        images_per_s = batch / row["step_time_s"]
        entry = {"section": "bench", "name": row["method"], "precision": row["precision"],
                 "recompute": bool(row["recompute"]), "compile": bool(row["compile"]),
                 "images_per_s": images_per_s, "step_time_s": row["step_time_s"],
                 "peak_memory_mb": row["peak_memory_mb"], "note": f"eval {row['eval_images_per_s']:.4g} images/s"}
        if row["precision"] == "bf16" and not row["recompute"] and not row["compile"]:
            entry["t1_gpu_hours"], entry["t2_gpu_hours"] = projected_hours(
                row["method"], images_per_s, row["eval_images_per_s"])
        rows.append(entry)
    return rows


def format_markdown(summary: pd.DataFrame, plan: CheckPlan, started: str, seconds: float) -> str:
    """summary.md: what ran, the table, and how the projection is made."""
    where = "CPU smoke run (tiny vit_test, 32 px): NOT GPU numbers" if plan.smoke else f"{plan.device}"
    table = markdown_table(summary)
    return "\n".join([
        f"# GPU check: {where}",
        "",
        f"Started {started}; took {seconds / 60:.1f} min. Backbone {plan.backbone} (random weights), batch "
        f"{plan.batch}, {plan.image_size} px; synthetic VTAB-1K-layout task ({plan.counts[0]} / {plan.counts[1]} / "
        f"{plan.counts[2]} images); bench: median of {plan.steps} steps after {plan.warmup} warm-up.",
        "",
        table,
        "",
        "Projected GPU-hours = sum over a method's sweep of epochs x training images / (batch / bench step time)"
        " + epochs x evaluated images / bench evaluation images/s (bf16, no recompute); T1 = 19 VTAB-1K tasks"
        " (40 grid + 5 final runs) + 5 FGVC datasets (36 grid + 5 final runs), full fine-tuning 16 grid runs,"
        " 100 epochs, evaluation every epoch; T2 = the 19 VTAB-1K tasks on two backbones. Data loading,"
        " start-up and checkpoints are not counted.",
        "",
    ])


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table; numbers with 4 significant digits, missing values empty."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.4g}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def gpu_check(out: str | os.PathLike, smoke: bool = False, plan: CheckPlan | None = None) -> pd.DataFrame:
    """Run every step of the check into `out`; returns the summary table (also written as CSV and Markdown)."""
    import torch

    plan = plan or (CheckPlan.smoke_plan() if smoke else CheckPlan.full())
    if plan.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("gpu-check needs a CUDA GPU; use --smoke to run the same steps on the CPU")
    out = Path(out)
    data_root = out / "data"
    if (data_root / "vtab-1k").exists():
        raise ConfigError(f"{data_root} already holds data from an earlier check; choose an empty --out folder")
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    started, start = time.strftime("%Y-%m-%d %H:%M:%S"), time.perf_counter()
    from vapt.run.loader_bench import write_synthetic_vtab_task

    counts = dict(zip(("train800", "val200", "test"), plan.counts, strict=True))
    write_synthetic_vtab_task(data_root, SYNTHETIC_TASK.split("/")[1], plan.image_size, plan.image_size, counts)
    rows = run_loader(plan, data_root, out, log)
    bench = run_benches(plan, out, log)
    rows += bench_rows(bench, plan.batch)
    rows += run_trains(plan, data_root, out, log)
    summary = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    with atomic_path(out / "summary.csv") as tmp:
        summary.to_csv(tmp, index=False)
    write_text_atomic(out / "summary.md", format_markdown(summary, plan, started, time.perf_counter() - start))
    return summary


def main(argv: list[str] | None = None) -> int:
    """`python -m vapt gpu-check [--smoke] --out DIR`."""
    parser = argparse.ArgumentParser(prog="python -m vapt gpu-check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=ENGINE_HELP)
    parser.add_argument("--out", required=True, help="folder for the data, logs, CSV files and the summary")
    parser.add_argument("--smoke", action="store_true", help="the same steps on the CPU with the tiny vit_test")
    args = parser.parse_args(argv)
    summary = gpu_check(args.out, smoke=args.smoke)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {Path(args.out) / 'summary.csv'} and {Path(args.out) / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
