"""`python -m vapt lens`: the MoE lens on trained runs, written as `lens.csv` and three figures.

Each `--run` folder (written by `python -m vapt train` or `sweep`: `result.json` + `trainable.pt`) is
rebuilt into its trained model; `--images` images of the run's dataset split (evenly spaced over the
split, preprocessed as for evaluation) go through it. For every run, `lens.csv` holds one row per
(layer, head, query kind) with the gate masses on prompt / prefix / patch keys, the effective number
of prompts, and the layer's input dependence of the prompt tokens and of their values (repeated on
the layer's rows; NaN for models without prompts). Figures (PNG + PDF): `lens_prompt_mass`
(layer x head heatmaps), `lens_dependence` (per layer) and `lens_effective_prompts` (per layer);
several `--run` are drawn side by side.

`python -m vapt lens --run RUN_DIR [--run RUN_DIR ...] [--data-root DATA] [--split test] [--images 256] --out DIR`
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vapt.cli import DOCS_HELP
from vapt.config import prompted_methods
from vapt.errors import ConfigError, DataLayoutError, check_positive_int
from vapt.models.backbones import is_swin_backbone
from vapt.report.figures import DataSource, save_figure, set_style
from vapt.report.lens import DEPENDENCE_COLUMNS, gate_mass, lens_layout, num_prompt_tokens, prompt_dependence
from vapt.report.paper import method_label
from vapt.report.runs import best_runs, load_run_model, read_run, run_split
from vapt.run.config import TrainConfig
from vapt.run.record import RunRecord
from vapt.run.train import cpu_platform

FIGURES: tuple[str, ...] = ("lens_prompt_mass", "lens_dependence", "lens_effective_prompts")
RUN_COLUMNS: tuple[str, ...] = ("run", "method", "backbone", "data", "split", "images", "num_prompts", "run_dir")


def load_run(run_dir: str | os.PathLike) -> tuple[torch.nn.Module, RunRecord]:
    """The trained model of a run folder (backbone, method options, `trainable.pt`) and its result record.

    Rebuilt by `vapt.report.runs.load_run_model`; raises DataLayoutError / ConfigError naming the folder
    or file when the run cannot be rebuilt or its backbone is not a ViT.
    """
    record = read_run(run_dir)
    backbone = str(record.config.get("backbone"))
    if is_swin_backbone(backbone):
        raise ConfigError(f"run {str(run_dir)!r} uses the Swin backbone {backbone!r}; the MoE lens supports "
                          f"ViT backbones only")
    return load_run_model(run_dir, record), record


def _data_root(record: RunRecord, data_root: str | os.PathLike | None) -> str | os.PathLike:
    if data_root is not None:
        return data_root
    recorded = record.config.get("data_root")
    if not recorded:
        raise ConfigError(f"run {record.run_id!r} records no data_root; give --data-root")
    return recorded


def run_images(record: RunRecord, data_root: str | os.PathLike | None, split: str, count: int,
               image_size: int) -> torch.Tensor:
    """`count` images (evenly spaced over the split) of the run's dataset, preprocessed for evaluation.

    `data_root` None: the run's recorded data root.
    """
    from vapt.data import parse_data

    config = TrainConfig.from_dict(record.config)
    data_root = _data_root(record, data_root)
    spec = parse_data(config.data, config.num_classes)
    if split not in spec.splits:
        raise ConfigError(f"split {split!r} is not one of {spec.name}'s splits: {', '.join(spec.splits)}")
    dataset = run_split(config, split, data_root=str(data_root), image_size=image_size)
    if len(dataset) == 0:
        raise DataLayoutError(f"split {split!r} of {spec.name} under {str(data_root)!r} holds no images")
    chosen = np.unique(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int))
    return torch.stack([dataset[int(i)][0] for i in chosen])


def _labels(records: Sequence[RunRecord]) -> list[str]:
    configs = [r.config for r in records]
    labels = [method_label(c["method"]) for c in configs]
    if len({c["data"] for c in configs}) > 1:
        labels = [f"{label} ({c['data'].split('/', 1)[-1]})" for label, c in zip(labels, configs, strict=True)]
    if len({c["backbone"] for c in configs}) > 1:
        labels = [f"{label}, {c['backbone']}" for label, c in zip(labels, configs, strict=True)]
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return unique


def lens_table(run_dirs: Sequence[str | os.PathLike], data_root: str | os.PathLike | None = None,
               split: str = "test", images: int = 256, device: str = "auto", batch_size: int = 32) -> pd.DataFrame:
    """The lens of every run as one table: run columns, gate-mass columns and per-layer dependence columns.

    `data_root` None: each run's recorded data root.
    """
    from vapt.run.builder import resolve_device

    check_positive_int("--images", images)
    target = resolve_device(device)
    loaded = [load_run(folder) for folder in run_dirs]  # every run is checked before any is measured
    frames = []
    for folder, (model, record), label in zip(run_dirs, loaded, _labels([r for _, r in loaded]), strict=True):
        model.to(target)
        size = lens_layout(model).image_size[0]
        inputs = run_images(record, data_root, split, images, size)
        gates = gate_mass(model, inputs, batch_size=batch_size)
        prompts = num_prompt_tokens(model)
        if prompts:
            gates = gates.merge(prompt_dependence(model, inputs, batch_size=batch_size), on="layer", how="left")
        else:
            gates = gates.assign(**{c: np.nan for c in DEPENDENCE_COLUMNS if c != "layer"})
        config = record.config
        run_columns = {"run": label, "method": config["method"], "backbone": config["backbone"],
                       "data": config["data"], "split": split, "images": len(inputs), "num_prompts": prompts,
                       "run_dir": str(folder)}
        frames.append(gates.assign(**run_columns))
        model.to("cpu")
    table = pd.concat(frames, ignore_index=True)
    return table[list(RUN_COLUMNS) + [c for c in table.columns if c not in RUN_COLUMNS]]


def find_lens_runs(runs: str | os.PathLike, methods: Sequence[str] | None = None,
                   tasks: Sequence[str] | None = None, backbone: str | None = None) -> dict[str, list[Path]]:
    """Dataset -> one run folder per method (in `methods` order) for the lens, found under `runs`.

    Candidates are finished runs with `trainable.pt`, on the full training data with default method
    options, evaluated on `test` (the protocol's final runs); per method the best test top-1 is taken
    (`vapt.report.runs.best_runs`). `tasks` (e.g. `cifar`) and `backbone` narrow the search (give
    `backbone` when runs of several backbones share a dataset). `methods` defaults to every registered
    prompted method.
    """
    methods = prompted_methods() if methods is None else tuple(methods)
    found = best_runs(runs, methods, splits=("test",))
    chosen: dict[str, list[Path]] = {}
    for (run_backbone, data), by_method in sorted(found.items(), key=lambda item: (item[0][1], item[0][0])):
        if (backbone is not None and run_backbone != backbone) or (
                tasks is not None and data.split("/", 1)[-1] not in tasks):
            continue
        chosen[data] = [by_method[m] for m in methods if m in by_method]
    return chosen


def describe_source(table: pd.DataFrame, source: DataSource | None = None) -> str:
    """What a lens table was measured on (backbone, task, split, images): `lens_figures.describe_runs`."""
    from vapt.report.lens_figures import describe_runs

    return describe_runs(table, source)


def lens_source(run_dirs: Sequence[str | os.PathLike], note: str | None = None) -> DataSource:
    """The data source of a lens measurement: `note` (data that is not the paper's), else the run folders."""
    if note:
        return DataSource(note, paper_datasets=False)
    return DataSource("runs " + ", ".join(str(folder) for folder in run_dirs))


def dependence_rows(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, layer) with the dependence columns (the lens table repeats them per head)."""
    columns = [c for c in RUN_COLUMNS if c in table] + list(DEPENDENCE_COLUMNS)
    return table.drop_duplicates(["run", "layer"])[columns]


def write_lens(table: pd.DataFrame, out: str | os.PathLike, note: str | None = None,
               source: DataSource | None = None) -> list[Path]:
    """Write `lens.csv` and the three lens figures (PNG + PDF) under `out` atomically; returns the paths.

    `source` (or `note`, a label of data that is not the paper's) is written under every figure.
    """
    from vapt.io import write_text_atomic
    from vapt.report import lens_figures as F

    if source is None:
        source = lens_source(list(dict.fromkeys(table["run_dir"])), note)
    out = Path(out)
    paths = [write_text_atomic(out / "lens.csv", table.to_csv(index=False))]
    set_style()
    prompted = table[table["num_prompts"] > 0]
    figures = {
        "lens_prompt_mass": F.prompt_mass_figure(table, source=source),
        "lens_effective_prompts": F.effective_prompts_figure(table, source=source),
    }
    if not prompted.empty:
        figures["lens_dependence"] = F.dependence_figure(dependence_rows(prompted), source=source)
    for name in FIGURES:
        if name in figures:
            paths += save_figure(figures[name], out, name)
    return paths


def lens_from_runs(run_dirs: Sequence[str | os.PathLike], data_root: str | os.PathLike | None,
                   out: str | os.PathLike, split: str = "test", images: int = 256, note: str | None = None,
                   device: str = "auto", batch_size: int = 32,
                   source: DataSource | None = None) -> tuple[pd.DataFrame, list[Path]]:
    """Measure every run and write `lens.csv` and the figures under `out`; returns the table and the paths.

    `data_root` None: each run's recorded data root. `source` (default: from `note` or the run folders)
    is written under every figure.
    """
    table = lens_table(run_dirs, data_root, split, images, device, batch_size)
    return table, write_lens(table, out, note, source or lens_source(run_dirs, note))


SMOKE_BEGIN = "<!-- smoke-lens: python -m vapt lens --smoke -->"
SMOKE_END = "<!-- /smoke-lens -->"


def smoke_summary(cache: str | os.PathLike | None = None, images: int = 256) -> str:
    """The lens of the T1 smoke runs (VPT-shallow, VPT-deep, VAPT) as the Markdown quoted in the docs.

    The runs are made or reused by `vapt.paper.smoke` (`cache`: its cache folder), as notebook 09 does in
    smoke mode; the images are the task's test split, measured on the CPU with one thread.
    """
    from vapt.config import prompted_methods
    from vapt.paper import smoke
    from vapt.paper.digits import use_threads

    runs = smoke.main_results(cache, methods=prompted_methods())
    use_threads()
    found = find_lens_runs(runs)
    if len(found) != 1:
        raise ConfigError(f"expected the smoke runs of one task under {runs}, found {sorted(found) or 'none'}")
    (folders,) = found.values()
    table = lens_table(folders, None, "test", images, device="cpu")
    records = [read_run(folder) for folder in folders]
    prompts = int(table["num_prompts"].iloc[0])
    layout = lens_layout(load_run(folders[0])[0])
    keys = layout.num_prefix_tokens + prompts + layout.num_patches
    scores = ", ".join(f"{method_label(r.config['method'])} {r.final['test']:.1f}" for r in records)
    lines = [
        f"SMOKE: tiny `vit_test` pre-trained on digits 0-5, adapted to digits 6-9 (T1 smoke runs, {prompts} prompts); "
        f"lens on the {int(table['images'].iloc[0])} test images; test top-1 {scores}. A uniform gate gives "
        f"{prompts}/{keys} = {prompts / keys:.3f} of the mass to the prompts.",
        "",
        "| method | layer | prompt mass (patch queries, mean over heads) | dependence | value dependence | "
        "distinct prompts | prompt spread |",
        "|---|---|---|---|---|---|---|",
    ]
    patch = table[table["query"] == "patch"]
    for (run, layer), rows in patch.groupby(["run", "layer"], sort=False):
        first = rows.iloc[0]
        lines.append(f"| {run} | {layer} | {rows['prompt_mass'].mean():.3f} | {first['dependence']:.4f} | "
                     f"{first['value_dependence']:.4f} | {first['distinct_prompts']:.3f} | "
                     f"{first['prompt_spread']:.1e} |")
    epochs = int(records[0].config["epochs"])
    lines += ["", f"Measured on {cpu_platform()}, one thread. Another CPU rounds float32 sums in another order and "
              f"{epochs} epochs of training carry that on, so its numbers differ; the structure (constant VPT-Deep "
              "experts, one distinct VAPT prompt per adaptive block) does not."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m vapt lens --run RUN_DIR [...] --out DIR`: measure runs, write CSV and figures."""
    parser = argparse.ArgumentParser(prog="python -m vapt lens", epilog=DOCS_HELP,
                                     description=__doc__.split("\n\n")[0] + " The lens is described in docs/lens.md.")
    parser.add_argument("--run", dest="runs", action="append", metavar="RUN_DIR",
                        help="a finished run folder (result.json + trainable.pt); repeat to compare runs")
    parser.add_argument("--data-root", default=None,
                        help="holds vtab-1k/<task>/ and FGVC <dataset>/ (default: each run's recorded data root)")
    parser.add_argument("--split", default="test", help="dataset split the images come from (default: test)")
    parser.add_argument("--images", type=int, default=256, help="images per run (default: 256)")
    parser.add_argument("--out", help="output folder for lens.csv and the figures")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    parser.add_argument("--note", default=None,
                        help="a line printed under every figure, marking data that is not the paper's (e.g. a "
                        "smoke label); the figures then name no paper dataset")
    parser.add_argument("--smoke", action="store_true",
                        help="print the lens of the T1 smoke runs (made or reused, as `python -m vapt smoke main`) "
                        "as the Markdown table the docs quote")
    parser.add_argument("--cache", default=None, help="with --smoke: the smoke cache folder")
    args = parser.parse_args(argv)
    if args.smoke:
        print(f"{SMOKE_BEGIN}\n{smoke_summary(args.cache)}\n{SMOKE_END}")
        return 0
    if not args.runs or not args.out:
        parser.error("--run and --out are required (or --smoke)")
    table, paths = lens_from_runs(args.runs, args.data_root, args.out, args.split, args.images, args.note,
                                  args.device, args.batch_size)
    for run, part in table.groupby("run", sort=False):
        patch = part[part["query"] == "patch"]
        layers = part.drop_duplicates("layer")
        distinct = " / ".join(f"{v:.2f}" for v in layers["distinct_prompts"])
        print(f"{run}: prompt mass (patch queries) {patch['prompt_mass'].mean():.4f} mean, "
              f"{patch['prompt_mass'].max():.4f} max; input dependence {layers['dependence'].mean():.4g} mean "
              f"over layers; distinct prompts per layer {distinct} of {part['num_prompts'].iloc[0]}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


__all__ = [
    "dependence_rows", "describe_source", "find_lens_runs", "lens_from_runs", "lens_source",
    "lens_table", "load_run", "main", "run_images", "smoke_summary", "write_lens",
]
