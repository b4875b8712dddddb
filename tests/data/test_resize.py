"""TF v1 bilinear resize against closed-form values, the resize and precision options of train and sweep."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from tests.float_bounds import elementwise_atol
from vapt.__main__ import main as vapt_main
from vapt.data import build_transform
from vapt.data.resize import TF1Resize, resolve_resize, tf1_resize
from vapt.errors import ConfigError
from vapt.run.config import TrainConfig, run_id


def test_upscale_2x2_to_4x4_by_hand() -> None:
    image = torch.tensor([[0.0, 10.0], [20.0, 30.0]])
    # source coordinates 0, 0.5, 1, 1.5 in both axes; index 2 clamps to the last pixel
    expected = torch.tensor([[0.0, 5.0, 10.0, 10.0], [10.0, 15.0, 20.0, 20.0],
                             [20.0, 25.0, 30.0, 30.0], [20.0, 25.0, 30.0, 30.0]])
    assert torch.equal(tf1_resize(image, (4, 4)), expected)


def test_integer_downscale_picks_exact_source_pixels() -> None:
    image = torch.arange(16, dtype=torch.uint8).view(1, 4, 4)
    out = tf1_resize(image, (2, 2))
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.tensor([[[0.0, 2.0], [8.0, 10.0]]]))  # rows 0, 2 and columns 0, 2


def test_non_integer_scale_and_float_output() -> None:
    row = torch.tensor([[0.0, 3.0, 7.0]])
    assert torch.equal(tf1_resize(row, (1, 2)), torch.tensor([[0.0, 5.0]]))  # sources 0 and 1.5
    out = tf1_resize(torch.tensor([[0, 1]], dtype=torch.uint8), (1, 4))
    assert torch.equal(out, torch.tensor([[0.0, 0.5, 1.0, 1.0]]))  # not rounded back to integers
    assert torch.equal(tf1_resize(row, (1, 3)), row)  # same size: identity


def test_no_half_pixel_centres_unlike_pil() -> None:
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    image[:, :2] = 200
    tf1 = TF1Resize((8, 8))(Image.fromarray(image))[0, 0]
    pil = torch.from_numpy(np.asarray(Image.fromarray(image).resize((8, 8), Image.BILINEAR))[0, :, 0].copy())
    assert tf1.tolist() == [200, 200, 200, 100, 0, 0, 0, 0]
    assert not torch.equal(tf1, pil.float())


def test_short_side_resize_keeps_aspect() -> None:
    out = TF1Resize(4)(torch.zeros(3, 6, 12, dtype=torch.uint8))
    assert out.shape == (3, 4, 8)


def test_vtab_transform_uses_tf1_by_default_and_pil_on_request() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    tf1 = build_transform("vtab1k", train=False, image_size=10)(image)
    by_hand = tf1_resize(torch.from_numpy(pixels).permute(2, 0, 1), (10, 10)) / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    # both sides: three float32 roundings (/255, -mean, /std) of values up to (1 - 0.406) / 0.225 < 2.7
    assert torch.allclose(tf1, (by_hand - mean) / std, atol=2 * elementwise_atol(2.7, 3), rtol=0)
    pil = build_transform("vtab1k", train=False, image_size=10, resize="pil")(image)
    assert pil.shape == tf1.shape and not torch.allclose(pil, tf1, atol=1e-3)
    assert resolve_resize("vtab1k", None) == "tf1" and resolve_resize("fgvc", None) == "pil"
    with pytest.raises(ConfigError, match="resize must be one of tf1, pil, got 'bicubic'"):
        resolve_resize("vtab1k", "bicubic")


def test_fgvc_tf1_transform_crops_to_size() -> None:
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    assert build_transform("fgvc", train=True, image_size=16, resize="tf1")(image).shape == (3, 16, 16)
    assert build_transform("fgvc", train=False, image_size=16, resize="tf1")(image).shape == (3, 16, 16)


def test_run_id_marks_every_resize_and_precision_that_older_runs_did_not_use() -> None:
    config = TrainConfig(backbone="vit_test", method="vapt", data="vtab1k/cifar", data_root="data")
    pil = run_id(dataclasses.replace(config, resize="pil", decode="pil"))
    # older VTAB runs (PIL resize and decoding, bf16) keep their ids; the tf1 and tfds defaults get ids of their own
    assert config.resolved().resize == "tf1" and config.resolved().decode == "tfds"
    assert run_id(config) == pil + "_rstf1_dctfds"
    assert not pil.endswith(("_rspil", "_rstf1", "_fp32", "_dcpil", "_dctfds"))
    assert run_id(dataclasses.replace(config, precision="fp32")).endswith("_rstf1_fp32_dctfds")
    assert run_id(dataclasses.replace(config, decode="pil")) == pil + "_rstf1"
    assert run_id(dataclasses.replace(config, cache=False, compile=True, cache_dir="x")) == run_id(config)
    fgvc = dataclasses.replace(config, data="fgvc/cub")
    assert fgvc.resolved().resize == "pil" and not run_id(fgvc).endswith(("_rstf1", "_dctfds"))
    assert run_id(dataclasses.replace(fgvc, decode="tfds")).endswith("_dctfds")
    assert run_id(dataclasses.replace(fgvc, resize="tf1")).endswith("_rstf1")
    with pytest.raises(ConfigError, match="precision must be one of bf16, fp32, got 'fp16'"):
        dataclasses.replace(config, precision="fp16").resolved()
    assert TrainConfig.from_dict(config.resolved().to_dict()) == config.resolved()


def test_cli_rejects_bad_resize_and_precision(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["train", "--backbone", "vit_test", "--method", "vapt", "--data", "vtab1k/cifar", "--data-root", "x",
            "--lr", "1", "--wd", "0"]
    for flag, value in (("--resize", "bicubic"), ("--precision", "fp16")):
        with pytest.raises(SystemExit) as exit_:
            vapt_main([*base, flag, value])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert f"error: argument {flag}: invalid choice: '{value}'" in err and "Traceback" not in err


def test_help_says_precision_does_nothing_on_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        vapt_main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "no effect on CPU" in text and "--resize {tf1,pil}" in text and "--no-cache" in text
