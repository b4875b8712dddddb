"""Tiny timm Vision Transformers and checkpoint writers for the model tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer


def tiny_vit(**overrides) -> VisionTransformer:
    """A 32 px, patch-4, depth-3, width-32 ViT with random weights (eval mode)."""
    kwargs = dict(img_size=32, patch_size=4, embed_dim=32, depth=3, num_heads=2, mlp_ratio=2.0, num_classes=0)
    kwargs.update(overrides)
    return VisionTransformer(**kwargs).eval()


@pytest.fixture
def images() -> torch.Tensor:
    """A batch of 3 random 32 px images."""
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def save_google_npz(model: VisionTransformer, path: str) -> None:
    """Save `model` in the key layout and tensor order of Google's original JAX checkpoints."""

    def arr(t):
        return t.detach().cpu().numpy()

    d = model.embed_dim
    heads = model.blocks[0].attn.num_heads
    hd = d // heads
    w = {
        "embedding/kernel": arr(model.patch_embed.proj.weight).transpose(2, 3, 1, 0),
        "embedding/bias": arr(model.patch_embed.proj.bias),
        "cls": arr(model.cls_token),
        "Transformer/posembed_input/pos_embedding": arr(model.pos_embed),
        "Transformer/encoder_norm/scale": arr(model.norm.weight),
        "Transformer/encoder_norm/bias": arr(model.norm.bias),
    }
    for i, block in enumerate(model.blocks):
        p = f"Transformer/encoderblock_{i}/"
        mha = p + "MultiHeadDotProductAttention_1/"
        qkv_w = arr(block.attn.qkv.weight).reshape(3, d, d)
        qkv_b = arr(block.attn.qkv.bias).reshape(3, d)
        for j, name in enumerate(("query", "key", "value")):
            w[f"{mha}{name}/kernel"] = qkv_w[j].T.reshape(d, heads, hd)
            w[f"{mha}{name}/bias"] = qkv_b[j].reshape(heads, hd)
        w[f"{mha}out/kernel"] = arr(block.attn.proj.weight).T.reshape(heads, hd, d)
        w[f"{mha}out/bias"] = arr(block.attn.proj.bias)
        w[f"{p}LayerNorm_0/scale"], w[f"{p}LayerNorm_0/bias"] = arr(block.norm1.weight), arr(block.norm1.bias)
        w[f"{p}LayerNorm_2/scale"], w[f"{p}LayerNorm_2/bias"] = arr(block.norm2.weight), arr(block.norm2.bias)
        for r, fc in enumerate((block.mlp.fc1, block.mlp.fc2)):
            w[f"{p}MlpBlock_3/Dense_{r}/kernel"] = arr(fc.weight).T
            w[f"{p}MlpBlock_3/Dense_{r}/bias"] = arr(fc.bias)
    np.savez(path, **w)


@pytest.fixture(name="tiny_vit")
def tiny_vit_factory():
    """Factory for tiny ViTs with keyword overrides."""
    return tiny_vit


@pytest.fixture(name="save_google_npz")
def save_google_npz_fn():
    """Writer of Google's ViT `.npz` checkpoint layout."""
    return save_google_npz
