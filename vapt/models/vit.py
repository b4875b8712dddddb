"""PromptedViT: a frozen timm VisionTransformer run block by block, with prompts inserted per block."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vapt.config import METHODS
from vapt.models.prompted import PromptedModel
from vapt.models.recomputed_prompts import insert_prompts


class PromptedViT(PromptedModel):
    """A timm VisionTransformer with VPT / VAPT prompts, a new linear head and a frozen backbone.

    The forward pass is patch embed -> position embedding -> blocks (prompts inserted after the
    prefix tokens) -> final norm -> prompts stripped (or kept for MAE's average pooling) -> the
    backbone's own pooling (class token, average, attention pooling `map`, ...) -> head. A fresh
    `fc_norm` (MAE) stays frozen at its initial identity affine (weight 1, bias 0) unless the whole
    backbone trains, as in the authors' code.
    """

    def build_prompts(self) -> nn.Module | None:
        """One generator for the whole stack of blocks, from the method registry."""
        generator = METHODS[self.config.name].generator
        if generator is None:
            return None
        dim = self.backbone.embed_dim
        return generator.for_blocks(self.config, dim, self.grid_size, len(self.backbone.blocks), self.init_range(dim))

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid (H, W) of the native input size."""
        return tuple(int(s) for s in self.backbone.patch_embed.grid_size)

    @property
    def num_prefix_tokens(self) -> int:
        """CLS and register tokens that precede the prompts."""
        return int(self.backbone.num_prefix_tokens)

    def forward_tokens(self, images: Tensor) -> tuple[Tensor, int]:
        """Run the blocks with prompts; returns tokens after the final norm and the number of prompts."""
        vit = self.backbone
        x = vit.patch_embed(images)
        x = vit._pos_embed(x)
        x = vit.patch_drop(x)
        x = vit.norm_pre(x)
        prefix, num_prompts = self.num_prefix_tokens, 0
        for index, block in enumerate(vit.blocks):
            if self.prompt is not None:
                x, num_prompts = insert_prompts(self.prompt, index, x, prefix, num_prompts)
            x = block(x)
        return vit.norm(x), num_prompts

    def forward_features(self, images: Tensor) -> Tensor:
        """Pooled features before the head."""
        x, num_prompts = self.forward_tokens(images)
        if num_prompts and not self.prompts_in_pool:
            prefix = self.num_prefix_tokens
            x = torch.cat([x[:, :prefix], x[:, prefix + num_prompts:]], dim=1)
        return self.backbone.forward_head(x, pre_logits=True)
