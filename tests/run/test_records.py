"""Run records: RunRecord reads, writes and validates result.json; the long-format frame built from them."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from vapt.errors import DataLayoutError
from vapt.io import write_json_atomic
from vapt.report.frame import COLUMNS, load_results
from vapt.run.config import TrainConfig, run_dir, run_id
from vapt.run.record import NON_FINITE, SCHEMA_VERSION, RecordError, RunRecord, scan_records
from vapt.run.train import train


def _write(out: Path, status: str = "finished", **fields: object) -> TrainConfig:
    values = dict(backbone="vit_b16_in21k", method="vapt", data="vtab1k/dsprites_loc", data_root="d", out=str(out),
                  num_tokens=10, seed=44, lr=2.5, wd=0.0001)
    values.update(fields)
    config = TrainConfig(**values).resolved()
    scores = {s: 50.0 + i for i, s in enumerate(config.eval_splits)} if status == "finished" else {}
    write_json_atomic(run_dir(config) / "result.json", {
        "run_id": run_id(config), "config": config.to_dict(), "final": scores, "status": status,
        "method_config": {"method": config.method, "num_tokens": config.num_tokens},
        "params": {"prompt": 100, "head": 10, "backbone": 1000, "trainable": 110}, "wall_time_s": 3.5})
    return config


def test_one_row_per_run_and_split(tmp_path: Path) -> None:
    _write(tmp_path)
    _write(tmp_path, data="fgvc/stanford_cars", method="vpt_shallow", num_tokens=5, weights="/w/ViT-B_16.npz")
    _write(tmp_path, lr=50, status="failed")
    frame = load_results(tmp_path)
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 4
    cars = frame[frame["task"] == "stanford_cars"].set_index("split")
    assert list(cars.index) == ["val", "test"] and cars.loc["test", "value"] == 51.0
    assert (cars["group"] == "fgvc").all() and (cars["benchmark"] == "fgvc").all()
    assert (cars["train_split"] == "train").all() and (cars["num_tokens"] == 5).all()
    assert (cars["weights"] == "/w/ViT-B_16.npz").all()
    dsprites = frame[(frame["task"] == "dsprites_loc") & (frame["status"] == "finished")].iloc[0]
    expected = dict(group="structured", benchmark="vtab1k", split="val200", seed=44, lr=2.5, wd=0.0001,
                    metric="top1", value=50.0, trainable_params=110, prompt_params=100, backbone_params=1000,
                    wall_time_s=3.5, fraction=1.0, epochs=100, method="vapt", backbone="vit_b16_in21k")
    assert {k: dsprites[k] for k in expected} == expected
    prefix = "vtab1k-dsprites_loc/vit_b16_in21k/vapt_num_tokens10"
    assert dsprites["run_id"] == f"{prefix}/train800-val200/lr2.5_wd0.0001_s44_rstf1_dctfds"
    failed = frame[frame["status"] == "failed"].iloc[0]
    assert failed["lr"] == 50 and math.isnan(failed["value"])


def test_real_run_records_load(data_root: Path, tmp_path: Path) -> None:
    train(TrainConfig("vit_test", "linear", "fgvc/cub", str(data_root), out=str(tmp_path), epochs=1, device="cpu"))
    frame = load_results(tmp_path)
    assert sorted(frame["split"]) == ["test", "val"] and frame["value"].between(0, 100).all()
    assert frame["prompt_params"].eq(0).all() and frame["num_tokens"].isna().all()
    assert (frame["trainable_params"] == frame["head_params"]).all()


def test_empty_and_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert load_results(tmp_path).empty and list(load_results(tmp_path).columns) == list(COLUMNS)
    with pytest.raises(DataLayoutError, match="runs folder .*nowhere does not exist"):
        load_results(tmp_path / "nowhere")
    bad = tmp_path / "x" / "result.json"
    bad.parent.mkdir()
    _write(tmp_path)
    for text, message in (("{not json", r"x/result\.json cannot be read as JSON"),
                          ('{"config": {"backbone": "b"}}', "config lacks method, data"),
                          ("[1, 2]", "is not a run record")):
        bad.write_text(text)
        frame = load_results(tmp_path)
        assert len(frame) == 1 and frame["status"].eq("finished").all()
        assert re.search(message, capsys.readouterr().err)


PREVIOUS_VERSION_RECORD = {  # as the version before the schema field wrote it
    "run_id": "vtab1k-cifar/vit_test/linear/train800-val200/lr1_wd0_s42_ep1",
    "config": {"backbone": "vit_test", "method": "linear", "data": "vtab1k/cifar", "seed": 42, "lr": 1.0, "wd": 0.0,
               "epochs": 1, "eval_splits": ["val200"]},
    "epochs": [{"epoch": 1, "lr": 0.0, "train_loss": 1.6, "val200_top1": 20.0}], "final": {"val200": 20.0},
    "method_config": {"method": "linear"}, "params": {"prompt": 0, "head": 650, "backbone": 200000, "trainable": 650},
    "samples": {"train": 40, "val200": 10}, "wall_time_s": 1.5, "env": {"python": "3.11"}, "status": "finished",
}


def test_run_record_round_trip_and_the_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    write_json_atomic(path, PREVIOUS_VERSION_RECORD)
    record = RunRecord.read(path)
    assert record.finished and record.is_done and record.score("val200") == 20.0 and record.schema == SCHEMA_VERSION
    assert record.final == {"val200": 20.0} and record.error is None and "error" not in record.to_dict()
    with pytest.raises(TypeError):
        record["final"]  # records are read through their fields, not by key
    made = (record.config["resize"], record.config["precision"], record.config["decode"])
    assert made == ("pil", "bf16", "pil")  # how those runs were made
    record.write(path)
    legacy_config = {**PREVIOUS_VERSION_RECORD["config"], "resize": "pil", "precision": "bf16", "decode": "pil"}
    assert json.loads(path.read_text()) == {**PREVIOUS_VERSION_RECORD, "config": legacy_config,
                                            "schema": SCHEMA_VERSION}
    failed = RunRecord.from_dict({**PREVIOUS_VERSION_RECORD, "status": "failed", "failure": NON_FINITE})
    assert failed.is_done and not failed.finished


@pytest.mark.parametrize(("change", "message"), [
    ({"status": "ok"}, "status 'ok' is not one of running, interrupted, finished, failed"),
    ({"schema": SCHEMA_VERSION + 1}, "newer than this vapt"),
    ({"config": "x"}, "not a run record"),
])
def test_run_record_refuses_foreign_content_by_name(tmp_path: Path, change: dict, message: str) -> None:
    path = tmp_path / "result.json"
    write_json_atomic(path, {**PREVIOUS_VERSION_RECORD, **change})
    with pytest.raises(RecordError, match=f"{path}.*{message}|{message}"):
        RunRecord.read(path)
    assert scan_records(tmp_path, warn=False) == []


def test_every_command_help_points_to_the_docs(capsys: pytest.CaptureFixture) -> None:
    from vapt.__main__ import COMMANDS
    from vapt.__main__ import main as vapt_main

    assert vapt_main(["--help"]) == 0 and "docs/" in capsys.readouterr().out
    for name in COMMANDS:
        with pytest.raises(SystemExit):
            vapt_main([name, "--help"])
        out = capsys.readouterr().out
        assert "docs/method.md" in out and "docs/protocol.md" in out, name
        assert "PROTOCOL.md" not in out and "METHOD.md" not in out, name
