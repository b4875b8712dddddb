"""A smoke sweep through `--executor slurm` on a real cluster (`scripts/slurm-cluster start` makes one here).

Skipped, with the reason, where there is no `sbatch` or no cluster answers.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vapt.data.fixtures import write_fixtures
from vapt.run.record import RunRecord

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "slurm-cluster"
CONTROLLER_PID = Path("/run/slurm/slurmctld.pid")  # where scripts/slurm-cluster keeps it
# About 0.15 s each on vit_test. A cancelled job keeps training until Slurm kills it: submitit ignores the SIGTERM
# that scancel sends (it keeps that signal for requeueing), so the kill comes KillWait (2 s in scripts/slurm-cluster)
# plus srun's own step wait later, about 30 epochs here. 100 epochs leave the cancelled run ten seconds from its end.
EPOCHS = 100


def _no_cluster() -> str | None:
    if shutil.which("sbatch") is None:
        return "sbatch is not on PATH (no Slurm here; `scripts/slurm-cluster start` brings one up as root)"
    try:
        answer = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 30 s"
    states = answer.stdout.split()
    if answer.returncode != 0 or not any(s.rstrip("*~#") in ("idle", "mixed", "allocated") for s in states):
        return f"no Slurm node is up (sinfo: {answer.stderr.strip() or ' '.join(states) or 'no nodes'})"
    return None


@pytest.fixture(scope="module")
def cluster() -> None:
    reason = _no_cluster()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slurm_data")
    write_fixtures(root, tasks=("vtab1k/cifar", "fgvc/cub"))
    return root


def _sweep(data_root: Path, out: Path, background: bool = False,
           extra: tuple[str, ...] | list[str] = ()) -> subprocess.CompletedProcess | subprocess.Popen:
    # the jobs run `sys.executable` with this environment (sbatch exports it): the project on PYTHONPATH
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "vapt", "sweep", "--backbone", "vit_test", "--method", "vpt_deep",
            "--num-tokens", "2", "--data", "vtab1k/cifar", "--data-root", str(data_root), "--out", str(out),
            "--epochs", str(EPOCHS), "--eval-every", str(EPOCHS), "--batch-size", "8", "--grid", "0.5:0.01",
            "--seeds", "42", "--device", "cpu", "--executor", "slurm", "--gpus-per-node", "0",
            "--cpus-per-task", "1", "--mem", "1G", "--timeout-min", "10", *extra]
    if background:
        return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _logged_jobs(out: Path) -> set[str]:
    """The Slurm job ids (`12`, or `12_3` for array tasks) whose submitit logs are in `out`."""
    return {p.name[: -len("_0_log.out")] for p in (out / ".submitit").glob("*_0_log.out")}


def _records(out: Path) -> dict[str, RunRecord]:
    return {RunRecord.read(p).run_id: RunRecord.read(p) for p in out.rglob("result.json")}


@pytest.fixture(scope="module")
def reference(cluster: None, data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted sweep through Slurm: one grid run, then one final run."""
    out = tmp_path_factory.mktemp("slurm_reference")
    done = _sweep(data_root, out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_runs_are_slurm_jobs_and_a_rerun_submits_nothing(reference: Path, data_root: Path) -> None:
    records = _records(reference)
    assert len(records) == 2 and all(r.status == "finished" for r in records.values())
    assert {r.executor for r in records.values()} == {"slurm"}
    job_ids = {r.slurm_job_id for r in records.values()}
    assert len(job_ids) == 2 and all(job_ids)
    # one run per stage: submitit submits it as a plain job (an array only for several runs)
    assert {r.slurm_array_index for r in records.values()} == {None}
    assert job_ids == _logged_jobs(reference)  # each run's record names the job whose log is in --out

    again = _sweep(data_root, reference)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "submitted" not in again.stdout and again.stdout.count("already done; running 0") == 2
    assert {k: r.to_dict() for k, r in _records(reference).items()} == {k: r.to_dict() for k, r in records.items()}


def test_a_cancelled_task_resumes_to_the_same_metrics(reference: Path, data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    sweep = _sweep(data_root, out, background=True)
    try:
        deadline = time.monotonic() + 300
        while not list(out.rglob("checkpoint.pt")) and time.monotonic() < deadline and sweep.poll() is None:
            time.sleep(0.2)
        (cancelled,) = _logged_jobs(out)
        subprocess.run(["scancel", cancelled], check=True, timeout=60)
        _, err = sweep.communicate(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert not list(out.rglob("result.json")), f"the run finished before Slurm killed it; raise EPOCHS ({EPOCHS})"
    assert sweep.returncode == 2, err[-3000:]
    assert f"Slurm job {cancelled} ended (cancelled) without a result" in err
    assert "did not finish" in err and "run the same command again to resume them" in err

    resumed = _sweep(data_root, out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    logs = "".join(p.read_text() for p in (out / ".submitit").glob("*_log.out"))
    assert "resuming" in logs and "after epoch" in logs
    records, expected = _records(out), _records(reference)
    assert records.keys() == expected.keys()
    for key, record in records.items():
        assert record.final == expected[key].final
        assert record.epochs == expected[key].epochs  # every epoch's loss, bit for bit
    grid = next(r for r in records.values() if "train800-val200" in r.run_id)
    assert grid.slurm_job_id != cancelled


def test_controller_down_is_one_error_line(cluster: None, data_root: Path, tmp_path: Path) -> None:
    if not CONTROLLER_PID.is_file() or os.geteuid() != 0:
        pytest.skip("the controller was not started by scripts/slurm-cluster as this user (root)")
    subprocess.run([str(SCRIPT), "stop", "controller"], check=True, capture_output=True, timeout=120)
    try:
        down = _sweep(data_root, tmp_path / "runs")
    finally:
        subprocess.run([str(SCRIPT), "start"], check=True, capture_output=True, timeout=300)
    errors = [line for line in down.stderr.splitlines() if line.startswith("error:")]
    assert down.returncode == 2 and len(errors) == 1, down.stderr[-3000:]
    assert "sbatch: error:" in errors[0] and "Traceback" not in down.stderr


def test_reproduce_an_item_through_slurm(cluster: None, data_root: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "vapt", "reproduce", "F-scale", "--data-root", str(data_root), "--runs",
            str(tmp_path / "runs"), "--figures", str(tmp_path / "fig"), "--backbone", "vit_test", "--epochs", "1",
            "--batch-size", "32", "--grid", "5,0.5:0.01", "--seeds", "42", "--device", "cpu", "--executor", "slurm",
            "--gpus-per-node", "0", "--cpus-per-task", "1", "--mem", "1G", "--timeout-min", "10"]
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    records = _records(tmp_path / "runs")  # two grid points per sweep, each grid stage one array of two tasks
    assert len(records) == 4 and {(r.status, r.executor) for r in records.values()} == {("finished", "slurm")}
    assert sorted(r.slurm_array_index for r in records.values()) == [0, 0, 1, 1]
    assert all(r.slurm_job_id.endswith(f"_{r.slurm_array_index}") for r in records.values())
    assert (tmp_path / "fig" / "backbone_scale.png").is_file() and "F-scale: 4/4 runs done" in done.stdout
    again = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "submitted" not in again.stdout, again.stderr[-3000:]
    assert again.stdout.count("2 of 2 run(s) already done; running 0") == 2  # the grid stages
    assert again.stdout.count("1 of 1 run(s) already done; running 0") == 2  # the final runs: the chosen grid runs


@pytest.mark.parametrize("resources, message, submits", [
    (["--gpus-per-node", "1"], "Slurm refused the jobs: sbatch: error: Invalid generic resource (gres) specification",
     False),
    (["--cpus-per-task", "4096"], "pending with reason PartitionConfig; change --cpus-per-task", True),
])
def test_a_request_the_cluster_cannot_fit_is_one_error_line(cluster: None, data_root: Path, tmp_path: Path,
                                                            resources: list[str], message: str,
                                                            submits: bool) -> None:
    if resources[0] == "--gpus-per-node" and "gpu" in subprocess.run(
            ["sinfo", "--noheader", "--format=%G"], capture_output=True, text=True, timeout=30).stdout:
        pytest.skip("this cluster has GPU GRES, so a GPU request is valid here")
    failed = _sweep(data_root, tmp_path / "runs", extra=resources)
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert failed.returncode == 2 and len(errors) == 1 and message in errors[0], failed.stderr[-3000:]
    assert "Traceback" not in failed.stderr
    # only this sweep's jobs: the cluster's queue may hold others (its saved state outlives the tests)
    submitted = re.findall(r"\(Slurm (?:job|array) (\d+)\)", failed.stdout)
    assert len(submitted) == int(submits), failed.stdout
    queued = subprocess.run(["squeue", "--noheader", "--states=PENDING", "--format=%i"], capture_output=True,
                            text=True, timeout=60)
    assert queued.returncode == 0, queued.stderr
    left = {line.strip().split("_")[0] for line in queued.stdout.splitlines()}
    assert not left & set(submitted), f"job(s) {sorted(left & set(submitted))} were left pending"
