"""Launching and watching the runs of a sweep: the submitit job, executors, local job lifetime, progress."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable

from vapt.errors import ConfigError, VaptError
from vapt.run.config import TrainConfig, run_dir, run_id
from vapt.run.lock import is_live
from vapt.run.record import FAILED, RECORD_NAME, RecordError, RunRecord
from vapt.run.slurm import DEFAULT_TIMEOUT_MIN, SlurmOptions, SlurmWatch, add_slurm_arguments, options_from_args
from vapt.run.slurm import submit as slurm_submit
from vapt.run.train import train

EXECUTORS: tuple[str, ...] = ("local", "slurm", "debug")


def run_configs(configs: Sequence[TrainConfig]) -> list[str]:
    """Train each config in turn (the job function submitted to submitit); one line per run."""
    lines = []
    for config in configs:
        try:
            lines.append(f"{run_id(config)}: {train(config).status}")
        except VaptError as err:  # bad input (an unreadable checkpoint, a corrupt image): one line, no traceback
            print(f"error: {err}", file=sys.stderr)
            lines.append(f"{run_id(config)}: error ({err})")
        except Exception as err:  # one broken run must not stop the others in this job
            traceback.print_exc()
            lines.append(f"{run_id(config)}: error ({type(err).__name__}: {err})")
    return lines


def exit_when_gone(pid: int, poll_s: float = 1.0) -> None:
    """End this process when process `pid` (the sweep that started this job) has ended.

    A killed sweep thus stops its local jobs within `poll_s` seconds; their last checkpoint stays (writes are
    atomic) and a rerun resumes them.
    """
    import threading

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if process_ended(pid):
                print(f"the sweep (process {pid}) that started this job has ended; stopping", file=sys.stderr,
                      flush=True)
                os._exit(143)

    threading.Thread(target=watch, name="exit-when-sweep-ends", daemon=True).start()


def process_ended(pid: int) -> bool:
    """Whether process `pid` has ended: gone, or a zombie its parent has not collected yet (Linux /proc)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("Z", "X")


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """Where runs execute: --executor and its options (local processes, or Slurm resources)."""
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="local: one process per GPU (or --workers on CPU); slurm: one array task per run "
                             "(see docs/cluster.md); debug: in this process")
    parser.add_argument("--workers", type=int, default=1, help="local executor without GPUs: parallel processes")
    parser.add_argument("--gpus", type=int, default=None, help="local executor: GPUs to use (default: all visible)")
    parser.add_argument("--timeout-min", type=int, default=DEFAULT_TIMEOUT_MIN,
                        help="per-job time limit in minutes (default: %(default)s); Slurm: sbatch --time, a run "
                             "that reaches it is requeued and resumes")
    add_slurm_arguments(parser)


def launcher_from_args(args: argparse.Namespace, folder: str,
                       progress: Callable[[Sequence[TrainConfig], float], str] | None = None) -> Launcher:
    """The Launcher of parsed `add_executor_arguments` options, with submitit's files in `folder`."""
    return Launcher(executor=args.executor, folder=folder, workers=args.workers, gpus=args.gpus,
                    timeout_min=args.timeout_min, slurm=options_from_args(args), progress=progress)


class RunJob(Checkpointable):
    """The submitted job: trains its configs in turn; after a timeout or preemption it is requeued and resumes.

    `sweep_pid` (local executor) makes the job end when the sweep that started it ends.
    """

    def __init__(self, sweep_pid: int | None = None) -> None:
        self.sweep_pid = sweep_pid

    def __call__(self, configs: Sequence[TrainConfig]) -> list[str]:
        if self.sweep_pid is not None:
            exit_when_gone(self.sweep_pid)
        return run_configs(configs)


def _visible_gpus() -> list[int]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [int(v) for v in visible.split(",") if v.strip().isdigit()]
    import torch

    return list(range(torch.cuda.device_count()))


