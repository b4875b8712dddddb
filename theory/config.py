"""The run configuration of ``python -m theory.sample_efficiency``: its options, their ranges, and validation.

Every numeric option has a documented range (:data:`RANGES`) and is checked before any work starts; the
parsed arguments become one validated :class:`RunConfig`, which the command runs.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path

from theory.experiment import DEFAULT_DELTA0, LOCAL_FAMILIES
from theory.families import family_names
from theory.fit import DEFAULT_THETA_BOUND, INIT_MODES, SOLVERS
from theory.truths import DEFAULT_TRUTH, PRESET_HELP, Truth, TruthError, atom_key, load_truth

PROG = "python -m theory.sample_efficiency"
QUICK_NS = (2000, 4000, 8000, 16000, 32000)
FULL_NS = tuple(int(round(v)) for v in [10 ** (3 + 0.25 * i) for i in range(9)])
#: Target losses for the sample-complexity table.
TARGETS = {"D1": 0.05, "D2": 0.05, "L2": 0.002}
#: Finished fits of a run in progress, one JSON line each; removed once the outputs are written.
CHECKPOINT_NAME = "fits.partial.jsonl"
#: Default output folder (not tracked by git).
DEFAULT_OUT = "runs/theory"
#: Experiments: the rate study (--families x --regimes), the expressiveness and the local-alternative ones.
EXPERIMENTS: tuple[str, ...] = ("rates", "expressiveness", "local")
#: Replicates of the local-alternative experiment in --full mode (unless --replicates is given).
FULL_LOCAL_REPLICATES = 10
#: Slopes are fitted on n >= N_MIN (smaller n are pre-asymptotic); --n-min changes it.
DEFAULT_N_MIN = 2000
#: The accepted range of every numeric option (inclusive); jobs: at most the usable cores.
RANGES = {
    "n": (50, 1_000_000),
    "replicates": (2, 1000),
    "bootstrap": (100, 100_000),
    "seed": (0, 2**32 - 1),
    "sigma": (1e-6, 10.0),
    "delta0": (0.01, 20.0),
    "theta_bound": (1.5, 100.0),
    "n_min": (50, 1_000_000),
}


DESCRIPTION = (
    "Simulate least-squares estimation of prompt experts (softmax-gated MoE view) and compare the measured "
    "convergence rates with the theory. A simulation of the framework, not a reproduced paper figure. Each "
    "prediction is a rate (two-sided test), a bound (one-sided: faster is consistent) or none (reported); see "
    "docs/theory.md for how to read the verdicts."
)
TRUTH_HELP = """\
truth JSON file (d = len(c); one atom per bias; all numbers; no other fields):
  {"B": [[1, 0.5], [-0.3, 1]], "c": [1, -2],
   "pretrained": {"B0": [[0.5, 0.2], [0.2, -0.4]], "c0": [0, 0], "a0": [1, -0.5], "e0": 0.2},
   "biases": [0, -0.5],
   "atoms": {"vpt": [[1, -0.5], [-0.8, 0.6]],
             "prefix": [[1, -0.5, 1.5], [-0.8, 0.6, -1]],
             "vapt": [[1, -0.5, 0.3, 0.8], [-0.8, 0.6, 0.5, -0.7]]}}
  atoms: at least one of vpt (d numbers per atom), prefix (key then value: d + 1), vapt (W row-major:
  d * d; also used by vapt_gelu, vapt_linear, vapt_faithful), or the key of a registered family. Biases
  lie in [-5, 5]; true atoms of a family must be at least 0.5 apart, identifiable (first-order check), and
  each prompt must differ from the pre-trained expert. The run's default families are those the file has
  atoms for.
"""


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class ConfigError(ValueError):
    """An option value out of its range, or a combination that leaves nothing to run."""


class _Parser(argparse.ArgumentParser):
    """Argument parser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message}\n")


def _range_text(name: str) -> str:
    lo, hi = RANGES[name]
    return f"in [{lo:g}, {hi:g}]"


def _int_in(name: str | None, minimum: int | None = None):
    def parse(text: str) -> int:
        lo, hi = RANGES[name] if name else (minimum, math.inf)
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not lo <= value <= hi:
            want = f"an integer >= {lo}" if math.isinf(hi) else f"an integer {_range_text(name)}"
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        return value

    return parse


def _int_at_least(minimum: int):
    """An integer option with only a lower limit."""
    return _int_in(None, minimum)


