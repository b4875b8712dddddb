"""Every PIL mode a dataset may hold is read as 8-bit RGB as meant, or refused naming the file; JPEG decoders."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from vapt.data.images import DECODE_MODES, read_rgb, resolve_decode
from vapt.errors import ConfigError, DataLayoutError

GREY = np.array([[0, 1, 127], [128, 254, 255]], dtype=np.uint8)


def rgb(path: Path, decode: str = "pil") -> np.ndarray:
    image = read_rgb(path, decode)
    assert image.mode == "RGB"
    return np.asarray(image)


def grey_as_rgb(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=-1)


@pytest.fixture(params=DECODE_MODES)
def decode(request: pytest.FixtureRequest) -> str:
    """Both decoders: they differ on JPEGs only."""
    return request.param


def test_one_bit(tmp_path: Path, decode: str) -> None:
    bits = np.array([[True, False], [False, True]])
    Image.fromarray(bits).save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode == "1"
    np.testing.assert_array_equal(rgb(tmp_path / "a.png", decode), grey_as_rgb(bits.astype(np.uint8) * 255))


def test_grey(tmp_path: Path, decode: str) -> None:
    Image.fromarray(GREY, mode="L").save(tmp_path / "a.png")
    np.testing.assert_array_equal(rgb(tmp_path / "a.png", decode), grey_as_rgb(GREY))


def test_grey_with_alpha_keeps_the_grey(tmp_path: Path, decode: str) -> None:
    alpha = np.full_like(GREY, 0)  # fully transparent: the stored grey is kept, as TensorFlow's 3-channel decoding
    Image.fromarray(np.stack([GREY, alpha], axis=-1), mode="LA").save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode == "LA"
    np.testing.assert_array_equal(rgb(tmp_path / "a.png", decode), grey_as_rgb(GREY))


def test_rgba_keeps_the_colours(tmp_path: Path, decode: str) -> None:
    colours = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    alpha = np.random.default_rng(1).integers(0, 256, (4, 5, 1), dtype=np.uint8)
    Image.fromarray(np.concatenate([colours, alpha], axis=-1), mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(rgb(tmp_path / "a.png", decode), colours)


def test_palette_with_transparency(tmp_path: Path, decode: str) -> None:
    palette = [10, 20, 30, 200, 100, 50, 0, 255, 0]
    indices = np.array([[0, 1], [2, 0]], dtype=np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette + [0] * (768 - len(palette)))
    image.save(tmp_path / "a.png", transparency=0)
    reopened = Image.open(tmp_path / "a.png")
    assert reopened.mode == "P" and "transparency" in reopened.info
    expected = np.array(palette, dtype=np.uint8).reshape(3, 3)[indices]
    np.testing.assert_array_equal(rgb(tmp_path / "a.png", decode), expected)


def test_cmyk(tmp_path: Path, decode: str) -> None:
    inks = np.array([[[0, 0, 0, 0], [255, 0, 0, 0]], [[0, 255, 255, 0], [0, 0, 0, 255]]], dtype=np.uint8)
    Image.fromarray(inks, mode="CMYK").save(tmp_path / "a.tif")
    expected = np.array([[[255, 255, 255], [0, 255, 255]], [[255, 0, 0], [0, 0, 0]]], dtype=np.uint8)
    np.testing.assert_array_equal(rgb(tmp_path / "a.tif", decode), expected)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path, decode: str) -> None:
    values = np.array([[0, 128, 257, 32768], [40000, 65279, 65534, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode == "I;16"
    expected = np.array([[0, 0, 1, 128], [156, 254, 255, 255]], dtype=np.uint8)  # round(v * 255 / 65535)
    np.testing.assert_array_equal(rgb(tmp_path / "a.png", decode), grey_as_rgb(expected))


def test_sixteen_bit_ramp_keeps_its_range(tmp_path: Path) -> None:
    ramp = (np.arange(256 * 64).reshape(64, 256) * 4).astype(np.uint16)  # 0 .. 65532
    Image.fromarray(ramp).save(tmp_path / "a.png")
    grey = rgb(tmp_path / "a.png")[..., 0]
    assert (grey == 255).mean() < 0.01  # a clipping conversion puts ~99 % of this ramp at 255
    assert len(np.unique(grey)) == 256


def test_32_bit_integers_within_16_bits_are_read_as_16_bit(tmp_path: Path, decode: str) -> None:
    values = np.array([[0, 257], [32768, 65535]], dtype=np.int32)
    Image.fromarray(values).save(tmp_path / "a.tif")
    assert Image.open(tmp_path / "a.tif").mode == "I"
    np.testing.assert_array_equal(rgb(tmp_path / "a.tif", decode),
                                  grey_as_rgb(np.array([[0, 1], [128, 255]], dtype=np.uint8)))


def test_32_bit_integers_outside_16_bits_are_refused(tmp_path: Path) -> None:
    Image.fromarray(np.array([[-5, 70000]], dtype=np.int32)).save(tmp_path / "a.tif")
    with pytest.raises(DataLayoutError, match=r"a\.tif: mode I with values -5\.\.70000 has no defined 8-bit scale"):
        read_rgb(tmp_path / "a.tif")


def test_floats_are_refused_naming_the_file(tmp_path: Path, decode: str) -> None:
    Image.fromarray(np.array([[0.0, 0.5]], dtype=np.float32)).save(tmp_path / "a.tif")
    with pytest.raises(DataLayoutError, match=r"image file .*a\.tif: PIL mode F .* has no defined 8-bit scale"):
        read_rgb(tmp_path / "a.tif", decode)


def photo(size: int = 48) -> np.ndarray:
    """A smooth image with edges and noise, so that IDCT roundings show."""
    y, x = np.mgrid[0:size, 0:size] / size
    channels = [128 + 100 * np.sin(6 * x + 3 * y), 128 + 90 * np.cos(9 * y), 255 * (x > y)]
    noise = np.random.default_rng(0).normal(0, 12, (size, size, 3))
    return np.clip(np.stack(channels, axis=-1) + noise, 0, 255).astype(np.uint8)


def write_jpeg(path: Path, array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=75, **options)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def test_tfds_decoding_is_the_fast_integer_idct(tmp_path: Path) -> None:
    data = write_jpeg(tmp_path / "a.jpg", photo())
    fast = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=False)
    tfds, pil = rgb(tmp_path / "a.jpg", "tfds"), rgb(tmp_path / "a.jpg", "pil")
    np.testing.assert_array_equal(tfds, fast)
    difference = np.abs(tfds.astype(int) - pil.astype(int))
    assert 0 < difference.max() <= 8  # the two IDCTs differ, by a few grey levels
    accurate = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False)
    np.testing.assert_array_equal(pil, accurate)  # PIL: libjpeg's accurate IDCT, the same upsampling


def test_tfds_decoding_of_grey_jpegs_repeats_the_grey(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "a.jpg", photo()[..., 0])
    image = rgb(tmp_path / "a.jpg", "tfds")
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all()


def test_cmyk_jpegs_are_read_under_tfds(tmp_path: Path) -> None:
    inks = np.zeros((16, 16, 4), dtype=np.uint8)
    inks[:, 8:, 0] = 255
    Image.fromarray(inks, mode="CMYK").save(tmp_path / "a.jpg", quality=95)
    tfds, pil = rgb(tmp_path / "a.jpg", "tfds"), rgb(tmp_path / "a.jpg", "pil")
    assert np.abs(tfds.astype(int) - pil.astype(int)).max() <= 2 and tfds[0, 12].tolist()[0] <= 2  # cyan: no red


def test_jpegs_the_fast_decoder_refuses_are_read_by_pil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_jpeg(tmp_path / "a.jpg", photo())

    def refuse(*args, **kwargs):
        raise ValueError("unsupported JPEG")
    monkeypatch.setattr(simplejpeg, "decode_jpeg", refuse)
    np.testing.assert_array_equal(rgb(tmp_path / "a.jpg", "tfds"), rgb(tmp_path / "a.jpg", "pil"))


def test_decode_modes_and_defaults() -> None:
    assert resolve_decode("vtab1k", None) == "tfds" and resolve_decode("fgvc", None) == "pil"
    assert resolve_decode("vtab1k", "pil") == "pil"
    with pytest.raises(ConfigError, match="decode must be one of tfds, pil, got 'cv2'"):
        resolve_decode("vtab1k", "cv2")
