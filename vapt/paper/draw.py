"""`python -m vapt figures`: every paper figure from the runs, the bench CSV and the theory run that exist.

Drawing never trains: each figure is drawn from the records under `--runs` (several folders allowed),
the `--bench` CSV and the `--theory` run's summary.csv. With `--smoke`, each figure those inputs cannot
support is drawn from its smoke stand-in instead (labelled as such), when `python -m vapt smoke` has
made it for this code version; a figure with neither is skipped with a line naming the runs or
command it needs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from vapt.cli import DOCS_HELP, HelpFormatter
from vapt.data.fixtures import is_fixture_root
from vapt.errors import ConfigError
from vapt.io import check_writable_dir
from vapt.paper import catalog
from vapt.report import figures as F
from vapt.report.frame import load_records
from vapt.report.gradcam import gradcam_from_runs
from vapt.report.paper import paper_results
from vapt.report.tables import ablation_tasks, main_tasks
from vapt.run.record import record_paths, scan_records

# figure -> (paper item, output file stem)
FIGURES: dict[str, tuple[str, str]] = {
    "low_data": ("F-low", "low_data"), "scale": ("F-scale", "backbone_scale"), "ablations": ("A", "ablations"),
    "gradcam": ("F-cam", "gradcam"), "efficiency": ("E", "efficiency"), "theory": ("TH", "theory"),
}
# figure -> the smoke experiments whose output stands in for it
SMOKE_INPUTS: dict[str, tuple[str, ...]] = {
    "low_data": ("low_data",), "scale": ("main",), "ablations": ("ablations",), "gradcam": ("main",),
    "efficiency": ("efficiency",), "theory": ("theory",),
}


def has_runs(runs: str | os.PathLike | None) -> bool:
    """Whether a folder holds at least one result record."""
    return runs is not None and Path(runs).is_dir() and next(record_paths(runs), None) is not None


def load_all_records(runs: str | os.PathLike | Sequence[str | os.PathLike] | None) -> pd.DataFrame:
    """The records of one runs folder or several (a run found twice counts once); empty when there are none."""
    folders = [] if runs is None else [runs] if isinstance(runs, (str, os.PathLike)) else list(runs)
    frames = [load_records(folder) for folder in folders if has_runs(folder)]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True).drop_duplicates(["run_id", "split"]).reset_index(drop=True)


def checked_source(source: F.DataSource, folders: Sequence[Path]) -> F.DataSource:
    """`source`, marked as not the paper's datasets when any run under `folders` trained on fixture data."""
    if not source.paper_datasets:
        return source
    roots = {record.config.get("data_root") for folder in folders if Path(folder).is_dir()
             for _, record in scan_records(folder, warn=False)}
    if any(root and is_fixture_root(root) for root in roots):
        return F.DataSource(f"{source.label} (fixture data written by `python -m vapt fixtures`, "
                            f"not the real datasets)", paper_datasets=False)
    return source


def figure_maker(name: str, inputs: Sequence[Path], paper: pd.DataFrame,
                 gradcam_images: int = 5) -> Callable[[F.DataSource], object]:
    """A function drawing figure `name` from `inputs` (runs folders, a bench CSV or a theory folder)."""
    def from_records(draw: Callable[[pd.DataFrame, F.DataSource], object]) -> Callable[[F.DataSource], object]:
        def make(source: F.DataSource) -> object:
            records = load_all_records(list(inputs))
            if records.empty:
                raise F.NotDrawable(f"no runs under {', '.join(str(i) for i in inputs) or 'the given folders'}")
            return draw(records, checked_source(source, inputs))
        return make

    def gradcam(source: F.DataSource) -> object:
        for folder in inputs:
            data = gradcam_from_runs(folder, images=gradcam_images) if has_runs(folder) else None
            if data is not None:
                return F.gradcam_figure(data.images, data.maps, data.titles, source=checked_source(source, [folder]))
        raise F.NotDrawable("no finished VPT-deep and VAPT runs with trainable.pt on a common task")

    def from_file(read: Callable[[Path], pd.DataFrame], draw: Callable[[pd.DataFrame, F.DataSource], object],
                  what: str) -> Callable[[F.DataSource], object]:
        def make(source: F.DataSource) -> object:
            path = next((Path(p) for p in inputs if p is not None and Path(p).is_file()), None)
            if path is None:
                raise F.NotDrawable(f"no {what}")
            return draw(read(path), source)
        return make

    makers = {
        "low_data": from_records(lambda r, s: F.low_data_figure(main_tasks(r), paper, source=s)),
        "scale": from_records(lambda r, s: F.scale_figure(main_tasks(r), paper, source=s)),
        "ablations": from_records(lambda r, s: F.ablation_figure(ablation_tasks(r), source=s)),
        "gradcam": gradcam,
        "efficiency": from_file(pd.read_csv, lambda t, s: F.efficiency_figure(t, paper, source=s), "benchmark CSV"),
        "theory": from_file(pd.read_csv, lambda t, s: F.theory_figure(t, source=s), "theory summary.csv"),
    }
    return makers[name]


