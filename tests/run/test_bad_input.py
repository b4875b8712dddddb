"""Bad input through `python -m vapt ...`: one `error: ...` line naming the path or value, exit 2, no traceback."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vapt.run.config import TrainConfig, run_dir
from vapt.run.train import train

REPO = Path(__file__).parents[2]
# each case runs `python -m vapt` in a fresh interpreter (torch and timm imported anew): seconds per case
pytestmark = pytest.mark.slow


def vapt_cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m vapt ARGS` in a subprocess with one CPU thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "vapt", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=300)


def train_args(data_root: Path, out: Path, *extra: str, method: str = "linear") -> list[str]:
    return ["train", "--backbone", "vit_test", "--method", method, "--data", "vtab1k/cifar", "--data-root",
            str(data_root), "--epochs", "2", "--lr", "1", "--wd", "0", "--device", "cpu", "--out", str(out), *extra]


def assert_clean_error(done: subprocess.CompletedProcess, *named: str) -> str:
    """Exit 2, no traceback, and the error line names each of `named`; returns stderr."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    for text in named:
        assert text in errors[0], (text, errors[0])
    return errors[0]


def _config(data_root: Path, out: Path, **fields: object) -> TrainConfig:
    return TrainConfig("vit_test", "linear", "vtab1k/cifar", str(data_root), out=str(out), lr=1.0, wd=0.0,
                       epochs=2, device="cpu", **fields)


@pytest.mark.parametrize("where", ["a_file", "under_a_file", "proc"])
def test_unwritable_out_is_reported_before_any_model_is_built(data_root: Path, tmp_path: Path, where: str) -> None:
    (tmp_path / "a_file").write_text("kept")
    out = {"a_file": tmp_path / "a_file", "under_a_file": tmp_path / "a_file" / "runs",
           "proc": Path("/proc/vapt_runs")}[where]
    done = vapt_cli(*train_args(data_root, out))
    assert_clean_error(done, str(out), "--out")
    assert "run vtab1k" not in done.stdout  # nothing was built or trained
    assert (tmp_path / "a_file").read_text() == "kept"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root may write into a folder whose mode forbids it; the other variants cover --out")
