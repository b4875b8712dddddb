"""Runs as Slurm array tasks: the resource options, submission through submitit, and a watch that never hangs.

Every run of a stage is one task of one `sbatch` array (`--max-parallel` at a time). The sweep then reads the
queue with `squeue` (no accounting needed) until every task has left it:

- a task pending for a reason that cannot change by waiting (the request does not fit the partition, an invalid
  account or QOS, a time limit above the partition's; `ReqNodeNotAvail` for longer than `held_limit_s`) stops
  the sweep with one error naming the reason and the option to change; its pending tasks are cancelled;
- a task that left the queue without a result (cancelled, failed, killed) counts as not finished at once; a task
  the controller no longer lists at all gets `vanish_grace_s` for its result to appear; the stage then ends
  with the usual "run the same command again to resume them";
- a refused `sbatch` (controller down, unknown partition or account, invalid GRES) becomes one error quoting
  sbatch's own message.

Runs record the executor and, in a Slurm job, the job id and array index (`job_fields`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vapt.errors import ConfigError, VaptError

DEFAULT_GPUS_PER_NODE = 1
DEFAULT_CPUS_PER_TASK = 8
DEFAULT_TIMEOUT_MIN = 3 * 24 * 60
# squeue pending reasons that waiting cannot change -> the options that can
STUCK_REASONS: dict[str, str] = {
    "PartitionConfig": "--cpus-per-task, --mem, --gpus-per-node or --partition (the partition cannot fit the "
                       "request)",
    "PartitionNodeLimit": "--partition (the request exceeds the partition's node limits)",
    "PartitionTimeLimit": "--timeout-min (it is above the partition's time limit) or --partition",
    "PartitionDown": "--partition (the partition is down)",
    "PartitionInactive": "--partition (the partition is inactive)",
    "BadConstraints": "--cpus-per-task, --mem or --gpus-per-node (no node can satisfy the request)",
    "InvalidAccount": "--account",
    "InvalidQOS": "--qos",
    "QOSMaxWallDurationPerJobLimit": "--timeout-min or --qos",
    "AssocMaxWallDurationPerJobLimit": "--timeout-min or --account",
    "QOSMaxCpuPerJobLimit": "--cpus-per-task or --qos",
    "QOSMaxGRESPerJob": "--gpus-per-node or --qos",
    "QOSMaxMemoryPerJob": "--mem or --qos",
    "QOSMaxNodePerJobLimit": "--qos",
    "AssocMaxCpuPerJobLimit": "--cpus-per-task or --account",
    "AssocMaxGRESPerJob": "--gpus-per-node or --account",
    "AssocMaxMemPerJob": "--mem or --account",
    "DependencyNeverSatisfied": "the job's dependency (--slurm-param)",
    "JobHeldAdmin": "nothing here: an administrator holds the job (ask them, or `scontrol release`)",
}
# pending reasons that may clear, but not while the sweep waits for long
HELD_REASONS: dict[str, str] = {
    "ReqNodeNotAvail": "--partition or a --slurm-param nodelist/exclude (the requested nodes are not available)",
    "Nodes_required_for_job_are_DOWN,_DRAINED_or_reserved_for_jobs_in_higher_priority_partitions":
        "--partition (the nodes it needs are down, drained or reserved)",
}
FINAL_STATES = ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "PREEMPTED", "SPECIAL_EXIT")


class SlurmError(VaptError):
    """Slurm refused or cannot run the sweep's jobs (sbatch error, a reason that waiting cannot change)."""


@dataclass
class SlurmOptions:
    """What each array task asks Slurm for; None leaves the choice to the cluster's defaults."""

    gpus_per_node: int = DEFAULT_GPUS_PER_NODE
    cpus_per_task: int = DEFAULT_CPUS_PER_TASK
    mem: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    max_parallel: int = 64
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.gpus_per_node < 0:
            raise ConfigError(f"--gpus-per-node must be >= 0 (0 asks for no GPU), got {self.gpus_per_node}")
        if self.cpus_per_task < 1:
            raise ConfigError(f"--cpus-per-task must be >= 1, got {self.cpus_per_task}")
        if self.max_parallel < 1:
            raise ConfigError(f"--max-parallel must be >= 1, got {self.max_parallel}")

    def parameters(self, timeout_min: int) -> dict[str, Any]:
        """submitit's SlurmExecutor parameters (no GRES request when gpus_per_node is 0)."""
        params: dict[str, Any] = dict(job_name="vapt", time=timeout_min, nodes=1, ntasks_per_node=1,
                                      cpus_per_task=self.cpus_per_task, array_parallelism=self.max_parallel)
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        for key in ("mem", "partition", "account", "qos"):
            if getattr(self, key):
                params[key] = getattr(self, key)
        if self.extra:
            params["additional_parameters"] = dict(self.extra)
        return params


