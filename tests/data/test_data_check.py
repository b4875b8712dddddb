"""`python -m vapt data check`: layout, sizes against the benchmark's, classes, unreadable images, a manifest."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import private_copy
from vapt.__main__ import main as vapt_main
from vapt.data.check import VTAB_TEST_SIZES, check_data_root, compare_manifests
from vapt.data.vtab import VTAB_TASKS

REPO = Path(__file__).parents[2]


@pytest.fixture
def data_root(fixture_roots: Callable[..., Path], tmp_path: Path) -> Path:
    """A private copy of the cifar + cub fixtures with 3 classes."""
    return private_copy(fixture_roots(num_classes=3), tmp_path)


def test_a_clean_copy_reports_sizes_classes_and_missing_tasks(data_root: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "manifest.json"
    assert vapt_main(["data", "check", "--data-root", str(data_root), "--out", str(out)]) == 0
    manifest = json.loads(out.read_text())
    assert set(manifest["datasets"]) == {"vtab1k/cifar", "fgvc/cub"}
    assert len(manifest["missing"]) == len(VTAB_TASKS) - 1 + 4 and "vtab1k/dtd" in manifest["missing"]
    train = manifest["datasets"]["vtab1k/cifar"]["splits"]["train800"]
    assert (train["images"], train["expected_images"], train["size_matches"]) == (12, 800, False)
    assert train["classes"] == 3 and train["missing_classes"] == list(range(3, 100))
    assert train["image_sizes"] == {"32x32": 12} and len(train["sha256"]) == 64
    assert manifest["datasets"]["vtab1k/cifar"]["splits"]["test"]["expected_images"] == VTAB_TEST_SIZES["cifar"]
    assert manifest["datasets"]["fgvc/cub"]["splits"]["val"]["expected_images"] == 600
    assert all(d["status"] == "ok" and d["warnings"] == [] for d in manifest["datasets"].values())
    text = capsys.readouterr().out
    assert "train800        12 images (benchmark: 800, DIFFERS (warning)), 3/100 classes" in text
    assert "not found (22)" in text
    # the VTAB test sizes are labelled as the commonly used ones; a different count is a warning, not a problem
    assert f"(commonly used VTAB test size: {VTAB_TEST_SIZES['cifar']}, DIFFERS (warning))" in text


def test_problems_are_named_and_fail_the_check(data_root: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    task = data_root / "vtab-1k" / "cifar"
    (task / "images" / "val200_00001.png").write_bytes(b"not a png")
    (task / "images" / "test_00002.png").unlink()
    with open(task / "train800.txt", "a", encoding="utf-8") as handle:
        handle.write("images/train800_00000.png seven\nimages/train800_00001.png 250\n")
    (data_root / "cub" / "val.json").unlink()
    out = tmp_path / "manifest.json"
    assert vapt_main(["data", "check", "--data-root", str(data_root), "--out", str(out)]) == 1
    splits = json.loads(out.read_text())["datasets"]["vtab1k/cifar"]["splits"]
    assert splits["val200"]["problems"]["unreadable"] == 1
    assert splits["val200"]["examples"]["unreadable"][0].startswith("images/val200_00001.png")
    assert splits["test"]["problems"]["missing_files"] == 1 and splits["train800"]["problems"]["malformed"] == 1
    assert splits["train800"]["problems"]["label_out_of_range"] == 1
    cub = json.loads(out.read_text())["datasets"]["fgvc/cub"]
    assert cub["missing_splits"] == ["val"] and cub["status"] == "problems"
    text = capsys.readouterr().out
    assert "MISSING split file val.json" in text and "PROBLEMS: 1 unreadable" in text


def test_two_copies_compare_in_one_command(data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    theirs = tmp_path / "theirs"
    shutil.copytree(data_root, theirs)
    mine_file, their_file = tmp_path / "mine.json", tmp_path / "theirs.json"
    assert vapt_main(["data", "check", "--data-root", str(theirs), "--out", str(their_file), "--hash-images"]) == 0
    argv = ["data", "check", "--data-root", str(data_root), "--out", str(mine_file), "--hash-images",
            "--compare", str(their_file)]
    assert vapt_main(argv) == 0
    assert f"same as {their_file}" in capsys.readouterr().out
    lines = (theirs / "vtab-1k" / "cifar" / "val200.txt").read_text().splitlines()
    (theirs / "vtab-1k" / "cifar" / "val200.txt").write_text("\n".join(lines[:-1]) + "\n")
    differences = compare_manifests(check_data_root(data_root), check_data_root(theirs))
    assert any(d.startswith("vtab1k/cifar val200: images differs (ours 6, theirs 5)") for d in differences)
    assert any("val200: sha256 differs" in d for d in differences)


def test_bad_input_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert vapt_main(["data", "check", "--data-root", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data root") and "does not exist" in err and err.count("\n") == 1
    (tmp_path / "bad.json").write_text("[1, 2]")
    argv = ["data", "check", "--data-root", str(tmp_path), "--out", str(tmp_path / "m.json"), "--compare",
            str(tmp_path / "bad.json")]
    assert vapt_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --compare") and "not a readable data manifest" in err
    assert not (tmp_path / "m.json").exists()


def _drop_class(split_file: Path, label: int) -> None:
    lines = [line for line in split_file.read_text().splitlines() if not line.endswith(f" {label}")]
    split_file.write_text("\n".join(lines) + "\n")


def test_modes_sizes_tiny_images_and_untrained_classes_are_reported(data_root: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    task = data_root / "vtab-1k" / "cifar"
    Image.new("RGB", (1, 1)).save(task / "images" / "train800_00000.png")
    Image.fromarray(np.full((32, 32), 60000, dtype=np.uint16)).save(task / "images" / "train800_00001.png")
    _drop_class(task / "train800.txt", 2)
    out = tmp_path / "manifest.json"
    assert vapt_main(["data", "check", "--data-root", str(data_root), "--out", str(out)]) == 0  # warnings only
    cifar = json.loads(out.read_text())["datasets"]["vtab1k/cifar"]
    train = cifar["splits"]["train800"]
    assert train["image_modes"] == {"RGB": 7, "I;16": 1} and train["image_sizes"] == {"32x32": 7, "1x1": 1}
    assert train["smaller_than_patch"] == 1
    assert train["examples"]["smaller_than_patch"] == ["images/train800_00000.png (1x1)"]
    assert cifar["status"] == "ok"
    warnings = cifar["warnings"]
    assert any(w.startswith("train800: 1 image(s) smaller than a 16 px patch") for w in warnings)
    assert "train800: 1 I;16 image(s) of more than 8 bits, scaled to 8 bits" in warnings
    assert any(w.startswith("val200: 1 class(es) absent from train800 (2)") for w in warnings)
    assert not any(w.startswith("test:") for w in warnings)  # train800val200 still holds class 2 (from val200)
    text = capsys.readouterr().out
    assert "  warning: val200: 1 class(es) absent from train800 (2)" in text
    assert "image modes: RGB 7, I;16 1" in text
    assert check_data_root(data_root, patch_size=1)["datasets"]["vtab1k/cifar"]["splits"]["train800"][
        "smaller_than_patch"] == 0


def test_an_image_without_an_8_bit_scale_is_a_problem(data_root: Path, tmp_path: Path) -> None:
    task = data_root / "vtab-1k" / "cifar"
    Image.fromarray(np.zeros((32, 32), dtype=np.float32)).save(task / "images" / "floats.tif")
    with open(task / "val200.txt", "a", encoding="utf-8") as handle:
        handle.write("images/floats.tif 1\n")
    out = tmp_path / "manifest.json"
    assert vapt_main(["data", "check", "--data-root", str(data_root), "--out", str(out)]) == 1
    val = json.loads(out.read_text())["datasets"]["vtab1k/cifar"]["splits"]["val200"]
    assert val["problems"]["unreadable"] == 1 and "floats.tif: PIL mode F" in val["examples"]["unreadable"][0]


@pytest.mark.slow
def test_train_prints_the_data_warnings_first(data_root: Path, tmp_path: Path) -> None:
    task = data_root / "vtab-1k" / "cifar"
    Image.new("L", (2, 3)).save(task / "images" / "train800_00000.png")
    _drop_class(task / "train800.txt", 2)
    argv = ["train", "--backbone", "vit_test", "--method", "linear", "--data", "vtab1k/cifar", "--data-root",
            str(data_root), "--out", str(tmp_path / "runs"), "--epochs", "1", "--batch-size", "8", "--device", "cpu",
            "--no-pretrained", "--lr", "1", "--wd", "0"]
    done = subprocess.run([sys.executable, "-m", "vapt", *argv], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert warnings[0].startswith("warning: train800: 1 image(s) smaller than a 4 px patch on a side")
    assert warnings[1].startswith("warning: val200: 1 class(es) absent from train800 (2)")