def test_read_only_out_folder_is_reported(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "read_only"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert_clean_error(vapt_cli(*train_args(data_root, out)), str(out))
    finally:
        out.chmod(0o700)


def test_unwritable_sweep_and_figures_out(data_root: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("kept")
    sweep = ["sweep", "--backbone", "vit_test", "--method", "linear", "--data", "vtab1k/cifar", "--data-root",
             str(data_root), "--epochs", "1", "--grid", "1:0", "--seeds", "1", "--device", "cpu", "--executor",
             "debug", "--out", str(blocker / "runs")]
    assert_clean_error(vapt_cli(*sweep), str(blocker / "runs"))
    runs = tmp_path / "runs"
    runs.mkdir()
    assert_clean_error(vapt_cli("figures", "--runs", str(runs), "--out", str(blocker)), str(blocker))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign"])
def test_unreadable_checkpoint_is_kept_and_named_with_the_restart_flag(
    data_root: Path, tmp_path: Path, damage: str
) -> None:
    config = _config(data_root, tmp_path / "runs")
    checkpoint = run_dir(config) / "checkpoint.pt"
    if damage == "garbage":
        checkpoint.parent.mkdir(parents=True)
        checkpoint.write_bytes(b"not a checkpoint")
    elif damage == "foreign":
        checkpoint.parent.mkdir(parents=True)
        torch.save({"model": torch.zeros(2)}, checkpoint)
    else:
        assert train(config, stop_after=1).status == "interrupted"
        checkpoint.write_bytes(checkpoint.read_bytes()[:200])
    before = checkpoint.read_bytes()
    args = train_args(data_root, tmp_path / "runs")
    error = assert_clean_error(vapt_cli(*args), str(checkpoint), "--restart-unreadable")
    assert "weights_only" not in error
    assert checkpoint.read_bytes() == before  # kept in place, untouched

    done = vapt_cli(*args, "--restart-unreadable")
    assert done.returncode == 0, done.stderr
    assert (checkpoint.parent / "checkpoint.pt.unreadable").read_bytes() == before
    assert (checkpoint.parent / "result.json").is_file()


def test_truncated_result_record_on_train_is_kept_and_named(data_root: Path, tmp_path: Path) -> None:
    record = run_dir(_config(data_root, tmp_path / "runs")) / "result.json"
    record.parent.mkdir(parents=True)
    record.write_text('{"run_id": "vtab1k-cif')
    assert_clean_error(vapt_cli(*train_args(data_root, tmp_path / "runs")), str(record), "--restart-unreadable")
    assert record.read_text() == '{"run_id": "vtab1k-cif'


def test_sweep_with_a_truncated_result_record(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    grid_run = dataclasses.replace(_config(data_root, out, seed=42), epochs=1, train_split="train800")
    record = run_dir(grid_run) / "result.json"
    record.parent.mkdir(parents=True)
    record.write_text('{"run_id": "vtab1k-cifar/vit_test", "config": {"back')
    sweep = ["sweep", "--backbone", "vit_test", "--method", "linear", "--data", "vtab1k/cifar", "--data-root",
             str(data_root), "--epochs", "1", "--grid", "1:0", "--seeds", "1", "--device", "cpu", "--executor",
             "debug", "--out", str(out)]
    done = vapt_cli(*sweep)
    assert_clean_error(done, str(record), "--restart-unreadable")
    assert "JSONDecodeError" not in done.stderr and record.read_text().endswith('"back')

    done = vapt_cli(*sweep, "--restart-unreadable")
    assert done.returncode == 0, done.stderr
    assert (record.parent / "result.json.unreadable").read_text().endswith('"back')
    assert '"status": "finished"' in record.read_text()


def test_garbage_weights_file_gives_our_error_only(data_root: Path, tmp_path: Path) -> None:
    weights = tmp_path / "garbage.pth"
    weights.write_bytes(b"garbage bytes, not a checkpoint")
    error = assert_clean_error(vapt_cli(*train_args(data_root, tmp_path / "runs", "--weights", str(weights))),
                               str(weights))
    done_text = error
    assert "weights_only" not in done_text and "arbitrary code" not in done_text


def test_weights_of_another_architecture_name_the_mismatched_parameter(data_root: Path, tmp_path: Path) -> None:
    from timm.models.vision_transformer import VisionTransformer

    other = VisionTransformer(img_size=32, patch_size=4, embed_dim=32, depth=4, num_heads=4, num_classes=0)
    weights = tmp_path / "wider.pth"
    torch.save(other.state_dict(), weights)
    error = assert_clean_error(vapt_cli(*train_args(data_root, tmp_path / "runs", "--weights", str(weights))),
                               str(weights), "shape mismatch for")
    assert "cls_token (1, 1, 32) vs (1, 1, 64)" in error


def test_figures_with_a_missing_runs_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_runs"
    assert_clean_error(vapt_cli("figures", "--runs", str(missing), "--out", str(tmp_path / "figs")), str(missing))
    assert not (tmp_path / "figs").exists()


def test_empty_split_file(data_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    split = root / "vtab-1k/cifar/train800.txt"
    split.write_text("")
    assert_clean_error(vapt_cli(*train_args(root, tmp_path / "runs")), str(split), "no samples")


def test_class_count_that_disagrees_with_the_data(data_root: Path, tmp_path: Path) -> None:
    assert_clean_error(vapt_cli(*train_args(data_root, tmp_path / "runs", "--num-classes", "3")),
                       "num_classes=3", "100 classes")
    root = tmp_path / "data"
    shutil.copytree(data_root / "vtab-1k/cifar", root / "vtab-1k/mytask")
    args = train_args(root, tmp_path / "runs", "--num-classes", "3")
    args[args.index("vtab1k/cifar")] = "vtab1k/mytask"
    assert_clean_error(vapt_cli(*args), str(root / "vtab-1k/mytask/train800.txt"), "outside [0, 3)")


@pytest.mark.parametrize(("option", "value", "named"), [
    ("--batch-size", "0", "batch_size must be a positive integer, got 0"),
    ("--num-tokens", "0", "num_tokens must be a positive integer, got 0"),
    ("--image-size", "30", "image_size 30"),
])
def test_bad_numbers_name_the_value(data_root: Path, tmp_path: Path, option: str, value: str, named: str) -> None:
    done = vapt_cli(*train_args(data_root, tmp_path / "runs", option, value, method="vapt"))
    assert_clean_error(done, named)


def test_a_model_that_is_not_a_vit_or_swin(data_root: Path, tmp_path: Path) -> None:
    args = train_args(data_root, tmp_path / "runs", "--no-pretrained")
    args[args.index("vit_test")] = "resnet50"
    error = assert_clean_error(vapt_cli(*args), "resnet50")
    assert "Invalid pool type" not in error
