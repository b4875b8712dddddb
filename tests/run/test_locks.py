"""One process per run folder: real subprocesses against a run whose lock is held, and a killed sweep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vapt.io import write_json_atomic
from vapt.run.config import TrainConfig, run_dir, run_id
from vapt.run.lock import is_live, try_lock

REPO = Path(__file__).parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def _grid_run(data_root: Path, out: Path, epochs: int = 1) -> TrainConfig:
    return TrainConfig("vit_test", "linear", "vtab1k/cifar", str(data_root), out=str(out), lr=1.0, wd=0.0,
                       seed=42, epochs=epochs, device="cpu", train_split="train800").resolved()


def _sweep_args(data_root: Path, out: Path, epochs: int, executor: str) -> list[str]:
    return [sys.executable, "-m", "vapt", "sweep", "--backbone", "vit_test", "--method", "linear", "--data",
            "vtab1k/cifar", "--data-root", str(data_root), "--epochs", str(epochs), "--grid", "1:0", "--seeds", "7",
            "--device", "cpu", "--executor", executor, "--out", str(out)]


def _wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_second_process_on_a_locked_run_skips_with_a_message(data_root: Path, tmp_path: Path) -> None:
    config = _grid_run(data_root, tmp_path / "runs")
    directory = run_dir(config)
    directory.mkdir(parents=True)
    lock = try_lock(directory)  # this test process plays the process training the run
    assert lock is not None
    try:
        done = subprocess.run([sys.executable, "-m", "vapt", "train", "--backbone", "vit_test", "--method", "linear",
                               "--data", "vtab1k/cifar", "--data-root", str(data_root), "--epochs", "1", "--lr", "1",
                               "--wd", "0", "--device", "cpu", "--out", str(tmp_path / "runs")],
                              capture_output=True, text=True, cwd=REPO, env=ENV, timeout=300)
    finally:
        lock.release()
    assert done.returncode == 1, done.stderr
    assert "another process is training it now" in done.stderr and str(directory / ".lock") in done.stderr
    assert "Traceback" not in done.stderr
    assert not (directory / "checkpoint.pt").exists() and not (directory / "result.json").exists()


@pytest.mark.slow
def test_sweep_rerun_waits_for_a_live_run_and_never_trains_it_again(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    grid = _grid_run(data_root, out)
    directory = run_dir(grid)
    directory.mkdir(parents=True)
    lock = try_lock(directory)
    assert lock is not None
    sweep = subprocess.Popen(_sweep_args(data_root, out, 1, "debug"), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, cwd=REPO, env=ENV)
    try:
        lines = []
        deadline = time.monotonic() + 240
        while not any("waiting for 1 run(s) being trained by another process" in line for line in lines):
            assert time.monotonic() < deadline and sweep.poll() is None, "".join(lines)
            lines.append(sweep.stdout.readline())
        # the "other process" finishes its run, then lets go of the lock
        write_json_atomic(directory / "result.json", {
            "run_id": run_id(grid), "config": grid.to_dict(), "epochs": [], "final": {"val200": 55.0},
            "status": "finished", "wall_time_s": 123.0})
    finally:
        lock.release()
    rest, _ = sweep.communicate(timeout=300)
    output = "".join(lines) + rest
    assert sweep.returncode == 0, output
    assert f"run {run_id(grid)}" not in output  # the live run was never started a second time
    assert "chose lr 1 wd 0 (val200 55.00)" in output
    assert '"wall_time_s": 123.0' in (directory / "result.json").read_text()


@pytest.mark.slow
def test_killing_a_sweep_stops_its_local_jobs(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    directory = run_dir(_grid_run(data_root, out, epochs=400))
    sweep = subprocess.Popen(_sweep_args(data_root, out, 400, "local"), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, cwd=REPO, env=ENV, start_new_session=True)
    try:
        try:
            _wait_until(lambda: is_live(directory), 240, "the sweep's job to start training")
        finally:
            os.kill(sweep.pid, signal.SIGKILL)
            sweep.wait(timeout=60)
        _wait_until(lambda: not is_live(directory), 60, "the orphaned job to stop")
        assert not (directory / "result.json").exists()
    finally:  # whatever happened, leave no process of this test behind
        try:
            os.killpg(sweep.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
