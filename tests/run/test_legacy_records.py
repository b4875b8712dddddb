"""Records made before `--resize`, `--precision`, `--decode` existed (PIL resize, decoding, bf16): read, kept apart."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from vapt.data import build_dataset, parse_data
from vapt.errors import ConfigError
from vapt.report.frame import load_results
from vapt.report.gradcam import load_run_images
from vapt.run.config import TrainConfig, run_dir, run_id
from vapt.run.record import RECORD_NAME, RunRecord
from vapt.run.sweep import Launcher, SweepError, is_run_done, run_stage
from vapt.run.train import train

NEW_FIELDS = ("resize", "precision", "decode", "cache", "cache_dir", "compile")


@pytest.fixture
def data_root(fixture_roots: Callable[..., Path]) -> Path:
    """The cifar fixture with 4 classes (read-only)."""
    return fixture_roots(("vtab1k/cifar",), num_classes=4)


def _config(data_root: Path, out: Path, **fields: Any) -> TrainConfig:
    return TrainConfig(backbone="vit_test", method="linear", data="vtab1k/cifar", data_root=str(data_root),
                       out=str(out), epochs=1, batch_size=8, pretrained=False, device="cpu", **fields)


def _write_record(config: TrainConfig, drop_new_fields: bool, **overrides: Any) -> Path:
    """A finished record at `config`'s run folder; `drop_new_fields` writes it as the earlier version did."""
    data = {**config.resolved().to_dict(), **overrides}
    if drop_new_fields:
        data = {k: v for k, v in data.items() if k not in NEW_FIELDS}
    record = RunRecord(run_id=run_id(config), config=data, status="finished", final={"val200": 50.0},
                       epochs=[{"epoch": 1, "val200_top1": 50.0}])
    return record.write(run_dir(config) / RECORD_NAME)


def test_a_record_without_resize_reads_as_pil_and_bf16(data_root: Path, tmp_path: Path) -> None:
    config = _config(data_root, tmp_path / "runs", resize="pil")
    path = _write_record(config, drop_new_fields=True)
    assert "resize" not in json.loads(path.read_text())["config"]
    record = RunRecord.read(path)
    assert (record.config["resize"], record.config["precision"], record.config["decode"]) == ("pil", "bf16", "pil")
    assert TrainConfig.from_dict(record.config).resolved().resize == "pil"
    table = load_results(tmp_path / "runs")
    assert list(table["value"]) == [50.0] and list(table["run_id"]) == [run_id(config)]


def test_an_older_pil_run_is_not_done_for_the_tf1_default(data_root: Path, tmp_path: Path) -> None:
    tf1 = _config(data_root, tmp_path / "runs")
    pil = dataclasses.replace(tf1, resize="pil", decode="pil")
    _write_record(pil, drop_new_fields=True)
    assert run_id(tf1) != run_id(pil) and run_id(tf1) == run_id(pil) + "_rstf1_dctfds"
    assert is_run_done(pil) and not is_run_done(tf1)
    assert not is_run_done(dataclasses.replace(pil, decode="tfds"))  # a record without the field is PIL-decoded
    assert not is_run_done(dataclasses.replace(pil, precision="fp32"))


def test_a_record_made_with_another_resize_is_neither_done_nor_overwritten(data_root: Path, tmp_path: Path,
                                                                           ) -> None:
    pil = _config(data_root, tmp_path / "runs", resize="pil")
    path = _write_record(pil, drop_new_fields=False, resize="tf1")  # e.g. moved by hand into the PIL run's folder
    before = path.read_bytes()
    assert not RunRecord.read(path).made_with(pil) and not is_run_done(pil)
    made = r"resize tf1, precision bf16, decode tfds, not resize pil, precision bf16, decode tfds"
    with pytest.raises(ConfigError, match=r"result.json was made with " + made):
        train(pil)
    assert path.read_bytes() == before
    with pytest.raises(SweepError, match="made with resize tf1, precision bf16, decode tfds; move it away"):
        run_stage([pil], Launcher("debug", folder=str(tmp_path / "submitit")))
    assert path.read_bytes() == before


def test_gradcam_images_use_the_runs_own_resize(data_root: Path, tmp_path: Path) -> None:
    spec = parse_data("vtab1k/cifar")
    size = 24  # the fixtures are 32 px, so the two resize modes give different inputs
    expected = {mode: build_dataset(spec, data_root, "test", image_size=size, resize=mode)[0][0]
                for mode in ("pil", "tf1")}
    assert not torch.equal(expected["pil"], expected["tf1"])
    for mode, drop in (("pil", True), ("tf1", False)):
        config = _config(data_root, tmp_path / mode, resize=mode)
        _write_record(config, drop_new_fields=drop, image_size=size)
        _, inputs, _ = load_run_images(run_dir(config), count=1)
        assert torch.equal(inputs[0], expected[mode]), mode
