"""The sample-efficiency experiment: configurations, one fit per task, the process pool, the summary."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from theory.fit import INIT_MODES, SOLVERS, TOLERANCE, derive_seed, fit_least_squares, initial_points
from theory.models import (
    FAMILY_NAMES,
    OPTIONAL_FAMILY_NAMES,
    MixingMeasure,
    sample_data,
    sample_inputs,
)
from theory.rates import (
    MEDIAN_GAP,
    RateEstimate,
    estimate_rate,
    predicted_slope,
    prediction_kind,
    sample_complexity,
    verdict,
)
from theory.truths import DEFAULT_TRUTH, Truth, local_delta, local_truth
from theory.voronoi import evaluation_grid, l2_error, local_metrics, parameter_metrics

#: Evaluation points for the L2 regression error.
N_EVAL = 20_000
#: Maximum function evaluations per start, per regime.
MAX_NFEV = {"exact": 200, "over": 400, "misspecified": 300, "local": 400}
#: Number of starts per regime (the best fit is kept).
N_STARTS = {"exact": 2, "over": 2, "misspecified": 1, "local": 2}
#: Metrics summarized per regime.
METRICS = {
    "exact": ("D1", "L2", "param_err", "expert_sup"),
    "over": ("D2", "D1", "L2", "param_err", "expert_sup"),
    "misspecified": ("L2",),
    "local": ("W1", "L2", "mass_err", "max_pair_err"),
}
#: Families of the local-alternative experiment, and its default delta_0.
LOCAL_FAMILIES: tuple[str, ...] = ("vpt", "vapt")
DEFAULT_DELTA0 = 2.0
#: Every table row says where it comes from.
SOURCE = "simulation of the least-squares prompt-MoE framework (not a paper result)"
SUMMARY_COLUMNS = [
    "family",
    "regime",
    "metric",
    "kind",
    "slope",
    "median_slope",
    "ci_low",
    "ci_high",
    "predicted",
    "verdict",
    "degenerate_share",
]


@dataclass(frozen=True)
class Config:
    """One estimation problem: data from ``truth``, fitted with ``n_atoms`` atoms of ``fitted``."""

    truth: str
    fitted: str
    regime: str
    n_atoms: int
    truth_name: str = "default"

    @property
    def key(self) -> str:
        """Stable text key (used for seeds and tables); the default truth's keys carry no truth name."""
        base = f"{self.truth}->{self.fitted}|{self.regime}|L={self.n_atoms}"
        return base if self.truth_name == "default" else f"{base}|truth={self.truth_name}"


def make_config(family: str, regime: str, truth: Truth | None = None) -> Config:
    """The exact (L = L*), over-specified or local-alternative (L = L* + 1) configuration for a family."""
    truth = truth or DEFAULT_TRUTH
    _, G = truth.model(family)
    L = G.atoms.shape[0]
    if regime == "exact":
        return Config(family, family, regime, L, truth.name)
    if regime in ("over", "local"):
        return Config(family, family, regime, L + 1, truth.name)
    raise ValueError(f"regime must be 'exact', 'over' or 'local' here, got {regime!r}")


def expressiveness_configs(
    truth: str = "vapt", fitted: str = "vpt", atoms: Sequence[int] = (2, 4), truth_set: Truth | None = None
) -> list[Config]:
    """Truth ``vapt`` fitted by ``vpt`` with each number of atoms, plus a ``vapt`` control."""
    truth_set = truth_set or DEFAULT_TRUTH
    _, G = truth_set.model(truth)
    configs = [Config(truth, fitted, "misspecified", int(L), truth_set.name) for L in atoms]
    return configs + [Config(truth, truth, "misspecified", G.atoms.shape[0], truth_set.name)]


@dataclass(frozen=True)
class FitTask:
    """One fit: a configuration at sample size n, replicate r."""

    config: Config
    n: int
    replicate: int
    base_seed: int = 0
    init: str = "noise"
    sigma: float = 0.1
    n_starts: int | None = None
    center: MixingMeasure | None = field(default=None, compare=False)
    solver: str = "lm"
    delta0: float = DEFAULT_DELTA0
    truth_set: Truth | None = field(default=None, compare=False)


def _truth_of(config: Config, truth_set: Truth | None) -> Truth:
    truth = truth_set or DEFAULT_TRUTH
    if truth.name != config.truth_name:
        raise ValueError(f"configuration {config.key} needs truth {config.truth_name!r}, got {truth.name!r}")
    return truth


