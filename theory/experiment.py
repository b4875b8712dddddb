"""The sample-efficiency experiment: configurations, fit tasks, and one fit per task (data, fit, losses)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from theory.fit import (
    DEFAULT_THETA_BOUND,
    INIT_MODES,
    SOLVERS,
    TOLERANCE,
    derive_seed,
    fit_least_squares,
    initial_points,
    theta_box,
)
from theory.models import MixingMeasure, sample_data, sample_inputs
from theory.threads import single_blas_thread
from theory.truths import DEFAULT_TRUTH, Truth, local_delta, local_truth
from theory.voronoi import escaped, evaluation_grid, l2_error, local_metrics, parameter_metrics

#: Evaluation points for the L2 regression error.
N_EVAL = 20_000
#: Maximum function evaluations per start, per regime.
MAX_NFEV = {"exact": 200, "over": 400, "misspecified": 300, "local": 400}
#: Number of starts per regime (the best fit is kept).
N_STARTS = {"exact": 2, "over": 2, "misspecified": 1, "local": 2}
#: Families of the local-alternative experiment, and its default delta_0.
LOCAL_FAMILIES: tuple[str, ...] = ("vpt", "vapt")
DEFAULT_DELTA0 = 2.0
#: Every table row says where it comes from.
SOURCE = "simulation of the least-squares prompt-MoE framework (not a paper result)"


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
    theta_bound: float = DEFAULT_THETA_BOUND
    bound_mode: str = "project"


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
    with single_blas_thread():
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
    lower, upper = theta_box(G_fixed if cfg.fitted == cfg.truth else center, cfg.n_atoms, task.theta_bound)
    result = fit_least_squares(
        model_fit,
        X,
        Y,
        starts,
        n_atoms=cfg.n_atoms,
        tol=TOLERANCE["over" if local else cfg.regime],
        max_nfev=MAX_NFEV[cfg.regime],
        method=task.solver,
        lower=lower,
        upper=upper,
        bound_mode=task.bound_mode,
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
        "n_failed_starts": result.n_failed_starts,
        "theta_bound": task.theta_bound,
        "boundary": result.boundary_atoms > 0,
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
        if cfg.fitted == cfg.truth:
            row["escaped"] = escaped(result.estimate, G_fixed)
        row["params"] = " ".join(f"{v:.10g}" for v in result.estimate.to_vector())
    row["seconds"] = time.perf_counter() - t0
    row["source"] = SOURCE
    return row



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
    theta_bound: float = DEFAULT_THETA_BOUND,
    bound_mode: str = "project",
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
                if shared_control(cfg) not in centers:
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
        FitTask(cfg, int(n), rep, base_seed, init, sigma, None, centers[cfg], solver, float(delta0), truth,
                float(theta_bound), bound_mode)
        for cfg in configs
        for n in ns
        for rep in range(reps[cfg])
    ]


def shared_control(cfg: Config) -> Config:
    return Config(cfg.truth, cfg.fitted, "exact", cfg.n_atoms, cfg.truth_name)
