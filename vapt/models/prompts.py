"""The prompt-generator protocol and the pieces several methods share (static prompts, VPT's init range).

A method's prompt generator is an `nn.Module` built per stack of blocks by
``Generator.for_blocks(config, dim, grid_size, num_blocks, init_range)`` and called once per transformer
block as ``generator(index, patches, prompts)``: `patches` are the block's input patch tokens
``(B, H*W, d)`` (prefix and prompt tokens removed) and `prompts` the previous block's prompt outputs
``(B, Np, d)`` (None before any prompt was inserted). It returns the prompt tokens ``(B, Np, d)`` to
insert before that block, or ``None`` to keep the previous block's prompt outputs. ViT and Swin call
generators the same way, so a method never touches the backbone wrappers.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor, nn


class PromptGenerator(Protocol):
    """The call every prompt generator answers (see the module docstring)."""

    def __call__(self, index: int, patches: Tensor, prompts: Tensor | None) -> Tensor | None: ...


def vpt_init_range(patch_size: tuple[int, int], dim: int) -> float:
    """VPT's uniform init bound sqrt(6 / (3 * patch_h * patch_w + d)) (0.0625 for ViT-B/16)."""
    return math.sqrt(6.0 / (3 * patch_size[0] * patch_size[1] + dim))


class StaticPrompts(nn.Module):
    """Learnable prompt tokens, one set of `num_tokens` per prompted block (VPT)."""

    def __init__(self, num_blocks: int, num_tokens: int, dim: int, init_range: float, dropout: float = 0.0):
        super().__init__()
        self.tokens = nn.Parameter(torch.empty(num_blocks, num_tokens, dim).uniform_(-init_range, init_range))
        self.dropout = nn.Dropout(dropout)

    def forward(self, index: int, batch_size: int) -> Tensor:
        """Prompt tokens of block `index`, expanded to the batch (dropout drawn per sample)."""
        return self.dropout(self.tokens[index].expand(batch_size, -1, -1))
