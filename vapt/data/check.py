"""`python -m vapt data check --data-root DIR`: what a data root holds, against the benchmarks' layouts and sizes.

For every VTAB-1K task and FGVC dataset found under the data root: the layout (split files present),
each split's size against the expected one (VTAB-1K: 800 / 200 / 1,000, and for test the commonly used
VTAB test size of the task; FGVC: the VPT splits), class coverage per split, split lines that are
malformed or point to missing files, labels out of range, images that cannot be decoded or have no
defined 8-bit scale (e.g. 32-bit floats), and per split the image modes and sizes. Warnings (in the
report and the manifest, never errors): images smaller than the backbone's patch on a side
(`--patch-size`, default 16), images of more than 8 bits (scaled to 8 bits when read), and classes of an
evaluation split (val200, test; FGVC: val, test) absent from the split trained before it (train800,
train800val200; FGVC: train); `train` prints the same warnings for its own splits first. Tasks that are
absent are listed, not errors. A manifest (counts, image-size histogram, SHA-256 of every
split file, and with `--hash-images` a SHA-256 over each split's image files) is written atomically to
`--out`, so two copies of the data can be compared in seconds: `--compare THEIR_MANIFEST.json` prints
the differences.

Exit status: 0 when every dataset found is readable and well formed (sizes that differ from the
expected ones are warnings only, never errors: copies of the data differ, and the VTAB test sizes are
the commonly used ones, not confirmed by a source in this project), 1 when a split has malformed
lines, missing or unreadable images or labels out of range, 2 for bad command-line input.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from vapt.cli import DOCS_HELP
from vapt.data.fgvc import FGVC_DATASETS, FGVC_SPLITS, find_in_image_folders
from vapt.data.images import find_image, read_split_text, to_rgb
from vapt.data.vtab import VTAB_SPLITS, VTAB_TASKS, split_lines
from vapt.errors import DataLayoutError
from vapt.io import write_json_atomic

MANIFEST_VERSION = 1
# The commonly used VTAB test sizes (the TFDS test splits that VTAB-1K copies usually hold). No source in this
# project confirms them, so a test split of another size is reported as a warning, never as an error.
VTAB_TEST_SIZES: dict[str, int] = {
    "cifar": 10_000, "caltech101": 6_084, "dtd": 1_880, "oxford_flowers102": 6_149, "oxford_iiit_pet": 3_669,
    "svhn": 26_032, "sun397": 21_750, "patch_camelyon": 32_768, "eurosat": 5_400, "resisc45": 6_300,
    "diabetic_retinopathy": 42_670, "clevr_count": 15_000, "clevr_dist": 15_000, "dmlab": 22_735, "kitti": 711,
    "dsprites_loc": 73_728, "dsprites_ori": 73_728, "smallnorb_azi": 12_150, "smallnorb_ele": 12_150,
}
VTAB_TRAIN_SIZES: dict[str, int] = {"train800": 800, "val200": 200, "train800val200": 1_000}
# FGVC (VPT's splits): dataset -> (train, val, test) sizes
FGVC_SIZES: dict[str, tuple[int, int, int]] = {
    "cub": (5_394, 600, 5_794), "nabirds": (21_536, 2_393, 24_633), "oxford_flowers": (1_020, 1_020, 6_149),
    "stanford_dogs": (10_800, 1_200, 8_580), "stanford_cars": (7_329, 815, 8_041),
}
DEFAULT_PATCH = 16  # the patch of the paper's ViT-B/16; `--patch-size` for other backbones
# training split -> the splits evaluated after it, whose classes it should cover (docs/protocol.md)
EVAL_SPLITS_OF: dict[str, dict[str, tuple[str, ...]]] = {
    "vtab1k": {"train800": ("val200",), "train800val200": ("test",)},
    "fgvc": {"train": ("val", "test")},
    "custom": {},
}
HISTOGRAM_SIZES = 20  # image sizes listed one by one; the rest are counted as "other"
EXAMPLES = 5  # problems listed by name per kind and split

# the last line of --help: where the documentation is
ENGINE_HELP = f"{DOCS_HELP} Data pipeline, cache and checks: docs/engine.md."


def expected_size(benchmark: str, task: str, split: str) -> int | None:
    """The benchmark's number of images in a split (None when not known)."""
    if benchmark == "vtab1k":
        return VTAB_TRAIN_SIZES.get(split) if split != "test" else VTAB_TEST_SIZES.get(task)
    sizes = FGVC_SIZES.get(task)
    return sizes[FGVC_SPLITS.index(split)] if sizes else None


