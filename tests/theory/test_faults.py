"""Output faults and stops: one error line naming the path and the cause, earlier outputs intact, resumable stops."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from theory.config import CHECKPOINT_NAME
from theory.sample_efficiency import main

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = ["--families", "vpt", "--n", "300,600", "--replicates", "2", "--no-expressiveness", "--jobs", "1",
        "--bootstrap", "100"]
OUTPUTS = ["degenerate.csv", "fits.csv", "sample_complexity.csv", "sample_efficiency.png", "summary.csv"]


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, err
    return lines[0]


def _mount(*options: str, target: Path) -> bool:
    """Mount a small tmpfs at target (root only); False where mounting is not possible here."""
    target.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(target)],
                          capture_output=True, text=True)
    return proc.returncode == 0


def _umount(target: Path) -> None:
    subprocess.run(["umount", str(target)], capture_output=True)


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder this process cannot write in: a read-only tmpfs as root, a 0500 folder otherwise."""
    folder = tmp_path / "ro"
    if os.geteuid() != 0:
        folder.mkdir()
        folder.chmod(0o500)
        yield folder
        folder.chmod(0o700)
        return
    if not _mount("ro", "size=64k", target=folder):
        pytest.skip("running as root without permission to mount a read-only tmpfs here")
    yield folder
    _umount(folder)


@pytest.mark.parametrize("below", [False, True])
def test_read_only_output_is_one_error_line(read_only_folder, capsys, below):
    out = read_only_folder / "sub" / "run" if below else read_only_folder
    assert main([*TINY, "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(out) in line and ("read-only" in line or "permission denied" in line)


def test_output_under_proc_is_one_error_line(run_module):
    proc = run_module("theory.sample_efficiency", *TINY, "--out", "/proc/theory-run")
    assert proc.returncode == 2
    line = _one_error_line(proc.stderr)
    assert "/proc/theory-run" in line and "cannot write there" in line


def test_output_below_a_file_says_not_a_directory(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main([*TINY, "--out", str(tmp_path / "file" / "run")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "not a directory" in line and str(tmp_path / "file") in line


def test_a_failed_write_leaves_the_previous_outputs_as_a_set(tmp_path, capsys, monkeypatch):
    out = tmp_path / "res"
    assert main([*TINY, "--out", str(out)]) == 0
    before = {name: (out / name).read_bytes() for name in OUTPUTS}

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    import theory.figures

    monkeypatch.setattr(theory.figures, "plot_sample_efficiency", full_disk)
    capsys.readouterr()
    assert main([*TINY, "--seed", "5", "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "no space left" in line and "sample_efficiency.png" in line and "unchanged" in line
    assert sorted(p.name for p in out.iterdir()) == sorted([*OUTPUTS, CHECKPOINT_NAME])  # no staging folder left
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == before  # no new CSV beside the old figure
    monkeypatch.undo()
    capsys.readouterr()
    assert main([*TINY, "--seed", "5", "--out", str(out)]) == 0  # the kept fits resume: nothing refitted
    assert "resuming" in capsys.readouterr().out


def test_a_full_disk_is_one_error_line_and_keeps_earlier_files(tmp_path):
    disk = tmp_path / "disk"
    if os.geteuid() != 0 or not _mount("size=48k", target=disk):
        pytest.skip("needs root and tmpfs to fill a real disk; the monkeypatched test above covers the logic")
    try:
        out = disk / "res"
        out.mkdir()
        for name in OUTPUTS:
            (out / name).write_text("previous run\n")
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        proc = subprocess.run([sys.executable, "-m", "theory.sample_efficiency", *TINY, "--out", str(out)],
                              cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        line = _one_error_line(proc.stderr)
        assert "no space left" in line and str(out) in line
        assert all((out / name).read_text() == "previous run\n" for name in OUTPUTS)
        assert not [p for p in out.iterdir() if p.name.startswith(".")]
    finally:
        _umount(disk)


def _start(out: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    args = ["--families", "vapt", "--regimes", "over", "--n", "20000,40000", "--replicates", "20",
            "--no-expressiveness", "--bootstrap", "100", "--out", str(out), *extra]
    return subprocess.Popen([sys.executable, "-m", "theory.sample_efficiency", *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_fits(proc: subprocess.Popen, checkpoint: Path, timeout: float = 120) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout and proc.poll() is None:
        if checkpoint.exists() and checkpoint.read_text().count("\n") >= 1:
            return
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no fit was recorded within {timeout} s")


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_sigterm_says_what_was_saved_and_exits_143(tmp_path, jobs):
    out = tmp_path / "run"
    proc = _start(out, "--jobs", jobs)
    _wait_for_fits(proc, out / CHECKPOINT_NAME)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    line = _one_line(err)
    saved = (out / CHECKPOINT_NAME).read_text().count("\n")
    assert "SIGTERM" in line and f"{saved} finished fits are saved" in line and "same command" in line


@pytest.mark.slow
def test_a_second_ctrl_c_still_ends_with_one_line_and_130(tmp_path):
    out = tmp_path / "run"
    proc = _start(out, "--jobs", "2")
    _wait_for_fits(proc, out / CHECKPOINT_NAME)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    line = _one_line(err)
    assert "SIGINT" in line and "same command" in line


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]
