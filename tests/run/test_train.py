"""Training runs: the CLI record, resume equivalence, NaN failures, the schedule and the optimizer."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import vapt
from vapt.__main__ import main as vapt_main
from vapt.data import build_dataset, parse_data
from vapt.errors import ConfigError
from vapt.run.config import TrainConfig, run_id
from vapt.run.train import build_optimizer, build_scheduler, evaluate, train

REPO = Path(__file__).parents[2]


def protocol_lr(grid_lr: float, batch_size: int, epoch: int, epochs: int, warmup: int) -> float:
    """docs/protocol.md: peak grid x batch / 256, linear warm-up from 0, then cosine to 0 (epoch 0-based)."""
    peak = grid_lr * batch_size / 256
    if epoch < warmup:
        return peak * epoch / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup)))


@pytest.mark.slow
def test_cli_two_epoch_run_writes_a_complete_record(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    argv = ["train", "--backbone", "vit_test", "--method", "vapt", "--data", "vtab1k/cifar",
            "--data-root", str(data_root), "--epochs", "2", "--lr", "5", "--wd", "0.001", "--seed", "42",
            "--out", str(out), "--device", "cpu", "--image-size", "32", "--batch-size", "16",
            "--num-tokens", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "vapt", *argv]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr
    run = out / "vtab1k-cifar/vit_test/vapt_num_tokens4/train800-val200/lr5_wd0.001_s42_ep2_bs16_rstf1_dctfds"
    record = json.loads((run / "result.json").read_text())

    config = record["config"]
    expected = dict(backbone="vit_test", method="vapt", data="vtab1k/cifar", lr=5.0, wd=0.001, seed=42,
                    epochs=2, batch_size=16, image_size=32, fraction=1.0, train_split="train800",
                    eval_splits=["val200"],
                    num_tokens=4, warmup_epochs=0, device="cpu", out=str(out), data_root=str(data_root))
    assert {k: config[k] for k in expected} == expected
    assert TrainConfig.from_dict(config).to_dict() == config
    assert record["method_config"]["num_tokens"] == 4 and record["method_config"]["method"] == "vapt"

    assert [row["epoch"] for row in record["epochs"]] == [1, 2]
    for index, row in enumerate(record["epochs"]):
        assert set(row) == {"epoch", "lr", "train_loss", "val200_top1"}
        assert row["lr"] == pytest.approx(protocol_lr(5, 16, index, 2, 0), rel=1e-12)
        assert math.isfinite(row["train_loss"]) and 0 <= row["val200_top1"] <= 100
    assert record["final"] == {"val200": record["epochs"][-1]["val200_top1"]}
    assert record["samples"] == {"train": 40, "val200": 20}

    model = vapt.create_model("vit_test", "vapt", num_classes=100, num_tokens=4)
    assert record["params"] == vapt.count_parameters(model)
    assert record["params"]["trainable"] == record["params"]["prompt"] + record["params"]["head"]
    assert record["wall_time_s"] > 0
    assert set(record["env"]) >= {"python", "torch", "timm", "device", "hostname"}
    assert record["env"]["torch"] == torch.__version__
    assert record["status"] == "finished" and "error" not in record
    assert not (run / "checkpoint.pt").exists()

    # the saved prompts and head reproduce the recorded accuracy (the frozen backbone comes from the seed)
    torch.manual_seed(42)
    model = vapt.create_model("vit_test", "vapt", num_classes=100, num_tokens=4)
    model.load_trainable(run / "trainable.pt")
    val = build_dataset(parse_data("vtab1k/cifar"), data_root, "val200", image_size=32)
    accuracy = evaluate(model, torch.utils.data.DataLoader(val, batch_size=16), torch.device("cpu"))
    assert accuracy == record["final"]["val200"]

    # running the same command again skips the finished run
    before = (run / "result.json").stat().st_mtime_ns
    assert vapt_main(argv) == 0
    assert (run / "result.json").stat().st_mtime_ns == before


def _config(data_root: Path, out: Path, **fields: object) -> TrainConfig:
    base = dict(backbone="vit_test", method="vapt", data="fgvc/cub", data_root=str(data_root), out=str(out),
                epochs=3, batch_size=16, lr=5.0, wd=0.001, seed=7, device="cpu", num_tokens=2)
    base.update(fields)
    return TrainConfig(**base)


@pytest.mark.slow
def test_interrupted_then_resumed_equals_uninterrupted(data_root: Path, tmp_path: Path) -> None:
    # VAPT has prompt dropout and FGVC random crops: both consume RNG, so the RNG states must be restored
    whole = train(_config(data_root, tmp_path / "a"))
    config = _config(data_root, tmp_path / "b")
    partial = train(config, stop_after=1)
    run = tmp_path / "b" / run_id(config)
    assert partial.status == "interrupted" and len(partial.epochs) == 1
    assert (run / "checkpoint.pt").is_file() and not (run / "result.json").exists()
    torch.manual_seed(12345)  # disturb the global RNG between the two halves
    resumed = train(config)
    assert resumed.status == whole.status == "finished"
    assert resumed.epochs == whole.epochs
    assert resumed.final == whole.final
    assert len({row["train_loss"] for row in whole.epochs}) == 3


def test_nan_loss_records_a_failure(data_root: Path, tmp_path: Path) -> None:
    config = _config(data_root, tmp_path, method="vpt_deep", lr=1e30, epochs=2)
    record = train(config)
    assert record.status == "failed" and record.failure == "non_finite_loss"
    assert "loss became nan" in record.error and record.final == {}
    path = tmp_path / run_id(config) / "result.json"
    assert json.loads(path.read_text())["status"] == "failed"
    before = path.stat().st_mtime_ns
    assert train(config).status == "failed"  # not recomputed
    assert path.stat().st_mtime_ns == before


def test_nan_loss_gives_exit_code_1(data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["train", "--backbone", "vit_test", "--method", "vpt_deep", "--data", "vtab1k/cifar",
            "--data-root", str(data_root), "--epochs", "2", "--lr", "1e30", "--wd", "0",
            "--out", str(tmp_path),
            "--device", "cpu", "--batch-size", "8"]
    assert vapt_main(argv) == 1
    assert "loss became" in capsys.readouterr().out


@pytest.mark.parametrize("epochs, warmup", [(100, 10), (20, 2), (7, 0)])
def test_schedule_follows_the_protocol(epochs: int, warmup: int) -> None:
    config = TrainConfig("vit_test", "vpt_deep", "vtab1k/cifar", "unused", lr=2.5, epochs=epochs)
    assert config.resolved().warmup_epochs == warmup
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.5 * 64 / 256)
    scheduler = build_scheduler(optimizer, config)
    for epoch in range(epochs):
        scheduler.step(epoch)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(protocol_lr(2.5, 64, epoch, epochs, warmup),
                                                                abs=1e-15)
        if epoch == warmup:  # the cosine starts at the peak right after warm-up
            assert optimizer.param_groups[0]["lr"] == pytest.approx(2.5 * 64 / 256, abs=1e-15)
    if warmup:
        scheduler.step(0)
        assert optimizer.param_groups[0]["lr"] == 0.0


def test_optimizer_exempts_only_the_head_bias() -> None:
    config = TrainConfig("vit_test", "vapt", "vtab1k/cifar", "unused", wd=0.01, lr=10)
    model = vapt.create_model("vit_test", "vapt", num_classes=100)
    optimizer = build_optimizer(model, config)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
    by_id = {id(p): n for n, p in model.trainable_parameters()}
    decayed = [by_id[id(p)] for p in optimizer.param_groups[0]["params"]]
    exempt = [by_id[id(p)] for p in optimizer.param_groups[1]["params"]]
    assert exempt == ["head.bias"] and optimizer.param_groups[1]["weight_decay"] == 0.0
    assert "head.weight" in decayed and len(decayed) + 1 == len(by_id)
    assert optimizer.param_groups[0]["weight_decay"] == 0.01
    assert optimizer.param_groups[0]["lr"] == 10 * 64 / 256
    full = vapt.create_model("vit_test", "full", num_classes=100)
    assert isinstance(build_optimizer(full, dataclasses.replace(config, method="full")), torch.optim.AdamW)


def test_run_id_is_readable_and_separates_results() -> None:
    config = TrainConfig("vit_b16_in21k", "vapt", "vtab1k/cifar", "data", lr=5, wd=0.001, seed=42)
    assert run_id(config) == "vtab1k-cifar/vit_b16_in21k/vapt/train800-val200/lr5_wd0.001_s42_rstf1_dctfds"
    final = dataclasses.replace(config, train_split="train800val200")
    assert run_id(final) == "vtab1k-cifar/vit_b16_in21k/vapt/train800val200-test/lr5_wd0.001_s42_rstf1_dctfds"
    assert run_id(dataclasses.replace(config, device="cpu", data_root="elsewhere")) == run_id(config)
    variants = [dict(lr=2.5), dict(wd=0), dict(seed=44), dict(fraction=0.1), dict(num_tokens=50),
                dict(epochs=10), dict(batch_size=32), dict(method_options=(("kernel_size", 3),))]
    ids = {run_id(dataclasses.replace(config, **v)) for v in variants}
    assert len(ids) == len(variants) and run_id(config) not in ids


@pytest.mark.parametrize("fields, message", [
    (dict(lr=0), "lr must be a positive number"),
    (dict(wd=-1), "wd must be a number >= 0"),
    (dict(epochs=0), "epochs must be a positive integer"),
    (dict(train_split="train"), "split 'train' is not one of vtab1k/cifar's splits"),
    (dict(fraction=2.0), r"fraction must be in \(0, 1\]"),
    (dict(data="vtab1k/imagenet"), "unknown vtab1k dataset 'imagenet'"),
    (dict(device="tpu"), "device must be auto, cpu, cuda"),
    (dict(warmup_epochs=5, epochs=5), r"warmup_epochs must be an integer in \[0, epochs\)"),
])
def test_invalid_configs_name_the_value(fields: dict, message: str) -> None:
    config = dataclasses.replace(TrainConfig("vit_test", "vapt", "vtab1k/cifar", "unused"), **fields)
    with pytest.raises(ConfigError, match=message):
        config.resolved()


def test_image_size_must_match_the_backbone(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="image_size 224 does not match backbone 'vit_test'"):
        train(_config(data_root, tmp_path, image_size=224))


def test_cli_reports_layout_errors_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["train", "--backbone", "vit_test", "--method", "vapt", "--data", "vtab1k/cifar", "--data-root",
            str(tmp_path / "missing"), "--epochs", "1", "--lr", "1", "--wd", "0",
            "--out", str(tmp_path / "runs"),
            "--device", "cpu"]
    assert vapt_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data root") and "missing" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("result.json"))


def test_fraction_subsamples_the_training_split(data_root: Path, tmp_path: Path) -> None:
    record = train(_config(data_root, tmp_path, fraction=0.5, epochs=1, method="linear", num_tokens=None))
    assert record.samples["train"] == 20 and record.config["fraction"] == 0.5


def test_wall_time_accumulates_over_resumes(data_root: Path, tmp_path: Path) -> None:
    config = _config(data_root, tmp_path, method="linear", epochs=2, num_tokens=None)
    first = train(config, stop_after=1)
    time.sleep(0.01)
    second = train(config)
    assert second.wall_time_s >= first.wall_time_s > 0


@pytest.mark.slow
def test_custom_task_written_from_arrays_trains(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    from vapt.data.fixtures import write_vtab_task

    digits = load_digits()
    keep = digits.target >= 7  # three held-out digit classes, relabelled 0..2
    images, labels = digits.images[keep] / 16.0, (digits.target[keep] - 7).tolist()
    splits = {"train800": (images[:12], labels[:12]), "val200": (images[12:18], labels[12:18]),
              "test": (images[18:24], labels[18:24])}
    write_vtab_task(tmp_path / "data", "digits_789", splits)
    config = TrainConfig("vit_test", "linear", "vtab1k/digits_789", str(tmp_path / "data"), out=str(tmp_path),
                         epochs=1, num_classes=3, train_split="train800val200", device="cpu")
    record = train(config)
    assert record.status == "finished" and record.samples == {"train": 18, "test": 6}
    assert record.params["head"] == 64 * 3 + 3


@pytest.mark.slow
def test_corrupt_image_fails_the_run_cleanly_and_a_rerun_recovers(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import shutil

    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    image = root / "vtab-1k/cifar/images/train800_00007.png"
    good = image.read_bytes()
    image.write_bytes(b"garbage")
    argv = ["train", "--backbone", "vit_test", "--method", "linear", "--data", "vtab1k/cifar", "--data-root",
            str(root), "--epochs", "1", "--lr", "1", "--wd", "0", "--out", str(tmp_path / "runs"), "--device", "cpu"]
    assert vapt_main(argv) == 2
    err = capsys.readouterr().err
    assert "train800_00007.png is corrupt" in err and "Traceback" not in err
    (result,) = (tmp_path / "runs").rglob("result.json")
    record = json.loads(result.read_text())
    assert record["status"] == "failed" and record["failure"] == "exception" and "train800_00007" in record["error"]
    image.write_bytes(good)
    assert vapt_main(argv) == 0
    assert json.loads(result.read_text())["status"] == "finished"


def test_kitti_keeps_four_classes_and_reproduces_the_authors_196_outputs_on_request() -> None:
    from vapt.data import parse_data

    assert parse_data("vtab1k/kitti").num_classes == 4
    assert parse_data("vtab1k/kitti", 196).num_classes == 196
    with pytest.raises(ConfigError, match="expected 4 \\(or 196, the authors' head width\\)"):
        parse_data("vtab1k/kitti", 10)
    with pytest.raises(ConfigError, match="expected 100$"):
        parse_data("vtab1k/cifar", 196)
    base = TrainConfig("vit_test", "linear", "vtab1k/kitti", "unused")
    wide = dataclasses.replace(base, num_classes=196)
    assert run_id(base) != run_id(wide) and "_head196" in run_id(wide).rsplit("/", 1)[1]
    assert run_id(dataclasses.replace(base, num_classes=4)) == run_id(base)


@pytest.mark.parametrize(("command", "shown"), [
    ("train", ["training epochs (default: 100)", "(default: 64)", "--seed SEED", "(default: 42)"]),
    ("sweep", ["(default: 100)", "(default: 64)", "per-job time limit in minutes (default: 4320)"]),
])
def test_help_shows_the_defaults(command: str, shown: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        vapt_main([command, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for piece in shown:
        assert piece in text, piece
    assert "(default: [])" not in text and "(default: True)" not in text
