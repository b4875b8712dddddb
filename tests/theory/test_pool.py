"""Pool workers exit when their parent dies; an --out that is a file is one clear error."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

PARENT = """
import sys, time
from theory.runner import make_pool
pool = make_pool(2)
pids = sorted(set(pool.submit(__import__("os").getpid).result() for _ in range(8)))
print(" ".join(map(str, pids)), flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:  # a zombie is as good as gone
        return handle.read().split(") ")[-1].split()[0] != "Z"


def test_workers_exit_when_the_parent_is_killed():
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", PARENT], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert pids and all(_alive(p) for p in pids)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in pids)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_out_that_is_a_file_is_one_error_line(tmp_path, run_module):
    target = tmp_path / "results.csv"
    target.write_text("keep me\n")
    proc = run_module("theory.sample_efficiency", "--out", str(target), "--n", "300,600", "--replicates", "2")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and str(target) in lines[0]
    assert target.read_text() == "keep me\n"
