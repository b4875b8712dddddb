"""VTAB-1K and FGVC loaders: the real layouts load, and every kind of bad input names what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vapt.data import FGVCDataset, VTABDataset, build_dataset, parse_data
from vapt.errors import ConfigError, DataLayoutError

SIZES = [("train800", 40), ("val200", 20), ("train800val200", 60), ("test", 20)]


@pytest.mark.parametrize("split, size", SIZES)
def test_vtab_splits_load_as_rgb_tensors(fixture_root: Path, split: str, size: int) -> None:
    data = build_dataset(parse_data("vtab1k/cifar"), fixture_root, split, image_size=32)
    assert len(data) == size
    image, label = data[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0 <= label < 100 and set(data.targets) == set(range(10))


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_fgvc_splits_load(fixture_root: Path, split: str) -> None:
    data = build_dataset(parse_data("fgvc/cub"), fixture_root, split, image_size=32, train=split == "train")
    image, label = data[len(data) - 1]
    assert image.shape == (3, 32, 32) and label == 9
    assert data.num_classes == 200


def test_images_are_converted_to_rgb(fixture_root: Path) -> None:
    image, _ = VTABDataset(fixture_root, "cifar", "test")[0]
    assert image.mode == "RGB"
    image, _ = FGVCDataset(fixture_root, "cub", "test")[0]
    assert image.mode == "RGB"


def test_vtab_root_may_be_the_vtab_folder(fixture_root: Path) -> None:
    assert len(VTABDataset(fixture_root / "vtab-1k", "cifar", "val200")) == 20


def test_missing_root_names_it(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DataLayoutError, match=r"nowhere.*vtab-1k/<task>"):
        VTABDataset(root, "cifar", "train800")
    with pytest.raises(DataLayoutError, match=r"nowhere.*\.json"):
        FGVCDataset(root, "cub", "train")


def test_missing_task_folder_names_it(data_root: Path) -> None:
    with pytest.raises(DataLayoutError, match=r"vtab-1k/dtd does not exist"):
        VTABDataset(data_root, "dtd", "train800")
    with pytest.raises(DataLayoutError, match=r"stanford_dogs does not exist"):
        FGVCDataset(data_root, "stanford_dogs", "train")


def test_missing_split_file_names_it(data_root: Path) -> None:
    (data_root / "vtab-1k/cifar/val200.txt").unlink()
    with pytest.raises(DataLayoutError, match=r"cifar/val200\.txt does not exist.*train800val200"):
        VTABDataset(data_root, "cifar", "val200")
    (data_root / "cub/val.json").unlink()
    with pytest.raises(DataLayoutError, match=r"cub/val\.json does not exist"):
        FGVCDataset(data_root, "cub", "val")


@pytest.mark.parametrize("bad", ["images/a.png", "images/a.png three", ""])
def test_malformed_vtab_line_names_file_and_line(data_root: Path, bad: str) -> None:
    split = data_root / "vtab-1k/cifar/test.txt"
    lines = split.read_text().splitlines()
    lines[2] = bad or "  \t"
    split.write_text("\n".join(lines) + "\n")
    if not bad:  # blank lines are allowed
        assert len(VTABDataset(data_root, "cifar", "test")) == 19
        return
    with pytest.raises(DataLayoutError, match=r"test\.txt, line 3: malformed line"):
        VTABDataset(data_root, "cifar", "test")


@pytest.mark.parametrize("label", [100, -1])
def test_vtab_label_out_of_range_names_file_and_line(data_root: Path, label: int) -> None:
    split = data_root / "vtab-1k/cifar/train800.txt"
    lines = split.read_text().splitlines()
    lines[4] = lines[4].rsplit(maxsplit=1)[0] + f" {label}"
    split.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataLayoutError, match=rf"train800\.txt, line 5: label {label} is outside \[0, 100\)"):
        VTABDataset(data_root, "cifar", "train800")


def test_vtab_missing_image_is_caught_at_construction(data_root: Path) -> None:
    (data_root / "vtab-1k/cifar/images/test_00003.png").unlink()
    message = r"test\.txt, line 4: image file .*test_00003\.png does not exist"
    with pytest.raises(DataLayoutError, match=message):
        VTABDataset(data_root, "cifar", "test")


def test_fgvc_malformed_json_names_file_and_line(data_root: Path) -> None:
    split = data_root / "cub/test.json"
    split.write_text(split.read_text().replace(",", ";", 3))
    with pytest.raises(DataLayoutError, match=r"cub/test\.json, line 2: malformed JSON"):
        FGVCDataset(data_root, "cub", "test")
    split.write_text("[1, 2]")
    with pytest.raises(DataLayoutError, match=r"test\.json: expected a non-empty JSON object"):
        FGVCDataset(data_root, "cub", "test")


@pytest.mark.parametrize("label", [200, -3, "7", 1.5])
def test_fgvc_bad_label_names_the_entry(data_root: Path, label: object) -> None:
    split = data_root / "cub/val.json"
    entries = json.loads(split.read_text())
    key = sorted(entries)[3]
    entries[key] = label
    split.write_text(json.dumps(entries))
    with pytest.raises(DataLayoutError, match=rf"val\.json, entry '{key}': label"):
        FGVCDataset(data_root, "cub", "val")


def test_fgvc_missing_image_names_it(data_root: Path) -> None:
    entries = json.loads((data_root / "cub/train.json").read_text())
    key = sorted(entries)[-1]
    (data_root / "cub" / key).unlink()
    with pytest.raises(DataLayoutError, match=rf"entry '{key}': image file .* does not exist"):
        FGVCDataset(data_root, "cub", "train")


@pytest.mark.parametrize("benchmark", ["vtab1k/cifar", "fgvc/cub"])
def test_corrupt_image_errors_when_read_naming_it(data_root: Path, benchmark: str) -> None:
    spec = parse_data(benchmark)
    data = build_dataset(spec, data_root, "test", image_size=32)
    path, _ = data.samples[1]
    path.write_bytes(b"this is not an image")
    data[0]  # the other images still read
    with pytest.raises(DataLayoutError, match=rf"{path.name} is corrupt or not an image"):
        data[1]


def test_corrupt_image_through_a_data_loader(data_root: Path) -> None:
    data = build_dataset(parse_data("vtab1k/cifar"), data_root, "val200", image_size=32)
    data.samples[5][0].write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataLayoutError, match=r"val200_00005\.png"):
        list(torch.utils.data.DataLoader(data, batch_size=8))


def test_unknown_names_are_config_errors(fixture_root: Path) -> None:
    with pytest.raises(ConfigError, match=r"vtab1k/<task> or fgvc/<dataset>"):
        parse_data("imagenet")
    with pytest.raises(ConfigError, match=r"unknown vtab1k dataset 'digits'.*num_classes"):
        parse_data("vtab1k/digits")
    with pytest.raises(ConfigError, match=r"has 100 classes"):
        parse_data("vtab1k/cifar", num_classes=10)
    with pytest.raises(DataLayoutError, match=r"unknown VTAB-1K split 'train'.*train800"):
        VTABDataset(fixture_root, "cifar", "train")


def test_custom_task_with_explicit_classes(data_root: Path) -> None:
    (data_root / "vtab-1k/cifar").rename(data_root / "vtab-1k/digits")
    spec = parse_data("vtab1k/digits", num_classes=10)
    assert spec.group == "custom"
    assert len(build_dataset(spec, data_root, "train800", image_size=32)) == 40


def test_fgvc_paths_relative_to_an_images_folder(data_root: Path) -> None:
    split = data_root / "cub/test.json"
    entries = json.loads(split.read_text())
    split.write_text(json.dumps({k.removeprefix("images/"): v for k, v in entries.items()}))
    data = FGVCDataset(data_root, "cub", "test")
    assert [p for p, _ in data.samples] == [data_root / "cub" / k for k in entries]
