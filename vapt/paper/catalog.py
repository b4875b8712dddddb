"""The paper's items (T1, T2, F-low, F-scale, F-cam, A, E, TH) and the MoE lens (lens, read from the T1
runs): the commands and runs that make each one, and the notebooks' prologue (`prepare`), which reads
the runs in full mode or the smoke runs in smoke mode.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vapt.config import METHODS, prompted_methods
from vapt.report.figures import SCALE_BACKBONES, DataSource
from vapt.report.gradcam import GRADCAM_TASKS

DATA = "<DATA>"
# The runs (or command) each figure needs, printed when it is skipped.
NEEDS: dict[str, str] = {
    "low_data": (
        "VPT-deep and VAPT runs on fgvc/stanford_dogs at training fractions 0.01 0.1 0.3 0.5 1.0, e.g. "
        f"`python -m vapt sweep --backbone vit_b16_in21k --method vapt --data fgvc/stanford_dogs --data-root {DATA} "
        "--fraction 0.1 --out runs` (and --method vpt_deep; one sweep per fraction)"
    ),
    "scale": (
        "VPT-deep and VAPT runs on fgvc/cub for vit_b16_in21k, vit_l16_in21k and vit_h14_in21k, e.g. "
        f"`python -m vapt sweep --backbone vit_l16_in21k --method vapt --data fgvc/cub --data-root {DATA} --out runs`"
    ),
    "gradcam": (
        "finished VPT and VAPT runs (trainable.pt) on the same task and its data, e.g. "
        f"`python -m vapt sweep --backbone vit_b16_in21k --method vapt --data vtab1k/sun397 --data-root {DATA} "
        "--out runs` (tasks of the paper's grid: sun397 svhn resisc45 clevr_count kitti)"
    ),
    "ablations": (
        "VAPT runs that vary the prompt length (--num-tokens), the kernel size (--set kernel_size=K) or remove "
        f"parts (--set conv=false / --set projector=false), e.g. `python -m vapt sweep --backbone vit_b16_in21k "
        f"--method vapt --data vtab1k/cifar --data-root {DATA} --set kernel_size=3 --out runs`"
    ),
    "efficiency": "a benchmark CSV: `python -m vapt bench --backbone vit_b16_in21k --out bench.csv`, then --bench",
    "theory": "a theory run: `python -m theory.sample_efficiency --out theory_runs`, then --theory theory_runs",
}


# The commands that produce each table / figure on a GPU machine (DATA = the data root). A command with
# `{method}` stands for one command per registered method, one with `{prompted}` for one per prompted method.
REPRODUCE: dict[str, list[str]] = {
    "T1": [
        "python -m vapt sweep --backbone vit_b16_in21k --method {method} --data vtab1k fgvc --data-root {data} "
        "--out {runs}",
        "python -m vapt table --runs {runs} --out {runs}/results.csv --markdown {runs}/tables.md",
    ],
    "T2": [
        "python -m vapt sweep --backbone vit_b16_mae --method {prompted} --data vtab1k --data-root {data} --out {runs}",
        "python -m vapt sweep --backbone vit_b16_mocov3 --weights <MoCo v3 linear-vit-b-300ep.pth.tar> "
        "--method {prompted} --data vtab1k --data-root {data} --out {runs}",
        "python -m vapt table --runs {runs} --markdown {runs}/tables.md",
    ],
    "F-low": [
        f"python -m vapt sweep --backbone vit_b16_in21k --method {m} --data fgvc/stanford_dogs --fraction {f} "
        "--data-root {data} --out {runs}" for m in ("vpt_deep", "vapt") for f in (0.01, 0.1, 0.3, 0.5, 1.0)
    ] + ["python -m vapt figures --runs {runs} --out figures"],
    "F-scale": [
        f"python -m vapt sweep --backbone {b} --method {m} --data fgvc/cub --data-root {{data}} --out {{runs}}"
        for b in SCALE_BACKBONES for m in ("vpt_deep", "vapt")
    ] + ["python -m vapt figures --runs {runs} --out figures"],
    "F-cam": [
        f"python -m vapt sweep --backbone vit_b16_in21k --method {m} --data "
        + " ".join(f"vtab1k/{t}" for t in GRADCAM_TASKS) + " --data-root {data} --out {runs}"
        for m in ("vpt_deep", "vapt")
    ] + ["python -m vapt figures --runs {runs} --out figures  # Grad-CAM from the runs' trainable.pt"],
    "A": [
        *(f"python -m vapt sweep --backbone vit_b16_in21k --method vapt --num-tokens {n} --data vtab1k --grid fast "
          "--data-root {data} --out {runs}" for n in (1, 5, 10, 50, 100)),
        *(f"python -m vapt sweep --backbone vit_b16_in21k --method vapt --set kernel_size={k} --data vtab1k "
          "--grid fast --data-root {data} --out {runs}" for k in (1, 3, 5, 7)),
        *(f"python -m vapt sweep --backbone vit_b16_in21k --method vapt --set {o} --data vtab1k --grid fast "
          "--data-root {data} --out {runs}" for o in ("conv=false", "projector=false")),
        "python -m vapt figures --runs {runs} --out figures",
    ],
    "E": [
        "python -m vapt bench --backbone vit_b16_in21k --batch 64 --device cuda --dtype bf16 --out {runs}/bench.csv",
        "python -m vapt figures --runs {runs} --out figures --bench {runs}/bench.csv",
    ],
    "lens": [
        "python -m vapt sweep --backbone vit_b16_in21k --method {prompted} --data vtab1k --data-root {data} "
        "--out {runs}",
        "python -m vapt lens --run <run of each prompted method> --data-root {data} "
        "--out figures/lens/<task>  # final runs of one task under {runs}, found by notebooks/09_moe_lens",
    ],
    "TH": [
        "python -m theory.sample_efficiency --full --out {runs}/theory",
        "python -m vapt figures --runs {runs} --out figures --theory {runs}/theory",
    ],
}


def reproduce_commands(item: str, data_root: str = DATA, runs: str = "runs") -> list[str]:
    """The commands that produce a table or figure (T1, T2, F-low, F-scale, F-cam, A, E, TH, lens) at full scale."""
    if item not in REPRODUCE:
        raise ValueError(f"unknown item {item!r}; expected one of {', '.join(REPRODUCE)}")
    commands = []
    for command in REPRODUCE[item]:
        methods = METHODS if "{method}" in command else prompted_methods() if "{prompted}" in command else [None]
        commands += [command.format(data=data_root, runs=runs, method=m, prompted=m) for m in methods]
    return commands




# item -> (smoke experiment standing in for it, what the notebook reads: runs folder or bench CSV)
SMOKE_STAND_INS: dict[str, str] = {
    "T1": "main", "T2": "self_supervised", "F-low": "low_data", "F-scale": "main", "F-cam": "main",
    "A": "ablations", "E": "efficiency", "TH": "theory", "lens": "main",
}


@dataclass(frozen=True)
class Setup:
    """What a notebook reads and where it draws: runs folder (or bench CSV / theory folder), output, source."""

    item: str
    mode: str
    path: Path
    out: Path
    source: DataSource


def smoke_source(item: str) -> DataSource:
    """The data source of an item's smoke stand-in (its label says it is not the paper's setting)."""
    from vapt.paper import smoke

    label = {"E": smoke.BENCH_LABEL, "TH": smoke.THEORY_LABEL}.get(item, smoke.SMOKE_LABEL)
    return DataSource(label, paper_datasets=False)


def prepare(item: str, mode: str = "smoke", runs: str | os.PathLike = "../runs", data_root: str = DATA,
            out: str | os.PathLike = "../figures", cache: str | os.PathLike | None = None) -> Setup:
    """The notebooks' prologue for a paper item.

    `full`: print the item's commands and read `runs` (the runs folder, or for E the bench CSV).
    `smoke`: run (or reuse) the item's smoke experiment on CPU and draw into the smoke cache.
    """
    if item not in REPRODUCE:
        raise ValueError(f"unknown item {item!r}; expected one of {', '.join(REPRODUCE)}")
    if mode == "full":
        print("\n".join(reproduce_commands(item, data_root=data_root)))
        return Setup(item, mode, Path(runs), Path(out), DataSource(f"runs under {runs}"))
    if mode != "smoke":
        raise ValueError(f"MODE must be 'smoke' or 'full', got {mode!r}")
    from vapt.paper import smoke

    source = smoke_source(item)
    print(source.label)
    path = smoke.EXPERIMENTS[SMOKE_STAND_INS[item]](cache)
    return Setup(item, mode, Path(path), smoke.cache_dir(cache) / "figures", source)