def _slurm_param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--slurm-param takes KEY=VALUE (an sbatch option without its dashes, "
                                         f"e.g. constraint=a100), got {text!r}")
    return key.strip().lstrip("-").replace("-", "_"), value


def add_slurm_arguments(parser: argparse.ArgumentParser) -> None:
    """The `--executor slurm` resource options, shared by `sweep` and `reproduce`."""
    group = parser.add_argument_group("Slurm (--executor slurm; one array task per run)")
    group.add_argument("--gpus-per-node", type=int, default=DEFAULT_GPUS_PER_NODE,
                       help="GPUs per run (0: no GPU/GRES request, for CPU-only nodes)")
    group.add_argument("--cpus-per-task", type=int, default=DEFAULT_CPUS_PER_TASK, help="CPUs per run")
    group.add_argument("--mem", default=None, help="memory per run, as sbatch's --mem (e.g. 32G; default: the "
                       "cluster's)")
    group.add_argument("--partition", "--slurm-partition", dest="partition", default=None,
                       help="partition (default: the cluster's default)")
    group.add_argument("--account", "--slurm-account", dest="account", default=None, help="account to charge")
    group.add_argument("--qos", default=None, help="quality of service")
    group.add_argument("--max-parallel", type=int, default=64, help="array tasks running at once")
    group.add_argument("--slurm-param", dest="slurm_params", type=_slurm_param, action="append", default=[],
                       metavar="KEY=VALUE", help="any other sbatch option, repeatable (e.g. constraint=a100, "
                       "exclude=node7, mail_user=me@example.org)")


def options_from_args(args: argparse.Namespace) -> SlurmOptions:
    """SlurmOptions from parsed `add_slurm_arguments` options."""
    return SlurmOptions(gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task, mem=args.mem,
                        partition=args.partition, account=args.account, qos=args.qos, max_parallel=args.max_parallel,
                        extra=dict(args.slurm_params))


def job_fields() -> dict[str, Any]:
    """The executor this process runs under and, in a Slurm job, its job id and array index (for result.json)."""
    env = os.environ
    fields: dict[str, Any] = {}
    if env.get("SUBMITIT_EXECUTOR"):
        fields["executor"] = env["SUBMITIT_EXECUTOR"]
    if env.get("SLURM_JOB_ID"):
        array = env.get("SLURM_ARRAY_JOB_ID")
        index = env.get("SLURM_ARRAY_TASK_ID")
        fields["slurm_job_id"] = f"{array}_{index}" if array and index else env["SLURM_JOB_ID"]
        if index and index.isdigit():
            fields["slurm_array_index"] = int(index)
    return fields


def sbatch_message(text: str) -> str:
    """sbatch's own words in its output: its `sbatch: error:` lines, else its `sbatch:` lines, else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    said = [line for line in lines if line.startswith("sbatch:")]
    errors = [line for line in said if "error" in line.lower()]
    return " / ".join(dict.fromkeys(errors or said or lines[-1:]))


def submit(fn: Callable[..., Any], args: Sequence[Any], folder: str, options: SlurmOptions,
           timeout_min: int = DEFAULT_TIMEOUT_MIN) -> list[Any]:
    """Submit `fn(arg)` for each of `args` as one array; SlurmError quoting sbatch when it refuses."""
    if shutil.which("sbatch") is None:
        raise SlurmError("--executor slurm needs Slurm's sbatch, which is not on PATH here (run where the cluster's "
                         "commands are, or try scripts/slurm-cluster start on one machine; see docs/cluster.md)")
    import submitit

    executor = submitit.SlurmExecutor(folder=folder)
    executor.update_parameters(**options.parameters(timeout_min))
    echoed = io.StringIO()  # submitit echoes a refused sbatch's stderr; it is quoted in the one error line instead
    try:
        with contextlib.redirect_stderr(echoed):
            return executor.map_array(fn, list(args))
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError,
            subprocess.SubprocessError, OSError) as err:
        message = sbatch_message(f"{err}\n{echoed.getvalue()}") or type(err).__name__
        raise SlurmError(f"Slurm refused the jobs: {message}") from None


def queue_states(array_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """`{task id: (state, reason)}` of the given arrays' tasks the controller still lists (squeue, all states)."""
    if not array_ids:
        return {}
    result = subprocess.run(
        ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%r", "--jobs", ",".join(array_ids)],
        capture_output=True, text=True, timeout=60,
    )
    if result.returncode != 0:
        message = " / ".join(line.strip() for line in result.stderr.splitlines() if line.strip())
        if "Invalid job id" in message:  # every listed job has left the controller's memory
            return {}
        raise SlurmError(f"squeue failed: {message or f'exit status {result.returncode}'}")
    states = {}
    for line in result.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            states[parts[0]] = (parts[1], parts[2])
    return states


