"""`python -m vapt lens`: the MoE lens on trained runs, written as `lens.csv` and three figures.

Each `--run` folder (written by `python -m vapt train` or `sweep`: `result.json` + `trainable.pt`) is
rebuilt into its trained model; `--images` images of the run's dataset split (evenly spaced over the
split, preprocessed as for evaluation) go through it. For every run, `lens.csv` holds one row per
(layer, head, query kind) with the gate masses on prompt / prefix / patch keys, the effective number
of prompts, and the layer's input dependence of the prompt tokens and of their values (repeated on
the layer's rows; NaN for models without prompts). Figures (PNG + PDF): `lens_prompt_mass`
(layer x head heatmaps), `lens_dependence` (per layer) and `lens_effective_prompts` (per layer);
several `--run` are drawn side by side.

`python -m vapt lens --run RUN_DIR [--run RUN_DIR ...] --data-root DATA [--split test] [--images 256] --out DIR`
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from vapt.errors import ConfigError, DataLayoutError
from vapt.report.lens import gate_mass, lens_layout, num_prompt_tokens, prompt_dependence

FIGURES: tuple[str, ...] = ("lens_prompt_mass", "lens_dependence", "lens_effective_prompts")
RUN_COLUMNS: tuple[str, ...] = ("run", "method", "backbone", "data", "split", "images", "num_prompts", "run_dir")


def load_run(run_dir: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained model of a run folder (backbone, method options, `trainable.pt`) and its result record.

    Raises DataLayoutError / ConfigError naming the folder or file when the run cannot be rebuilt.
    """
    import vapt
    from vapt.data import parse_data
    from vapt.records import read_record
    from vapt.swin import is_swin_backbone
    from vapt.train import TrainConfig

    folder = Path(run_dir)
    if not folder.is_dir():
        raise DataLayoutError(f"run folder {str(folder)!r} does not exist")
    record_path, weights_path = folder / "result.json", folder / "trainable.pt"
    if not record_path.is_file():
        raise DataLayoutError(f"run folder {str(folder)!r} has no result.json; expected a run written by "
                              f"`python -m vapt train`")
    record = read_record(record_path)
    config = TrainConfig.from_dict(record["config"])
    if is_swin_backbone(config.backbone):
        raise ConfigError(f"run {str(folder)!r} uses the Swin backbone {config.backbone!r}; the MoE lens supports "
                          f"ViT backbones only")
    if not weights_path.is_file():
        raise DataLayoutError(f"run folder {str(folder)!r} has no trainable.pt (status "
                              f"{record.get('status')!r}); expected a finished run")
    spec = parse_data(config.data, config.num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # backbones without weights (vit_test) were drawn from the run's seed
        model = vapt.create_model(config.backbone, config.method, spec.num_classes,
                                  pretrained=bool(config.pretrained) and config.weights is None,
                                  weights=config.weights, **config.method_overrides())
    try:
        model.load_trainable(weights_path)
    except (KeyError, ValueError, RuntimeError, OSError) as err:
        raise DataLayoutError(f"{str(weights_path)!r} does not fit the model of its run "
                              f"({config.backbone}, {config.method}): {' '.join(str(err).split())}") from err
    return model.eval(), record


def run_images(record: dict[str, Any], data_root: str | os.PathLike, split: str, count: int,
               image_size: int) -> torch.Tensor:
    """`count` images (evenly spaced over the split) of the run's dataset, preprocessed for evaluation."""
    from vapt.data import build_dataset, parse_data

    config = record["config"]
    spec = parse_data(config["data"], config.get("num_classes"))
    if split not in spec.splits:
        raise ConfigError(f"split {split!r} is not one of {spec.name}'s splits: {', '.join(spec.splits)}")
    dataset = build_dataset(spec, data_root, split, image_size=image_size)
    if len(dataset) == 0:
        raise DataLayoutError(f"split {split!r} of {spec.name} under {str(data_root)!r} holds no images")
    chosen = np.unique(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int))
    return torch.stack([dataset[int(i)][0] for i in chosen])


def _labels(records: Sequence[dict[str, Any]]) -> list[str]:
    from vapt.results import METHOD_LABELS

    configs = [r["config"] for r in records]
    labels = [METHOD_LABELS.get(c["method"], c["method"]) for c in configs]
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


def lens_table(run_dirs: Sequence[str | os.PathLike], data_root: str | os.PathLike, split: str = "test",
               images: int = 256, device: str = "auto", batch_size: int = 32) -> pd.DataFrame:
    """The lens of every run as one table: run columns, gate-mass columns and per-layer dependence columns."""
    from vapt.train import resolve_device

    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ConfigError(f"--images must be a positive integer, got {images!r}")
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
            gates = gates.assign(dependence=np.nan, value_dependence=np.nan)
        config = record["config"]
        run_columns = {"run": label, "method": config["method"], "backbone": config["backbone"],
                       "data": config["data"], "split": split, "images": len(inputs), "num_prompts": prompts,
                       "run_dir": str(folder)}
        frames.append(gates.assign(**run_columns))
        model.to("cpu")
    table = pd.concat(frames, ignore_index=True)
    return table[list(RUN_COLUMNS) + [c for c in table.columns if c not in RUN_COLUMNS]]


