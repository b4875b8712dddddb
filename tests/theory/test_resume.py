"""Interrupted runs resume from the checkpoint of finished fits; outputs are written atomically."""

import json
import os
import stat

import pandas as pd
import pytest

import theory.runner as runner
from theory.experiment import build_tasks
from theory.io import write_csv
from theory.runner import CheckpointError, read_checkpoint, run_tasks, task_key
from theory.sample_efficiency import CHECKPOINT_NAME, main

COLUMNS = ["family", "regime", "n", "replicate", "cost", "D1", "L2", "params"]


def _tasks():
    return build_tasks(["vpt"], ["exact"], [300, 600], 2, expressiveness=False)


def test_rerun_reuses_every_recorded_fit(tmp_path, monkeypatch):
    ckpt = tmp_path / "fits.partial.jsonl"
    tasks = _tasks()
    first = run_tasks(tasks[:3], checkpoint=ckpt)
    assert len(ckpt.read_text().splitlines()) == 3
    calls = []
    real = runner.run_task
    monkeypatch.setattr(runner, "run_task", lambda t: calls.append(task_key(t)) or real(t))
    full = run_tasks(tasks, checkpoint=ckpt)
    assert calls == [task_key(tasks[3])]  # only the fit that was not recorded ran
    assert len(ckpt.read_text().splitlines()) == 4
    fresh = run_tasks(tasks)
    pd.testing.assert_frame_equal(full[COLUMNS], fresh[COLUMNS])
    merged = full.merge(first[COLUMNS], on=["n", "replicate"], suffixes=("", "_first"))
    assert len(merged) == 3 and (merged["cost"] == merged["cost_first"]).all()


def test_recorded_fits_of_other_settings_are_not_reused(tmp_path):
    ckpt = tmp_path / "fits.partial.jsonl"
    run_tasks(_tasks()[:2], checkpoint=ckpt)
    other = build_tasks(["vpt"], ["exact"], [300, 600], 2, expressiveness=False, sigma=0.2)
    assert not set(map(task_key, other)) & set(read_checkpoint(ckpt))
    rows = run_tasks(other, checkpoint=ckpt)
    assert len(rows) == 4 and len(read_checkpoint(ckpt)) == 6


def test_truncated_last_line_is_ignored_and_a_bad_line_is_named(tmp_path):
    ckpt = tmp_path / "fits.partial.jsonl"
    run_tasks(_tasks()[:2], checkpoint=ckpt)
    good = ckpt.read_text()
    ckpt.write_text(good + '{"task": "vpt->vpt|exa')  # killed while writing
    assert len(read_checkpoint(ckpt)) == 2
    run_tasks(_tasks(), checkpoint=ckpt)  # the resumed run appends after the cut partial line
    assert len(read_checkpoint(ckpt)) == 4 and ckpt.read_text().startswith(good)
    ckpt.write_text("not json\n" + good)
    with pytest.raises(CheckpointError, match=r"fits\.partial\.jsonl:1: not a checkpoint record"):
        read_checkpoint(ckpt)


def test_cli_resumes_and_removes_the_checkpoint(tmp_path, capsys):
    args = ["--families", "vpt", "--n", "300,600", "--replicates", "2", "--no-expressiveness"]
    args += ["--jobs", "1", "--bootstrap", "100"]
    fresh_dir, resumed_dir = tmp_path / "fresh", tmp_path / "resumed"
    assert main([*args, "--out", str(fresh_dir)]) == 0
    # a run interrupted after two fits left them behind
    run_tasks(_tasks()[:2], checkpoint=resumed_dir / CHECKPOINT_NAME)
    capsys.readouterr()
    assert main([*args, "--out", str(resumed_dir)]) == 0
    assert "resuming" in capsys.readouterr().out
    assert not (resumed_dir / CHECKPOINT_NAME).exists()
    a, b = pd.read_csv(fresh_dir / "fits.csv"), pd.read_csv(resumed_dir / "fits.csv")
    pd.testing.assert_frame_equal(a[COLUMNS], b[COLUMNS])


def test_cli_reports_an_unreadable_checkpoint(tmp_path, capsys):
    out = tmp_path / "res"
    out.mkdir()
    (out / CHECKPOINT_NAME).write_text("garbage\n" + json.dumps({"task": "x", "row": {}}) + "\n")
    code = main(["--families", "vpt", "--n", "300,600", "--replicates", "2", "--out", str(out), "--jobs", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert CHECKPOINT_NAME in err and ":1:" in err and "--no-resume" in err
    assert (out / CHECKPOINT_NAME).exists()  # nothing deleted on an error
    assert not (out / "fits.csv").exists()


def test_no_resume_starts_afresh(tmp_path, capsys):
    out = tmp_path / "res"
    out.mkdir()
    (out / CHECKPOINT_NAME).write_text("garbage\nmore garbage\n")
    args = ["--families", "vpt", "--n", "300,600", "--replicates", "2", "--no-expressiveness", "--jobs", "1"]
    assert main([*args, "--bootstrap", "100", "--out", str(out), "--no-resume"]) == 0
    assert "resuming" not in capsys.readouterr().out
    assert len(pd.read_csv(out / "fits.csv")) == 4


def test_written_files_get_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_csv(pd.DataFrame({"a": [1]}), tmp_path / "x.csv")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