def pseudo_true(config: Config, base_seed: int = 0, n: int = 4000, n_starts: int = 6, truth_set: Truth | None = None):
    """Best approximation of the truth within the fitted family (noiseless least squares, cached)."""
    truth = _truth_of(config, truth_set)
    return _pseudo_true(config, base_seed, n, n_starts, truth)


@lru_cache(maxsize=32)
def _pseudo_true(config: Config, base_seed: int, n: int, n_starts: int, truth: Truth) -> MixingMeasure:
    model_true, G_true = truth.model(config.truth)
    model_fit, _ = truth.model(config.fitted)
    rng = np.random.default_rng(derive_seed(f"pseudo|{config.key}", n, 0, base_seed))
    X = sample_inputs(rng, n, model_true.family.d)
    Y = model_true.predict(X, G_true)
    center = MixingMeasure(np.zeros((1, model_fit.family.n_params)), np.zeros(1))
    starts = initial_points(
        center, config.n_atoms, mode="random", regime="misspecified", n=n, n_starts=n_starts, rng=rng
    )
    with _single_blas_thread():
        result = fit_least_squares(model_fit, X, Y, starts, n_atoms=config.n_atoms, tol=1e-8, max_nfev=300)
    if result.estimate is None:
        raise RuntimeError(f"could not compute the best approximation for {config.key}: {result.message}")
    return result.estimate


def run_task(task: FitTask) -> dict:
    """Simulate data, fit, and measure losses for one task; failures are returned as flagged rows."""
    cfg = task.config
    t0 = time.perf_counter()
    truth = _truth_of(cfg, task.truth_set)
    model_true, G_fixed = truth.model(cfg.truth)
    model_fit, _ = truth.model(cfg.fitted)
    local = cfg.regime == "local"
    G_true = local_truth(G_fixed, task.n, task.delta0) if local else G_fixed
    data_key = f"data|{cfg.truth}" if truth.name == "default" else f"data|{cfg.truth}|truth={truth.name}"
    if local:
        data_key += f"|local|delta0={task.delta0!r}"
    data_rng = np.random.default_rng(derive_seed(data_key, task.n, task.replicate, task.base_seed))
    X, Y = sample_data(model_true, G_true, task.n, task.sigma, data_rng)
    init_rng = np.random.default_rng(derive_seed(f"init|{cfg.key}|{task.init}", task.n, task.replicate, task.base_seed))
    center = G_true if cfg.fitted == cfg.truth else task.center
    if center is None:
        raise ValueError(f"task {cfg.key} needs a center (best approximation) for its initialization")
    n_starts = task.n_starts or N_STARTS[cfg.regime]
    # local: one start per atom of the n-dependent truth, with the over-specified start noise
    starts = initial_points(
        center,
        cfg.n_atoms,
        mode=task.init,
        regime="over" if local else cfg.regime,
        n=task.n,
        n_starts=n_starts,
        rng=init_rng,
    )
    result = fit_least_squares(
        model_fit,
        X,
        Y,
        starts,
        n_atoms=cfg.n_atoms,
        tol=TOLERANCE["over" if local else cfg.regime],
        max_nfev=MAX_NFEV[cfg.regime],
        method=task.solver,
    )
    row = {
        "family": cfg.fitted,
        "truth": cfg.truth,
        "regime": cfg.regime,
        "fitted_atoms": cfg.n_atoms,
        "n": task.n,
        "replicate": task.replicate,
        "base_seed": task.base_seed,
        "init": task.init,
        "solver": task.solver,
        "truth_name": truth.name,
        "failed": result.failed,
        "converged": result.converged,
        "status": result.status,
        "cost": result.cost,
        "nfev": result.nfev,
        "njev": result.njev,
        "n_starts": result.n_starts,
        "n_converged_starts": result.n_converged_starts,
        "message": result.message,
    }
    if result.estimate is not None:
        eval_rng = np.random.default_rng(derive_seed(f"eval|{cfg.truth}", 0, 0, task.base_seed))
        X_eval = sample_inputs(eval_rng, N_EVAL, model_true.family.d)
        row["L2"] = l2_error(model_fit, result.estimate, model_true, G_true, X_eval)
        if local:
            row["delta0"] = task.delta0
            row["delta_n"] = local_delta(task.n, task.delta0)
            row.update(local_metrics(result.estimate, G_fixed, G_true))
        elif cfg.fitted == cfg.truth:
            row.update(
                parameter_metrics(model_fit.family, result.estimate, G_true, evaluation_grid(model_fit.family.d))
            )
        row["params"] = " ".join(f"{v:.10g}" for v in result.estimate.to_vector())
    row["seconds"] = time.perf_counter() - t0
    row["source"] = SOURCE
    return row


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
    """Process-pool initializer: one BLAS thread, and exit when the parent process dies."""
    exit_with_parent()
    limit_blas_threads()


