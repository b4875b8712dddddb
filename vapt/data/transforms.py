"""The preprocessing of the protocol (docs/protocol.md) as torchvision transforms, at any input size."""

from __future__ import annotations

from collections.abc import Sequence

from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision import transforms as T

from vapt.data.resize import build_resized_transform, resolve_resize
from vapt.errors import ConfigError, check_positive_int

BENCHMARKS: tuple[str, ...] = ("vtab1k", "fgvc")


def build_transform(
    benchmark: str,
    train: bool,
    image_size: int = 224,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    resize: str | None = None,
) -> T.Compose:
    """Preprocessing for a benchmark: VTAB resizes without augmentation; FGVC crops (random when training).

    FGVC resizes the short side to image_size * 256 / 224 (256 at 224 px) before cropping. `resize` is
    `tf1` (TensorFlow v1 bilinear, VTAB's default) or `pil` (PIL anti-aliased bilinear, FGVC's default);
    see `vapt.data.resize`, which holds the one definition of each mode's steps (shared with the cache).
    """
    if benchmark not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {benchmark!r}; expected one of {', '.join(BENCHMARKS)}")
    check_positive_int("image_size", image_size)
    return build_resized_transform(benchmark, train, image_size, resolve_resize(benchmark, resize), mean, std)
