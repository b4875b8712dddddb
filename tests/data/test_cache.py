"""The preprocessed cache: same inputs as the uncached path, decoded once, rebuilt when stale or corrupt."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.constants import IMAGENET_DEFAULT_STD
from torch.utils.data import DataLoader, Subset

import vapt.data.images
from tests.conftest import private_copy
from tests.float_bounds import elementwise_atol
from vapt.data import build_dataset, parse_data
from vapt.data.cache import CACHE_FOLDER, cached_loader, default_cache_dir, load_split, pool_kind, pool_path
from vapt.data.fixtures import write_vtab_task
from vapt.run.config import TrainConfig
from vapt.run.sweep import Launcher, sweep

# uint8 rounding of a tf1 resize, in normalised units: half a grey level over the smallest ImageNet std (0.224,
# green), plus three float32 roundings (/255, -mean, /std) of values below 2.7 on each path
TF1_BOUND = 0.5 / 255 / min(IMAGENET_DEFAULT_STD) + 2 * elementwise_atol(2.7, 3)


@pytest.fixture
def data_root(fixture_roots: Callable[..., Path], tmp_path: Path) -> Path:
    """A private copy of the cifar + cub fixtures with 4 classes."""
    return private_copy(fixture_roots(num_classes=4), tmp_path)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts every image decode (cached and uncached paths both read through vapt.data.images.read_rgb)."""
    counts: Counter = Counter()
    real = vapt.data.images.read_rgb

    def counting(path: Path, decode: str = "pil") -> Image.Image:
        counts[str(path)] += 1
        return real(path, decode)

    monkeypatch.setattr(vapt.data.images, "read_rgb", counting)
    return counts


def _batches(loader: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(images.clone(), labels.clone()) for images, labels in loader]


def _pair(data_root: Path, name: str, split: str, train: bool, resize: str | None, size: int = 24,
          indices: list[int] | None = None, decode: str | None = None) -> tuple[list, list]:
    spec = parse_data(name)
    dataset = build_dataset(spec, data_root, split, image_size=size, train=train, resize=resize, decode=decode)
    if indices is not None:
        dataset = Subset(dataset, indices)
    torch.manual_seed(3)
    cold = _batches(DataLoader(dataset, batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(1)))
    loader = cached_loader(dataset, spec.benchmark, train, size, resize, 5, True, torch.Generator().manual_seed(1),
                           torch.device("cpu"), data_root / "cache")
    torch.manual_seed(3)
    return cold, _batches(loader)


@pytest.mark.parametrize("resize", ["pil", "tf1"])
def test_cached_vtab_inputs_equal_the_uncached_ones(data_root: Path, resize: str) -> None:
    cold, cached = _pair(data_root, "vtab1k/cifar", "train800", True, resize)
    assert len(cold) == len(cached) == 4
    for (a, la), (b, lb) in zip(cold, cached, strict=True):
        assert torch.equal(la, lb) and a.shape == b.shape == (len(la), 3, 24, 24)
        if resize == "pil":
            assert torch.equal(a, b)  # PIL resizes to uint8 already: bit-identical
        else:
            difference = (a - b).abs().max().item()
            assert 0 < difference <= TF1_BOUND


