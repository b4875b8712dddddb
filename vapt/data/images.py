"""Shared pieces of the dataset loaders: a list of (image path, label) samples read as 8-bit RGB images.

Decoding (`decode`): `pil` reads every file with PIL (libjpeg's accurate integer IDCT for JPEGs);
`tfds` reads JPEGs as TensorFlow Datasets does, with libjpeg-turbo's fast integer IDCT and fancy
upsampling (through `simplejpeg`), and every other format with PIL, whose PNG decoding TensorFlow's
equals. VTAB-1K defaults to `tfds` (its authors' pipeline), FGVC to `pil` (torchvision's).

Image modes (`to_rgb`): 8-bit modes become RGB as PIL converts them (grey is repeated over the three
channels, palettes are looked up, CMYK is converted without colour profile); an alpha channel or a
palette's transparency is dropped, keeping the stored colours, as TensorFlow's 3-channel decoding does;
16-bit images (`I;16`, and `I` with values in 0-65535) are scaled to 8 bits (v x 255 / 65535, rounded),
never clipped. Other modes (32-bit floats, `I` outside 0-65535, LAB, HSV) have no defined 8-bit scale
and are refused with one error naming the file.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from vapt.errors import DataLayoutError, benchmark_default

DECODE_MODES: tuple[str, ...] = ("tfds", "pil")
# benchmark -> decoder used when none is given: VTAB as the authors' TensorFlow Datasets pipeline, FGVC as torchvision.
DEFAULT_DECODE: dict[str, str] = {"vtab1k": "tfds", "fgvc": "pil"}
# modes PIL converts to RGB without losing range: 1-bit, grey, palette, RGB and its padded/alpha forms, CMYK, YCbCr
EIGHT_BIT_MODES: frozenset[str] = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX",
                                             "CMYK", "YCbCr"})
SIXTEEN_BIT_MAX = 65535
JPEG_MAGIC = b"\xff\xd8\xff"


def resolve_decode(benchmark: str, decode: str | None) -> str:
    """The decoder for a benchmark: `decode` when given (validated), else the benchmark's default."""
    return benchmark_default("decode", decode, DECODE_MODES, DEFAULT_DECODE, benchmark)


def _scaled_16_bit(values: np.ndarray) -> Image.Image:
    eight = (values.astype(np.uint32) * 255 + SIXTEEN_BIT_MAX // 2) // SIXTEEN_BIT_MAX
    return Image.fromarray(eight.astype(np.uint8), mode="L").convert("RGB")


def to_rgb(image: Image.Image, path: Path | str) -> Image.Image:
    """An image of any supported PIL mode as 8-bit RGB (see the module's docstring); DataLayoutError otherwise."""
    mode = image.mode
    if mode in ("P", "PA") and "transparency" in image.info:
        image = image.convert("RGBA")  # palette transparency becomes alpha, which is then dropped
    if mode in EIGHT_BIT_MODES:
        return image.convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > SIXTEEN_BIT_MAX):
            raise DataLayoutError(f"image file {path}: mode {mode} with values {values.min()}..{values.max()} "
                                  f"has no defined 8-bit scale; expected 8- or 16-bit images")
        return _scaled_16_bit(values)
    raise DataLayoutError(f"image file {path}: PIL mode {mode} (e.g. 32-bit floats) has no defined 8-bit scale; "
                          f"expected 1-, 8- or 16-bit grey, palette, RGB(A) or CMYK images")


def _tfds_jpeg(data: bytes) -> Image.Image | None:
    """A JPEG decoded as TensorFlow does (fast integer IDCT, fancy upsampling); None when it is not one it reads."""
    import simplejpeg

    if not data.startswith(JPEG_MAGIC):
        return None
    try:
        return Image.fromarray(simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=False))
    except (ValueError, RuntimeError):  # a JPEG variant it does not read: PIL reads it
        return None


def read_rgb(path: Path, decode: str = "pil") -> Image.Image:
    """Read one image file as an 8-bit RGB PIL image; an unreadable file or mode raises DataLayoutError naming it."""
    try:
        if decode == "tfds":
            image = _tfds_jpeg(Path(path).read_bytes())
            if image is not None:
                return image
        with Image.open(path) as image:
            image.load()
            return to_rgb(image, path)  # a converted copy: the opened image is closed on return
    except DataLayoutError:
        raise
    except FileNotFoundError as err:
        raise DataLayoutError(f"image file {path} does not exist") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataLayoutError(f"image file {path} is corrupt or not an image ({err})") from err


def read_split_text(split_file: Path) -> str:
    """A split file's text: UTF-8 with or without a byte-order mark; other bytes raise DataLayoutError at file:line.

    Line endings (LF, CRLF, CR) are left to the caller's `splitlines`.
    """
    data = Path(split_file).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise DataLayoutError(f"{split_file}, line {line}: byte {data[err.start]:#04x} is not UTF-8 text; "
                              f"save the split file as UTF-8") from None


def find_image(path: Path) -> Path | None:
    """`path` if it is a file, else the same path in the other Unicode normal form (NFC/NFD) if that is one.

    Non-ASCII names written on one system (e.g. NFD on macOS) then match a split file written on another.
    """
    if path.is_file():
        return path
    text = str(path)
    for form in ("NFC", "NFD"):
        other = Path(unicodedata.normalize(form, text))
        if str(other) != text and other.is_file():
            return other
    return None


def check_label(label: int, num_classes: int, where: str, layout: str) -> None:
    """Raise DataLayoutError naming `where` unless 0 <= label < num_classes."""
    if not 0 <= label < num_classes:
        raise DataLayoutError(
            f"{where}: label {label} is outside [0, {num_classes}); expected layout: {layout}"
        )


class ImageListDataset(Dataset):
    """Images and integer labels from a validated list of (path, label) samples, read with `decode`."""

    def __init__(
        self,
        samples: Sequence[tuple[Path, int]],
        num_classes: int,
        transform: Callable[[Image.Image], Any] | None = None,
        decode: str = "pil",
    ) -> None:
        self.samples = list(samples)
        self.num_classes = num_classes
        self.transform = transform
        self.decode = resolve_decode("", decode)

    @property
    def targets(self) -> list[int]:
        """The label of every sample, in order."""
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        image = read_rgb(path, self.decode)
        return (self.transform(image) if self.transform is not None else image), label


def dataset_folder(root: str | Path, candidates: Sequence[str | Path], what: str, layout: str) -> Path:
    """The first of `candidates` (paths under `root`) that is a folder; a DataLayoutError naming `what` otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"data root {root} does not exist or is not a folder; expected {layout}")
    for candidate in candidates:
        if (root / candidate).is_dir():
            return root / candidate
    raise DataLayoutError(f"{what} folder {root / candidates[0]} does not exist; expected {layout}")


def split_classes(benchmark: str, noun: str, name: str, split: str, splits: Sequence[str],
                  registry: Mapping[str, tuple[str, int]], num_classes: int | None) -> int:
    """The number of classes of `name` (given, or from `registry`), once `split` is known to be one of `splits`."""
    if split not in splits:
        raise DataLayoutError(f"unknown {benchmark} split {split!r}; expected one of {', '.join(splits)}")
    if num_classes is not None:
        return num_classes
    if name not in registry:
        raise DataLayoutError(f"unknown {benchmark} {noun} {name!r} and no number of classes given; "
                              f"known {noun}s: {', '.join(registry)}")
    return registry[name][1]