def draw_all(runs: str | os.PathLike | Sequence[str | os.PathLike] | None, out_dir: str | os.PathLike,
             theory: str | os.PathLike | None = None, bench: str | os.PathLike | None = None,
             smoke: dict[str, Path] | None = None, gradcam_images: int = 5) -> dict[str, list[Path]]:
    """Every figure the inputs allow, each missing one from its smoke stand-in in `smoke` when given."""
    F.set_style()
    paper = paper_results()
    folders = [] if runs is None else [runs] if isinstance(runs, (str, os.PathLike)) else list(runs)
    inputs = {name: [Path(f) for f in folders] for name in ("low_data", "scale", "ablations", "gradcam")}
    inputs["efficiency"] = [Path(bench)] if bench is not None else []
    inputs["theory"] = [Path(theory) / "summary.csv"] if theory is not None else []
    source = F.DataSource(f"runs under {', '.join(str(f) for f in folders)}") if folders else None
    written: dict[str, list[Path]] = {}
    for name, (item, stem) in FIGURES.items():
        own = source if name in ("low_data", "scale", "ablations", "gradcam") else F.DataSource(
            f"{', '.join(str(i) for i in inputs[name])}")
        try:
            fig = figure_maker(name, inputs[name], paper, gradcam_images)(own)
        except F.NotDrawable as reason:
            stand_in = [smoke[e] for e in SMOKE_INPUTS[name] if smoke and e in smoke]
            if smoke is None or not stand_in:
                more = "; its smoke stand-in is not made yet: run `python -m vapt smoke`" if smoke is not None else ""
                print(f"skipped {name}: {reason}{more}; needs {catalog.NEEDS.get(name, 'runs')}")
                continue
            if name == "theory":
                stand_in = [p / "summary.csv" for p in stand_in]
            try:
                fig = figure_maker(name, stand_in, paper, gradcam_images)(catalog.smoke_source(item))
            except F.NotDrawable as smoke_reason:
                print(f"skipped {name}: {reason}; the smoke stand-in cannot draw it either ({smoke_reason})")
                continue
            print(f"{name}: {reason}; drawn from its smoke stand-in")
        written[name] = F.save_figure(fig, out_dir, stem)
        print(f"wrote {name}: {', '.join(str(p) for p in written[name])}")
    return written


def main(argv: list[str] | None = None) -> int:
    """`python -m vapt figures`: draw every figure the runs, the theory run and the bench CSV allow."""
    parser = argparse.ArgumentParser(prog="python -m vapt figures", epilog=DOCS_HELP, description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--runs", nargs="+", default=None,
                        help="folder(s) of runs (default: runs, when it exists); a folder named here must exist")
    parser.add_argument("--out", default="figures", help="output folder (default: figures)")
    parser.add_argument("--theory", default=None, help="folder of a theory run (with summary.csv)")
    parser.add_argument("--bench", default=None, help="CSV written by `python -m vapt bench`")
    parser.add_argument("--gradcam-images", type=int, default=5, help="images in the Grad-CAM grid")
    parser.add_argument("--smoke", action="store_true",
                        help="draw each figure the inputs cannot support from its smoke stand-in (made by "
                             "`python -m vapt smoke`, never trained here), labelled as smoke on the figure")
    parser.add_argument("--cache", default=None, help="smoke cache folder (default: $VAPT_SMOKE_CACHE or "
                                                      "~/.cache/vapt/smoke)")
    args = parser.parse_args(argv)
    missing = [f"--runs folder {folder!r} does not exist; expected a folder of runs written by "
               f"`python -m vapt sweep ... --out {folder}`" for folder in args.runs or [] if not Path(folder).is_dir()]
    if args.theory is not None and not Path(args.theory).is_dir():
        missing.append(f"--theory folder {args.theory!r} does not exist; expected a theory run folder "
                       f"(with summary.csv)")
    if args.bench is not None and not Path(args.bench).is_file():
        missing.append(f"--bench file {args.bench!r} does not exist; expected a CSV written by "
                       f"`python -m vapt bench --out {args.bench}`")
    if missing and not args.smoke:
        raise ConfigError(missing[0] + (f" (and {len(missing) - 1} more missing input(s))" if len(missing) > 1 else "")
                          + "; pass --smoke to draw what they would give from smoke stand-ins")
    for line in missing:
        print(f"warning: {line}; its figures come from their smoke stand-ins", file=sys.stderr)
    args.runs = args.runs or ["runs"]
    check_writable_dir(args.out, "--out folder", create=False)
    smoke_made = None
    if args.smoke:
        from vapt.paper import smoke

        smoke_made = smoke.built(args.cache)
    draw_all(args.runs, args.out, theory=args.theory, bench=args.bench, smoke=smoke_made,
             gradcam_images=args.gradcam_images)
    return 0
