"""`python -m vapt bench --loader`: cold and cached images/s in one run, on a task in the real layout."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from vapt.__main__ import main as vapt_main
from vapt.data import VTABDataset
from vapt.run.loader_bench import write_synthetic_vtab_task


def test_synthetic_task_has_the_real_layout(tmp_path: Path) -> None:
    folder = write_synthetic_vtab_task(tmp_path, "svhn", 50, 30, counts={"train800": 6, "val200": 2, "test": 2})
    data = VTABDataset(tmp_path, "svhn", "train800val200")
    assert len(data) == 8 and data[0][0].size == (50, 30) and (folder / "images" / "train800_00000.jpg").is_file()


def test_loader_bench_writes_cold_and_cached_rows(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, out = tmp_path / "data", tmp_path / "loader.csv"
    argv = ["bench", "--loader", "--data", "vtab1k/svhn", "--data-root", str(root), "--synthetic", "40x30",
            "--image-size", "32", "--batch-size", "16", "--backbone", "vit_test", "--steps", "1", "--out", str(out)]
    assert vapt_main(argv) == 0
    table = pd.read_csv(out)
    assert list(table["path"]) == ["cold", "cached"] and list(table.columns[:2]) == ["path", "images_per_s"]
    assert (table["images_per_s"] > 0).all() and (table["images"] == 800).all()
    assert table["data_wait_share"].between(0, 1).all()
    text = capsys.readouterr().out
    assert "synthetic 40x30 JPEG" in text and "cached / cold images per second:" in text and "load average" in text


@pytest.mark.parametrize("extra, message", [
    (["--synthetic", "40by30"], "--synthetic must be WxH in pixels"),
    (["--steps", "-1"], "--steps must be >= 0, got -1"),
    (["--backbone", "vit_test", "--steps", "1", "--image-size", "48"], "backbone 'vit_test', which takes 32 px input"),
])
def test_loader_bench_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str) -> None:
    write_synthetic_vtab_task(tmp_path, "svhn", 40, 30, counts={"train800": 4, "val200": 2, "test": 2})
    argv = ["bench", "--loader", "--data", "vtab1k/svhn", "--data-root", str(tmp_path), *extra]
    assert vapt_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err and err.count("\n") == 1


def test_missing_task_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert vapt_main(["bench", "--loader", "--data", "vtab1k/dtd", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error: VTAB-1K task folder" in err and "Traceback" not in err
