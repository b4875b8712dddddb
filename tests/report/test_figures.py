"""Figures are drawn from data and saved as PNG and PDF; figures the data cannot support say why."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from vapt.paper import draw
from vapt.report import figures as F
from vapt.report import gradcam
from vapt.report import paper as P
from vapt.report import tables as T


@pytest.fixture
def paper() -> pd.DataFrame:
    return P.paper_results()


def _row(method, task, mean, benchmark="vtab1k", fraction=1.0, num_tokens=10, backbone="vit_test", **extra):
    return dict(backbone=backbone, method=method, benchmark=benchmark, group="custom", task=task,
                fraction=fraction, num_tokens=num_tokens, mean=mean, std=0.5, n_seeds=2, **extra)


def _written(fig, out_dir, name):
    paths = F.save_figure(fig, out_dir, name)
    assert sorted(p.name for p in paths) == [f"{name}.pdf", f"{name}.png"]
    for path in paths:
        assert path.parent == out_dir and path.stat().st_size > 1000
    assert (out_dir / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert (out_dir / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
    assert not [p for p in out_dir.iterdir() if p.name.endswith(".tmp")]


def test_low_data_figure(tmp_path, paper):
    tasks = pd.DataFrame([_row(m, "digits", 50 + 10 * i + 5 * (m == "vapt"), benchmark="fgvc", fraction=f)
                          for m in ("vpt_deep", "vapt") for i, f in enumerate((0.1, 0.3, 1.0))])
    _written(F.low_data_figure(tasks, paper), tmp_path, "low_data")


def test_low_data_figure_needs_two_fractions(paper):
    tasks = pd.DataFrame([_row("vapt", "digits", 50.0)])
    with pytest.raises(F.NotDrawable, match="two or more training fractions"):
        F.low_data_figure(tasks, paper)


def test_figures_from_other_data_carry_no_paper_dataset_title_and_say_their_source(paper):
    tasks = pd.DataFrame([_row(m, "cub", 80 + i, benchmark="fgvc", backbone=b)
                          for i, b in enumerate(("vit_b16_in21k", "vit_l16_in21k")) for m in ("vpt_deep", "vapt")])
    real = F.scale_figure(tasks, paper, source=F.DataSource("runs under runs"))
    assert "Ours: CUB-200-2011" in [ax.get_title() for ax in real.axes]
    fixture = F.scale_figure(tasks, paper, source=F.DataSource("SMOKE runs", paper_datasets=False))
    titles = [ax.get_title() for ax in fixture.axes]
    assert "Ours: task cub" in titles and not any("CUB-200" in t for t in titles)
    assert "data: SMOKE runs" in [t.get_text() for t in fixture.texts]


def test_scale_figure(tmp_path, paper):
    tasks = pd.DataFrame([_row(m, "cub", 80 + i, benchmark="fgvc", backbone=b)
                          for i, b in enumerate(("vit_b16_in21k", "vit_l16_in21k")) for m in ("vpt_deep", "vapt")])
    _written(F.scale_figure(tasks, paper), tmp_path, "backbone_scale")


@pytest.mark.slow
def test_ablation_figure_and_its_panels(tmp_path):
    rows = [_row(m, "digits", 60 + n, num_tokens=n) for m in ("vpt_deep", "vapt") for n in (1, 5, 10)]
    rows += [_row("vapt", "digits", 60 + k, kernel_size=k) for k in (3, 4)]
    rows += [_row("vapt", "digits", 50, conv=False), _row("vapt", "digits", 52, projector=False)]
    tasks = pd.DataFrame(rows)
    kernel = F.ablation_rows(tasks, ("kernel_size",))
    assert sorted(kernel["kernel_size"].astype(int)) == [2, 3, 4]
    assert set(kernel["num_tokens"]) == {10}  # other settings held at the varied runs' values
    parts = F.ablation_rows(tasks, ("conv", "projector"))
    assert set(parts["variant"]) == {"VAPT", "w/o conv", "w/o feature\nprojector"}
    assert F.ablation_rows(tasks[tasks.method == "vpt_deep"], ("kernel_size",)) is None
    _written(F.ablation_figure(tasks), tmp_path, "ablations")


@pytest.mark.slow
def test_efficiency_figure(tmp_path, paper):
    bench = pd.DataFrame(dict(method=["linear", "vpt_deep", "vapt"], step_time_s=[0.1, 0.2, 0.21],
                              eval_images_per_s=[100, 90, 88], peak_memory_mb=[10, 20, 21],
                              gflops_per_image=[1.0, 1.2, 1.2072], trainable_params=[100, 10_000, 2_000]))
    assert F._flops_increase(bench.set_index("method")) == pytest.approx(0.6)
    _written(F.efficiency_figure(bench, paper), tmp_path, "efficiency")


def test_theory_figure(tmp_path):
    summary = pd.DataFrame(dict(family=["vpt", "vapt"], fitted_atoms=[2, 2], regime=["exact", "exact"],
                                metric=["D1", "D1"], slope=[-0.5, -0.49], ci_low=[-0.6, -0.55],
                                ci_high=[-0.4, -0.43], predicted=[-0.5, -0.5], verdict=["consistent"] * 2))
    _written(F.theory_figure(summary), tmp_path, "theory")
    with pytest.raises(F.NotDrawable, match="slope"):
        F.theory_figure(summary.drop(columns="slope"))


def test_gradcam_reshape_drops_prefix_and_prompt_tokens():
    import vapt

    model = vapt.create_model("vit_test", "vapt", 4, num_tokens=3)
    tokens = torch.randn(2, 1 + 3 + 64, 64)
    maps = gradcam.vit_reshape_transform(model)(tokens)
    assert maps.shape == (2, 64, 8, 8)
    assert torch.equal(maps[1, :, 0, 1], tokens[1, 1 + 3 + 1])
    assert torch.equal(maps[0, :, 7, 7], tokens[0, -1])


def test_gradcam_maps_and_grid(tmp_path):
    import vapt

    torch.manual_seed(0)
    images = torch.randn(3, 3, 32, 32)
    maps = {}
    for method in ("vpt_deep", "vapt"):
        model = vapt.create_model("vit_test", method, 4, num_tokens=2)
        cams = gradcam.gradcam_maps(model, images)
        assert cams.shape == (3, 32, 32)
        assert np.isfinite(cams).all() and cams.min() >= 0 and cams.max() <= 1 + 1e-6
        maps[method] = cams
    pixels = np.random.default_rng(0).random((3, 32, 32, 3))
    _written(F.gradcam_figure(pixels, maps, titles=["a", "b", "c"]), tmp_path, "gradcam")


def test_figures_command_skips_everything_without_runs(tmp_path, capsys):
    (tmp_path / "none").mkdir()
    assert draw.main(["--runs", str(tmp_path / "none"), "--out", str(tmp_path / "figs")]) == 0
    out = capsys.readouterr().out
    for name in ("low_data", "scale", "gradcam", "ablations", "efficiency", "theory"):
        assert f"skipped {name}:" in out
    assert not (tmp_path / "figs").exists() or not list((tmp_path / "figs").iterdir())


def _result(folder, method, data, value, split="test", train_split="train800val200", **config):
    folder.mkdir(parents=True)
    record = {
        "run_id": folder.name, "status": "finished", "final": {split: value}, "wall_time_s": 2.0,
        "params": {"prompt": 100, "head": 10, "backbone": 10_000, "trainable": 110},
        "method_config": {"method": method, "num_tokens": 10},
        "config": {"backbone": "vit_test", "method": method, "data": data, "data_root": "x", "lr": 1.0, "wd": 0.0,
                   "seed": 42, "epochs": 2, "batch_size": 8, "fraction": 1.0, "train_split": train_split,
                   "eval_splits": [split], "num_tokens": 10, **config},
    }
    (folder / "result.json").write_text(json.dumps(record))


def test_table_command_writes_csv_and_markdown(tmp_path, capsys):
    _result(tmp_path / "runs" / "a", "vapt", "vtab1k/cifar", 71.0)
    _result(tmp_path / "runs" / "b", "vpt_deep", "vtab1k/cifar", 65.0)
    assert T.main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "long.csv"),
                   "--markdown", str(tmp_path / "tables.md"), "--latex", str(tmp_path / "t1.tex")]) == 0
    long = pd.read_csv(tmp_path / "long.csv")
    assert set(long["method"]) == {"vapt", "vpt_deep"} and set(long["value"]) == {71.0, 65.0}
    markdown = (tmp_path / "tables.md").read_text()
    assert "| VAPT | ours (vit_test) |" in markdown and "71.0" in markdown
    assert "CIFAR-100" in (tmp_path / "t1.tex").read_text()
    assert "vapt" in capsys.readouterr().out
