"""The paper's protocol (docs/protocol.md) as one idempotent command: grid on validation, final seeds, test.

VTAB-1K: every (lr, wd) of the grid trains on train800 and is scored on val200; the best last-epoch
val200 top-1 wins (ties -> the larger lr, then the larger wd, as the authors' loop); that setting is retrained on
train800val200 with seeds 42, 44, 82, 100, 800 and evaluated on test.

FGVC: the grid trains on train and is chosen on val, never on test. (The authors' FGVC script
chose the setting by test accuracy, which leaks the test set into model selection; we do not copy
that.) The final runs train on train with the five seeds; their test top-1 is reported.

Grids: `paper` = lr {50, 25, 10, 5, 2.5, 1, 0.5, 0.25, 0.1, 0.05} (FGVC omits 0.05; full fine-tuning
uses {0.001, 0.005, 0.0001, 0.0005}) x wd {0.01, 0.001, 0.0001, 0}; `fast` = wd tuned at lr 5
(0.001 for `full`), then lr tuned at the best wd; `LRS:WDS` = explicit lists, e.g. `5,1:0.01,0`.

Idempotent: a run whose result.json is finished (or failed with a non-finite loss) is read back,
never recomputed, and always part of the selection; interrupted runs resume from their checkpoint.
Runs execute through submitit: `local` (one process per GPU, or --workers on CPU), `slurm` (one
array task per run) or `debug` (in this process). Each task's choice and final runs are written
atomically to `selection_<grid>.json` beside its runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from vapt.cli import DOCS_HELP, HelpFormatter
from vapt.config import METHODS
from vapt.data import FGVC_DATASETS, VTAB_TASKS, parse_data
from vapt.errors import ConfigError, VaptError
from vapt.io import check_writable_dir, write_json_atomic
from vapt.run import stopping
from vapt.run.config import TrainConfig, add_run_arguments, check_startable, config_from_args, run_dir, run_id
from vapt.run.jobs import (  # noqa: F401 - re-exported: the sweep's launching API
    EXECUTORS,
    Launcher,
    RunJob,
    add_executor_arguments,
    exit_when_gone,
    format_duration,
    launcher_from_args,
    run_configs,
    sweep_progress,
    wait_for_live,
    wait_with_progress,
)
from vapt.run.lock import is_live
from vapt.run.record import LEGACY_RUN_FIELDS, RECORD_NAME, RecordError, RunRecord
from vapt.run.selection import PROTOCOL_SPLITS, select_setting
from vapt.run.train import RESTART_FLAG, set_aside_unreadable

PAPER_SEEDS: tuple[int, ...] = (42, 44, 82, 100, 800)
PROMPT_LRS: tuple[float, ...] = (50, 25, 10, 5, 2.5, 1, 0.5, 0.25, 0.1, 0.05)
FULL_LRS: tuple[float, ...] = (0.001, 0.005, 0.0001, 0.0005)
WDS: tuple[float, ...] = (0.01, 0.001, 0.0001, 0.0)
FGVC_NOTE = "chosen on val, not test (the authors' FGVC script chose on test accuracy; not copied)"


class SweepError(VaptError):
    """A sweep stage that cannot complete (runs that did not finish, or a grid where every run failed)."""


@dataclass(frozen=True)
class Grid:
    """The learning rates and weight decays searched; `fast` searches wd first, then lr."""

    name: str
    lrs: tuple[float, ...]
    wds: tuple[float, ...]
    anchor_lr: float | None = None

    @property
    def tag(self) -> str:
        """A file-name-safe label of the grid."""
        if self.name != "custom":
            return self.name
        return "-".join(",".join(format(v, "g") for v in values) for values in (self.lrs, self.wds))


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"grid {what} {text!r} must be comma-separated numbers") from None
    if not values:
        raise ConfigError(f"grid {what} {text!r} is empty")
    return values


def parse_grid(text: str, method: str, benchmark: str) -> Grid:
    """`paper`, `fast` or `LRS:WDS` (comma-separated) for a method on a benchmark."""
    trains_backbone = METHODS[method].trains_backbone if method in METHODS else False
    if trains_backbone:
        lrs = FULL_LRS
    else:
        lrs = PROMPT_LRS if benchmark == "vtab1k" else tuple(lr for lr in PROMPT_LRS if lr != 0.05)
    if text == "paper":
        return Grid("paper", lrs, WDS)
    if text == "fast":
        return Grid("fast", lrs, WDS, anchor_lr=FULL_LRS[0] if trains_backbone else 5.0)
    lr_text, sep, wd_text = text.partition(":")
    if not sep:
        raise ConfigError(f"grid {text!r} must be paper, fast or LRS:WDS (e.g. 5,1:0.01,0)")
    grid = Grid("custom", _floats(lr_text, "learning rates"), _floats(wd_text, "weight decays"))
    if any(v <= 0 for v in grid.lrs) or any(v < 0 for v in grid.wds):
        raise ConfigError(f"grid {text!r}: learning rates must be > 0 and weight decays >= 0")
    return grid


def expand_tasks(names: Sequence[str]) -> list[str]:
    """Dataset names, with `vtab1k` and `fgvc` standing for all 19 / 5 datasets."""
    tasks: list[str] = []
    for name in names:
        if name == "vtab1k":
            tasks += [f"vtab1k/{t}" for t in VTAB_TASKS]
        elif name == "fgvc":
            tasks += [f"fgvc/{t}" for t in FGVC_DATASETS]
        else:
            tasks.append(name)
    return list(dict.fromkeys(tasks))


def is_run_done(config: TrainConfig) -> bool:
    """Whether a run's record says it needs no more work and was made with the config's resize, precision, decoder.

    An unreadable record is reported and redone.
    """
    try:
        record = RunRecord.read_if_present(run_dir(config) / RECORD_NAME)
    except RecordError as err:
        print(f"warning: {err}; the run will be trained again", file=sys.stderr)
        return False
    return record is not None and record.is_done_for(config)


def unreadable_records(configs: Sequence[TrainConfig]) -> list[RecordError]:
    """The errors of every run whose result.json exists but cannot be read as a run record."""
    errors = []
    for config in configs:
        try:
            RunRecord.read_if_present(run_dir(config) / RECORD_NAME)
        except RecordError as err:
            errors.append(err)
    return errors


def run_stage(configs: Sequence[TrainConfig], launcher: Launcher,
              restart_unreadable: bool = False) -> dict[str, RunRecord]:
    """Run the configs that are not done yet, then read every record back from its result.json.

    An unreadable result.json stops the stage before anything runs (SweepError naming the files), unless
    `restart_unreadable` sets such files (and unreadable checkpoints) aside so those runs start afresh.
    """
    unique = {run_id(c): c for c in configs}
    if restart_unreadable:
        for config in unique.values():
            set_aside_unreadable(run_dir(config))
    bad = unreadable_records(list(unique.values()))
    if bad:
        raise SweepError(f"{len(bad)} result record(s) cannot be read: {'; '.join(str(e) for e in bad[:3])}; "
                         f"they are kept in place; pass {RESTART_FLAG} to set them aside and train those runs "
                         f"afresh")
    todo = [c for c in unique.values() if not is_run_done(c)]
    live = [c for c in todo if is_live(run_dir(c))]
    todo = [c for c in todo if not any(c is other for other in live)]
    elsewhere = f"; {len(live)} being trained by another process" if live else ""
    print(f"{len(unique) - len(todo) - len(live)} of {len(unique)} run(s) already done{elsewhere}; "
          f"running {len(todo)}")
    if todo:
        for config in {(c.data, c.data_root): c for c in todo}.values():  # before any job is launched
            check_startable(config, data=True)
        launcher.run(todo)
    wait_for_live(live)
    records, unfinished = {}, []
    for key, config in unique.items():
        try:
            record = RunRecord.read_if_present(run_dir(config) / RECORD_NAME)
        except RecordError as err:
            unfinished.append(f"{key} ({err})")
            continue
        if record is not None and record.is_done_for(config):
            records[key] = record
        else:
            reason = (record.error or record.status) if record else "no result"
            if record is not None and not record.made_with(config):
                made = ", ".join(f"{k} {record.config.get(k)}" for k in LEGACY_RUN_FIELDS)
                reason = f"its result.json was made with {made}; move it away"
            unfinished.append(f"{key} ({reason})")
    if unfinished:
        raise SweepError(
            f"{len(unfinished)} run(s) did not finish: {'; '.join(unfinished[:5])}; "
            f"run the same command again to resume them (logs in {launcher.folder})"
        )
    return records


def select_best(records: Sequence[RunRecord], split: str) -> RunRecord:
    """The finished record with the best last-epoch `split` top-1 (`select_setting`: ties -> larger lr, wd)."""
    finished = [r for r in records if r.finished and split in r.final]
    if not finished:
        raise SweepError(f"no grid run finished with a {split} score ({len(records)} run(s), all failed)")
    scores = pd.DataFrame([{"lr": r.config["lr"], "wd": r.config["wd"], "value": r.final[split]} for r in finished])
    best = select_setting(scores, ["lr", "wd"])
    return next(r for r in finished if (r.config["lr"], r.config["wd"]) == (best["lr"], best["wd"]))


@dataclass(frozen=True)
class TaskPlan:
    """The protocol's splits for one dataset."""

    base: TrainConfig
    grid_split: str
    final_split: str
    select_split: str
    report_split: str

    @classmethod
    def for_task(cls, base: TrainConfig, task: str) -> TaskPlan:
        """VTAB: train800 -> val200, then train800val200 -> test; FGVC: train -> val/test."""
        spec = parse_data(task, base.num_classes)
        config = dataclasses.replace(base, data=task, train_split=None, eval_splits=None)
        splits = PROTOCOL_SPLITS[spec.benchmark]
        return cls(config, splits.grid, splits.final, splits.select, splits.report)

    def grid_config(self, lr: float, wd: float, seed: int) -> TrainConfig:
        """One grid point on the training split, scored on validation."""
        return dataclasses.replace(self.base, lr=lr, wd=wd, seed=seed, train_split=self.grid_split)

    def final_config(self, lr: float, wd: float, seed: int) -> TrainConfig:
        """One final run of the chosen setting."""
        return dataclasses.replace(self.base, lr=lr, wd=wd, seed=seed, train_split=self.final_split)


