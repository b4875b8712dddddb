"""Finding trained runs for Grad-CAM and the MoE lens: scores are only compared on one split."""

from __future__ import annotations

from pathlib import Path

from vapt.report.runs import best_runs, find_model_runs, model_runs
from vapt.run.record import FINISHED, RUNNING, RunRecord


def write_run(runs: Path, name: str, method: str, final: dict[str, float], status: str = FINISHED,
              data: str = "vtab1k/cifar", weights: bool = True, **config) -> Path:
    folder = runs / name
    folder.mkdir(parents=True)
    base = dict(backbone="vit_test", method=method, data=data, seed=42, lr=0.1, wd=0.0, epochs=1, fraction=1.0)
    RunRecord(run_id=name, config={**base, **config}, status=status, final=final).write(folder / "result.json")
    if weights:
        (folder / "trainable.pt").write_bytes(b"")
    return folder


def test_a_test_score_is_never_compared_with_a_validation_score(tmp_path):
    grid = write_run(tmp_path, "vapt-grid", "vapt", {"val": 95.0})  # higher number, but on validation
    final = write_run(tmp_path, "vapt-final", "vapt", {"test": 40.0})
    assert best_runs(tmp_path, ["vapt"]) == {("vit_test", "vtab1k/cifar"): {"vapt": final}}
    better = write_run(tmp_path, "vapt-final-2", "vapt", {"test": 41.0, "val": 10.0})
    assert best_runs(tmp_path, ["vapt"])[("vit_test", "vtab1k/cifar")]["vapt"] == better
    # without any test score, validation scores are compared with each other
    assert best_runs(tmp_path, ["vapt"], splits=("val",))[("vit_test", "vtab1k/cifar")]["vapt"] == grid
    assert best_runs(tmp_path, ["vapt"], splits=("train",)) == {}


def test_unfinished_runs_runs_without_weights_ablations_and_low_data_runs_are_left_out(tmp_path):
    write_run(tmp_path, "running", "vapt", {"test": 99.0}, status=RUNNING)
    write_run(tmp_path, "no-weights", "vapt", {"test": 98.0}, weights=False)
    write_run(tmp_path, "ablation", "vapt", {"test": 97.0}, method_options={"kernel_size": 3})
    write_run(tmp_path, "low-data", "vapt", {"test": 96.0}, fraction=0.1)
    kept = write_run(tmp_path, "kept", "vapt", {"test": 1.0})
    assert best_runs(tmp_path, ["vapt"]) == {("vit_test", "vtab1k/cifar"): {"vapt": kept}}


def test_model_runs_need_every_method_on_one_dataset(tmp_path):
    deep = write_run(tmp_path, "deep", "vpt_deep", {"test": 50.0})
    adaptive = write_run(tmp_path, "vapt", "vapt", {"test": 60.0})
    write_run(tmp_path, "lonely", "vapt", {"test": 70.0}, data="vtab1k/svhn")
    assert model_runs(tmp_path, ["vpt_deep", "vapt"]) == {
        ("vit_test", "vtab1k/cifar"): {"vpt_deep": deep, "vapt": adaptive}}
    assert find_model_runs(tmp_path, ["vpt_deep", "vapt"], preferred_tasks=("svhn",)) == {
        "vpt_deep": deep, "vapt": adaptive}
    assert find_model_runs(tmp_path / "empty", ["vapt"]) is None
