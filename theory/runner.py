"""Running fits: the process pool (largest n first), the resumable checkpoint, and the whole experiment."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd

from theory.experiment import (
    DEFAULT_DELTA0,
    FitTask,
    build_tasks,
    expressiveness_configs,
    run_task,
    shared_control,
)
from theory.fit import DEFAULT_THETA_BOUND
from theory.threads import limit_blas_threads, single_blas_thread
from theory.truths import DEFAULT_TRUTH, Truth


def exit_with_parent(poll_s: float = 0.5) -> None:
    """Make this (worker) process exit when its parent dies, even by SIGKILL.

    On Linux the kernel sends SIGKILL on the parent's death (prctl PR_SET_PDEATHSIG); everywhere a daemon
    thread also polls os.getppid() and exits the process once the parent is gone.
    """
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def init_worker() -> None:
    """Process-pool initializer: one BLAS thread, exit when the parent dies, leave Ctrl-C to the parent."""
    exit_with_parent()
    limit_blas_threads()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class CheckpointWriteError(OSError):
    """The checkpoint of finished fits could not be written (e.g. no space left); earlier records are kept."""


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel queued fits and end the workers now (the fits they were running are not recorded)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
    for process in processes:
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.join(timeout=10)


def make_pool(jobs: int) -> ProcessPoolExecutor:
    """A process pool whose workers use one BLAS thread and exit when this process dies."""
    return ProcessPoolExecutor(max_workers=jobs, initializer=init_worker)



def task_key(task: FitTask) -> str:
    """Text that identifies one fit: configuration, n, replicate, seed, initialization, noise and starts."""
    local = f"|delta0={task.delta0!r}" if task.config.regime == "local" else ""
    return (
        f"{task.config.key}|n={task.n}|rep={task.replicate}|seed={task.base_seed}|init={task.init}"
        f"|sigma={task.sigma!r}|starts={task.n_starts}|solver={task.solver}{local}"
        f"|bound={task.theta_bound!r}|bound_mode={task.bound_mode}"
    )


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read back."""


def read_checkpoint(path: str | os.PathLike) -> dict[str, dict]:
    """Rows already computed, by :func:`task_key`, from a JSON-lines checkpoint (missing file: none).

    A truncated last line (the run was killed while writing it) is ignored; any other unreadable line
    is an error naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    done: dict[str, dict] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            done[str(record["task"])] = dict(record["row"])
        except (ValueError, KeyError, TypeError) as err:
            if number == len(lines):
                break
            raise CheckpointError(
                f"{path}:{number}: not a checkpoint record ({err}); expected one JSON object with 'task' and "
                f"'row' per line; delete the file (or run with --no-resume) to start afresh"
            ) from None
    return done


def _drop_partial_last_line(path: str | os.PathLike) -> None:
    """Cut a last line left without its newline by a killed run, so appended records start on a line of their own."""
    with open(path, "a+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        handle.seek(0)
        data = handle.read()
        if data.endswith(b"\n"):
            return
        handle.truncate(data.rfind(b"\n") + 1)


def _json_value(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")


def run_tasks(
    tasks: Sequence[FitTask],
    jobs: int = 1,
    progress: Callable[[Iterable], Iterable] | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Run tasks (largest n first) in a process pool of ``jobs`` workers; one row per fit.

    With ``checkpoint``, each finished fit is appended to that JSON-lines file as it completes, and
    fits already recorded there are not run again, so an interrupted run resumes where it stopped.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs!r}")
    keys = [task_key(t) for t in tasks]
    done = read_checkpoint(checkpoint) if checkpoint is not None else {}
    rows: list[dict] = [done[k] for k in dict.fromkeys(keys) if k in done]
    todo = sorted((i for i in range(len(tasks)) if keys[i] not in done), key=lambda i: -tasks[i].n)
    wrap = progress or (lambda it, **_: it)
    sink = None
    if checkpoint is not None:
        Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
        _drop_partial_last_line(checkpoint)
        sink = open(checkpoint, "a", encoding="utf-8")  # noqa: SIM115 - closed in the finally below

    def record(i: int, row: dict) -> dict:
        if sink is not None:
            line = json.dumps({"task": keys[i], "row": row}, default=_json_value) + "\n"
            try:
                sink.write(line)
                sink.flush()
            except OSError as err:
                raise CheckpointWriteError(err.errno, err.strerror, str(checkpoint)) from None
        return row

    try:
        if jobs == 1:
            with single_blas_thread():
                rows += [record(i, run_task(tasks[i])) for i in wrap(todo, total=len(todo))]
        elif todo:
            with make_pool(jobs) as pool:
                try:
                    futures = {pool.submit(run_task, tasks[i]): i for i in todo}
                    rows += [record(futures[fut], fut.result())
                             for fut in wrap(as_completed(futures), total=len(futures))]
                except BaseException:
                    _stop_pool(pool)
                    raise
    finally:
        if sink is not None:
            try:
                sink.close()
            except OSError:
                pass  # a full disk: the records written so far are kept, the error is already on its way
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.sort_values(["truth", "family", "regime", "fitted_atoms", "n", "replicate"], ignore_index=True)



def run_experiment(
    families: Sequence[str],
    regimes: Sequence[str],
    ns: Sequence[int],
    replicates: int,
    *,
    expressiveness: bool = True,
    base_seed: int = 0,
    init: str = "noise",
    sigma: float = 0.1,
    jobs: int = 1,
    progress: Callable[[Iterable], Iterable] | None = None,
    checkpoint: str | os.PathLike | None = None,
    solver: str = "lm",
    truth: Truth | None = None,
    local_families: Sequence[str] = (),
    delta0: float = DEFAULT_DELTA0,
    local_replicates: int | None = None,
    theta_bound: float = DEFAULT_THETA_BOUND,
    bound_mode: str = "project",
) -> pd.DataFrame:
    """Build and run all tasks; one row per fit (the expressiveness control shares the exact fits).

    ``checkpoint``: a JSON-lines file that records each finished fit and lets a rerun skip them.
    """
    truth = truth or DEFAULT_TRUTH
    tasks = build_tasks(
        families,
        regimes,
        ns,
        replicates,
        expressiveness=expressiveness,
        base_seed=base_seed,
        init=init,
        sigma=sigma,
        solver=solver,
        truth=truth,
        local_families=local_families,
        delta0=delta0,
        local_replicates=local_replicates,
        theta_bound=theta_bound,
        bound_mode=bound_mode,
    )
    fits = run_tasks(tasks, jobs=jobs, progress=progress, checkpoint=checkpoint)
    fits["shared_with"] = ""
    if expressiveness and truth.has_family("vapt") and truth.has_family("vpt"):
        for cfg in expressiveness_configs(truth_set=truth):
            shared = shared_control(cfg)
            if cfg.fitted == cfg.truth and any(t.config == shared for t in tasks):
                rows = fits[
                    (fits["family"] == shared.fitted)
                    & (fits["truth"] == shared.truth)
                    & (fits["regime"] == "exact")
                    & (fits["fitted_atoms"] == shared.n_atoms)
                ].copy()
                rows["regime"] = cfg.regime
                rows["shared_with"] = "exact"
                fits = pd.concat([fits, rows], ignore_index=True)
    return fits
