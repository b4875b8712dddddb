"""The protocol: grids, selection on validation (ties -> larger lr), final seeds, idempotent reruns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import vapt.run.jobs
import vapt.run.sweep
from vapt.__main__ import main as vapt_main
from vapt.io import write_json_atomic
from vapt.run.config import TrainConfig, run_dir, run_id
from vapt.run.record import RunRecord
from vapt.run.sweep import Launcher, SweepError, TaskPlan, is_run_done, parse_grid, select_best, sweep


def test_paper_grids() -> None:
    vtab, fgvc = parse_grid("paper", "vapt", "vtab1k"), parse_grid("paper", "vpt_deep", "fgvc")
    assert len(vtab.lrs) * len(vtab.wds) == 40 and 0.05 in vtab.lrs
    assert len(fgvc.lrs) * len(fgvc.wds) == 36 and 0.05 not in fgvc.lrs
    assert vtab.wds == (0.01, 0.001, 0.0001, 0.0)
    assert parse_grid("paper", "full", "vtab1k").lrs == (0.001, 0.005, 0.0001, 0.0005)
    assert parse_grid("fast", "vapt", "vtab1k").anchor_lr == 5.0
    custom = parse_grid("5,1:0.01,0", "vapt", "fgvc")
    assert (custom.lrs, custom.wds, custom.tag) == ((5.0, 1.0), (0.01, 0.0), "5,1-0.01,0")


@pytest.mark.parametrize("text", ["quick", "5,x:0", "5:", "0:0.1"])
def test_bad_grids_are_config_errors(text: str) -> None:
    with pytest.raises(vapt.ConfigError, match="grid"):
        parse_grid(text, "vapt", "vtab1k")


def _record(lr: float, wd: float, val: float | None, status: str = "finished") -> RunRecord:
    return RunRecord("", {"lr": lr, "wd": wd}, status=status, final={} if val is None else {"val200": val})


def test_select_best_breaks_ties_towards_the_larger_lr_then_wd() -> None:
    records = [_record(5, 0.0, 80), _record(1, 0.01, 80), _record(2.5, 0, 80), _record(10, 0, 79),
               _record(50, 0, None, status="failed")]
    best = select_best(records, "val200")
    assert best.config == {"lr": 5, "wd": 0.0}
    assert select_best([*records, _record(5, 0.01, 80)], "val200").config == {"lr": 5, "wd": 0.01}
    assert select_best([*records, _record(0.1, 0, 80.5)], "val200").config["lr"] == 0.1
    with pytest.raises(SweepError, match="all failed"):
        select_best([_record(5, 0, None, status="failed")], "val200")


def _base(tmp_path: Path, **fields: Any) -> TrainConfig:
    values = dict(backbone="vit_test", method="vapt", data="vtab1k/cifar", data_root=str(tmp_path / "no-data"),
                  out=str(tmp_path / "runs"), epochs=1, batch_size=32, device="cpu")
    values.update(fields)
    return TrainConfig(**values)


def _fake(config: TrainConfig, scores: dict[str, float]) -> None:
    """A finished record on disk, as a real run would leave it (so the sweep must not train it)."""
    config = config.resolved()
    write_json_atomic(run_dir(config) / "result.json", {
        "run_id": run_id(config), "config": config.to_dict(), "epochs": [], "final": scores,
        "status": "finished"})


def test_fgvc_is_chosen_on_val_not_test(tmp_path: Path) -> None:
    base = _base(tmp_path, data="fgvc/cub")
    plan = TaskPlan.for_task(base, "fgvc/cub")
    _fake(plan.grid_config(5, 0.01, 42), {"val": 50.0, "test": 90.0})  # best on test
    _fake(plan.grid_config(1, 0.01, 42), {"val": 60.0, "test": 40.0})  # best on val
    for seed in (44, 82):
        _fake(plan.final_config(1, 0.01, seed), {"val": 61.0, "test": 41.0 + seed / 100})
    # a wrong choice would have to train lr 5 runs from a data root that does not exist
    (selection,) = sweep(base, ["fgvc/cub"], grid="5,1:0.01", seeds=(42, 44, 82),
                         launcher=Launcher("debug", folder=str(tmp_path / "sub")))
    assert selection["chosen"]["lr"] == 1 and selection["selection_split"] == "val"
    assert [r["seed"] for r in selection["final_runs"]] == [42, 44, 82]
    assert selection["test_top1_mean"] == pytest.approx((40.0 + 41.44 + 41.82) / 3)
    assert selection["test_top1_std"] == pytest.approx(float(np.std([40.0, 41.44, 41.82])))  # ddof 0
    assert "not test" in selection["note"]
    written = json.loads(next((tmp_path / "runs").rglob("selection_*.json")).read_text())
    assert written == selection


def test_fast_grid_tunes_wd_at_lr_5_then_lr(tmp_path: Path) -> None:
    base = _base(tmp_path)
    plan = TaskPlan.for_task(base, "vtab1k/cifar")
    grid = parse_grid("paper", "vapt", "vtab1k")
    for wd in grid.wds:
        _fake(plan.grid_config(5, wd, 42), {"val200": 70.0 if wd == 0.001 else 60.0})
    for lr in grid.lrs:
        if lr != 5:
            _fake(plan.grid_config(lr, 0.001, 42), {"val200": 75.0 if lr == 0.5 else 65.0})
    for seed in (42, 44):
        _fake(plan.final_config(0.5, 0.001, seed), {"test": 50.0})
    (selection,) = sweep(base, ["vtab1k/cifar"], grid="fast", seeds=(42, 44),
                         launcher=Launcher("debug", folder=str(tmp_path / "sub")))
    assert (selection["chosen"]["lr"], selection["chosen"]["wd"]) == (0.5, 0.001)
    assert selection["test_top1_mean"] == 50.0 and selection["test_top1_std"] == 0.0


def test_sweep_end_to_end_is_idempotent(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "runs"
    argv = ["sweep", "--backbone", "vit_test", "--method", "vpt_deep", "--num-tokens", "2", "--data",
            "vtab1k/cifar", "--data-root", str(data_root), "--out", str(out), "--epochs", "1", "--batch-size",
            "32", "--grid", "5,0.5:0.01", "--seeds", "42,44", "--executor", "debug", "--device", "cpu"]
    assert vapt_main(argv) == 0
    results = sorted(out.rglob("result.json"))
    assert len(results) == 4  # 2 grid points + 2 final seeds
    (selection_file,) = out.rglob("selection_*.json")
    first = json.loads(selection_file.read_text())
    assert first["chosen"]["lr"] in (5.0, 0.5) and len(first["final_runs"]) == 2
    assert all(r["run_id"].split("/")[3] == "train800val200-test" for r in first["final_runs"])

    # simulate a sweep killed partway: one grid run and one final run lost their results
    lost = [out / first["grid_runs"][0]["run_id"] / "result.json",
            out / first["final_runs"][1]["run_id"] / "result.json"]
    kept = {p: p.stat().st_mtime_ns for p in results if p not in lost}
    for path in lost:
        path.unlink()
    calls: list[str] = []
    real_train = vapt.run.jobs.train

    def counting_train(config: TrainConfig, **kwargs: Any) -> dict[str, Any]:
        calls.append(run_id(config))
        return real_train(config, **kwargs)

    monkeypatch.setattr(vapt.run.jobs, "train", counting_train)
    assert vapt_main(argv) == 0
    assert sorted(calls) == sorted(str(p.parent.relative_to(out)) for p in lost)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    second = json.loads(selection_file.read_text())
    assert second == first

    calls.clear()
    assert vapt_main(argv) == 0
    assert calls == []


def test_runs_that_do_not_finish_stop_the_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    def broken(config: TrainConfig, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(vapt.run.jobs, "train", broken)
    (tmp_path / "vtab-1k" / "cifar").mkdir(parents=True)  # the sweep checks the task folder before launching
    argv = ["sweep", "--backbone", "vit_test", "--method", "linear", "--data", "vtab1k/cifar", "--data-root",
            str(tmp_path), "--out", str(tmp_path / "runs"), "--grid", "5:0", "--executor", "debug"]
    assert vapt_main(argv) == 2
    err = capsys.readouterr().err
    assert "error: 1 run(s) did not finish" in err and "lr5_wd0_s42" in err and "run the same command again" in err


def test_dry_run_lists_the_grid_and_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = _base(tmp_path)
    _fake(TaskPlan.for_task(base, "vtab1k/cifar").grid_config(5, 0.0, 42), {"val200": 1.0})
    assert sweep(base, ["vtab1k/cifar", "vtab1k/dtd"], grid="paper", dry_run=True) == []
    out = capsys.readouterr().out
    assert "2 task(s): 80 grid run(s), 1 already done; then 5 final run(s) per task" in out
    assert out.count("todo ") == 79 and "done vtab1k-cifar/vit_test/vapt/train800-val200/lr5_wd0_s42" in out
    assert len(list((tmp_path / "runs").rglob("result.json"))) == 1


class _FakeJob:
    def __init__(self, lines: list[str]) -> None:
        self.job_id, self._lines = "fake", lines

    def result(self) -> list[str]:
        return self._lines

    def done(self) -> bool:
        return True


class _FakeLocalExecutor:
    """Stands in for submitit.LocalExecutor: records parameters and submissions instead of starting processes."""

    submitted: list[tuple[dict[str, Any], list[TrainConfig]]] = []

    def __init__(self, folder: str) -> None:
        self.parameters: dict[str, Any] = {}

    def update_parameters(self, **kwargs: Any) -> None:
        self.parameters = dict(kwargs)

    def submit(self, job: Any, configs: list[TrainConfig]) -> _FakeJob:
        assert isinstance(job, vapt.run.sweep.RunJob)
        self.submitted.append((self.parameters, configs))
        return _FakeJob([run_id(c) for c in configs])


def test_local_executor_gives_each_gpu_its_own_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import submitit

    monkeypatch.setattr(submitit, "LocalExecutor", _FakeLocalExecutor)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    _FakeLocalExecutor.submitted = []
    configs = [_base(tmp_path, lr=lr) for lr in (1, 2, 3, 4, 5)]
    Launcher("local", folder=str(tmp_path / "sub")).run(configs)
    (first, chunk_a), (second, chunk_b) = _FakeLocalExecutor.submitted
    assert first["visible_gpus"] == [2] and second["visible_gpus"] == [5] and first["gpus_per_node"] == 1
    assert [c.lr for c in chunk_a] == [1, 3, 5] and [c.lr for c in chunk_b] == [2, 4]
    assert first["timeout_min"] >= 24 * 60

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    _FakeLocalExecutor.submitted = []
    Launcher("local", folder=str(tmp_path / "sub"), workers=3).run(configs[:2])
    assert [p["gpus_per_node"] for p, _ in _FakeLocalExecutor.submitted] == [0, 0]


def test_jobs_and_configs_pickle_for_submitit(tmp_path: Path) -> None:
    import cloudpickle

    configs = [_base(tmp_path, method_options=(("kernel_size", 3),))]
    job, loaded = cloudpickle.loads(cloudpickle.dumps((vapt.run.sweep.RunJob(), configs)))
    assert loaded == configs and callable(job)


def test_progress_line_counts_done_running_and_failed_runs(tmp_path: Path) -> None:
    from vapt.run.lock import try_lock
    from vapt.run.sweep import sweep_progress

    plan = TaskPlan.for_task(_base(tmp_path), "vtab1k/cifar")
    configs = [plan.grid_config(lr, 0.0, 42) for lr in (1.0, 2.0, 3.0, 4.0)]
    _fake(configs[0], {"val200": 50.0})
    failed = configs[1].resolved()
    write_json_atomic(run_dir(failed) / "result.json", {"run_id": run_id(failed), "config": failed.to_dict(),
                                                        "status": "failed", "failure": "exception"})
    run_dir(configs[2]).mkdir(parents=True)
    lock = try_lock(run_dir(configs[2]))  # another holder of the lock: the run is being trained
    try:
        line = sweep_progress(configs, elapsed_s=600.0)
    finally:
        lock.release()
    assert line == "sweep: 1/4 runs done, 1 running, 1 failed, ETA 20m00s"
    assert sweep_progress(configs, 10.0).startswith("sweep: 1/4 runs done, 0 running, 1 failed")
    other = configs[3].resolved()  # a finished record in the run's folder, made with another resize mode
    assert other.resize != "pil"
    write_json_atomic(run_dir(other) / "result.json", {"run_id": run_id(other), "config": {
        **other.to_dict(), "resize": "pil"}, "final": {"val200": 1.0}, "status": "finished"})
    assert sweep_progress(configs, 10.0).startswith("sweep: 1/4 runs done")
    assert not is_run_done(configs[3]) and is_run_done(configs[0])


def test_the_job_function_reports_each_runs_status(data_root: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    config = TrainConfig(backbone="vit_test", method="linear", data="vtab1k/cifar", data_root=str(data_root),
                         out=str(tmp_path / "runs"), epochs=1, batch_size=32, lr=0.5, wd=0.0, device="cpu")
    assert vapt.run.jobs.run_configs([config]) == [f"{run_id(config)}: finished"]

    def broken(config: TrainConfig, **kwargs: Any) -> RunRecord:
        raise RuntimeError("disk gone")

    monkeypatch.setattr(vapt.run.jobs, "train", broken)
    assert vapt.run.jobs.run_configs([config]) == [f"{run_id(config)}: error (RuntimeError: disk gone)"]