def make_pool(jobs: int) -> ProcessPoolExecutor:
    """A process pool whose workers use one BLAS thread and exit when this process dies."""
    return ProcessPoolExecutor(max_workers=jobs, initializer=init_worker)


def limit_blas_threads() -> None:
    """Use one BLAS thread in this process: the fits are small, and parallelism comes from the pool."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(1)


@contextmanager
def _single_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1):
        yield


def task_key(task: FitTask) -> str:
    """Text that identifies one fit: configuration, n, replicate, seed, initialization, noise and starts."""
    local = f"|delta0={task.delta0!r}" if task.config.regime == "local" else ""
    return (
        f"{task.config.key}|n={task.n}|rep={task.replicate}|seed={task.base_seed}|init={task.init}"
        f"|sigma={task.sigma!r}|starts={task.n_starts}|solver={task.solver}{local}"
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
            sink.write(json.dumps({"task": keys[i], "row": row}, default=_json_value) + "\n")
            sink.flush()
        return row

    try:
        if jobs == 1:
            with _single_blas_thread():
                rows += [record(i, run_task(tasks[i])) for i in wrap(todo, total=len(todo))]
        elif todo:
            with make_pool(jobs) as pool:
                futures = {pool.submit(run_task, tasks[i]): i for i in todo}
                rows += [record(futures[fut], fut.result()) for fut in wrap(as_completed(futures), total=len(futures))]
    finally:
        if sink is not None:
            sink.close()
    df = pd.DataFrame(rows)
    return df.sort_values(["truth", "family", "regime", "fitted_atoms", "n", "replicate"], ignore_index=True)


def build_tasks(
    families: Sequence[str],
    regimes: Sequence[str],
    ns: Sequence[int],
    replicates: int,
    *,
    expressiveness: bool = True,
    base_seed: int = 0,
    init: str = "noise",
    sigma: float = 0.1,
    solver: str = "lm",
    truth: Truth | None = None,
    local_families: Sequence[str] = (),
    delta0: float = DEFAULT_DELTA0,
    local_replicates: int | None = None,
) -> list[FitTask]:
    """All fit tasks of a run: every family x regime, the expressiveness and the local-alternative experiments.

    The expressiveness control (``vapt`` fitted to its own data) is the exact ``vapt`` fit on the same
    data, so it is not refitted when that configuration is part of the run (see :func:`run_experiment`).
    ``local_families``: families of the local-alternative experiment (regime ``local``), each with
    ``local_replicates`` replicates (default ``replicates``) per n.
    """
    if init not in INIT_MODES:
        raise ValueError(f"init must be one of {', '.join(INIT_MODES)}; got {init!r}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}; got {solver!r}")
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates!r}")
    truth = truth or DEFAULT_TRUTH
    configs = [make_config(f, r, truth) for f in families for r in regimes]
    centers: dict[Config, MixingMeasure | None] = {c: None for c in configs}
    if expressiveness and truth.has_family("vapt") and truth.has_family("vpt"):
        for cfg in expressiveness_configs(truth_set=truth):
            if cfg.fitted == cfg.truth:
                if _shared_control(cfg) not in centers:
                    configs.append(cfg)
                    centers[cfg] = None
            else:
                configs.append(cfg)
                centers[cfg] = pseudo_true(cfg, base_seed, truth_set=truth)
    reps = {cfg: replicates for cfg in configs}
    for family in local_families:
        cfg = make_config(family, "local", truth)
        configs.append(cfg)
        centers[cfg] = None
        reps[cfg] = local_replicates or replicates
    return [
        FitTask(cfg, int(n), rep, base_seed, init, sigma, None, centers[cfg], solver, float(delta0), truth)
        for cfg in configs
        for n in ns
        for rep in range(reps[cfg])
    ]


def _shared_control(cfg: Config) -> Config:
    return Config(cfg.truth, cfg.fitted, "exact", cfg.n_atoms, cfg.truth_name)


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
    )
    fits = run_tasks(tasks, jobs=jobs, progress=progress, checkpoint=checkpoint)
    fits["shared_with"] = ""
    if expressiveness and truth.has_family("vapt") and truth.has_family("vpt"):
        for cfg in expressiveness_configs(truth_set=truth):
            shared = _shared_control(cfg)
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


def _flag_share(group: pd.DataFrame, column: str) -> float:
    if column not in group:
        return float("nan")
    values = group[column].dropna()
    return float(values.astype(bool).mean()) if len(values) else float("nan")


def degenerate_table(fits: pd.DataFrame) -> pd.DataFrame:
    """Share of degenerate (and, in the local experiment, resolved) fits per (family, regime, atoms, n)."""
    keys = ["family", "regime", "fitted_atoms", "n"]
    rows = []
    for (family, regime, L, n), group in fits.groupby(keys, sort=True):
        if "degenerate" not in group or group["degenerate"].isna().all():
            continue
        rows.append(
            {
                "family": family,
                "regime": regime,
                "fitted_atoms": int(L),
                "n": int(n),
                "fits": len(group),
                "degenerate_share": _flag_share(group, "degenerate"),
                "resolved_share": _flag_share(group, "resolved") if regime == "local" else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=keys[:3] + ["n", "fits", "degenerate_share", "resolved_share"])


def summarize(fits: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per (configuration, metric): kind, slope, median slope, bootstrap CI, prediction and verdict."""
    rows = []
    keys = ["truth", "family", "regime", "fitted_atoms"]
    for (truth, family, regime, L), group in fits.groupby(keys, sort=False):
        failed = int(group["failed"].sum())
        l2 = estimate_rate(group["n"].to_numpy(), group["L2"].to_numpy(), n_boot=n_boot, seed=seed)
        plateau = predicted_slope(truth, regime, "L2", fitted_family=family) == 0.0
        degenerate = _flag_share(group, "degenerate") if regime != "misspecified" else float("nan")
        resolved = _flag_share(group, "resolved") if regime == "local" else float("nan")
        for metric in METRICS[regime]:
            if metric not in group:
                continue
            rate = (
                l2
                if metric == "L2"
                else estimate_rate(group["n"].to_numpy(), group[metric].to_numpy(), n_boot=n_boot, seed=seed)
            )
            pred = predicted_slope(truth, regime, metric, fitted_family=family)
            kind = prediction_kind(truth, regime, metric, fitted_family=family)
            gap = abs(rate.slope - rate.slope_median)
            rows.append(
                {
                    "family": family,
                    "regime": regime,
                    "metric": metric,
                    "kind": kind,
                    "slope": rate.slope,
                    "median_slope": rate.slope_median,
                    "ci_low": rate.ci_low,
                    "ci_high": rate.ci_high,
                    "predicted": pred,
                    "verdict": verdict(rate, pred, None if plateau else l2.slope, kind=kind),
                    "degenerate_share": degenerate,
                    "median_differs": bool(gap > MEDIAN_GAP),
                    "resolved_share": resolved,
                    "fitted_atoms": int(L),
                    "truth": truth,
                    "truth_name": str(group["truth_name"].iloc[0]) if "truth_name" in group else "default",
                    "r2": rate.r2,
                    "slope_nlogn": rate.slope_nlogn,
                    "slope_median": rate.slope_median,
                    "intercept": rate.intercept,
                    "n_fits": len(group),
                    "n_failed": failed,
                    "n_dropped": rate.n_dropped,
                    "source": SOURCE,
                }
            )
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    table = table[SUMMARY_COLUMNS + [c for c in table.columns if c not in SUMMARY_COLUMNS]]
    rank = {name: i for i, name in enumerate(FAMILY_NAMES + OPTIONAL_FAMILY_NAMES)}
    regime_rank = {"exact": 0, "over": 1, "local": 2, "misspecified": 3}
    table["_order"] = [
        (regime_rank.get(r, 4) >= 2, regime_rank.get(r, 4) if regime_rank.get(r, 4) >= 2 else 0, rank.get(f, len(rank)),
         regime_rank.get(r, 4), L)
        for f, r, L in zip(table["family"], table["regime"], table["fitted_atoms"], strict=False)
    ]
    return table.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)


def sample_complexity_table(summary: pd.DataFrame, targets: dict[str, float]) -> pd.DataFrame:
    """n needed to reach each target loss, read off the fitted lines (inf where a plateau is predicted)."""
    rows = []
    for _, r in summary[summary["metric"].isin(list(targets))].iterrows():
        rate = RateEstimate(r.slope, r.intercept, r.ci_low, r.ci_high, r.r2, r.slope_nlogn, r.slope_median, 0, 0, 0)
        plateau = r.predicted == 0.0
        rows.append(
            {
                "family": r.family,
                "regime": r.regime,
                "fitted_atoms": r.fitted_atoms,
                "metric": r.metric,
                "target": targets[r.metric],
                "n_needed": float("inf") if plateau else sample_complexity(rate, targets[r.metric]),
            }
        )
    return pd.DataFrame(rows)
