"""Checked before work starts: a sweep with a typo launches nothing, a failed start leaves no run folder, and
running out of CPU or GPU memory is one `error:` line naming the sizes, with the run recorded as failed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vapt
from vapt.__main__ import main as vapt_main
from vapt.models.vit import PromptedViT
from vapt.run.config import TrainConfig, run_dir
from vapt.run.record import FAILED, RunRecord
from vapt.run.train import train

REPO = Path(__file__).parents[2]


def _sweep(data_root: Path, out: Path, *extra: str, method: str = "vapt", backbone: str = "vit_test") -> list[str]:
    return ["sweep", "--backbone", backbone, "--method", method, "--data", "vtab1k/cifar", "--data-root",
            str(data_root), "--epochs", "1", "--grid", "1:0", "--seeds", "42", "--device", "cpu", "--executor",
            "debug", "--out", str(out), *extra]


def _one_error(stderr: str, *named: str) -> str:
    """The one error line (ours, `error: ...`, or argparse's, `python -m vapt sweep: error: ...`)."""
    errors = [line for line in stderr.splitlines() if line.startswith("error: ") or ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    for text in named:
        assert text in errors[0], (text, errors[0])
    return errors[0]


@pytest.mark.parametrize(("change", "named"), [
    ({"method": "vaptt"}, "invalid choice: 'vaptt'"),
    ({"backbone": "vit_tset"}, "unknown backbone 'vit_tset'"),
    ({"extra": ("--set", "kernal_size=3")}, "kernal_size do not apply to method 'vapt'"),
    ({"extra": ("--num-tokens", "3"), "method": "linear"}, "num_tokens do not apply to method 'linear'"),
    ({"extra": ("--set", "prompt_dropout=1.5")}, "prompt_dropout must be a probability"),
    ({"extra": ("--weights", "missing.pth")}, "weights file 'missing.pth' not found"),
])
@pytest.mark.parametrize("dry_run", [True, False])
def test_sweep_checks_method_backbone_and_options_before_anything(
        data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture, change: dict, named: str,
        dry_run: bool) -> None:
    out = tmp_path / "runs"
    args = _sweep(data_root, out, *change.get("extra", ()), *(("--dry-run",) if dry_run else ()),
                  method=change.get("method", "vapt"), backbone=change.get("backbone", "vit_test"))
    assert _exit_status(args) == 2
    captured = capsys.readouterr()
    _one_error(captured.err, named)
    assert "todo" not in captured.out and "submitted" not in captured.out
    assert not out.exists()  # no --out folder, no run folder, no .lock


def test_sweep_checks_the_data_root_before_launching(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "runs"
    assert vapt_main(_sweep(tmp_path / "no-data", out)) == 2
    captured = capsys.readouterr()
    _one_error(captured.err, str(tmp_path / "no-data"))
    assert "submitted" not in captured.out
    assert list(out.iterdir()) == []  # --out was checked by writing into it; no run folder, no job folder


@pytest.mark.slow
def test_sweep_typo_through_the_command_line_exits_2(data_root: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "vapt", *_sweep(data_root, tmp_path / "runs", "--dry-run",
                                                                  method="vpt_depp")],
                          capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2, done.stderr
    _one_error(done.stderr, "invalid choice: 'vpt_depp'")
    assert "todo" not in done.stdout and not (tmp_path / "runs").exists()


def _exit_status(args: list[str]) -> int:
    """`python -m vapt ARGS` in this process: its exit status, argparse's exit included."""
    try:
        return vapt_main(args)
    except SystemExit as stop:
        return int(stop.code)


def _config(data_root: Path, out: Path, **fields: object) -> TrainConfig:
    values = dict(lr=1.0, wd=0.0, epochs=2, device="cpu", num_tokens=4, batch_size=16)
    values.update(fields)
    return TrainConfig("vit_test", "vapt", "vtab1k/cifar", str(data_root), out=str(out), **values)


def test_a_run_that_fails_to_start_leaves_no_folder(data_root: Path, tmp_path: Path, capsys) -> None:
    broken = tmp_path / "data"
    (broken / "vtab-1k" / "cifar").mkdir(parents=True)  # a task folder without split files
    out = tmp_path / "runs"
    args = ["train", "--backbone", "vit_test", "--method", "vapt", "--data", "vtab1k/cifar", "--data-root",
            str(broken), "--epochs", "1", "--lr", "1", "--wd", "0", "--device", "cpu", "--out", str(out)]
    assert vapt_main(args) == 2
    _one_error(capsys.readouterr().err)
    assert out.is_dir() and list(out.iterdir()) == []  # the run's folders (and .lock) are gone, --out stays


def test_a_failed_start_keeps_folders_that_hold_other_runs(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    train(_config(data_root, out, epochs=1, seed=1))
    neighbour = run_dir(_config(data_root, out, epochs=1, seed=1))
    with pytest.raises(vapt.errors.DataLayoutError):
        train(_config(tmp_path / "missing", out, epochs=1, seed=2))
    assert (neighbour / "result.json").is_file()
    assert sorted(p.name for p in neighbour.parent.iterdir()) == [neighbour.name]


CPU_OOM = ("DefaultCPUAllocator: can't allocate memory: you tried to allocate 40000000000 bytes. "
           "Error code 12 (Cannot allocate memory)")
CUDA_OOM = ("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79.10 GiB of which "
            "3.00 GiB is free.")


@pytest.mark.parametrize(("error", "named"), [
    (RuntimeError(CPU_OOM), ("out of CPU memory", "37.3 GiB")),
    (torch.OutOfMemoryError(CUDA_OOM), ("out of GPU memory", "20.00 GiB")),
])
def test_out_of_memory_in_training_is_one_line_and_a_failed_record(
        data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        error: RuntimeError, named: tuple[str, ...]) -> None:
    def forward(self: PromptedViT, images: torch.Tensor) -> torch.Tensor:
        raise error

    monkeypatch.setattr(PromptedViT, "forward", forward)
    out = tmp_path / "runs"
    args = ["train", "--backbone", "vit_test", "--method", "vapt", "--num-tokens", "4", "--data", "vtab1k/cifar",
            "--data-root", str(data_root), "--epochs", "2", "--batch-size", "16", "--lr", "1", "--wd", "0",
            "--device", "cpu", "--out", str(out)]
    assert vapt_main(args) == 2
    line = _one_error(capsys.readouterr().err, *named, "in epoch 1", "batch size 16",
                      "69 tokens per image (1 prefix + 4 prompts + 64 patches)", "lower --batch-size or --num-tokens")
    record = RunRecord.read(run_dir(_config(data_root, out)) / "result.json")
    assert record.status == FAILED and record.failure == "out_of_memory"
    assert record.error in line


def test_out_of_memory_while_building_the_model(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    def create_model(*args: object, **kwargs: object) -> None:
        raise RuntimeError(CPU_OOM)

    monkeypatch.setattr(vapt, "create_model", create_model)
    out = tmp_path / "runs"
    args = ["train", "--backbone", "vit_test", "--method", "vpt_deep", "--num-tokens", "100000", "--data",
            "vtab1k/cifar", "--data-root", str(data_root), "--epochs", "2", "--lr", "1", "--wd", "0", "--device",
            "cpu", "--out", str(out)]
    assert vapt_main(args) == 2
    _one_error(capsys.readouterr().err, "out of CPU memory while building the run", "37.3 GiB", "batch size 64",
               "100000 prompts per block", "lower --batch-size or --num-tokens")
    config = TrainConfig("vit_test", "vpt_deep", "vtab1k/cifar", str(data_root), out=str(out), lr=1.0, wd=0.0,
                         epochs=2, device="cpu", num_tokens=100000)
    record = RunRecord.read(run_dir(config) / "result.json")
    assert record.status == FAILED and record.failure == "out_of_memory"
