"""`python -m vapt reproduce ITEM`: one paper item (or `all`) in one command: its sweeps, then its tables and figures.

The steps are the commands the paper catalog lists for the item (`vapt.paper.catalog.REPRODUCE`). Sweeps run
on the chosen executor (`local`, or `slurm` with the resource options below: one array task per run); the
tables, figures, benchmark (E), theory run (TH) and lens (lens) run in this process afterwards. Everything is
resumable: a rerun skips finished runs and continues interrupted ones. One progress line covers the item.

`--dry-run` lists every run the item would start now (later protocol stages are decided by earlier ones and are
counted, not listed), how many are already done, and with `--gpu-summary DIR/summary.csv` (written by
`python -m vapt gpu-check`) the projected GPU-hours of the runs still to do.

The override options (`--backbone`, `--epochs`, `--batch-size`, `--grid`, `--seeds`, `--device`, `--data`)
replace the catalog's values in every sweep: e.g. `--backbone vit_test --epochs 2 --grid 5:0.01 --seeds 42` is a
smoke-scale check of the whole path on CPU (its numbers say nothing about the paper).
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vapt.cli import DOCS_HELP, HelpFormatter
from vapt.config import prompted_methods
from vapt.errors import ConfigError
from vapt.paper.catalog import REPRODUCE, reproduce_commands

ITEMS: tuple[str, ...] = tuple(REPRODUCE)
PLACEHOLDER = re.compile(r"^<.*>$")


@dataclass
class Step:
    """One catalog command: a module and its argv (a sweep when module is `sweep`)."""

    module: str
    argv: list[str]
    text: str


def catalog_steps(item: str, data_root: str, runs: str) -> list[Step]:
    """The item's catalog commands as steps (`python -m vapt CMD ...` or `python -m PACKAGE.MODULE ...`)."""
    steps = []
    for text in reproduce_commands(item, data_root=data_root, runs=runs):
        command = text.split("  #", 1)[0].strip()
        words = shlex.split(re.sub(r"<[^>]*>", lambda m: shlex.quote(m.group(0)), command))  # placeholders: one word
        if words[:2] != ["python", "-m"]:
            raise ConfigError(f"catalog command of {item} is not `python -m ...`: {command}")
        module, rest = (words[3], words[4:]) if words[2] == "vapt" else (words[2], words[3:])
        steps.append(Step(module, rest, command))
    return steps


@dataclass
class SweepStep:
    """A parsed sweep of the item: its options, base config and the runs it needs."""

    args: argparse.Namespace
    base: Any

    def label(self) -> str:
        """`backbone method` of the sweep."""
        return f"{self.base.backbone} {self.base.method}"


def _override(argv: list[str], args: argparse.Namespace, weights: str | None) -> list[str]:
    argv = list(argv)
    if "--weights" in argv and PLACEHOLDER.match(argv[argv.index("--weights") + 1]):
        at = argv.index("--weights")
        if weights:
            argv[at + 1] = weights
        elif args.backbone:  # another backbone: the catalog's weights file is not its weights
            del argv[at:at + 2]
        else:
            raise ConfigError(f"this item needs the MoCo v3 weights ({argv[at + 1]}): pass --mocov3-weights PATH")
    for option in ("backbone", "epochs", "batch_size", "grid", "seeds", "device"):
        value = getattr(args, option)
        if value is not None:
            argv += [f"--{option.replace('_', '-')}", str(value)]
    if args.data:
        argv += ["--data", *args.data]
    return argv


