"""PromptedSwin: VPT and VAPT on timm's Swin Transformer, with prompts carried alongside the windows.

Swin keeps its tokens as a map (B, H, W, C) and attends inside local windows, so prompts cannot simply
be concatenated to the token sequence. Here the prompts of a sample travel as a separate tensor
(B, Np, C). Inside every block they are prepended to each window of that sample (so every window of a
sample sees the same prompts and no window sees another sample's prompts), attend with a relative
position bias of 0 and no shift-mask entries on prompt rows and columns, and are averaged back over
the sample's windows after the attention. The block's norms, MLP and residuals then act on prompts and
patches as one token sequence.

Across a patch-merging layer the methods behave as follows:

- VPT-deep and VAPT: every block gets fresh prompts at its stage's width, so nothing crosses the merge.
- VPT-shallow: the prompts are carried into the next stage by the pretrained merging layer itself, as if
  each prompt filled a 2 x 2 patch (the prompt repeated four times along channels, then the merge's
  norm and reduction). This adds no parameters: shallow stays at Np * C_0 trainable prompt values.

VAPT on Swin is an extension of this library (the authors ran VPT only): the prompts of each block are
computed from that block's input map (B, H, W, C) by an `AdaptivePromptBlock` with the stage's grid,
one feature projector per stage (widths differ between stages), and `static_depth` counted over the
whole network (the default 1 gives static VPT prompts to the very first block only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import (
    PatchMerging,
    SwinTransformer,
    SwinTransformerBlock,
    WindowAttention,
    window_partition,
    window_reverse,
)
from torch import Tensor, nn

from vapt.config import METHODS, MethodConfig
from vapt.errors import ConfigError
from vapt.models.prompted import PromptedModel
from vapt.models.prompts import vpt_init_range
from vapt.models.recomputed_prompts import insert_prompts


class SwinPrompts(nn.Module):
    """Prompt generators of a Swin backbone, one per prompted stage, each at its stage's width."""

    def __init__(self, stages: list[nn.Module]):
        super().__init__()
        self.stages = nn.ModuleList(stages)

    def forward(self, stage: int, index: int, patches: Tensor, prompts: Tensor | None) -> Tensor | None:
        """Prompts for block `index` of `stage` from its input patches (B, H*W, C) and the previous block's
        prompt outputs (B, Np, C) or None, or None to keep those."""
        if stage >= len(self.stages):
            return None
        return self.stages[stage](index, patches, prompts)


def swin_stages(backbone: SwinTransformer) -> list[tuple[int, tuple[int, int], int]]:
    """(width, patch grid, number of blocks) of every stage of a Swin backbone."""
    out = []
    for stage in backbone.layers:
        block = stage.blocks[0]
        out.append((int(block.dim), tuple(int(s) for s in block.input_resolution), len(stage.blocks)))
    return out


def build_swin_prompts(config: MethodConfig, backbone: SwinTransformer) -> SwinPrompts | None:
    """The prompt generators a method needs on this backbone (None for linear probing and full tuning).

    Each stage gets the method's generator at the stage's width and grid, with the stage's share of
    the config (`config.for_stage`, when the config has one: None leaves the later stages unprompted);
    static prompts use VPT's uniform range for the stage's width.
    """
    generator = METHODS[config.name].generator
    if generator is None:
        return None
    stages = swin_stages(backbone)
    total = sum(depth for _, _, depth in stages)
    static_depth = getattr(config, "static_depth", 0)
    if static_depth > total:
        raise ConfigError(f"static_depth={static_depth} exceeds the backbone's {total} blocks")
    patch_size = tuple(backbone.patch_embed.patch_size)
    generators, offset = [], 0
    for dim, grid, depth in stages:
        stage_config = config.for_stage(offset, depth) if hasattr(config, "for_stage") else config
        if stage_config is None:
            break
        generators.append(generator.for_blocks(stage_config, dim, grid, depth, vpt_init_range(patch_size, dim)))
        offset += depth
    return SwinPrompts(generators)


def merge_prompts(merge: PatchMerging, prompts: Tensor) -> Tensor:
    """Carry prompts (B, Np, C) through a patch-merging layer, each prompt standing for a 2 x 2 patch."""
    return merge.reduction(merge.norm(prompts.repeat(1, 1, 4)))


def _window_bias(attn: WindowAttention, num_prompts: int, mask: Tensor | None, batch: int) -> Tensor:
    """Relative position bias plus shift mask, zero on prompt rows and columns: (B*nW or 1, nH, N, N)."""
    area = attn.window_area
    table = attn.relative_position_bias_table[attn.relative_position_index.view(-1)]
    bias = table.view(area, area, -1).permute(2, 0, 1)
    bias = F.pad(bias, (num_prompts, 0, num_prompts, 0)).unsqueeze(0)
    if mask is None:
        return bias
    mask = F.pad(mask, (num_prompts, 0, num_prompts, 0)).unsqueeze(1)
    bias = bias + mask
    return bias.unsqueeze(0).expand(batch, -1, -1, -1, -1).flatten(0, 1)


def _window_attention(attn: WindowAttention, tokens: Tensor, bias: Tensor) -> Tensor:
    """Multi-head attention of the pretrained `attn` over windows (B*nW, N, C) with an additive bias."""
    windows, n, _ = tokens.shape
    q, k, v = attn.qkv(tokens).reshape(windows, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=bias.to(q.dtype), dropout_p=attn.attn_drop.p if attn.training else 0.0,
        scale=attn.scale,
    )
    return attn.proj_drop(attn.proj(out.transpose(1, 2).reshape(windows, n, -1)))