def _vtab_entries(split_file: Path) -> tuple[list[tuple[str, Any]], list[str]]:
    try:
        lines = split_lines(split_file)
    except DataLayoutError as err:
        return [], [str(err)]
    entries = [(relative, label) for _, relative, label in lines if label is not None]
    malformed = [f"line {number}: {relative[:80]!r}" for number, relative, label in lines if label is None]
    return entries, malformed


def _fgvc_entries(split_file: Path) -> tuple[list[tuple[str, Any]], list[str]]:
    try:
        data = json.loads(read_split_text(split_file))
    except json.JSONDecodeError as err:
        return [], [f"not valid JSON ({err})"]
    except DataLayoutError as err:
        return [], [str(err)]
    if not isinstance(data, dict):
        return [], ["not a JSON object of image path -> class id"]
    entries, malformed = [], []
    for relative, label in data.items():
        if isinstance(label, bool) or not isinstance(label, int):
            malformed.append(f"entry {relative!r}: label {label!r} is not an integer")
        else:
            entries.append((relative, label))
    return entries, malformed


def _histogram(sizes: Counter) -> dict[str, int]:
    common = dict(sizes.most_common(HISTOGRAM_SIZES))
    other = sum(sizes.values()) - sum(common.values())
    return {**common, **({"other": other} if other else {})}


def check_split(benchmark: str, task: str, folder: Path, split: str, num_classes: int, decode: bool,
                hash_images: bool, patch_size: int = DEFAULT_PATCH) -> dict[str, Any]:
    """One split's report: counts against the benchmark's, classes, image modes and sizes, problems, warnings."""
    split_file = folder / (f"{split}.txt" if benchmark == "vtab1k" else f"{split}.json")
    if not split_file.is_file():
        return {"file": split_file.name, "present": False}
    entries, malformed = (_vtab_entries if benchmark == "vtab1k" else _fgvc_entries)(split_file)
    sizes: Counter = Counter()
    modes: Counter = Counter()
    missing, unreadable, out_of_range, small = [], [], [], []
    labels: Counter = Counter()
    image_digest = hashlib.sha256()
    for relative, label in tqdm(entries, desc=f"{task}/{split}", leave=False, disable=None, file=sys.stderr):
        if not 0 <= label < num_classes:
            out_of_range.append(f"{relative}: label {label}")
            continue
        labels[label] += 1
        path = find_image(folder / relative) if benchmark == "vtab1k" else find_in_image_folders(folder, relative)
        if path is None:
            missing.append(relative)
            continue
        try:
            with Image.open(path) as image:
                sizes[f"{image.width}x{image.height}"] += 1
                modes[image.mode] += 1
                if min(image.size) < patch_size:
                    small.append(f"{relative} ({image.width}x{image.height})")
                if decode:
                    image.load()
                    to_rgb(image, relative)
        except DataLayoutError as err:  # a mode without a defined 8-bit scale
            unreadable.append(str(err).removeprefix("image file "))
        except Exception as err:  # any decoder failure means the file is unusable
            unreadable.append(f"{relative} ({type(err).__name__})")
        if hash_images:
            image_digest.update(relative.encode() + b"\0" + path.read_bytes())
    expected = expected_size(benchmark, task, split)
    report: dict[str, Any] = {
        "file": split_file.name, "present": True, "sha256": hashlib.sha256(split_file.read_bytes()).hexdigest(),
        "images": len(entries), "expected_images": expected,
        "size_matches": expected is None or len(entries) == expected,
        "classes": len(labels), "expected_classes": num_classes,
        "missing_classes": sorted(set(range(num_classes)) - set(labels)),
        "image_sizes": _histogram(sizes), "image_modes": dict(modes.most_common()),
        "smaller_than_patch": len(small), "patch_size": patch_size,
        "problems": {"malformed": len(malformed), "missing_files": len(missing), "unreadable": len(unreadable),
                     "label_out_of_range": len(out_of_range)},
        "examples": {k: v[:EXAMPLES] for k, v in (("malformed", malformed), ("missing_files", missing),
                                                   ("unreadable", unreadable), ("label_out_of_range", out_of_range),
                                                   ("smaller_than_patch", small)) if v},
        "labels": sorted(labels),
    }
    if hash_images:
        report["images_sha256"] = image_digest.hexdigest()
    return report


def _find_vtab(root: Path, task: str) -> Path | None:
    return next((p for p in (root / "vtab-1k" / task, root / task) if p.is_dir() and
                 any((p / f"{s}.txt").is_file() for s in VTAB_SPLITS)), None)


