"""Command line: simulate prompt-expert estimation and measure convergence rates against theory.

python -m theory.sample_efficiency                       # quick mode (exact regime + expressiveness)
python -m theory.sample_efficiency --full                # 9 sample sizes 1e3..1e5: exact, over, expressiveness, local
python -m theory.sample_efficiency --experiments local   # the local-alternative experiment alone

How to read the output: docs/theory.md.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Sequence

from theory.config import (
    CHECKPOINT_NAME,
    DEFAULT_OUT,
    EXPERIMENTS,
    FULL_NS,
    PROG,
    QUICK_NS,
    TARGETS,
    ConfigError,
    RunConfig,
    build_parser,
    resolve,
)

__all__ = ["CHECKPOINT_NAME", "DEFAULT_OUT", "EXPERIMENTS", "FULL_NS", "QUICK_NS", "TARGETS", "main", "run"]

#: Exit status after a signal: 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM).
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Stopped(BaseException):
    """The run was stopped by a signal (SIGINT or SIGTERM)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop(signum, frame):  # noqa: ARG001 - the signal handler's signature
    for sig in SIGNAL_EXIT:  # a second Ctrl-C or SIGTERM while stopping changes nothing
        signal.signal(sig, signal.SIG_IGN)
    raise Stopped(signum)


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def _saved_fits(cfg: RunConfig) -> int:
    try:
        with open(cfg.checkpoint, encoding="utf-8") as handle:
            return sum(1 for line in handle if line.strip())
    except OSError:
        return 0


def run(cfg: RunConfig) -> int:
    """Run a validated configuration: fit, summarise, write the outputs as a set, print the report."""
    from theory.figures import SIMULATION_LABEL, plot_sample_efficiency
    from theory.io import OutputError, check_output_folder, write_csv, write_set
    from theory.report import print_report
    from theory.runner import CheckpointError, CheckpointWriteError, run_experiment
    from theory.summary import degenerate_table, sample_complexity_table, summarize
    from theory.threads import limit_blas_threads
    from theory.truths import TruthError

    try:
        check_output_folder(cfg.out)
    except OutputError as err:
        return _error(str(err))
    if not cfg.resume:
        cfg.checkpoint.unlink(missing_ok=True)
    limit_blas_threads()
    print(f"== {SIMULATION_LABEL} ==")
    print(cfg.describe())
    t0 = time.perf_counter()
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        def bar(it, total):
            return tqdm(it, total=total, desc="fits", unit="fit", file=sys.stderr)

    if cfg.checkpoint.exists():
        print(f"resuming: reusing the finished fits recorded in {cfg.checkpoint}")
    try:
        fits = run_experiment(
            cfg.rate_families, cfg.regimes, cfg.ns, cfg.replicates, expressiveness=cfg.expressiveness,
            base_seed=cfg.seed, init=cfg.init, sigma=cfg.sigma, jobs=cfg.jobs, progress=bar,
            checkpoint=cfg.checkpoint, solver=cfg.solver, truth=cfg.truth, local_families=cfg.local_families,
            delta0=cfg.delta0, local_replicates=cfg.local_replicates, theta_bound=cfg.theta_bound,
        )
    except (CheckpointError, TruthError) as err:
        return _error(str(err))
    except CheckpointWriteError as err:
        from theory.io import reason

        return _error(f"cannot write {err.filename}: {reason(err)}; the {_saved_fits(cfg)} fits recorded there are "
                      "kept; free space and run the same command to resume")
    except (Stopped, KeyboardInterrupt) as err:
        signum = err.signum if isinstance(err, Stopped) else signal.SIGINT
        name = signal.Signals(signum).name
        print(f"\nstopped by {name}: {_saved_fits(cfg)} finished fits are saved in {cfg.checkpoint}; "
              "run the same command again to resume from them", file=sys.stderr)
        return SIGNAL_EXIT.get(signum, 128 + int(signum))
    summary = summarize(fits, n_boot=cfg.bootstrap, seed=cfg.seed, n_min=cfg.n_min)
    complexity = sample_complexity_table(summary, TARGETS)
    degenerate = degenerate_table(fits)
    try:
        paths = write_set(cfg.out, {
            "fits.csv": lambda p: write_csv(fits, p),
            "summary.csv": lambda p: write_csv(summary, p),
            "sample_complexity.csv": lambda p: write_csv(complexity, p),
            "degenerate.csv": lambda p: write_csv(degenerate, p),
            "sample_efficiency.png": lambda p: plot_sample_efficiency(fits, summary, p),
        })
    except OutputError as err:
        return _error(f"{err}; the finished fits stay in {cfg.checkpoint}, so the same command resumes without "
                      "refitting")
    cfg.checkpoint.unlink(missing_ok=True)
    elapsed = time.perf_counter() - t0
    print_report(summary, fits, complexity, degenerate, TARGETS)
    print(f"wrote: {', '.join(str(p) for p in paths)}")
    print(f"wall time: {elapsed:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None, *, restore_signals: bool = True) -> int:
    """Parse and validate the options, then run; return the exit code (2 for bad input, 130/143 when stopped).

    ``restore_signals``: put the previous SIGINT/SIGTERM handlers back afterwards (in-process callers). The
    command itself keeps ignoring them after a stop, so a second Ctrl-C while it exits changes nothing.
    """
    args = build_parser().parse_args(argv)
    try:
        cfg = resolve(args)
    except ConfigError as err:
        return _error(str(err))
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.getsignal(sig) for sig in SIGNAL_EXIT} if in_main_thread else {}
    for sig in previous:
        signal.signal(sig, _stop)
    try:
        return run(cfg)
    finally:
        for sig, handler in (previous.items() if restore_signals else ()):
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main(restore_signals=False))
