"""Full disks: the cache warns once and runs on from memory; `train --out` stops with one error line, exit 2.

Two ways to fill a disk: a real one (a tiny tmpfs mounted for the test, which needs root and a kernel that
allows it; skipped with the reason otherwise) and a simulated one (torch.save writes part of the file,
then fails as it does on a full disk), which runs everywhere.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from vapt.__main__ import main as vapt_main
from vapt.data import build_dataset, parse_data, write_fixtures
from vapt.data import cache as cache_module
from vapt.data.cache import load_split

REPO = Path(__file__).parents[2]
CACHE_WARNING = "warning: preprocessed cache"


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fixtures")
    write_fixtures(root, tasks=("vtab1k/cifar",), num_classes=3)
    return root


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "_warned", set())


def _mount_small_disk(folder: Path, size: str) -> None:
    folder.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root; the simulated full disk covers the same paths")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB file system of its own, unmounted afterwards."""
    folder = tmp_path / "disk"
    _mount_small_disk(folder, "2m")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def fill(disk: Path) -> Path:
    """Fill `disk` up with one file (returned, so a test can free the space again)."""
    filler = disk / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC
    return filler


def failing_save(obj, handle, *args, **kwargs) -> None:
    """torch.save on a full disk: part of the file is written, then the writer fails (the OSError is the context)."""
    handle.write(b"PK\x03\x04 partial")
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3456 vs 3350") from None


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _split(data_root: Path, split: str):
    return build_dataset(parse_data("vtab1k/cifar"), data_root, split, image_size=24)


def test_a_cache_that_cannot_be_saved_warns_once_and_gives_the_same_images(
        fixture_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    reference = load_split(_split(fixture_root, "val200"), "vtab1k", False, 24, None, tmp_path / "good")
    existing = load_split(_split(fixture_root, "train800"), "vtab1k", False, 24, None, tmp_path / "cache")
    before = digests(tmp_path / "cache")
    capsys.readouterr()
    monkeypatch.setattr(torch, "save", failing_save)
    for split in ("val200", "test"):  # each needs the pool rewritten, which fails
        cached = load_split(_split(fixture_root, split), "vtab1k", False, 24, None, tmp_path / "cache")
        assert cached.rebuilt == len(cached)
    assert torch.equal(load_split(_split(fixture_root, "val200"), "vtab1k", False, 24, None,
                                  tmp_path / "cache").images, reference.images)
    err = capsys.readouterr().err
    assert err.count(CACHE_WARNING) == 1 and "(no space left on device)" in err and "--no-cache" in err
    assert digests(tmp_path / "cache") == before  # the earlier pool is whole; no partial or temporary file
    assert existing.rebuilt == len(existing)


def test_a_cache_folder_that_cannot_be_made_warns_and_decodes_in_memory(
        fixture_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    cached = load_split(_split(fixture_root, "val200"), "vtab1k", False, 24, None, blocker / "cache")
    reference = load_split(_split(fixture_root, "val200"), "vtab1k", False, 24, None, tmp_path / "good")
    assert torch.equal(cached.images, reference.images)
    assert capsys.readouterr().err.count(CACHE_WARNING) == 1


def test_a_cache_on_a_really_full_disk(fixture_root: Path, small_disk: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    load_split(_split(fixture_root, "train800"), "vtab1k", False, 24, None, small_disk)  # fits
    before = digests(small_disk)
    filler = fill(small_disk)
    cached = load_split(_split(fixture_root, "test"), "vtab1k", False, 24, None, small_disk)
    reference = load_split(_split(fixture_root, "test"), "vtab1k", False, 24, None, tmp_path / "good")
    assert torch.equal(cached.images, reference.images)
    assert capsys.readouterr().err.count(CACHE_WARNING) == 1
    filler.unlink()
    assert digests(small_disk) == before  # the train800 pool is whole, nothing half written beside it


def _train_argv(data_root: Path, out: Path, lr: str) -> list[str]:
    return ["train", "--backbone", "vit_test", "--method", "linear", "--data", "vtab1k/cifar", "--data-root",
            str(data_root), "--out", str(out), "--epochs", "2", "--batch-size", "8", "--device", "cpu", "--lr", lr,
            "--wd", "0", "--no-cache"]


def test_train_on_a_full_disk_is_one_error_line_and_keeps_earlier_results(
        fixture_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "runs"
    assert vapt_main(_train_argv(fixture_root, out, "1")) == 0
    before = digests(out)
    capsys.readouterr()
    monkeypatch.setattr(torch, "save", failing_save)
    assert vapt_main(_train_argv(fixture_root, out, "2")) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot write run output '") and "Traceback" not in err
    assert "checkpoint.pt': no space left on device; files written before are intact" in lines[0]
    after = digests(out)
    assert {k: v for k, v in after.items() if k in before} == before
    assert not [name for name in after if name.endswith(".tmp.pt") or "partial" in name]


@pytest.mark.slow
def test_train_on_a_really_full_disk_then_resumed(fixture_root: Path, small_disk: Path) -> None:
    data_root = small_disk / "data"
    shutil.copytree(fixture_root, data_root)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def train(lr: str) -> subprocess.CompletedProcess:
        argv = _train_argv(data_root, small_disk / "runs", lr)
        return subprocess.run([sys.executable, "-m", "vapt", *argv], capture_output=True, text=True, cwd=REPO, env=env)

    assert train("1").returncode == 0
    before = digests(small_disk / "runs")
    filler = fill(small_disk)
    done = train("2")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: cannot write run output '") and done.stderr.count("\n") == 1
    assert "no space left on device" in done.stderr and str(small_disk / "runs") in done.stderr
    after = digests(small_disk / "runs")
    assert {k: v for k, v in after.items() if k in before} == before
    assert not [name for name in after if ".tmp" in name]
    filler.unlink()
    resumed = train("2")
    assert resumed.returncode == 0, resumed.stderr