def test_the_rounding_bound_holds_and_is_reached_at_224_px(tmp_path: Path) -> None:
    """On photograph-sized images resized to 224 px the bound is reached (the green channel's std, 0.224, sets it)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:375, 0:500] / 500
    smooth = np.stack([128 + 100 * np.sin(7 * x + 2 * y), 128 + 100 * np.cos(5 * y - 3 * x), 255 * x], axis=-1)
    images = np.clip(smooth[None] + rng.normal(0, 20, (4, 375, 500, 3)), 0, 255).astype(np.uint8)
    labels = [0, 1, 0, 1]
    write_vtab_task(tmp_path, "cifar", {s: (images, labels) for s in ("train800", "val200", "test")})
    cold, cached = _pair(tmp_path, "vtab1k/cifar", "test", False, "tf1", size=224)
    difference = max((a - b).abs().max().item() for (a, _), (b, _) in zip(cold, cached, strict=True))
    assert 0.5 / 255 / 0.225 < difference <= TF1_BOUND  # the bound with std 0.225 would be exceeded


def test_both_jpeg_decoders_give_the_same_inputs_cached_and_uncached(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 40, 40, 3), dtype=np.uint8)
    write_vtab_task(tmp_path, "cifar", {s: (images, [0, 1, 0, 1]) for s in ("train800", "val200", "test")},
                    image_format="jpg")
    inputs = {}
    for decode in ("tfds", "pil"):
        cold, cached = _pair(tmp_path, "vtab1k/cifar", "test", False, "pil", size=40, decode=decode)
        assert all(torch.equal(a, b) for (a, _), (b, _) in zip(cold, cached, strict=True))
        inputs[decode] = torch.cat([a for a, _ in cold])
    assert not torch.equal(inputs["tfds"], inputs["pil"])  # separate pools: one decoder's pixels never serve the other
    pools = {p.name for p in (tmp_path / "cache").rglob("*.pt")}
    assert pools == {"resize40_pil.pt", "resize40_pil_tfds.pt"}


def test_cached_fgvc_splits_equal_the_uncached_ones(data_root: Path) -> None:
    for split, train in (("val", False), ("train", True)):  # train: random crops and flips from the same RNG
        cold, cached = _pair(data_root, "fgvc/cub", split, train, None)
        assert len(cold) == len(cached)
        for (a, la), (b, lb) in zip(cold, cached, strict=True):
            assert torch.equal(la, lb) and torch.equal(a, b)
    cold, cached = _pair(data_root, "fgvc/cub", "train", True, None, indices=[0, 3, 5, 9, 12])
    assert torch.equal(torch.cat([a for a, _ in cold]), torch.cat([b for b, _ in cached]))


def test_each_image_is_decoded_once_and_reused(data_root: Path, decodes: Counter) -> None:
    spec = parse_data("vtab1k/cifar")
    dataset = build_dataset(spec, data_root, "train800", image_size=24)
    first = load_split(dataset, "vtab1k", True, 24, None, data_root / "cache")
    assert first.rebuilt == len(dataset) and set(decodes.values()) == {1}
    again = load_split(dataset, "vtab1k", False, 24, None, data_root / "cache")  # VTAB: train = eval images
    union = load_split(build_dataset(spec, data_root, "train800val200", image_size=24), "vtab1k", False, 24, None,
                       data_root / "cache")
    val = load_split(build_dataset(spec, data_root, "val200", image_size=24), "vtab1k", False, 24, None,
                     data_root / "cache")
    assert again.rebuilt == 0 and torch.equal(again.images, first.images)
    assert union.rebuilt == len(build_dataset(spec, data_root, "val200", image_size=24)) and val.rebuilt == 0
    assert max(decodes.values()) == 1


def test_a_two_run_sweep_decodes_each_image_once(data_root: Path, tmp_path: Path, decodes: Counter) -> None:
    base = TrainConfig(backbone="vit_test", method="linear", data="vtab1k/cifar", data_root=str(data_root),
                       out=str(tmp_path / "runs"), epochs=1, batch_size=16, device="cpu")
    launcher = Launcher(executor="debug", folder=str(tmp_path / "runs" / ".submitit"))
    selections = sweep(base, ["vtab1k/cifar"], grid="5,1:0", seeds=(42,), launcher=launcher)
    assert len(selections[0]["grid_runs"]) == 2 and len(selections[0]["final_runs"]) == 1
    images = {p for p in (data_root / "vtab-1k" / "cifar" / "images").iterdir()}
    assert set(decodes) == {str(p) for p in images}  # train800, val200 and test images, each once
    assert set(decodes.values()) == {1}
    assert (data_root / CACHE_FOLDER).is_dir()


def test_no_cache_keeps_the_old_path(data_root: Path, tmp_path: Path, decodes: Counter) -> None:
    from vapt.run.train import train

    config = TrainConfig(backbone="vit_test", method="linear", data="vtab1k/cifar", data_root=str(data_root),
                         out=str(tmp_path / "runs"), epochs=2, batch_size=16, device="cpu", lr=1, wd=0, cache=False)
    record = train(config)
    assert record.status == "finished" and record.config["cache"] is False
    assert not (data_root / CACHE_FOLDER).exists()
    assert set(decodes.values()) == {2}  # every image of train800 and val200 is decoded again in each epoch
    cached = train(TrainConfig(**{**config.to_dict(), "cache": True, "out": str(tmp_path / "cached"),
                                  "eval_splits": None, "method_options": ()}))
    assert cached.final == record.final  # 32 px fixtures: tf1 at the native size is exact


def _pool_file(data_root: Path) -> Path:
    folder = data_root / "vtab-1k" / "cifar"
    return pool_path(data_root / "cache", "vtab1k", folder, pool_kind("vtab1k", False, 24, "tf1", "tfds"))


def test_stale_entries_are_decoded_again(data_root: Path, decodes: Counter) -> None:
    spec = parse_data("vtab1k/cifar")
    dataset = build_dataset(spec, data_root, "val200", image_size=24)
    load_split(dataset, "vtab1k", False, 24, None, data_root / "cache")
    changed = dataset.samples[2][0]
    Image.fromarray(np.full((32, 32, 3), 7, dtype=np.uint8)).save(changed)
    os.utime(changed, ns=(1, 1))  # a different mtime even on coarse file systems
    split = load_split(dataset, "vtab1k", False, 24, None, data_root / "cache")
    assert split.rebuilt == 1 and decodes[str(changed)] == 2
    assert torch.equal(split.images[2], torch.full((3, 24, 24), 7, dtype=torch.uint8))


@pytest.mark.parametrize("damage", ["truncate", "flip_pixel", "foreign"])
def test_corrupt_pools_are_rebuilt_not_trusted(data_root: Path, damage: str, capsys: pytest.CaptureFixture) -> None:
    spec = parse_data("vtab1k/cifar")
    dataset = build_dataset(spec, data_root, "val200", image_size=24)
    good = load_split(dataset, "vtab1k", False, 24, None, data_root / "cache")
    path = _pool_file(data_root)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "foreign":
        torch.save({"version": 1, "kind": "resize24_tf1", "data": torch.zeros(3)}, path)
    else:
        payload = torch.load(path, weights_only=True)
        payload["data"][100] ^= 0xFF
        torch.save(payload, path)
    split = load_split(dataset, "vtab1k", False, 24, None, data_root / "cache")
    assert torch.equal(split.images, good.images)
    assert split.rebuilt == (1 if damage == "flip_pixel" else len(dataset))
    if damage != "flip_pixel":
        assert "rebuilding it" in capsys.readouterr().out
    assert load_split(dataset, "vtab1k", False, 24, None, data_root / "cache").rebuilt == 0


def test_default_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_cache_dir(tmp_path) == tmp_path / CACHE_FOLDER
    locked = tmp_path / "read-only"
    locked.mkdir()
    locked.chmod(0o555)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    try:
        expected = tmp_path / "xdg" / "vapt" if not os.access(locked, os.W_OK) else locked / CACHE_FOLDER
        assert default_cache_dir(locked) == expected
    finally:
        locked.chmod(0o755)