def selection_path(plan: TaskPlan, grid: Grid, seed: int) -> Path:
    """`<out>/<task>/<backbone>/<method>/selection_<grid>[<variant>].json` beside the task's runs."""
    parts = run_id(plan.grid_config(1.0, 0.0, seed)).split("/")
    splits, leaf = parts[3], parts[4]
    variant = "".join(f"_{p}" for p in leaf.split("_")[3:])
    if "_frac" in splits:
        variant = "_frac" + splits.split("_frac", 1)[1] + variant
    return Path(plan.base.out).joinpath(*parts[:3]) / f"selection_{grid.tag}{variant}.json"


def sweep(
    base: TrainConfig,
    tasks: Sequence[str],
    grid: str = "paper",
    seeds: Sequence[int] = PAPER_SEEDS,
    grid_seed: int = 42,
    launcher: Launcher | None = None,
    dry_run: bool = False,
    restart_unreadable: bool = False,
) -> list[dict[str, Any]]:
    """Run the protocol for every task; returns (and writes) one selection record per task.

    `dry_run` only lists the first stage's runs (done or to do) and returns an empty list. Method, options,
    backbone, weights file, grid and seeds are checked before anything is listed, written or launched; the
    dataset folders of the runs still to train are checked before they are launched.
    """
    if not seeds:
        raise ConfigError("at least one seed is needed for the final runs")
    plans = {task: TaskPlan.for_task(base, task) for task in expand_tasks(tasks)}
    grids = {t: parse_grid(grid, base.method, parse_data(t, base.num_classes).benchmark) for t in plans}
    for plan in plans.values():
        check_startable(plan.grid_config(1.0, 0.0, grid_seed))
    if not dry_run:
        check_writable_dir(base.out, "--out folder")
    launcher = launcher or Launcher(folder=str(Path(base.out) / ".submitit"))

    def points(task: str, stage: str, best_wd: float | None = None) -> list[tuple[float, float]]:
        g = grids[task]
        if g.anchor_lr is None:
            return [(lr, wd) for lr in g.lrs for wd in g.wds]
        return [(g.anchor_lr, wd) for wd in g.wds] if stage == "wd" else [(lr, best_wd) for lr in g.lrs]

    def grid_stage(stage: str, best_wds: dict[str, float] | None = None) -> dict[str, list[dict[str, Any]]]:
        configs = {t: [p.grid_config(lr, wd, grid_seed) for lr, wd in points(t, stage, (best_wds or {}).get(t))]
                   for t, p in plans.items()}
        records = run_stage([c for cs in configs.values() for c in cs], launcher, restart_unreadable)
        return {t: [records[run_id(c)] for c in cs] for t, cs in configs.items()}

    fast = any(g.anchor_lr is not None for g in grids.values())
    if dry_run:
        stage = "wd" if fast else "all"
        first = [p.grid_config(lr, wd, grid_seed) for t, p in plans.items() for lr, wd in points(t, stage)]
        done = [is_run_done(c) for c in first]
        for config, finished in zip(first, done, strict=True):
            print(f"{'done' if finished else 'todo'} {run_id(config)}")
        then = "the lr stage at the best wd, then " if fast else ""
        print(f"{len(plans)} task(s): {len(first)} grid run(s), {sum(done)} already done; "
              f"then {then}{len(seeds)} final run(s) per task")
        return []
    grid_records = grid_stage("wd" if fast else "all")
    if fast:
        best_wds = {t: select_best(rs, plans[t].select_split).config["wd"] for t, rs in grid_records.items()}
        grid_records = grid_stage("lr", best_wds)
    chosen = {t: select_best(rs, plans[t].select_split) for t, rs in grid_records.items()}
    finals = {t: [plans[t].final_config(r.config["lr"], r.config["wd"], s) for s in seeds]
              for t, r in chosen.items()}
    final_records = run_stage([c for cs in finals.values() for c in cs], launcher, restart_unreadable)

    selections = []
    for task, plan in plans.items():
        best, sel, rep = chosen[task], plan.select_split, plan.report_split
        runs = [final_records[run_id(c)] for c in finals[task]]
        scores = [s for s in (r.score(rep) for r in runs) if s is not None]
        selection = {
            "task": task, "backbone": base.backbone, "method": base.method, "grid": grids[task].tag,
            "grid_lrs": list(grids[task].lrs), "grid_wds": list(grids[task].wds), "grid_seed": grid_seed,
            "selection_split": sel, "report_split": rep,
            "grid_runs": [{"run_id": r.run_id, "lr": r.config["lr"], "wd": r.config["wd"],
                           "status": r.status, f"{sel}_top1": r.score(sel)} for r in grid_records[task]],
            "chosen": {"lr": best.config["lr"], "wd": best.config["wd"], "run_id": best.run_id,
                       f"{sel}_top1": best.score(sel)},
            "final_runs": [{"run_id": r.run_id, "seed": r.config["seed"], "status": r.status,
                            f"{rep}_top1": r.score(rep)} for r in runs],
            f"{rep}_top1_mean": statistics.fmean(scores) if scores else None,
            "std": "population (ddof 0), as the authors report",
            f"{rep}_top1_std": statistics.pstdev(scores) if scores else None,
        }
        if plan.base.data.startswith("fgvc/"):
            selection["note"] = FGVC_NOTE
        write_json_atomic(selection_path(plan, grids[task], grid_seed), selection)
        mean, std = selection[f"{rep}_top1_mean"], selection[f"{rep}_top1_std"]
        summary = f"{mean:.2f} ± {std:.2f} over {len(scores)} seed(s)" if scores else "no finished final run"
        print(f"{task}: chose lr {format(best.config['lr'], 'g')} wd {format(best.config['wd'], 'g')} "
              f"({sel} {best.score(sel):.2f}); {rep} top-1 {summary}")
        selections.append(selection)
    return selections


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The `sweep` command's options (also read by `reproduce` from the paper catalog's commands)."""
    parser = argparse.ArgumentParser(prog="python -m vapt sweep", epilog=DOCS_HELP, description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--data", nargs="+", required=True,
                        help="vtab1k/<task> or fgvc/<dataset> (several allowed; vtab1k / fgvc = all of them)")
    add_run_arguments(parser)
    parser.add_argument("--grid", default="paper", help="paper (default), fast, or LRS:WDS such as 5,1:0.01,0")
    parser.add_argument("--seeds", type=_seeds, default=PAPER_SEEDS, help="final-run seeds (42,44,82,100,800)")
    parser.add_argument("--grid-seed", type=int, default=42, help="seed of the grid runs (default 42)")
    add_executor_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", help="list the grid runs (done / to do) and stop")
    parser.add_argument(RESTART_FLAG, dest="restart_unreadable", action="store_true",
                        help="set unreadable result.json / checkpoint.pt files aside (renamed to *.unreadable) and "
                             "train those runs afresh")
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python -m vapt sweep ...`: the protocol for one backbone and method over one or more datasets."""
    args = build_parser().parse_args(argv)
    base = config_from_args(args, data=expand_tasks(args.data)[0], lr=1.0, wd=0.0)
    launcher = launcher_from_args(args, folder=str(Path(args.out) / ".submitit"))
    with stopping.saving(f"every finished run's result.json and every started run's last epoch checkpoint are "
                         f"kept under {args.out}"):
        sweep(base, args.data, grid=args.grid, seeds=args.seeds, grid_seed=args.grid_seed, launcher=launcher,
              dry_run=args.dry_run, restart_unreadable=args.restart_unreadable)
    return 0


if __name__ == "__main__":
    sys.exit(main())