@dataclass
class Launcher:
    """Executes a batch of runs through a submitit executor and waits for them."""

    executor: str = "local"
    folder: str = "runs/.submitit"
    workers: int = 1
    gpus: int | None = None
    timeout_min: int = DEFAULT_TIMEOUT_MIN
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    # the progress line, from the stage's configs and the seconds since it started (e.g. one line for a paper item)
    progress: Callable[[Sequence[TrainConfig], float], str] | None = None
    watch: SlurmWatch = field(default_factory=SlurmWatch)

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ConfigError(f"executor {self.executor!r} is not one of {', '.join(EXECUTORS)}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.timeout_min < 1:
            raise ConfigError(f"--timeout-min must be >= 1, got {self.timeout_min}")

    def run(self, configs: Sequence[TrainConfig]) -> None:
        """Run `configs` and wait; failures are reported here and detected from the records afterwards."""
        import submitit

        if self.executor == "debug":
            executor = submitit.DebugExecutor(folder=self.folder)
            jobs = [executor.submit(RunJob(), [config]) for config in configs]
        elif self.executor == "slurm":
            jobs = slurm_submit(RunJob(), [[config] for config in configs], self.folder, self.slurm, self.timeout_min)
        else:
            gpus = _visible_gpus() if self.gpus is None else list(range(self.gpus))
            slots = len(gpus) or self.workers
            executor = submitit.LocalExecutor(folder=self.folder)
            jobs = []
            for slot in range(min(slots, len(configs))):
                gpu = dict(gpus_per_node=1, visible_gpus=[gpus[slot]]) if gpus else dict(gpus_per_node=0)
                executor.update_parameters(timeout_min=self.timeout_min, **gpu)
                jobs.append(executor.submit(RunJob(sweep_pid=os.getpid()), list(configs[slot::slots])))
        array = ""
        if self.executor == "slurm" and jobs:  # submitit submits a single run as a plain job, several as an array
            array = f" (Slurm {'array' if '_' in jobs[0].job_id else 'job'} {jobs[0].job_id.split('_')[0]})"
        print(f"submitted {len(configs)} run(s) as {len(jobs)} {self.executor} job(s){array}; logs in {self.folder}",
              flush=True)
        started = time.monotonic()
        progress = self.progress or sweep_progress
        if self.executor == "slurm":  # the queue says when a task has ended; submitit's sacct polls are not used
            jobs = self.watch.wait(jobs, lambda: progress(configs, time.monotonic() - started))
        elif self.executor != "debug":  # debug jobs run inside result(), one after another
            wait_with_progress(jobs, configs, progress=progress)
        for job in jobs:
            try:
                for line in job.result():
                    print(line)
            except Exception as err:
                print(f"job {job.job_id} failed: {err}", file=sys.stderr)


def sweep_progress(configs: Sequence[TrainConfig], elapsed_s: float) -> str:
    """One progress line: runs done / total, running (locked by a process), failed, and the ETA at this pace."""
    done = failed = running = 0
    for config in configs:
        directory = run_dir(config)
        try:
            record = RunRecord.read_if_present(directory / RECORD_NAME)
        except RecordError:
            record = None
        if record is not None and record.is_done_for(config):
            done += 1
        elif is_live(directory):
            running += 1
        elif record is not None and record.status == FAILED:
            failed += 1
    left = len(configs) - done - failed
    if done and left:
        eta = f"ETA {format_duration(elapsed_s / done * left)}"
    else:
        eta = "ETA unknown" if left else "ETA 0s"
    return f"sweep: {done}/{len(configs)} runs done, {running} running, {failed} failed, {eta}"


def format_duration(seconds: float) -> str:
    """`1h02m`, `3m05s` or `42s`."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


def wait_with_progress(jobs: Sequence[Any], configs: Sequence[TrainConfig], poll_s: float = 10.0,
                       every_s: float = 60.0,
                       progress: Callable[[Sequence[TrainConfig], float], str] | None = None) -> None:
    """Wait for submitit `jobs`, printing a progress line when the counts change (and at least every `every_s`)."""
    started = last_time = time.monotonic()
    last = ""
    while not all(job.done() for job in jobs):
        line = (progress or sweep_progress)(configs, time.monotonic() - started)
        counts = line.rsplit(", ETA", 1)[0]
        if counts != last or time.monotonic() - last_time >= every_s:
            print(line, flush=True)
            last, last_time = counts, time.monotonic()
        time.sleep(poll_s)


def wait_for_live(configs: Sequence[TrainConfig], poll_s: float = 2.0) -> None:
    """Wait until no other process holds the lock of any of `configs` (their records are read afterwards)."""
    waiting = list(configs)
    announced = -1
    while waiting:
        waiting = [c for c in waiting if is_live(run_dir(c))]
        if waiting and len(waiting) != announced:
            print(f"waiting for {len(waiting)} run(s) being trained by another process, e.g. {run_id(waiting[0])}",
                  flush=True)
            announced = len(waiting)
        if waiting:
            time.sleep(poll_s)
