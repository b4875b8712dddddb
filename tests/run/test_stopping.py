"""Stopping `train` and `sweep` (SIGTERM, Ctrl-C twice): one line on what is saved, exit 143 / 130, resumable."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vapt.run import stopping
from vapt.run.config import TrainConfig, run_dir
from vapt.run.lock import is_live

REPO = Path(__file__).parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
EPOCHS = 500  # far more than a test waits for: the command is always stopped mid-run


def _train_args(data_root: Path, out: Path) -> list[str]:
    return ["train", "--backbone", "vit_test", "--method", "vapt", "--num-tokens", "2", "--data", "vtab1k/cifar",
            "--data-root", str(data_root), "--epochs", str(EPOCHS), "--batch-size", "32", "--lr", "1", "--wd", "0",
            "--device", "cpu", "--num-workers", "0", "--out", str(out)]


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vapt", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, env=ENV)


def _read_until(process: subprocess.Popen, prefix: str, timeout_s: float = 240) -> list[str]:
    """Read stdout lines until one starts with `prefix`; returns the lines read."""
    lines, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        assert line, f"the command ended before printing {prefix!r}: {lines[-5:]} {process.stderr.read()[-2000:]}"
        lines.append(line)
        if line.startswith(prefix):
            return lines
    raise AssertionError(f"no line starting with {prefix!r} within {timeout_s} s")


def _stop_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("stopped by ")]


def _config(data_root: Path, out: Path) -> TrainConfig:
    return TrainConfig("vit_test", "vapt", "vtab1k/cifar", str(data_root), out=str(out), lr=1.0, wd=0.0,
                       epochs=EPOCHS, batch_size=32, num_tokens=2, device="cpu", num_workers=0)


@pytest.mark.slow
def test_sigterm_ends_train_with_one_line_naming_the_checkpoint(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    process = _start(_train_args(data_root, out))
    _read_until(process, "epoch 2 ")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr
    (line,) = _stop_lines(stderr)
    checkpoint = run_dir(_config(data_root, out)) / "checkpoint.pt"
    assert str(checkpoint) in line and "same `train` command again to resume" in line, line
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert f"epoch {saved['epoch']} of {EPOCHS}" in line  # the line names the epoch the checkpoint holds
    assert not is_live(run_dir(_config(data_root, out)))


@pytest.mark.slow
def test_ctrl_c_twice_ends_train_with_one_line(data_root: Path, tmp_path: Path) -> None:
    process = _start(_train_args(data_root, tmp_path / "runs"))
    _read_until(process, "epoch 1 ")
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    (line,) = _stop_lines(stderr)
    assert line.startswith("stopped by Ctrl-C: ") and "same `train` command again to resume" in line


@pytest.mark.slow
def test_sigterm_ends_a_sweep_and_its_local_jobs(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    args = ["sweep", *_train_args(data_root, out)[1:]]
    for flag in ("--lr", "--wd"):  # the sweep takes its grid instead
        at = args.index(flag)
        del args[at:at + 2]
    process = _start([*args, "--grid", "1:0", "--seeds", "42", "--executor", "local", "--workers", "1"])
    _read_until(process, "submitted ")
    grid_run = run_dir(dataclasses.replace(_config(data_root, out), train_split="train800"))
    deadline = time.monotonic() + 240
    while not (grid_run / "checkpoint.pt").is_file():
        assert time.monotonic() < deadline, "the sweep's job wrote no checkpoint"
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr
    (line,) = _stop_lines(stderr)
    assert str(out) in line and "same `sweep` command again to resume" in line, line
    deadline = time.monotonic() + 30
    while is_live(grid_run):  # the local job ends with the sweep that started it
        assert time.monotonic() < deadline, "the sweep's local job kept running after the sweep was stopped"
        time.sleep(0.2)


def test_a_second_signal_while_the_first_unwinds_says_the_line_and_ends(monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture) -> None:
    exits: list[int] = []
    monkeypatch.setattr(stopping.os, "_exit", exits.append)
    monkeypatch.setattr(stopping, "_state", {"command": "train", "signum": None, "said": False, "saved": None})
    monkeypatch.setattr(stopping.signal, "signal", lambda *args: None)  # keep this test process's handlers
    with pytest.raises(stopping.Stopped), stopping.saving("epoch 3 is checkpointed"):
        stopping._handle(signal.SIGTERM, None)
    stopping._handle(signal.SIGINT, None)  # the second signal, while the first one unwinds
    assert exits == [143]
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["stopped by SIGTERM: epoch 3 is checkpointed; run the same `train` command again to resume"]
    stopping.say("train")  # the command's own handler comes later: nothing more is printed
    assert capsys.readouterr().err == ""
