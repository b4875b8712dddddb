"""The sample-efficiency experiment: configurations, one fit per task, the process pool, the summary."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from theory.fit import INIT_MODES, TOLERANCE, derive_seed, fit_least_squares, initial_points
from theory.models import (
    FAMILY_NAMES,
    OPTIONAL_FAMILY_NAMES,
    MixingMeasure,
    default_truth,
    sample_data,
    sample_inputs,
)
from theory.rates import RateEstimate, estimate_rate, predicted_slope, sample_complexity, verdict
from theory.voronoi import evaluation_grid, l2_error, parameter_metrics

#: Evaluation points for the L2 regression error.
N_EVAL = 20_000
#: Maximum function evaluations per start, per regime.
MAX_NFEV = {"exact": 200, "over": 400, "misspecified": 300}
#: Number of starts per regime (the best fit is kept).
N_STARTS = {"exact": 2, "over": 2, "misspecified": 1}
#: Metrics summarized per regime.
METRICS = {
    "exact": ("D1", "L2", "param_err", "expert_sup"),
    "over": ("D2", "D1", "L2", "param_err", "expert_sup"),
    "misspecified": ("L2",),
}
#: Every table row says where it comes from.
SOURCE = "simulation of the least-squares prompt-MoE framework (not a paper result)"
SUMMARY_COLUMNS = ["family", "regime", "metric", "slope", "ci_low", "ci_high", "predicted", "verdict"]


@dataclass(frozen=True)
class Config:
    """One estimation problem: data from ``truth``, fitted with ``n_atoms`` atoms of ``fitted``."""

    truth: str
    fitted: str
    regime: str
    n_atoms: int

    @property
    def key(self) -> str:
        """Stable text key (used for seeds and tables)."""
        return f"{self.truth}->{self.fitted}|{self.regime}|L={self.n_atoms}"


def make_config(family: str, regime: str) -> Config:
    """The exact (L = L*) or over-specified (L = L* + 1) configuration for a family."""
    _, G = default_truth(family)
    L = G.atoms.shape[0]
    if regime == "exact":
        return Config(family, family, regime, L)
    if regime == "over":
        return Config(family, family, regime, L + 1)
    raise ValueError(f"regime must be 'exact' or 'over' here, got {regime!r}")


def expressiveness_configs(truth: str = "vapt", fitted: str = "vpt", atoms: Sequence[int] = (2, 4)) -> list[Config]:
    """Truth ``vapt`` fitted by ``vpt`` with each number of atoms, plus a ``vapt`` control."""
    _, G = default_truth(truth)
    configs = [Config(truth, fitted, "misspecified", int(L)) for L in atoms]
    return configs + [Config(truth, truth, "misspecified", G.atoms.shape[0])]


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


@lru_cache(maxsize=32)
def pseudo_true(config: Config, base_seed: int = 0, n: int = 4000, n_starts: int = 6) -> MixingMeasure:
    """Best approximation of the truth within the fitted family (noiseless least squares, cached)."""
    model_true, G_true = default_truth(config.truth)
    model_fit, _ = default_truth(config.fitted)
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
    model_true, G_true = default_truth(cfg.truth)
    model_fit, _ = default_truth(cfg.fitted)
    data_rng = np.random.default_rng(derive_seed(f"data|{cfg.truth}", task.n, task.replicate, task.base_seed))
    X, Y = sample_data(model_true, G_true, task.n, task.sigma, data_rng)
    init_rng = np.random.default_rng(derive_seed(f"init|{cfg.key}|{task.init}", task.n, task.replicate, task.base_seed))
    center = G_true if cfg.fitted == cfg.truth else task.center
    if center is None:
        raise ValueError(f"task {cfg.key} needs a center (best approximation) for its initialization")
    n_starts = task.n_starts or N_STARTS[cfg.regime]
    starts = initial_points(
        center, cfg.n_atoms, mode=task.init, regime=cfg.regime, n=task.n, n_starts=n_starts, rng=init_rng
    )
    result = fit_least_squares(
        model_fit, X, Y, starts, n_atoms=cfg.n_atoms, tol=TOLERANCE[cfg.regime], max_nfev=MAX_NFEV[cfg.regime]
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
        if cfg.fitted == cfg.truth:
            row.update(
                parameter_metrics(model_fit.family, result.estimate, G_true, evaluation_grid(model_fit.family.d))
            )
        row["params"] = " ".join(f"{v:.10g}" for v in result.estimate.to_vector())
    row["seconds"] = time.perf_counter() - t0
    row["source"] = SOURCE
    return row


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
    return (
        f"{task.config.key}|n={task.n}|rep={task.replicate}|seed={task.base_seed}|init={task.init}"
        f"|sigma={task.sigma!r}|starts={task.n_starts}"
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
            with ProcessPoolExecutor(max_workers=jobs, initializer=limit_blas_threads) as pool:
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
) -> list[FitTask]:
    """All fit tasks of a run: every family x regime, and optionally the expressiveness experiment.

    The expressiveness control (``vapt`` fitted to its own data) is the exact ``vapt`` fit on the same
    data, so it is not refitted when that configuration is part of the run (see :func:`run_experiment`).
    """
    if init not in INIT_MODES:
        raise ValueError(f"init must be one of {', '.join(INIT_MODES)}; got {init!r}")
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates!r}")
    configs = [make_config(f, r) for f in families for r in regimes]
    centers: dict[Config, MixingMeasure | None] = {c: None for c in configs}
    if expressiveness:
        for cfg in expressiveness_configs():
            if cfg.fitted == cfg.truth:
                if _shared_control(cfg) not in centers:
                    configs.append(cfg)
                    centers[cfg] = None
            else:
                configs.append(cfg)
                centers[cfg] = pseudo_true(cfg, base_seed)
    return [
        FitTask(cfg, int(n), rep, base_seed, init, sigma, None, centers[cfg])
        for cfg in configs
        for n in ns
        for rep in range(replicates)
    ]


def _shared_control(cfg: Config) -> Config:
    return Config(cfg.truth, cfg.fitted, "exact", cfg.n_atoms)


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
) -> pd.DataFrame:
    """Build and run all tasks; one row per fit (the expressiveness control shares the exact fits).

    ``checkpoint``: a JSON-lines file that records each finished fit and lets a rerun skip them.
    """
    tasks = build_tasks(
        families, regimes, ns, replicates, expressiveness=expressiveness, base_seed=base_seed, init=init, sigma=sigma
    )
    fits = run_tasks(tasks, jobs=jobs, progress=progress, checkpoint=checkpoint)
    fits["shared_with"] = ""
    if expressiveness:
        for cfg in expressiveness_configs():
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


def summarize(fits: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per (configuration, metric): slope, bootstrap CI, prediction and verdict."""
    rows = []
    keys = ["truth", "family", "regime", "fitted_atoms"]
    for (truth, family, regime, L), group in fits.groupby(keys, sort=False):
        failed = int(group["failed"].sum())
        l2 = estimate_rate(group["n"].to_numpy(), group["L2"].to_numpy(), n_boot=n_boot, seed=seed)
        plateau = predicted_slope(truth, regime, "L2", fitted_family=family) == 0.0
        for metric in METRICS[regime]:
            if metric not in group:
                continue
            rate = (
                l2
                if metric == "L2"
                else estimate_rate(group["n"].to_numpy(), group[metric].to_numpy(), n_boot=n_boot, seed=seed)
            )
            pred = predicted_slope(truth, regime, metric, fitted_family=family)
            rows.append(
                {
                    "family": family,
                    "regime": regime,
                    "metric": metric,
                    "slope": rate.slope,
                    "ci_low": rate.ci_low,
                    "ci_high": rate.ci_high,
                    "predicted": pred,
                    "verdict": verdict(rate, pred, None if plateau else l2.slope),
                    "fitted_atoms": int(L),
                    "truth": truth,
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
    table["_order"] = [
        (r == "misspecified", rank.get(f, len(rank)), r, L)
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