def prompted_window_attention(block: SwinTransformerBlock, prompts: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Shifted-window attention of `block` with prompts (B, Np, C) in every window of their own sample.

    Returns the attention outputs for the prompts, averaged over the sample's windows, and for the map.
    """
    b, h, w, c = x.shape
    win_h, win_w = block.window_size
    shift = tuple(block.shift_size)
    if any(shift):
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    x = F.pad(x, (0, 0, 0, (win_w - w % win_w) % win_w, 0, (win_h - h % win_h) % win_h))
    padded_h, padded_w = x.shape[1], x.shape[2]
    windows = window_partition(x, (win_h, win_w)).reshape(b, -1, win_h * win_w, c)
    num_windows, num_prompts = windows.shape[1], prompts.shape[1]
    tokens = torch.cat([prompts.unsqueeze(1).expand(-1, num_windows, -1, -1), windows], dim=2).flatten(0, 1)
    mask = block.get_attn_mask(x) if block.dynamic_mask else block.attn_mask
    out = _window_attention(block.attn, tokens, _window_bias(block.attn, num_prompts, mask, b))
    out = out.view(b, num_windows, num_prompts + win_h * win_w, c)
    prompt_out = out[:, :, :num_prompts].mean(dim=1)
    x = window_reverse(out[:, :, num_prompts:].reshape(-1, win_h, win_w, c), (win_h, win_w), padded_h, padded_w)
    x = x[:, :h, :w]
    if any(shift):
        x = torch.roll(x, shifts=shift, dims=(1, 2))
    return prompt_out, x


def prompted_block(block: SwinTransformerBlock, x: Tensor, prompts: Tensor) -> tuple[Tensor, Tensor]:
    """One Swin block on a map (B, H, W, C) and prompts (B, Np, C); returns the new map and prompts."""
    b, h, w, c = x.shape
    return prompted_tokens_block(block, torch.cat([prompts, x.reshape(b, h * w, c)], dim=1), prompts.shape[1],
                                 (h, w))


def prompted_tokens_block(block: SwinTransformerBlock, tokens: Tensor, num_prompts: int,
                          grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """`prompted_block` on the joined tokens [prompts, patches] (B, Np + H*W, C) of an H x W map."""
    (h, w), (b, _, c) = grid, tokens.shape
    normed = block.norm1(tokens)
    prompt_out, map_out = prompted_window_attention(block, normed[:, :num_prompts],
                                                    normed[:, num_prompts:].reshape(b, h, w, c))
    tokens = tokens + block.drop_path1(torch.cat([prompt_out, map_out.reshape(b, h * w, c)], dim=1))
    tokens = tokens + block.drop_path2(block.mlp(block.norm2(tokens)))
    return tokens[:, num_prompts:].reshape(b, h, w, c), tokens[:, :num_prompts]


class PromptedSwin(PromptedModel):
    """A timm SwinTransformer with VPT / VAPT prompts, a new linear head and a frozen backbone.

    The forward pass is patch embed -> stages (merge, then blocks with prompts in every window) ->
    final norm -> average pooling over the map (prompts excluded) -> head.
    """

    def check_backbone(self, backbone: nn.Module) -> None:
        """Only a timm SwinTransformer can be wrapped here."""
        if not isinstance(backbone, SwinTransformer):
            raise ConfigError(f"PromptedSwin needs a timm SwinTransformer, got {type(backbone).__name__}")

    def build_prompts(self) -> SwinPrompts | None:
        """One generator per prompted stage (see `build_swin_prompts`)."""
        return build_swin_prompts(self.config, self.backbone)

    @property
    def stages(self) -> list[tuple[int, tuple[int, int], int]]:
        """(width, patch grid, number of blocks) of every stage."""
        return swin_stages(self.backbone)

    def forward_map(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Run the stages with prompts; returns the map (B, H, W, C) after the final norm and the last prompts."""
        x = self.backbone.patch_embed(images)
        prompts: Tensor | None = None
        for s, stage in enumerate(self.backbone.layers):
            x = stage.downsample(x)
            carry = prompts is not None and isinstance(stage.downsample, PatchMerging)
            generator = self.prompt.stages[s] if self.prompt is not None and s < len(self.prompt.stages) else None
            for index, block in enumerate(stage.blocks):
                b, h, w, c = x.shape
                tokens, fresh = x.reshape(b, h * w, c), 0
                if generator is not None:
                    tokens, fresh = insert_prompts(generator, index, tokens, 0, 0, carried=prompts)
                if carry and not fresh:
                    prompts = merge_prompts(stage.downsample, prompts)
                carry = False
                if fresh:
                    x, prompts = prompted_tokens_block(block, tokens, fresh, (h, w))
                else:
                    x, out = prompted_block(block, x, prompts if prompts is not None else x.new_zeros(b, 0, c))
                    prompts = out if prompts is not None else None
        return self.backbone.norm(x), prompts

    def forward_features(self, images: Tensor) -> Tensor:
        """Pooled features before the head."""
        x, _ = self.forward_map(images)
        return self.backbone.forward_head(x, pre_logits=True)


__all__ = [
    "PromptedSwin",
    "SwinPrompts",
    "build_swin_prompts",
    "merge_prompts",
    "prompted_block",
    "prompted_tokens_block",
    "prompted_window_attention",
    "swin_stages",
]
