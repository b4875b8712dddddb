"""Image resizing modes: `tf1` (TensorFlow v1 bilinear, the VTAB default) and `pil` (PIL's anti-aliased bilinear).

`tf1` reproduces `tf.image.resize(..., method=BILINEAR)` under `tensorflow.compat.v1` semantics without
TensorFlow: the source coordinate of output index i is i x in / out (computed in float32, no
half-pixel centres, no anti-aliasing), its neighbours are floor(src) and min(floor(src) + 1, in - 1),
the value is interpolated along the width first, then the height, and the output is float32 in the
input's range (0-255 for 8-bit images). Downscaling by an integer factor therefore picks exact source
pixels; upscaling repeats the last row and column at the far edge.

`pil` is torchvision's `Resize` on PIL images (bilinear with anti-aliasing), which rounds to uint8.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision import transforms as T

from vapt.errors import ConfigError, benchmark_default

RESIZE_MODES: tuple[str, ...] = ("tf1", "pil")
# benchmark -> resize mode used when none is given: VTAB as the authors' TensorFlow pipeline, FGVC as torchvision.
DEFAULT_RESIZE: dict[str, str] = {"vtab1k": "tf1", "fgvc": "pil"}


def resolve_resize(benchmark: str, resize: str | None) -> str:
    """The resize mode for a benchmark: `resize` when given (validated), else the benchmark's default."""
    return benchmark_default("resize", resize, RESIZE_MODES, DEFAULT_RESIZE, benchmark)


def _source_indices(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower and upper source indices and the interpolation weight of each output index (TF v1 rule)."""
    scale = np.float32(in_size) / np.float32(out_size)
    source = np.arange(out_size, dtype=np.float32) * scale
    lower = np.floor(source)
    weight = source - lower
    lower = np.minimum(lower.astype(np.int64), in_size - 1)
    upper = np.minimum(lower + 1, in_size - 1)
    return lower, upper, weight


def tf1_resize(image: Tensor | np.ndarray, size: Sequence[int]) -> Tensor:
    """Resize (..., H, W) to (..., size[0], size[1]) with TF v1 bilinear; returns float32 in the input's range.

    Computed with NumPy on the CPU (single-threaded, so it stays fast in loader processes and on busy
    machines); float32 throughout, interpolating along the width first, as TensorFlow's kernel does.
    """
    array = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if array.ndim < 2:
        raise ConfigError(f"tf1_resize needs an image of shape (..., H, W), got shape {tuple(array.shape)}")
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ConfigError(f"resize size must be positive, got {tuple(size)}")
    in_h, in_w = array.shape[-2:]
    x0, x1, wx = _source_indices(in_w, width)
    y0, y1, wy = _source_indices(in_h, height)
    # gather before converting to float: the same values, less memory traffic
    left = np.take(array, x0, axis=-1).astype(np.float32)
    right = np.take(array, x1, axis=-1).astype(np.float32)
    rows = left + (right - left) * wx
    top, bottom = np.take(rows, y0, axis=-2), np.take(rows, y1, axis=-2)
    return torch.from_numpy(top + (bottom - top) * wy[:, None])


def output_size(height: int, width: int, size: int | Sequence[int]) -> tuple[int, int]:
    """(H, W) after resizing to `size`: an int sets the shorter side (torchvision's rule), a pair is exact."""
    if isinstance(size, int):
        short, long = (height, width) if height <= width else (width, height)
        new_short, new_long = size, int(size * long / short)
        return (new_short, new_long) if height <= width else (new_long, new_short)
    return int(size[0]), int(size[1])


def to_uint8_tensor(image: Image.Image | Tensor | np.ndarray) -> Tensor:
    """A PIL image, HWC array or CHW tensor as a CHW tensor (uint8 for 8-bit inputs)."""
    if isinstance(image, Tensor):
        return image
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


class TF1Resize(torch.nn.Module):
    """TF v1 bilinear resize as a transform: PIL image or CHW tensor -> float32 CHW tensor (0-255 for 8 bits).

    `size` is an int (shorter side, as torchvision's `Resize`) or (height, width).
    """

    def __init__(self, size: int | Sequence[int]) -> None:
        super().__init__()
        self.size = size

    def forward(self, image: Image.Image | Tensor) -> Tensor:
        tensor = to_uint8_tensor(image)
        return tf1_resize(tensor, output_size(tensor.shape[-2], tensor.shape[-1], self.size))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class ScaleTo01(torch.nn.Module):
    """Divide a 0-255 image tensor by 255 (float32), as `ToTensor` does for 8-bit images."""

    def forward(self, image: Tensor) -> Tensor:
        return image.to(torch.float32).div(255)


def geometric_steps(benchmark: str, train: bool, image_size: int, resize: str) -> tuple[list, list]:
    """The deterministic steps (resize, centre crop) and the random steps (crop, flip) of a benchmark's transform.

    Deterministic steps map a PIL image to a PIL image (`pil`) or a float32 0-255 tensor (`tf1`); the
    random steps work on PIL images and tensors alike.
    """
    if benchmark == "vtab1k":
        size: int | tuple[int, int] = (image_size, image_size)
        crop: list = []
        random: list = []
    else:
        size = round(image_size * 256 / 224)
        crop = [] if train else [T.CenterCrop(image_size)]
        random = [T.RandomCrop(image_size), T.RandomHorizontalFlip()] if train else []
    resizer = TF1Resize(size) if resize == "tf1" else T.Resize(size, T.InterpolationMode.BILINEAR)
    return [resizer, *crop], random


def build_resized_transform(
    benchmark: str, train: bool, image_size: int, resize: str, mean: Sequence[float], std: Sequence[float]
) -> T.Compose:
    """A benchmark's full preprocessing with the given resize mode: geometry, then [0, 1], then mean/std."""
    deterministic, random = geometric_steps(benchmark, train, image_size, resize)
    to_unit = [ScaleTo01()] if resize == "tf1" else [T.ToTensor()]
    return T.Compose([*deterministic, *random, *to_unit, T.Normalize(mean, std)])