def _find_fgvc(root: Path, name: str) -> Path | None:
    folder = root / name
    return folder if folder.is_dir() and any((folder / f"{s}.json").is_file() for s in FGVC_SPLITS) else None


def check_data_root(root: str | Path, decode: bool = True, hash_images: bool = False,
                    patch_size: int = DEFAULT_PATCH) -> dict[str, Any]:
    """The manifest of a data root: one report per VTAB-1K task and FGVC dataset found, and the ones missing."""
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"data root {root} does not exist or is not a folder")
    manifest: dict[str, Any] = {"version": MANIFEST_VERSION, "data_root": str(root.resolve()),
                                "decoded": decode, "datasets": {}, "missing": []}
    registries = [("vtab1k", task, classes, _find_vtab(root, task), VTAB_SPLITS)
                  for task, (_, classes) in VTAB_TASKS.items()]
    registries += [("fgvc", name, classes, _find_fgvc(root, name), FGVC_SPLITS)
                   for name, (_, classes) in FGVC_DATASETS.items()]
    for benchmark, task, classes, folder, splits in registries:
        name = f"{benchmark}/{task}"
        if folder is None:
            manifest["missing"].append(name)
            continue
        reports = {s: check_split(benchmark, task, folder, s, classes, decode, hash_images, patch_size)
                   for s in splits}
        broken = any(sum(r.get("problems", {}).values()) for r in reports.values())
        absent = [s for s, r in reports.items() if not r["present"]]
        manifest["datasets"][name] = {
            "folder": str(folder.relative_to(root)), "splits": reports, "missing_splits": absent,
            "status": "problems" if broken or absent else "ok",
            "warnings": split_warnings(benchmark, reports),
        }
    return manifest


def split_warnings(benchmark: str, reports: dict[str, dict[str, Any]]) -> list[str]:
    """Findings that do not stop a run but change what it measures: tiny or 16-bit images, untrained classes."""
    warnings = []
    for split, report in reports.items():
        if not report.get("present"):
            continue
        if report["smaller_than_patch"]:
            warnings.append(f"{split}: {report['smaller_than_patch']} image(s) smaller than a {report['patch_size']} "
                            f"px patch on a side, upscaled to the input size (e.g. "
                            f"{'; '.join(report['examples']['smaller_than_patch'][:3])})")
        sixteen = {m: n for m, n in report["image_modes"].items() if m.startswith("I")}
        if sixteen:
            listed = ", ".join(f"{n} {m}" for m, n in sixteen.items())
            warnings.append(f"{split}: {listed} image(s) of more than 8 bits, scaled to 8 bits")
    for train_split, eval_splits in EVAL_SPLITS_OF[benchmark].items():
        trained = reports.get(train_split, {})
        for split in eval_splits:
            evaluated = reports.get(split, {})
            if trained.get("present") and evaluated.get("present"):
                warnings += untrained_classes(split, evaluated["labels"], train_split, trained["labels"])
    return warnings


def untrained_classes(split: str, labels: Iterable[int], train_split: str, trained: Iterable[int]) -> list[str]:
    """A warning when `split` holds classes that `train_split` lacks (no run trained on it can predict them)."""
    absent = sorted(set(labels) - set(trained))
    if not absent:
        return []
    shown = ", ".join(map(str, absent[:10])) + (", ..." if len(absent) > 10 else "")
    return [f"{split}: {len(absent)} class(es) absent from {train_split} ({shown}); a run trained on {train_split} "
            f"cannot predict them"]


def run_data_warnings(train_set: Any, eval_sets: dict[str, Any], train_split: str, patch_size: int) -> list[str]:
    """The warnings `train` prints first: the training split's tiny or 16-bit images, classes it lacks."""
    samples = list(train_set.dataset.samples[i] for i in train_set.indices) if hasattr(train_set, "indices") \
        else list(train_set.samples)
    modes: Counter = Counter()
    small = []
    for path, _ in samples:
        try:
            with Image.open(path) as image:  # the header only
                modes[image.mode] += 1
                if min(image.size) < patch_size:
                    small.append(f"{Path(path).name} ({image.width}x{image.height})")
        except Exception:  # unreadable: the run stops where it reads the image, with an error naming it
            continue
    report = {"present": True, "smaller_than_patch": len(small), "patch_size": patch_size,
              "image_modes": dict(modes), "examples": {"smaller_than_patch": small[:EXAMPLES]}}
    warnings = split_warnings("custom", {train_split: report})
    trained = {label for _, label in samples}
    for split, dataset in eval_sets.items():
        warnings += untrained_classes(split, dataset.targets, train_split, trained)
    return warnings