def _float_in(name: str, allow_inf: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        lo, hi = RANGES[name]
        if allow_inf and value == math.inf:
            return value
        if not (math.isfinite(value) and lo <= value <= hi):
            extra = " or inf (no bound)" if allow_inf else ""
            raise argparse.ArgumentTypeError(f"expected a number {_range_text(name)}{extra}, got {text!r}")
        return value

    return parse


def _positive_float(text: str) -> float:
    """A positive finite number (for options without a range of their own)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _family_list(text: str) -> list[str]:
    known = family_names(optional=True)
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list from {', '.join(known)}; got {text!r}")
    for item in items:
        if item not in known:
            raise argparse.ArgumentTypeError(
                f"unknown family {item!r}; expected a comma-separated list from {', '.join(known)}"
            )
    return list(dict.fromkeys(items))


def _choice_list(what: str, known: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in known]
        if not items or bad:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {(bad or [text])[0]!r}; expected a comma-separated list from {', '.join(known)}"
            )
        return list(dict.fromkeys(items))

    return parse


def _sizes(text: str) -> list[int]:
    lo, hi = RANGES["n"]
    try:
        values = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        values = []
    if len(values) < 2 or values[0] < lo or values[-1] > hi:
        raise argparse.ArgumentTypeError(
            f"expected at least two distinct comma-separated sample sizes, each {_range_text('n')}; got {text!r}"
        )
    return values


def _truth_arg(text: str) -> Truth:
    try:
        return load_truth(text)
    except TruthError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (each option's help gives its range)."""
    presets = "; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items())
    p = _Parser(prog=PROG, description=DESCRIPTION, epilog=TRUTH_HELP,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--full",
        action="store_true",
        help="9 log-spaced n in [1e3, 1e5], 20 replicates, exact + over, the expressiveness experiment and the "
        f"local-alternative experiment ({FULL_LOCAL_REPLICATES} replicates); resumable; cost: see README",
    )
    p.add_argument(
        "--experiments",
        type=_choice_list("experiment", EXPERIMENTS),
        default=None,
        help=f"comma-separated from {', '.join(EXPERIMENTS)} (default: rates,expressiveness; --full: all). "
        "local: one true atom split into two atoms delta0 * n^(-1/4) apart (families vpt, vapt unless --families)",
    )
    p.add_argument("--delta0", type=_float_in("delta0"), default=DEFAULT_DELTA0,
                   help=f"local experiment: delta_0, {_range_text('delta0')} (default {DEFAULT_DELTA0:g})")
    p.add_argument("--solver", choices=SOLVERS, default="lm",
                   help="lm: Levenberg-Marquardt on the normal equations (default); trf: scipy's, as a cross-check")
    p.add_argument("--truth", type=_truth_arg, default=None,
                   help=f"a named truth ({presets}) or a JSON file (format below); default: default")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT}/, not tracked by git)")
    p.add_argument("--families", type=_family_list, default=None, help="comma-separated prompt families")
    p.add_argument("--regimes", type=_choice_list("regime", ("exact", "over")), default=None,
                   help="comma-separated: exact, over")
    p.add_argument("--replicates", type=_int_in("replicates"), default=None,
                   help=f"replicates per sample size, {_range_text('replicates')} (default 20)")
    p.add_argument("--n", type=_sizes, default=None,
                   help=f"comma-separated sample sizes, each {_range_text('n')} (overrides the mode)")
    p.add_argument("--n-min", type=_int_in("n_min"), default=None,
                   help=f"slopes are fitted on n >= N_MIN (smaller n are pre-asymptotic), {_range_text('n_min')}; "
                   f"default {DEFAULT_N_MIN} on the quick and full grids, the smallest n with --n; at least two "
                   "sample sizes must reach it")
    p.add_argument("--theta-bound", type=_float_in("theta_bound", allow_inf=True), default=DEFAULT_THETA_BOUND,
                   help="the bounded parameter space: atom coordinates within F * max(1, largest true |coordinate|), "
                   f"biases within F * max(1, largest true |bias|); F {_range_text('theta_bound')} (default "
                   f"{DEFAULT_THETA_BOUND:g}), inf: unbounded fits")
    p.add_argument("--seed", type=_int_in("seed"), default=0, help=f"base seed, {_range_text('seed')} (default 0)")
    p.add_argument("--jobs", type=_int_at_least(1), default=None,
                   help=f"worker processes, from 1 to the usable cores ({usable_cores()} here; default: all)")
    p.add_argument("--init", choices=INIT_MODES, default="noise", help="initialization")
    p.add_argument("--sigma", type=_float_in("sigma"), default=0.1,
                   help=f"noise s.d., {_range_text('sigma')} (default 0.1)")
    p.add_argument("--bootstrap", type=_int_in("bootstrap"), default=2000,
                   help=f"bootstrap resamples, {_range_text('bootstrap')} (default 2000)")
    p.add_argument("--no-expressiveness", action="store_true",
                   help="skip the vapt-truth / vpt-fit experiment (same as leaving it out of --experiments)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar")
    p.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"reuse the fits recorded in OUT/{CHECKPOINT_NAME} by an interrupted run with the same settings "
        "(default); --no-resume deletes that file first",
    )
    return p


