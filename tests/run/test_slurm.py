"""The Slurm path without a cluster: resource options, refused submissions, the queue watch, the job fields."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from vapt.__main__ import main as vapt_main
from vapt.errors import ConfigError
from vapt.run import slurm
from vapt.run.record import RunRecord
from vapt.run.slurm import SlurmError, SlurmOptions, SlurmWatch, job_fields, sbatch_message, submit


def test_no_gres_request_with_zero_gpus_and_pass_through() -> None:
    params = SlurmOptions(gpus_per_node=0, cpus_per_task=2, mem="4G", partition="p", qos="q",
                          extra={"constraint": "a100"}).parameters(timeout_min=30)
    assert "gpus_per_node" not in params and "gres" not in params
    assert params["cpus_per_task"] == 2 and params["mem"] == "4G" and params["time"] == 30
    assert params["partition"] == "p" and params["qos"] == "q" and "account" not in params
    assert params["additional_parameters"] == {"constraint": "a100"}
    assert SlurmOptions().parameters(timeout_min=30)["gpus_per_node"] == slurm.DEFAULT_GPUS_PER_NODE


@pytest.mark.parametrize("field, value", [("gpus_per_node", -1), ("cpus_per_task", 0), ("max_parallel", 0)])
def test_bad_resource_options_are_config_errors(field: str, value: int) -> None:
    with pytest.raises(ConfigError, match=field.replace("_", "-")):
        SlurmOptions(**{field: value})


def test_help_shows_the_slurm_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        vapt_main(["sweep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"GPU/GRES request, for CPU-only nodes) (default: {slurm.DEFAULT_GPUS_PER_NODE})" in text
    assert f"CPUs per run (default: {slurm.DEFAULT_CPUS_PER_TASK})" in text
    for option in ("--mem", "--partition", "--account", "--qos", "--slurm-param", "--timeout-min"):
        assert option in text


def test_bad_pass_through_is_one_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        vapt_main(["sweep", "--data", "vtab1k/cifar", "--backbone", "vit_test", "--method", "vapt",
                   "--slurm-param", "constraint"])
    assert exit_info.value.code == 2 and "KEY=VALUE" in capsys.readouterr().err


def test_sbatch_message_keeps_sbatch_own_words() -> None:
    text = "sbatch: error: invalid partition specified: nope\nsbatch: error: Batch job submission failed: x\n"
    assert sbatch_message(text) == ("sbatch: error: invalid partition specified: nope / "
                                    "sbatch: error: Batch job submission failed: x")
    assert sbatch_message("sbatch: unrecognized option '--foo'\nTry \"sbatch --help\"") == (
        "sbatch: unrecognized option '--foo'")


def _fake_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\n{script}\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_refused_submission_is_one_error_quoting_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    _fake_sbatch(tmp_path, monkeypatch, "echo 'sbatch: error: Invalid generic resource (gres) specification' >&2\n"
                                        "exit 1")
    with pytest.raises(SlurmError, match=r"sbatch: error: Invalid generic resource \(gres\) specification"):
        submit(print, [["a"]], str(tmp_path / "sub"), SlurmOptions())
    assert capsys.readouterr().err == ""  # submitit's echo of sbatch's stderr is not repeated


def test_no_sbatch_names_the_way_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SlurmError, match="sbatch.*not on PATH.*docs/cluster.md"):
        submit(print, [["a"]], str(tmp_path / "sub"), SlurmOptions())


def test_job_fields_from_the_slurm_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SUBMITIT_EXECUTOR", "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    assert job_fields() == {}
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "108")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "105")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert job_fields() == {"executor": "slurm", "slurm_job_id": "105_3", "slurm_array_index": 3}


def test_job_fields_are_optional_in_records(tmp_path: Path) -> None:
    old = {"run_id": "r", "config": {"backbone": "b", "method": "m", "data": "d", "seed": 1, "lr": 1.0, "wd": 0.0,
                                     "epochs": 1}, "status": "finished"}
    path = tmp_path / "result.json"
    path.write_text(json.dumps(old))
    record = RunRecord.read(path)
    assert record.executor is None and record.slurm_job_id is None
    assert not {"executor", "slurm_job_id", "slurm_array_index"} & set(record.to_dict())
    record.executor, record.slurm_job_id, record.slurm_array_index = "slurm", "7_1", 1
    record.write(path)
    again = RunRecord.read(path)
    assert (again.executor, again.slurm_job_id, again.slurm_array_index) == ("slurm", "7_1", 1)


def _jobs(tmp_path: Path, ids: list[str]) -> list[SimpleNamespace]:
    return [SimpleNamespace(job_id=i, paths=SimpleNamespace(result_pickle=tmp_path / f"{i}_result.pkl")) for i in ids]


def _queue(monkeypatch: pytest.MonkeyPatch, answers: list[dict[str, tuple[str, str]]]) -> list[list[str]]:
    cancelled: list[list[str]] = []
    monkeypatch.setattr(slurm, "queue_states", lambda arrays: answers.pop(0) if len(answers) > 1 else answers[0])
    monkeypatch.setattr(slurm, "cancel", lambda ids: cancelled.append(list(ids)))
    return cancelled


def test_pending_for_a_reason_that_cannot_change_stops_and_cancels(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cancelled = _queue(monkeypatch, [{"4_[0-1]": ("PENDING", "PartitionConfig")}])
    with pytest.raises(SlurmError, match="4_0 cannot start: pending with reason PartitionConfig; change "
                                         "--cpus-per-task"):
        SlurmWatch(poll_s=0.01).wait(_jobs(tmp_path, ["4_0", "4_1"]), lambda: "progress")
    assert cancelled == [["4_0", "4_1"]]


def test_nodes_not_available_wait_a_bounded_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _queue(monkeypatch, [{"4_0": ("PENDING", "ReqNodeNotAvail, UnavailableNodes:n1")}])
    with pytest.raises(SlurmError, match="ReqNodeNotAvail.*--partition"):
        SlurmWatch(poll_s=0.01, max_poll_s=0.01, held_limit_s=0.05).wait(_jobs(tmp_path, ["4_0"]), lambda: "p")


def test_a_job_gone_without_result_ends_the_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    jobs = _jobs(tmp_path, ["9_0", "9_1", "9_2"])
    jobs[0].paths.result_pickle.write_bytes(b"done")
    # 9_1 runs, then leaves the queue without a result (no accounting: the controller forgets it); 9_2 was cancelled
    _queue(monkeypatch, [{"9_1": ("RUNNING", "None"), "9_2": ("CANCELLED", "None")}, {}])
    finished = SlurmWatch(poll_s=0.01, max_poll_s=0.01, vanish_grace_s=0.05, result_lag_s=0.02).wait(jobs, lambda: "p")
    assert [job.job_id for job in finished] == ["9_0"]
    err = capsys.readouterr().err
    assert "9_1 ended (left the queue) without a result" in err and "9_2 ended (cancelled)" in err
