"""Loading backbone weights from local files in each supported format, and failing fast without them."""

from __future__ import annotations

import time

import pytest
import torch
from safetensors.torch import save_file

import vapt
from vapt.models import backbones
from vapt.models.backbones import BackboneSpec, load_weights_file


@pytest.fixture(scope="module")
def source():
    """A `vit_test` backbone with random weights: the in-memory reference."""
    torch.manual_seed(123)
    model, _ = vapt.create_backbone("vit_test")
    return model.eval()


def write(fmt: str, model, directory, save_google_npz):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    path = directory / f"backbone{fmt}"
    if fmt == ".pth":
        torch.save(state, path)
    elif fmt == ".pth.tar":  # MoCo v3's release: {'state_dict': {'module.<timm key>': ...}, 'epoch': ...}
        torch.save({"epoch": 300, "arch": "vit_base", "state_dict": {f"module.{k}": v for k, v in state.items()}},
                   path)
    elif fmt == ".safetensors":
        save_file(state, str(path))
    elif fmt == ".npz":
        save_google_npz(model, str(path))
    return path


@pytest.mark.parametrize("fmt", [".pth", ".pth.tar", ".safetensors", ".npz"])
@pytest.mark.parametrize("method", ["linear", "vapt"])
def test_local_weights_give_the_in_memory_models_outputs(source, tmp_path, save_google_npz, fmt, method):
    path = write(fmt, source, tmp_path, save_google_npz)
    images = torch.randn(2, 3, 32, 32)
    loaded = vapt.create_model("vit_test", method, num_classes=4, weights=str(path)).eval()
    reference = vapt.PromptedViT(source, loaded.config, num_classes=4).eval()
    reference.load_trainable_state_dict(loaded.trainable_state_dict())
    with torch.no_grad():
        torch.testing.assert_close(loaded.backbone.forward_features(images), source.forward_features(images))
        torch.testing.assert_close(loaded(images), reference(images))
        assert not torch.allclose(vapt.create_model("vit_test", method, num_classes=4).eval()(images),
                                  reference(images))


def test_average_pool_backbone_drops_final_norm_and_keeps_fresh_fc_norm(source, tmp_path):
    path = tmp_path / "token_pool.pth"
    torch.save(source.state_dict(), path)
    spec = BackboneSpec("tiny_avg", "vit_test", global_pool="avg", prompts_in_pool=True,
                        timm_kwargs=vapt.BACKBONES["vit_test"].timm_kwargs)
    model = backbones._build(spec)
    fresh_fc_norm = {k: v.clone() for k, v in model.fc_norm.state_dict().items()}
    load_weights_file(model, path, spec)
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    torch.testing.assert_close(model.fc_norm.state_dict(), fresh_fc_norm)


def test_missing_file_fails_fast_with_what_was_expected(tmp_path):
    start = time.perf_counter()
    with pytest.raises(vapt.WeightsError) as err:
        vapt.create_model("vit_b16_in21k", "vapt", num_classes=3, weights=tmp_path / "ViT-B_16.npz")
    assert time.perf_counter() - start < 10
    message = str(err.value)
    assert "ViT-B_16.npz" in message and "not found" in message
    assert "vit_base_patch16_224.orig_in21k" in message and ".npz" in message


def test_mocov3_names_the_released_checkpoint():
    with pytest.raises(vapt.WeightsError, match="linear-vit-b-300ep.pth.tar"):
        vapt.create_model("vit_b16_mocov3", "vpt_deep", num_classes=3, pretrained=True)


def test_unknown_format_corrupt_and_mismatched_files(source, tmp_path):
    odd = tmp_path / "weights.bin"
    odd.write_bytes(b"\0" * 10)
    with pytest.raises(vapt.WeightsError, match="unknown format"):
        vapt.create_model("vit_test", "linear", num_classes=3, weights=odd)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(vapt.WeightsError, match="corrupt.pth"):
        vapt.create_model("vit_test", "linear", num_classes=3, weights=corrupt)
    other = tmp_path / "other.pth"
    torch.save(vapt.create_backbone("vit_tiny_patch16_224")[0].state_dict(), other)
    with pytest.raises(vapt.WeightsError, match="do not fit this backbone"):
        vapt.create_model("vit_test", "linear", num_classes=3, weights=other)


def test_no_network_fails_within_seconds(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(backbones, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    start = time.perf_counter()
    with pytest.raises(vapt.WeightsError) as err:
        vapt.create_model("vit_b16_in21k", "vapt", num_classes=3, pretrained=True)
    assert time.perf_counter() - start < 30
    assert "vit_base_patch16_224.orig_in21k" in str(err.value) and "weights=PATH" in str(err.value)