def find_lens_runs(runs: str | os.PathLike, methods: Sequence[str] = ("vpt_shallow", "vpt_deep", "vapt"),
                   tasks: Sequence[str] | None = None, backbone: str | None = None) -> dict[str, list[Path]]:
    """Dataset -> one run folder per method (in `methods` order) for the lens, found under `runs`.

    Candidates are finished runs with `trainable.pt`, on the full training data with default method
    options, evaluated on `test` (the protocol's final runs); per method the best test top-1 is taken.
    `tasks` (e.g. `cifar`) and `backbone` narrow the search (give `backbone` when runs of several
    backbones share a dataset).
    """
    from vapt.figures import finished_runs

    best: dict[tuple[str, str], dict[str, tuple[float, Path]]] = {}
    for folder, record in finished_runs(runs):
        config = record.get("config", {})
        method, data = config.get("method"), str(config.get("data"))
        test = (record.get("final") or {}).get("test")
        if method not in methods or test is None or config.get("fraction", 1.0) != 1.0 or config.get("method_options"):
            continue
        if (backbone is not None and config.get("backbone") != backbone) or (
                tasks is not None and data.split("/", 1)[-1] not in tasks):
            continue
        chosen = best.setdefault((data, str(config.get("backbone"))), {})
        if method not in chosen or float(test) > chosen[method][0]:
            chosen[method] = (float(test), folder)
    return {data: [chosen[m][1] for m in methods if m in chosen] for (data, _), chosen in sorted(best.items())}


def describe_source(table: pd.DataFrame) -> str:
    """Where the numbers came from, for figure titles: backbone(s), dataset(s), split and image count."""
    def join(column: str) -> str:
        return ", ".join(str(v) for v in dict.fromkeys(table[column]))

    counts = join("images")
    return f"{join('backbone')} on {join('data')} ({join('split')} split, {counts} images)"


def dependence_rows(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, layer) with the dependence columns (the lens table repeats them per head)."""
    return table.drop_duplicates(["run", "layer"])[["run", "layer", "dependence", "value_dependence"]]


def write_lens(table: pd.DataFrame, out: str | os.PathLike, note: str | None = None) -> list[Path]:
    """Write `lens.csv` and the three lens figures (PNG + PDF) under `out` atomically; returns the paths."""
    from vapt.atomic import write_text_atomic
    from vapt.figures import save_figure, set_style
    from vapt.report import lens_figures as F

    out = Path(out)
    paths = [write_text_atomic(out / "lens.csv", table.to_csv(index=False))]
    set_style()
    source = describe_source(table)
    prompted = table[table["num_prompts"] > 0]
    figures = {
        "lens_prompt_mass": F.prompt_mass_figure(table, source),
        "lens_effective_prompts": F.effective_prompts_figure(table, source),
    }
    if not prompted.empty:
        figures["lens_dependence"] = F.dependence_figure(dependence_rows(prompted), source)
    for name in FIGURES:
        if name in figures:
            paths += save_figure(figures[name], out, name, note)
    return paths


def lens_from_runs(run_dirs: Sequence[str | os.PathLike], data_root: str | os.PathLike, out: str | os.PathLike,
                   split: str = "test", images: int = 256, note: str | None = None, device: str = "auto",
                   batch_size: int = 32) -> tuple[pd.DataFrame, list[Path]]:
    """Measure every run and write `lens.csv` and the figures under `out`; returns the table and the paths."""
    table = lens_table(run_dirs, data_root, split, images, device, batch_size)
    return table, write_lens(table, out, note)


def main(argv: list[str] | None = None) -> int:
    """`python -m vapt lens --run RUN_DIR [...] --data-root DATA --out DIR`: measure runs, write CSV and figures."""
    parser = argparse.ArgumentParser(prog="python -m vapt lens", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", dest="runs", action="append", required=True, metavar="RUN_DIR",
                        help="a finished run folder (result.json + trainable.pt); repeat to compare runs")
    parser.add_argument("--data-root", required=True, help="holds vtab-1k/<task>/ and FGVC <dataset>/")
    parser.add_argument("--split", default="test", help="dataset split the images come from (default: test)")
    parser.add_argument("--images", type=int, default=256, help="images per run (default: 256)")
    parser.add_argument("--out", required=True, help="output folder for lens.csv and the figures")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    parser.add_argument("--note", default=None, help="a line printed under every figure (e.g. a smoke label)")
    args = parser.parse_args(argv)
    table, paths = lens_from_runs(args.runs, args.data_root, args.out, args.split, args.images, args.note,
                                  args.device, args.batch_size)
    for run, part in table.groupby("run", sort=False):
        patch = part[part["query"] == "patch"]
        mean_dependence = part.drop_duplicates("layer")["dependence"].mean()
        print(f"{run}: prompt mass (patch queries) {patch['prompt_mass'].mean():.4f} mean, "
              f"{patch['prompt_mass'].max():.4f} max; input dependence {mean_dependence:.4g} mean over layers")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


__all__ = [
    "dependence_rows", "describe_source", "find_lens_runs", "lens_from_runs", "lens_table", "load_run", "main",
    "run_images", "write_lens",
]