def cancel(job_ids: Sequence[str]) -> None:
    """scancel the given jobs (quietly; they may have ended meanwhile)."""
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, text=True, timeout=60)


@dataclass
class SlurmWatch:
    """Waits for submitted array tasks by reading the queue; stops on reasons waiting cannot change."""

    poll_s: float = 2.0  # the first interval; it grows by half while nothing changes, up to max_poll_s
    max_poll_s: float = 30.0
    vanish_grace_s: float = 60.0  # a task the controller no longer lists: time for its result to appear
    result_lag_s: float = 10.0  # a task listed as ended: time for its result file to be seen here
    held_limit_s: float = 15 * 60.0
    queue_error_limit_s: float = 5 * 60.0

    def wait(self, jobs: Sequence[Any], progress: Callable[[], str], every_s: float = 60.0) -> list[Any]:
        """Wait until every job left the queue; returns the jobs with a result (the others did not finish)."""
        pending = {job.job_id: job for job in jobs}
        finished: list[Any] = []
        missing_since: dict[str, float] = {}
        seen: dict[str, str] = {}  # the last state the queue listed for each job
        held_since: dict[str, float] = {}
        queue_failing_since: float | None = None
        last_line, last_time = "", 0.0
        poll_s, last_states = self.poll_s, None
        arrays = sorted({job.job_id.split("_")[0] for job in jobs})
        while pending:
            now = time.monotonic()
            try:
                states = queue_states(arrays)
                queue_failing_since = None
            except (SlurmError, subprocess.SubprocessError, OSError) as err:
                queue_failing_since = queue_failing_since or now
                if now - queue_failing_since > self.queue_error_limit_s:
                    raise SlurmError(f"cannot read the queue for {int(now - queue_failing_since)}s ({err}); the "
                                     f"jobs may still run; run the same command again to resume") from None
                time.sleep(self.max_poll_s)
                continue
            for job_id, job in list(pending.items()):
                if job.paths.result_pickle.exists():
                    finished.append(pending.pop(job_id))
                    continue
                state, reason = states.get(job_id, ("", ""))
                if not state:  # an array not yet split lists its pending tasks as one line, e.g. 12_[0-3]
                    state, reason = next((v for k, v in states.items() if k.startswith(job_id.split("_")[0] + "_[")),
                                         ("", ""))
                seen[job_id] = state or seen.get(job_id, "")
                if state == "PENDING":
                    self._check_pending(job_id, reason, held_since, now, list(pending))
                if state in FINAL_STATES or not state:
                    first = missing_since.setdefault(job_id, now)
                    grace = self.result_lag_s if state else self.vanish_grace_s
                    if now - first > grace:
                        ended = seen[job_id].lower() if seen[job_id] in FINAL_STATES else "left the queue"
                        print(f"Slurm job {job_id} ended ({ended}) without a result",
                              file=sys.stderr, flush=True)
                        pending.pop(job_id)
                else:
                    missing_since.pop(job_id, None)
            line = progress()
            counts = line.rsplit(", ETA", 1)[0]
            if pending and (counts != last_line or now - last_time >= every_s):
                print(line, flush=True)
                last_line, last_time = counts, now
            if pending:
                poll_s = self.poll_s if states != last_states else min(poll_s * 1.5, self.max_poll_s)
                last_states = states
                time.sleep(poll_s)
        return finished

    def _check_pending(self, job_id: str, reason: str, held_since: dict[str, float], now: float,
                       pending: list[str]) -> None:
        key = reason.strip("()")
        change = STUCK_REASONS.get(key)
        if change is None and (key in HELD_REASONS or key.startswith("ReqNodeNotAvail")):
            if now - held_since.setdefault(job_id, now) <= self.held_limit_s:
                return
            change = HELD_REASONS.get(key, HELD_REASONS["ReqNodeNotAvail"])
        if change is None:
            return
        cancel(pending)
        raise SlurmError(f"Slurm job {job_id} cannot start: pending with reason {key}; change {change}; its "
                         f"{len(pending)} unfinished job(s) were cancelled")


__all__ = ["SlurmError", "SlurmOptions", "SlurmWatch", "add_slurm_arguments", "job_fields", "options_from_args",
           "queue_states", "submit"]
