"""`python -m vapt lens` on tiny runs trained through the real `train` path; bad input exits 2 without a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.colors
import matplotlib.pyplot
import matplotlib.text
import numpy as np
import pandas as pd
import pytest
import torch

import vapt
from tests.float_bounds import gamma
from vapt.__main__ import main as vapt_main
from vapt.cli import DOCS_HELP
from vapt.config import prompted_methods
from vapt.data.fixtures import write_fixtures
from vapt.report.lens_command import load_run, run_images
from vapt.run.config import TrainConfig, run_dir
from vapt.run.train import train

REPO = Path(__file__).parents[2]
METHODS = prompted_methods()
# every test but the help check reads the module's trained runs (one per prompted method), minutes on a CPU
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """A data root and one finished 1-epoch run per prompt method (vit_test, 3 prompts) on the cifar fixture."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("lens-runs")
    write_fixtures(root / "data", tasks=("vtab1k/cifar",), num_classes=4)
    runs = {}
    for method in METHODS:
        config = TrainConfig(backbone="vit_test", method=method, data="vtab1k/cifar", data_root=str(root / "data"),
                             out=str(root / "runs"), lr=5.0, wd=0.001, epochs=1, batch_size=20, num_tokens=3,
                             num_classes=None, device="cpu", num_workers=0)
        record = train(config)
        assert record.status == "finished"
        runs[method] = run_dir(config)
    torch.set_num_threads(previous)
    return root / "data", runs


def lens_argv(runs: list[Path], data_root: Path, out: Path, *extra: str) -> list[str]:
    argv = ["lens"]
    for run in runs:
        argv += ["--run", str(run)]
    return argv + ["--data-root", str(data_root), "--out", str(out), "--split", "test", *extra]


def test_cli_writes_the_lens_table_and_figures(trained, tmp_path):
    data_root, runs = trained
    out = tmp_path / "lens"
    argv = lens_argv([runs[m] for m in METHODS], data_root, out, "--images", "6", "--device", "cpu")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "vapt", *argv], capture_output=True, text=True, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr
    assert "VPT-Deep: prompt mass" in done.stdout
    names = sorted(p.name for p in out.iterdir())
    stems = ("lens_dependence", "lens_effective_prompts", "lens_prompt_mass")
    assert names == sorted(["lens.csv"] + [f"{s}.{x}" for s in stems for x in ("png", "pdf")])
    table = pd.read_csv(out / "lens.csv")
    assert list(table["run"].unique()) == ["VPT-Shallow", "VPT-Deep", "VAPT"]
    assert len(table) == 3 * 4 * 4 * 2  # runs x layers x heads x query kinds (vit_test: depth 4, 4 heads)
    assert (table["images"] == 6).all() and (table["num_prompts"] == 3).all()
    assert np.abs(table[["prompt_mass", "prefix_mass", "patch_mass"]].sum(axis=1) - 1).max() < 1e-5
    deep = table[table["method"] == "vpt_deep"]
    assert (deep["dependence"] == 0).all()
    shallow = table[table["method"] == "vpt_shallow"]
    assert (shallow[shallow["layer"] == 0]["dependence"] == 0).all()
    assert (shallow[shallow["layer"] > 0]["dependence"] > 0).all()

    # the command's numbers are the library's on the rebuilt model and the same images
    model, record = load_run(runs["vapt"])
    images = run_images(record, data_root, "test", 6, 32)
    expected = vapt.gate_mass(model, images)
    measured = table[table["method"] == "vapt"].reset_index(drop=True)
    # float32 sums of at most 68 probabilities per query (vit_test: class token, 3 prompts, 64 patches)
    np.testing.assert_allclose(measured["prompt_mass"], expected["prompt_mass"], atol=gamma(1 + 3 + 64), rtol=0)
    dependence = vapt.prompt_dependence(model, images)
    merged = measured.drop_duplicates("layer").set_index("layer")["dependence"]
    np.testing.assert_allclose(merged.to_numpy(), dependence["dependence"].to_numpy(), equal_nan=True, atol=1e-9)


def test_a_rebuilt_run_reproduces_its_recorded_accuracy(trained):
    from torch.utils.data import DataLoader

    from vapt.data import build_dataset, parse_data
    from vapt.run.train import evaluate

    data_root, runs = trained
    for method in METHODS:
        model, record = load_run(runs[method])
        dataset = build_dataset(parse_data("vtab1k/cifar"), data_root, "val200", image_size=32)
        accuracy = evaluate(model, DataLoader(dataset, batch_size=20), torch.device("cpu"))
        assert accuracy == record.final["val200"]
        torch.manual_seed(record.config["seed"])  # how `train` draws a backbone that has no weights file
        trained_backbone = vapt.create_model("vit_test", method, 100, num_tokens=3).backbone.state_dict()
        for name, tensor in model.backbone.state_dict().items():
            assert torch.equal(tensor, trained_backbone[name]), name


def test_grad_cam_and_the_lens_rebuild_the_same_model_without_touching_the_random_state(trained):
    from vapt.report.runs import load_run_model

    _, runs = trained
    for method in METHODS:
        lens_model, _ = load_run(runs[method])
        torch.manual_seed(123)
        state = torch.random.get_rng_state()
        cam_model = load_run_model(runs[method])
        assert torch.equal(torch.random.get_rng_state(), state)
        cam_state = cam_model.state_dict()
        for name, tensor in lens_model.state_dict().items():
            assert torch.equal(tensor, cam_state[name]), (method, name)


