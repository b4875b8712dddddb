"""Split files as real datasets have them: Windows line endings, a byte-order mark, blank lines, odd paths."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from vapt.data import FGVCDataset, VTABDataset
from vapt.data.check import check_data_root
from vapt.errors import DataLayoutError


def vtab_split(data_root: Path) -> Path:
    return data_root / "vtab-1k" / "cifar" / "val200.txt"


def samples(data_root: Path) -> list[tuple[Path, int]]:
    return VTABDataset(data_root, "cifar", "val200").samples


@pytest.mark.parametrize(
    "rewrite",
    [
        lambda lines: "\r\n".join(lines) + "\r\n",  # Windows
        lambda lines: "\r".join(lines) + "\r",  # classic Mac
        lambda lines: "\ufeff" + "\n".join(lines) + "\n",  # UTF-8 byte-order mark
        lambda lines: "\ufeff" + "\r\n".join(lines) + "\r\n\r\n  \r\n\t\r\n",  # all of it, trailing blank lines
        lambda lines: "\n\n" + "\n\n".join(lines) + "\n\n\n",  # blank lines anywhere
        lambda lines: "\n".join(line.replace(" ", "\t") for line in lines),  # tab separated, no final newline
    ],
    ids=["crlf", "cr", "bom", "bom-crlf-trailing-blanks", "blank-lines", "tabs"],
)
def test_split_files_are_read_as_meant(data_root: Path, rewrite) -> None:
    expected = samples(data_root)
    lines = vtab_split(data_root).read_text(encoding="utf-8").splitlines()
    vtab_split(data_root).write_bytes(rewrite(lines).encode("utf-8"))
    assert samples(data_root) == expected
    report = check_data_root(data_root, decode=False)["datasets"]["vtab1k/cifar"]["splits"]["val200"]
    assert report["images"] == len(expected) and report["problems"]["malformed"] == 0


def _rename_first(data_root: Path, new_name: str) -> tuple[list[str], int]:
    """Move the first val200 image to `new_name` (relative to the task folder); returns the lines and its label."""
    split = vtab_split(data_root)
    lines = split.read_text(encoding="utf-8").splitlines()
    relative, label = lines[0].rsplit(maxsplit=1)
    target = split.parent / new_name
    target.parent.mkdir(parents=True, exist_ok=True)
    (split.parent / relative).rename(target)
    return lines, int(label)


def test_paths_with_spaces_and_non_ascii_characters(data_root: Path) -> None:
    name = "my images/é ü 猫 ñ 1.png"
    lines, label = _rename_first(data_root, name)
    vtab_split(data_root).write_text("\n".join([f"{name} {label}", *lines[1:]]) + "\n", encoding="utf-8")
    first = samples(data_root)[0]
    assert first == (vtab_split(data_root).parent / name, label)


def test_a_name_in_the_other_unicode_normal_form_is_found(data_root: Path) -> None:
    decomposed = unicodedata.normalize("NFD", "images/café.png")  # as macOS writes it
    lines, label = _rename_first(data_root, decomposed)
    composed = unicodedata.normalize("NFC", "images/café.png")
    assert composed != decomposed
    vtab_split(data_root).write_text("\n".join([f"{composed} {label}", *lines[1:]]) + "\n", encoding="utf-8")
    assert samples(data_root)[0] == (vtab_split(data_root).parent / decomposed, label)
    report = check_data_root(data_root, decode=False)["datasets"]["vtab1k/cifar"]["splits"]["val200"]
    assert report["problems"]["missing_files"] == 0


def test_a_split_file_that_is_not_utf8_is_refused_at_its_line(data_root: Path) -> None:
    lines = vtab_split(data_root).read_text(encoding="utf-8").splitlines()
    data = ("\n".join(lines[:2]) + "\n").encode() + "images/caf\xe9.png 1\n".encode("latin-1")
    vtab_split(data_root).write_bytes(data)
    with pytest.raises(DataLayoutError, match=r"val200\.txt, line 3: byte 0xe9 is not UTF-8 text"):
        samples(data_root)
    report = check_data_root(data_root, decode=False)["datasets"]["vtab1k/cifar"]
    assert report["status"] == "problems" and report["splits"]["val200"]["problems"]["malformed"] == 1


def test_a_label_in_another_script_is_malformed(data_root: Path) -> None:
    lines = vtab_split(data_root).read_text(encoding="utf-8").splitlines()
    relative, _ = lines[0].rsplit(maxsplit=1)
    vtab_split(data_root).write_text("\n".join([f"{relative} ３", *lines[1:]]), encoding="utf-8")
    with pytest.raises(DataLayoutError, match=r"val200\.txt, line 1: malformed line"):
        samples(data_root)


def test_fgvc_json_with_bom_crlf_and_non_ascii_paths(data_root: Path) -> None:
    split = data_root / "cub" / "val.json"
    entries = json.loads(split.read_text(encoding="utf-8"))
    expected = FGVCDataset(data_root, "cub", "val").samples
    (old, label), *rest = entries.items()
    found = next(p for p in (split.parent / old, split.parent / "images" / old) if p.is_file())
    renamed = found.parent / "Grüne Vögel 1.jpg"
    found.rename(renamed)
    new_key = str(renamed.relative_to(split.parent))
    text = json.dumps({new_key: label, **dict(rest)}, indent=1, ensure_ascii=False).replace("\n", "\r\n")
    split.write_bytes(("\ufeff" + text + "\r\n\r\n").encode("utf-8"))
    assert FGVCDataset(data_root, "cub", "val").samples == [(renamed, label), *expected[1:]]


def test_fgvc_json_that_is_not_utf8_is_refused_at_its_line(data_root: Path) -> None:
    split = data_root / "cub" / "val.json"
    split.write_bytes(b'{\n"a.jpg": 1,\n"caf\xe9.jpg": 2\n}\n')
    with pytest.raises(DataLayoutError, match=r"val\.json, line 3: byte 0xe9 is not UTF-8 text"):
        FGVCDataset(data_root, "cub", "val")
