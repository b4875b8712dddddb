"""Tiny prompted ViTs for the MoE lens tests."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from vapt.config import METHODS, method_config
from vapt.models.vit import PromptedViT

NUM_TOKENS = 3


def tiny_vit(**overrides) -> VisionTransformer:
    """A 32 px, patch-4, depth-3, width-32, 2-head ViT with random weights (eval mode)."""
    kwargs = dict(img_size=32, patch_size=4, embed_dim=32, depth=3, num_heads=2, mlp_ratio=2.0, num_classes=0)
    kwargs.update(overrides)
    return VisionTransformer(**kwargs).eval()


def sharpen(vit: VisionTransformer, seed: int = 0) -> VisionTransformer:
    """Larger random qkv and norm weights, so that the gates are far from uniform (as in trained models)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in vit.blocks:
            block.attn.qkv.weight.normal_(0.0, 0.5, generator=generator)
            block.attn.qkv.bias.normal_(0.0, 0.5, generator=generator)
            block.norm1.bias.normal_(0.0, 0.5, generator=generator)
    return vit


def prompted(method: str, seed: int = 0, **vit_overrides) -> PromptedViT:
    """A tiny PromptedViT of `method` (prompts: NUM_TOKENS) on a sharpened random backbone, in eval mode."""
    torch.manual_seed(seed)
    options = {"num_tokens": NUM_TOKENS} if METHODS[method].prompted else {}
    return PromptedViT(sharpen(tiny_vit(**vit_overrides), seed), method_config(method, **options), 5).eval()


def randomise_token_projectors(model: PromptedViT, seed: int = 0) -> None:
    """Give VAPT's zero-initialised token projectors random weights and biases (as after training)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.prompt.adaptive:
            block.token_projector.weight.normal_(0.0, 0.2, generator=generator)
            block.token_projector.bias.normal_(0.0, 0.2, generator=generator)


@pytest.fixture
def images() -> torch.Tensor:
    """A batch of 7 random 32 px images (an odd count, so that batches of 4 leave a remainder)."""
    return torch.randn(7, 3, 32, 32, generator=torch.Generator().manual_seed(1))