@dataclass(frozen=True)
class RunConfig:
    """A validated run: what to fit, how, and where the outputs go."""

    truth: Truth
    experiments: tuple[str, ...]
    rate_families: tuple[str, ...]
    regimes: tuple[str, ...]
    ns: tuple[int, ...]
    replicates: int
    local_families: tuple[str, ...]
    local_replicates: int
    expressiveness: bool
    seed: int
    jobs: int
    init: str
    sigma: float
    bootstrap: int
    delta0: float
    solver: str
    theta_bound: float
    n_min: int
    out: Path
    resume: bool
    progress: bool

    @property
    def checkpoint(self) -> Path:
        """The file recording finished fits while the run is in progress."""
        return self.out / CHECKPOINT_NAME

    def describe(self) -> str:
        """One line naming every setting of the run."""
        text = (
            f"truth={self.truth.name} solver={self.solver} experiments={','.join(self.experiments)} "
            f"families={','.join(self.rate_families) or '-'} regimes={','.join(self.regimes)} n={list(self.ns)} "
            f"replicates={self.replicates} init={self.init} sigma={self.sigma} seed={self.seed} jobs={self.jobs} "
            f"theta_bound={self.theta_bound:g} n_min={self.n_min}"
        )
        if self.expressiveness:
            text += " + expressiveness (truth vapt; fitted vpt L=2,4 and vapt)"
        if self.local_families:
            text += (f" + local ({','.join(self.local_families)}; delta0={self.delta0}, "
                     f"{self.local_replicates} replicates)")
        return text


def resolve(args: argparse.Namespace) -> RunConfig:
    """The validated configuration of parsed arguments; a :class:`ConfigError` names the first problem."""
    truth = args.truth or DEFAULT_TRUTH
    experiments = args.experiments or (list(EXPERIMENTS) if args.full else ["rates", "expressiveness"])
    if args.no_expressiveness:
        experiments = [e for e in experiments if e != "expressiveness"]
    families = args.families or truth.families
    missing = [f for f in families if not truth.has_family(f)]
    if missing:
        raise ConfigError(f"--truth {truth.name}: it has no atoms for family {missing[0]!r} "
                          f"(field atoms.{atom_key(missing[0])})")
    cores = usable_cores()
    jobs = args.jobs or cores
    if jobs > cores:
        raise ConfigError(f"--jobs {jobs}: expected at most the {cores} usable CPU cores (more workers only "
                          "compete for them)")
    ns = tuple(args.n or (FULL_NS if args.full else QUICK_NS))
    n_min = args.n_min if args.n_min is not None else (min(ns) if args.n else DEFAULT_N_MIN)
    if sum(n >= n_min for n in ns) < 2:
        raise ConfigError(f"--n-min {n_min}: at least two sample sizes must reach it; the sizes are {list(ns)}")
    expressiveness = "expressiveness" in experiments and truth.has_family("vapt") and truth.has_family("vpt")
    local = tuple(args.families or [f for f in LOCAL_FAMILIES if truth.has_family(f)]) if "local" in experiments else ()
    rate_families = tuple(families) if "rates" in experiments else ()
    if not (rate_families or expressiveness or local):
        why = ("the expressiveness experiment needs a truth with vpt and vapt atoms"
               if "expressiveness" in experiments else f"experiments {','.join(experiments) or '(none)'}")
        raise ConfigError(f"nothing to run: {why}; choose experiments from {', '.join(EXPERIMENTS)} "
                          "(--no-expressiveness removes that experiment)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder; expected a folder (created if missing)")
    replicates = args.replicates or 20
    return RunConfig(
        truth=truth,
        experiments=tuple(experiments),
        rate_families=rate_families,
        regimes=tuple(args.regimes or (["exact", "over"] if args.full else ["exact"])),
        ns=ns,
        replicates=replicates,
        local_families=local,
        local_replicates=args.replicates or (FULL_LOCAL_REPLICATES if args.full else replicates),
        expressiveness=expressiveness,
        seed=args.seed,
        jobs=jobs,
        init=args.init,
        sigma=args.sigma,
        bootstrap=args.bootstrap,
        delta0=args.delta0,
        solver=args.solver,
        theta_bound=args.theta_bound,
        n_min=n_min,
        out=out,
        resume=args.resume,
        progress=args.full if args.progress is None else args.progress,
    )
