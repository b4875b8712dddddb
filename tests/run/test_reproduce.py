"""`python -m vapt reproduce ITEM`: the catalog's commands as one resumable command, dry run and cost projection."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from vapt.__main__ import main as vapt_main
from vapt.paper.catalog import reproduce_commands
from vapt.paper.reproduce import ITEMS, catalog_steps

SMOKE = ["--backbone", "vit_test", "--epochs", "1", "--batch-size", "32", "--grid", "5:0.01", "--seeds", "42",
         "--device", "cpu"]


@pytest.mark.parametrize("item", ITEMS)
def test_every_item_parses_into_known_commands(item: str) -> None:
    from vapt.__main__ import COMMANDS

    steps = catalog_steps(item, "DATA", "RUNS")
    assert len(steps) == len(reproduce_commands(item))
    assert all(s.module in COMMANDS or s.module.startswith("theory.") for s in steps)


def test_dry_run_lists_runs_and_projects_gpu_hours(data_root: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    summary = tmp_path / "summary.csv"
    pd.DataFrame([{"section": "bench", "name": m, "precision": "bf16", "recompute": False, "compile": False,
                   "images_per_s": 100.0, "note": "eval 400 images/s"} for m in ("vpt_deep", "vapt")]).to_csv(
        summary, index=False)
    argv = ["reproduce", "F-scale", "--data-root", str(data_root), "--runs", str(tmp_path / "runs"),
            "--figures", str(tmp_path / "fig"), "--dry-run", "--gpu-summary", str(summary), *SMOKE]
    argv[argv.index("--epochs") + 1] = "100"
    assert vapt_main(argv) == 0
    out = capsys.readouterr().out
    # one backbone for the item's three: its six sweeps collapse to two; on FGVC the seed-42 final is the grid run
    assert out.count("todo fgvc-cub/vit_test/") == 2
    assert f"then: python -m vapt figures --runs {tmp_path / 'runs'} --out {tmp_path / 'fig'}" in out
    assert "F-scale: 2 run(s) in 2 sweep(s): 0 already done, 2 to start now, 0 decided by the grid stages" in out
    # cub: 5,394 training images x 100 epochs at 100 images/s + (600 + 5,794) evaluated x 100 at 400 images/s
    hours = 2 * (5394 * 100 / 100 + 6394 * 100 / 400) / 3600
    assert f"projected GPU-hours of the 2 run(s) to start now: {hours:.1f}" in out


def test_t2_needs_the_moco_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert vapt_main(["reproduce", "T2", "--runs", str(tmp_path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--mocov3-weights" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_an_item_runs_its_sweeps_and_figures_then_resumes_as_done(data_root: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["reproduce", "F-scale", "--data-root", str(data_root), "--runs", str(tmp_path / "runs"),
            "--figures", str(tmp_path / "fig"), "--executor", "local", *SMOKE]
    assert vapt_main(argv) == 0
    out = capsys.readouterr().out
    assert len(list((tmp_path / "runs").rglob("result.json"))) == 2
    assert (tmp_path / "fig" / "backbone_scale.png").is_file()
    assert "F-scale: 2/2 runs done" in out and out.rstrip().endswith("F-scale: done")
    assert vapt_main(argv) == 0  # a rerun finds everything done and starts nothing
    again = capsys.readouterr().out
    # two sweeps, each a grid stage and a final stage (on FGVC the seed-42 final is the grid run)
    assert "submitted" not in again and again.count("1 of 1 run(s) already done; running 0") == 4


@pytest.mark.slow
def test_the_lens_item_finds_its_final_runs(data_root: Path, tmp_path: Path) -> None:
    argv = ["reproduce", "lens", "--data-root", str(data_root), "--runs", str(tmp_path / "runs"), "--figures",
            str(tmp_path / "fig"), "--executor", "debug", "--data", "vtab1k/cifar", *SMOKE]
    argv[argv.index("--epochs") + 1] = "1"
    assert vapt_main(argv) == 0
    assert len(list((tmp_path / "runs").rglob("result.json"))) == 6  # three methods: one grid run, one final run
    assert (tmp_path / "fig" / "lens" / "cifar" / "lens.csv").is_file()


def test_dry_run_lists_the_final_runs_once_the_grid_is_done(data_root: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from vapt.io import write_json_atomic
    from vapt.paper.reproduce import build_parser, plan_item, sweep_runs
    from vapt.run.config import run_dir, run_id

    runs = tmp_path / "runs"
    argv = ["reproduce", "F-scale", "--data-root", str(data_root), "--runs", str(runs), "--dry-run",
            "--data", "vtab1k/cifar", *SMOKE]
    sweeps, _ = plan_item(build_parser().parse_args(argv[1:]))
    for step in sweeps:  # the grid run of each sweep finished (written as a run would leave it)
        (config,) = sweep_runs(step)[0]
        config = config.resolved()
        write_json_atomic(run_dir(config) / "result.json", {"run_id": run_id(config), "config": config.to_dict(),
                                                             "final": {"val200": 50.0}, "status": "finished"})
    assert vapt_main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("done vtab1k-cifar/vit_test/") == 2 and out.count("todo vtab1k-cifar/vit_test/") == 2
    assert "train800val200-test/lr5_wd0.01_s42" in out  # the chosen setting's final run, now known
    assert "F-scale: 4 run(s) in 2 sweep(s): 2 already done, 2 to start now, 0 decided by the grid stages" in out