def test_figures_of_data_that_is_not_the_papers_carry_no_paper_dataset_title(trained, tmp_path):
    from vapt.report import lens_figures
    from vapt.report.figures import DataSource
    from vapt.report.lens_command import lens_table

    data_root, runs = trained
    table = lens_table([runs[m] for m in METHODS], data_root, images=4, device="cpu")
    fixture = DataSource("FIXTURE (random images in the VTAB-1K layout)", paper_datasets=False)
    for make in (lens_figures.prompt_mass_figure, lens_figures.effective_prompts_figure):
        texts = [t.get_text() for t in make(table, source=fixture).findobj(matplotlib.text.Text)]
        assert not any("CIFAR-100" in t for t in texts) and any("task cifar" in t for t in texts)
        assert any(fixture.label in t for t in texts)
        paper = [t.get_text() for t in make(table, source=DataSource("runs")).findobj(matplotlib.text.Text)]
        assert any("CIFAR-100" in t for t in paper)
    legend = lens_figures.dependence_figure(table.drop_duplicates(["run", "layer"]), source=fixture).axes[0]
    colours = {line.get_label(): matplotlib.colors.to_hex(line.get_color()) for line in legend.get_lines()}
    assert colours == {vapt.METHODS[m].label: vapt.METHODS[m].colour for m in METHODS}
    matplotlib.pyplot.close("all")


def test_without_data_root_each_run_reads_its_recorded_data(trained, tmp_path):
    data_root, runs = trained
    given = tmp_path / "given"
    assert vapt_main(lens_argv([runs["vapt"]], data_root, given, "--images", "3")) == 0
    argv = [a for a in lens_argv([runs["vapt"]], data_root, tmp_path / "recorded", "--images", "3")
            if a not in ("--data-root", str(data_root))]
    assert "--data-root" not in argv and vapt_main(argv) == 0
    pd.testing.assert_frame_equal(pd.read_csv(given / "lens.csv"), pd.read_csv(tmp_path / "recorded" / "lens.csv"))
    assert vapt_main(lens_argv([runs["vapt"]], tmp_path / "no-data", tmp_path / "bad", "--images", "3")) == 2


def test_help_ends_with_the_documentation_line(capsys):
    with pytest.raises(SystemExit):
        vapt_main(["lens", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert out.endswith(DOCS_HELP) and "docs/lens.md" in out


def test_a_run_without_prompts_gets_zero_prompt_mass_and_no_dependence(trained, tmp_path):
    data_root, runs = trained
    linear = tmp_path / "linear"
    shutil.copytree(runs["vpt_deep"], linear)
    record = json.loads((linear / "result.json").read_text())
    record["config"].update(method="linear", num_tokens=None)
    (linear / "result.json").write_text(json.dumps(record))
    model = vapt.create_model("vit_test", "linear", 100)
    model.save_trainable(linear / "trainable.pt")
    assert vapt_main(lens_argv([linear], data_root, tmp_path / "out", "--images", "4")) == 0
    table = pd.read_csv(tmp_path / "out" / "lens.csv")
    assert (table["prompt_mass"] == 0).all() and table["dependence"].isna().all()
    assert not (tmp_path / "out" / "lens_dependence.png").exists()


def _broken_runs(trained, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    _, runs = trained
    no_weights = tmp_path / "no-weights"
    shutil.copytree(runs["vapt"], no_weights)
    (no_weights / "trainable.pt").unlink()
    no_record = tmp_path / "no-record"
    no_record.mkdir()
    swin = tmp_path / "swin"
    shutil.copytree(runs["vpt_deep"], swin)
    record = json.loads((swin / "result.json").read_text())
    record["config"]["backbone"] = "swin_test"
    (swin / "result.json").write_text(json.dumps(record))
    return {
        "missing folder": (tmp_path / "does-not-exist", "does not exist"),
        "no record": (no_record, "has no result.json"),
        "no trainable.pt": (no_weights, "has no trainable.pt"),
        "Swin run": (swin, "Swin"),
    }


@pytest.mark.parametrize("case", ["missing folder", "no record", "no trainable.pt", "Swin run"])
def test_bad_runs_give_one_error_line_and_exit_2(case, trained, tmp_path, capsys):
    data_root, runs = trained
    folder, message = _broken_runs(trained, tmp_path)[case]
    out = tmp_path / "out"
    out.mkdir()
    (out / "lens.csv").write_text("earlier result\n")
    code = vapt_main(lens_argv([runs["vpt_deep"], folder], data_root, out))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err and str(folder) in err
    assert (out / "lens.csv").read_text() == "earlier result\n"  # nothing written is lost
    assert sorted(p.name for p in out.iterdir()) == ["lens.csv"]


def test_bad_input_through_the_interpreter_has_no_traceback(trained, tmp_path):
    data_root, _ = trained
    argv = lens_argv([tmp_path / "missing-run"], data_root, tmp_path / "out")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "vapt", *argv], capture_output=True, text=True, cwd=REPO, env=env)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.startswith("error: run folder")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, message", [(("--split", "nope"), "split 'nope'"), (("--images", "0"), "--images")])
def test_bad_options_name_the_value(extra, message, trained, tmp_path, capsys):
    data_root, runs = trained
    assert vapt_main(lens_argv([runs["vpt_deep"]], data_root, tmp_path / "out", *extra)) == 2
    assert message in capsys.readouterr().err