def format_summary(manifest: dict[str, Any]) -> str:
    """One line per dataset and split: images (expected), classes, problems."""
    lines = []
    for name, dataset in manifest["datasets"].items():
        lines.append(f"{name} ({dataset['folder']}): {dataset['status']}")
        for split, report in dataset["splits"].items():
            if not report["present"]:
                lines.append(f"  {split:<15} MISSING split file {report['file']}")
                continue
            expected = report["expected_images"]
            label = "commonly used VTAB test size" if name.startswith("vtab1k/") and split == "test" else "benchmark"
            differs = "" if report["size_matches"] else ", DIFFERS (warning)"
            count = f"{report['images']} images" + ("" if expected is None else f" ({label}: {expected}{differs})")
            classes = f"{report['classes']}/{report['expected_classes']} classes"
            problems = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in report["problems"].items() if v)
            lines.append(f"  {split:<15} {count}, {classes}" + (f"; PROBLEMS: {problems}" if problems else "")
                         + f"; split sha256 {report['sha256'][:12]}")
            modes = ", ".join(f"{m} {n}" for m, n in report.get("image_modes", {}).items())
            lines.append(f"    image modes: {modes or 'none read'}; sizes: {_short(report['image_sizes'])}")
            for kind, examples in report.get("examples", {}).items():
                lines.append(f"    {kind.replace('_', ' ')}: {'; '.join(examples)}")
        lines += [f"  warning: {warning}" for warning in dataset.get("warnings", [])]
    if manifest["missing"]:
        lines.append(f"not found ({len(manifest['missing'])}): {', '.join(manifest['missing'])}")
    return "\n".join(lines)


def compare_manifests(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """Differences between two manifests: datasets present in one only, and per split counts, hashes, sizes."""
    differences = []
    for name in sorted(set(ours["datasets"]) | set(theirs["datasets"])):
        a, b = ours["datasets"].get(name), theirs["datasets"].get(name)
        if a is None or b is None:
            differences.append(f"{name}: only in {'theirs' if a is None else 'ours'}")
            continue
        for split in sorted(set(a["splits"]) | set(b["splits"])):
            x, y = a["splits"].get(split, {}), b["splits"].get(split, {})
            for key in ("present", "images", "sha256", "classes", "image_sizes", "image_modes", "images_sha256"):
                if key in x and key in y and x[key] != y[key]:
                    differences.append(
                        f"{name} {split}: {key} differs (ours {_short(x[key])}, theirs {_short(y[key])})")
    return differences


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def main(argv: list[str] | None = None) -> int:
    """`python -m vapt data check --data-root DIR [--out FILE] [--compare FILE]`."""
    parser = argparse.ArgumentParser(prog="python -m vapt data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=ENGINE_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="check")
    check = commands.add_parser("check", help="check a data root and write its manifest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=ENGINE_HELP)
    check.add_argument("--data-root", required=True, help="holds vtab-1k/<task>/ and FGVC <dataset>/")
    check.add_argument("--out", default="data_manifest.json", help="manifest file (default: data_manifest.json)")
    check.add_argument("--compare", default=None, help="another copy's manifest: print the differences")
    check.add_argument("--headers-only", action="store_true",
                       help="read image headers only (sizes) instead of decoding every image (faster)")
    check.add_argument("--hash-images", action="store_true", help="also hash each split's image files")
    check.add_argument("--patch-size", type=int, default=DEFAULT_PATCH,
                       help=f"warn about images smaller than this on a side (default {DEFAULT_PATCH}: ViT-B/16)")
    args = parser.parse_args(argv)
    theirs = None
    if args.compare is not None:
        try:
            theirs = json.loads(Path(args.compare).read_text(encoding="utf-8"))
            if not isinstance(theirs, dict) or theirs.get("version") != MANIFEST_VERSION:
                raise ValueError(f"expected a data manifest of version {MANIFEST_VERSION}")
            theirs["datasets"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataLayoutError(f"--compare {args.compare}: not a readable data manifest ({err})") from None
    if args.patch_size < 1:
        raise DataLayoutError(f"--patch-size must be a positive integer, got {args.patch_size}")
    manifest = check_data_root(args.data_root, decode=not args.headers_only, hash_images=args.hash_images,
                               patch_size=args.patch_size)
    print(format_summary(manifest) or "no VTAB-1K task or FGVC dataset found")
    write_json_atomic(args.out, manifest)
    print(f"wrote {args.out}")
    if theirs is not None:
        differences = compare_manifests(manifest, theirs)
        print("\n".join(differences) if differences else f"same as {args.compare}")
    broken = any(d["status"] == "problems" for d in manifest["datasets"].values())
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