def sweep_runs(step: SweepStep) -> tuple[list[Any], int]:
    """The runs of a sweep known now (a later stage is known once the one before it is done) and how many are not."""
    from vapt.data import parse_data
    from vapt.errors import VaptError
    from vapt.run.config import run_id
    from vapt.run.sweep import TaskPlan, expand_tasks, is_run_done, parse_grid, select_best

    args, known, unknown = step.args, [], 0

    def records(configs: list[Any]) -> list[Any] | None:
        from vapt.run.config import run_dir
        from vapt.run.record import RECORD_NAME, RunRecord

        if not all(_quiet(is_run_done, c) for c in configs):
            return None
        return [RunRecord.read(run_dir(c) / RECORD_NAME) for c in configs]

    for task in expand_tasks(args.data):
        plan = TaskPlan.for_task(step.base, task)
        # FGVC: the final run with the grid seed is the chosen grid run itself
        finals = len(args.seeds) - (args.grid_seed in args.seeds and plan.final_split == plan.grid_split)
        grid = parse_grid(args.grid, step.base.method, parse_data(task, step.base.num_classes).benchmark)
        if grid.anchor_lr is None:
            stage = [plan.grid_config(lr, wd, args.grid_seed) for lr in grid.lrs for wd in grid.wds]
            later = 0
        else:
            stage = [plan.grid_config(grid.anchor_lr, wd, args.grid_seed) for wd in grid.wds]
            later = len(grid.lrs) - (grid.anchor_lr in grid.lrs)
        known += stage
        try:
            done = records(stage)
            if done is not None and grid.anchor_lr is not None:
                best_wd = select_best(done, plan.select_split).config["wd"]
                lr_stage = [plan.grid_config(lr, best_wd, args.grid_seed) for lr in grid.lrs]
                ids = {run_id(c) for c in stage}
                known += [c for c in lr_stage if run_id(c) not in ids]
                later, done = 0, records(lr_stage)
            if done is None:
                unknown += later + finals
                continue
            best = select_best(done, plan.select_split).config
            known += [plan.final_config(best["lr"], best["wd"], seed) for seed in args.seeds]
        except VaptError:  # every grid run failed: the sweep will say so
            unknown += later + finals
    unique = {run_id(c): c for c in known}  # FGVC: a final run with the grid seed is the chosen grid run
    return list(unique.values()), unknown


def _quiet(fn: Any, *args: Any) -> Any:
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()):
        return fn(*args)


@dataclass
class ItemProgress:
    """The one progress line of an item: runs done of all its sweeps, running, failed, ETA."""

    item: str
    sweeps: list[SweepStep]
    current: int = 0
    started: float = field(default_factory=time.monotonic)
    done_at_start: int | None = None

    def __call__(self, configs: Sequence[Any] = (), elapsed_s: float = 0.0) -> str:
        from vapt.run.jobs import format_duration, sweep_progress

        known = [sweep_runs(s) for s in self.sweeps]
        total = sum(len(k) + u for k, u in known)
        done = sum(_quiet(_count_done, k) for k, _ in known)
        self.done_at_start = done if self.done_at_start is None else self.done_at_start
        stage = sweep_progress(configs, elapsed_s).split(", ETA")[0].replace("sweep: ", "") if configs else ""
        pace = (done - self.done_at_start) / max(time.monotonic() - self.started, 1e-9)
        eta = f"ETA {format_duration((total - done) / pace)}" if pace > 0 and done < total else (
            "ETA 0s" if done >= total else "ETA unknown")
        where = f"sweep {self.current + 1}/{len(self.sweeps)} ({self.sweeps[self.current].label()}"
        where += f": {stage})" if stage else ")"
        return f"{self.item}: {done}/{total} runs done, {where}, {eta}"


def _count_done(configs: Sequence[Any]) -> int:
    from vapt.run.sweep import is_run_done

    return sum(is_run_done(c) for c in configs)


