"""Fixture writers produce the real layouts; transforms follow the protocol's preprocessing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vapt.data import VTABDataset, build_transform, parse_data
from vapt.data.fixtures import write_fixtures, write_vtab_task
from vapt.errors import ConfigError


def test_fixture_layout(fixture_root: Path) -> None:
    task = fixture_root / "vtab-1k/cifar"
    for split, size in [("train800", 40), ("val200", 20), ("train800val200", 60), ("test", 20)]:
        lines = (task / f"{split}.txt").read_text().splitlines()
        assert len(lines) == size
        assert all((task / line.split()[0]).is_file() for line in lines)
    train = json.loads((fixture_root / "cub/train.json").read_text())
    assert len(train) == 40 and all(k.endswith(".jpg") for k in train)
    with Image.open(fixture_root / "cub" / next(iter(train))) as image:
        assert image.format == "JPEG" and image.size == (32, 32)


def test_fixture_splits_are_disjoint(fixture_root: Path) -> None:
    data = {s: VTABDataset(fixture_root, "cifar", s) for s in ("train800", "val200", "test")}
    pixels = {s: {np.asarray(d[i][0]).tobytes() for i in range(len(d))} for s, d in data.items()}
    assert not pixels["train800"] & pixels["test"] and not pixels["val200"] & pixels["test"]


@pytest.mark.slow
def test_fixtures_cli(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vapt", "fixtures", "--out", str(tmp_path), "--tasks", "vtab1k/kitti"],
        capture_output=True, text=True, cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr
    labels = {int(line.split()[1]) for line in (tmp_path / "vtab-1k/kitti/test.txt").read_text().splitlines()}
    assert labels == {0, 1, 2, 3}  # kitti has 4 classes


def test_write_vtab_task_from_arrays(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    splits = {s: (rng.random((n, 8, 8)), [i % 3 for i in range(n)]) for s, n in
              [("train800", 6), ("val200", 3), ("test", 3)]}
    write_vtab_task(tmp_path, "held_out", splits)
    data = VTABDataset(tmp_path, "held_out", "train800val200", num_classes=3)
    assert len(data) == 9 and data.targets == [0, 1, 2, 0, 1, 2, 0, 1, 2]
    with pytest.raises(ConfigError, match=r"missing \['test'\]"):
        write_vtab_task(tmp_path, "bad", {"train800": splits["train800"], "val200": splits["val200"]})


def test_write_fixtures_respects_class_count(tmp_path: Path) -> None:
    write_fixtures(tmp_path, tasks=("vtab1k/patch_camelyon",))
    assert set(VTABDataset(tmp_path, "patch_camelyon", "train800").targets) == {0, 1}


def test_vtab_transform_resizes_without_augmentation() -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    transform = build_transform("vtab1k", train=True, image_size=16)
    first, second = transform(image), transform(image)
    assert first.shape == (3, 16, 16) and torch.equal(first, second)
    white = build_transform("vtab1k", train=False, image_size=4)(Image.new("RGB", (9, 9), (255, 255, 255)))
    assert torch.allclose(white[0], torch.full((4, 4), (1 - 0.485) / 0.229))


def test_fgvc_transforms_crop() -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    assert build_transform("fgvc", train=False)(image).shape == (3, 224, 224)
    torch.manual_seed(0)
    train = build_transform("fgvc", train=True, image_size=32)
    crops = {train(image).sum().item() for _ in range(4)}
    assert len(crops) > 1  # random crops / flips
    with pytest.raises(ConfigError, match="unknown benchmark 'imagenet'"):
        build_transform("imagenet", train=False)


def test_data_spec_defaults() -> None:
    vtab, fgvc = parse_data("vtab1k/svhn"), parse_data("fgvc/stanford_dogs")
    assert (vtab.group, vtab.num_classes, vtab.default_train_split) == ("natural", 10, "train800")
    assert vtab.default_eval_splits("train800") == ("val200",)
    assert vtab.default_eval_splits("train800val200") == ("test",)
    assert (fgvc.group, fgvc.num_classes, fgvc.default_eval_splits("train")) == ("fgvc", 120, ("val", "test"))