def run_seconds(config: Any, rates: dict[str, tuple[float, float]]) -> float | None:
    """Projected seconds of one run from a method's (training, evaluation) images/s; None when not measured."""
    from vapt.data.check import FGVC_SIZES, VTAB_TEST_SIZES

    if config.method not in rates:
        return None
    benchmark, name = config.data.split("/", 1)
    if benchmark == "vtab1k":
        sizes = {"train800": 800, "val200": 200, "train800val200": 1000, "test": VTAB_TEST_SIZES.get(name, 0)}
    else:
        train, val, test = FGVC_SIZES.get(name, (0, 0, 0))
        sizes = {"train": train, "val": val, "test": test}
    resolved = config.resolved()
    train_images = sizes.get(resolved.train_split, 0) * resolved.fraction
    evals = -(-resolved.epochs // resolved.eval_every)
    eval_images = sum(sizes.get(s, 0) for s in resolved.eval_splits)
    train_rate, eval_rate = rates[config.method]
    return resolved.epochs * train_images / train_rate + evals * eval_images / eval_rate


def read_rates(summary: str) -> dict[str, tuple[float, float]]:
    """Method -> (training, evaluation) images/s of the bf16 bench rows of a gpu-check summary.csv."""
    import pandas as pd

    try:
        table = pd.read_csv(summary)
    except (OSError, ValueError) as err:
        raise ConfigError(f"--gpu-summary {summary} cannot be read as a gpu-check summary.csv ({err})") from None
    needed = {"section", "name", "precision", "recompute", "compile", "images_per_s", "note"}
    if not needed <= set(table.columns):
        raise ConfigError(f"--gpu-summary {summary} lacks the columns {', '.join(sorted(needed - set(table.columns)))}"
                          f" of `python -m vapt gpu-check`'s summary.csv")
    rates = {}
    for _, row in table.iterrows():
        if row["section"] == "bench" and row["precision"] == "bf16" and not row["recompute"] and not row["compile"]:
            match = re.search(r"eval ([0-9.e+]+) images/s", str(row["note"]))
            if match:
                rates[row["name"]] = (float(row["images_per_s"]), float(match.group(1)))
    if not rates:
        raise ConfigError(f"--gpu-summary {summary} has no bf16 bench rows with training and evaluation images/s")
    return rates


def dry_run(item: str, sweeps: list[SweepStep], others: list[Step], summary: str | None) -> None:
    """Print the item's runs (done / to do), the later-stage count and the GPU-hours projection."""
    rates = read_rates(summary) if summary else None
    total_known = total_done = total_unknown = 0
    seconds, unmeasured, measured_backbones = 0.0, 0, set()
    for step in sweeps:
        known, unknown = sweep_runs(step)
        done = [_quiet(_count_done, [c]) == 1 for c in known]
        from vapt.run.config import run_id

        for config, finished in zip(known, done, strict=True):
            print(f"{'done' if finished else 'todo'} {run_id(config)}")
            if rates is not None and not finished:
                cost = run_seconds(config, rates)
                seconds += cost or 0.0
                unmeasured += cost is None
                measured_backbones.add(config.backbone)
        total_known, total_done, total_unknown = (total_known + len(known), total_done + sum(done),
                                                  total_unknown + unknown)
    for step in others:
        print(f"then: {step.text}")
    print(f"{item}: {total_known + total_unknown} run(s) in {len(sweeps)} sweep(s): {total_done} already done, "
          f"{total_known - total_done} to start now, {total_unknown} decided by the grid stages")
    if rates is not None:
        later = f"; the {total_unknown} later run(s) are not included" if total_unknown else ""
        missing = f"; {unmeasured} run(s) of methods the summary lacks are left out" if unmeasured else ""
        print(f"projected GPU-hours of the {total_known - total_done} run(s) to start now: {seconds / 3600:.1f} "
              f"(bf16 speeds of the gpu-check summary {summary}, measured on its backbone, applied to "
              f"{', '.join(sorted(measured_backbones)) or 'no run'}{missing}{later})")


def run_other(step: Step, args: argparse.Namespace) -> None:
    """Run a table / figure / bench / theory / lens step in this process."""
    import importlib

    from vapt.__main__ import COMMANDS

    argv = list(step.argv)
    if step.module == "bench":
        argv += [f"--{k}={v}" for k, v in (("backbone", args.backbone), ("device", args.device)) if v]
    if step.module == "lens":
        run_lens(args)
        return
    prefix = ["vapt", step.module] if step.module in COMMANDS else [step.module]
    print(f"{args.item}: {shlex.join(['python', '-m', *prefix, *argv])}", flush=True)
    module = importlib.import_module(COMMANDS[step.module][0] if step.module in COMMANDS else step.module)
    status = int(module.main(argv) or 0)
    if status:
        raise ConfigError(f"`{step.text}` ended with exit status {status}")


def run_lens(args: argparse.Namespace) -> None:
    """The MoE lens on the final runs of each task found under the runs folder."""
    from vapt.report import lens_command

    found = lens_command.find_lens_runs(args.runs, prompted_methods(), backbone=args.backbone)
    if not found:
        raise ConfigError(f"no finished final runs of {', '.join(prompted_methods())} under {args.runs} for the lens")
    for data, run_dirs in found.items():
        argv = [a for d in run_dirs for a in ("--run", str(d))]
        argv += ["--data-root", args.data_root, "--out", str(Path(args.figures) / "lens" / data.split("/", 1)[-1])]
        argv += ["--device", args.device] if args.device else []
        print(f"{args.item}: python -m vapt lens {shlex.join(argv)}", flush=True)
        lens_command.main(argv)


def build_parser() -> argparse.ArgumentParser:
    """The `reproduce` command's options."""
    from vapt.run.jobs import add_executor_arguments

    parser = argparse.ArgumentParser(prog="python -m vapt reproduce", description=__doc__,
                                     formatter_class=HelpFormatter,
                                     epilog=f"{DOCS_HELP} Clusters and GPU machines: docs/cluster.md.")
    parser.add_argument("item", choices=(*ITEMS, "all"), help="the paper item (all: every item in turn)")
    parser.add_argument("--data-root", default="data", help="folder with vtab-1k/ and the FGVC datasets")
    parser.add_argument("--runs", default="runs", help="runs folder (the sweeps' --out)")
    parser.add_argument("--figures", default="figures", help="folder for the figures")
    parser.add_argument("--mocov3-weights", default=None, help="T2: the MoCo v3 ViT-B/16 checkpoint file")
    parser.add_argument("--dry-run", action="store_true", help="list the runs (done / to do) and stop")
    parser.add_argument("--gpu-summary", default=None, help="--dry-run: project GPU-hours from this gpu-check "
                        "summary.csv")
    over = parser.add_argument_group("overrides of every sweep's catalog values (e.g. a smoke-scale check)")
    over.add_argument("--backbone", default=None, help="backbone instead of the catalog's")
    over.add_argument("--epochs", type=int, default=None, help="epochs instead of the paper's 100")
    over.add_argument("--batch-size", type=int, default=None, help="batch size instead of the paper's 64")
    over.add_argument("--grid", default=None, help="paper, fast or LRS:WDS instead of the catalog's")
    over.add_argument("--seeds", default=None, help="final-run seeds instead of the paper's five")
    over.add_argument("--device", default=None, help="device of the runs (default: each command's)")
    over.add_argument("--data", nargs="+", default=None, help="datasets instead of the catalog's (e.g. a subset: "
                      "vtab1k/cifar fgvc/cub)")
    add_executor_arguments(parser)
    return parser


def plan_item(args: argparse.Namespace) -> tuple[list[SweepStep], list[Step]]:
    """An item's sweeps (catalog commands with the overrides, duplicates dropped) and its other steps."""
    from vapt.run.config import config_from_args
    from vapt.run.sweep import build_parser as sweep_parser
    from vapt.run.sweep import expand_tasks

    steps = catalog_steps(args.item, args.data_root, args.runs)
    sweeps, others, seen = [], [], set()
    for step in steps:
        if step.module != "sweep":
            if step.module == "figures":
                at = step.argv.index("--out") if "--out" in step.argv else len(step.argv)
                step.argv[at:at + 2] = ["--out", args.figures]
                step.text = shlex.join(["python", "-m", "vapt", step.module, *step.argv])
            if step.module == "lens":
                step.text = (f"python -m vapt lens on the final {', '.join(prompted_methods())} runs of each task "
                             f"under {args.runs}, into {Path(args.figures) / 'lens'}/<task>")
            others.append(step)
            continue
        parsed = sweep_parser().parse_args(_override(step.argv, args, args.mocov3_weights))
        key = repr(sorted(vars(parsed).items()))
        if key in seen:  # overrides can make catalog sweeps identical (e.g. one backbone for F-scale)
            continue
        seen.add(key)
        base = config_from_args(parsed, data=expand_tasks(parsed.data)[0], lr=1.0, wd=0.0)
        sweeps.append(SweepStep(parsed, base))
    return sweeps, others


def reproduce(args: argparse.Namespace, sweeps: list[SweepStep], others: list[Step]) -> None:
    """Run (or with --dry-run list) one item's sweeps, then its other steps."""
    from vapt.run.jobs import launcher_from_args
    from vapt.run.sweep import sweep

    if args.dry_run:
        dry_run(args.item, sweeps, others, args.gpu_summary)
        return
    progress = ItemProgress(args.item, sweeps)
    launcher = launcher_from_args(args, folder=str(Path(args.runs) / ".submitit"), progress=progress)
    for index, step in enumerate(sweeps):
        progress.current = index
        print(progress(), flush=True)
        sweep(step.base, step.args.data, grid=step.args.grid, seeds=step.args.seeds, grid_seed=step.args.grid_seed,
              launcher=launcher, restart_unreadable=step.args.restart_unreadable)
    for step in others:
        run_other(step, args)
    if sweeps:
        print(progress())
    print(f"{args.item}: done")


def main(argv: list[str] | None = None) -> int:
    """`python -m vapt reproduce ITEM`: an item's sweeps, then its tables and figures (resumable)."""
    args = build_parser().parse_args(argv)
    items = [argparse.Namespace(**{**vars(args), "item": item}) for item in (ITEMS if args.item == "all" else
                                                                            (args.item,))]
    plans = [plan_item(item) for item in items]  # every item's commands are checked before anything runs
    for item, (sweeps, others) in zip(items, plans, strict=True):
        reproduce(item, sweeps, others)
    return 0


if __name__ == "__main__":
    sys.exit(main())
