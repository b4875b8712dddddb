"""Visual Adaptive Prompt Tuning (VAPT): prompts computed from each block's input patch tokens.

Defaults reproduce the authors' implementation (docs/method.md); `VAPTConfig.paper_form` gives the paper's
equations.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from vapt.config import MethodSpec, register_method
from vapt.errors import ConfigError, check_positive_int, check_probability
from vapt.models.prompts import StaticPrompts

ACTIVATIONS = ("relu", "gelu", "sigmoid", "softmax", "identity")
ABLATIONS = ("kernel_size", "padding", "conv", "shared_kernel", "projector", "shared_projector", "projector_dim",
             "activation", "static_depth")


@dataclass(frozen=True)
class VAPTConfig:
    """Visual Adaptive Prompt Tuning; defaults reproduce the authors' implementation (docs/method.md)."""

    num_tokens: int = 10
    kernel_size: int = 2
    padding: int = 0
    conv: bool = True
    shared_kernel: bool = True
    projector: bool = True
    shared_projector: bool = True
    projector_dim: int = 8
    activation: str = "relu"
    residual_projector: bool = True
    projector_bias: bool = False
    learnable_scale: bool = False
    token_projector_bias: bool = True
    pre_norm: bool = True
    static_depth: int = 1
    prompt_dropout: float = 0.1
    channel_dropout: float = 0.1
    projector_dropout: float = 0.1
    recompute: bool = True

    def __post_init__(self) -> None:
        check_positive_int("num_tokens", self.num_tokens)
        check_positive_int("kernel_size", self.kernel_size)
        check_positive_int("projector_dim", self.projector_dim)
        if not isinstance(self.padding, int) or self.padding < 0:
            raise ConfigError(f"VAPTConfig.padding must be an integer >= 0, got {self.padding!r}")
        if not isinstance(self.static_depth, int) or self.static_depth < 0:
            raise ConfigError(f"VAPTConfig.static_depth must be an integer >= 0, got {self.static_depth!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"VAPTConfig.activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}"
            )
        for name in ("prompt_dropout", "channel_dropout", "projector_dropout"):
            check_probability(name, getattr(self, name))

    @property
    def name(self) -> str:
        return "vapt"

    def for_stage(self, offset: int, depth: int) -> VAPTConfig:
        """The config of a stage of `depth` blocks starting at block `offset`: its share of `static_depth`."""
        return dataclasses.replace(self, static_depth=min(max(self.static_depth - offset, 0), depth))

    @classmethod
    def paper_form(cls, **overrides: Any) -> VAPTConfig:
        """The paper's equations: g(u) = W2 act(W1 u), no bias in the token projector, every block adaptive."""
        base = dict(
            residual_projector=False,
            token_projector_bias=False,
            pre_norm=False,
            static_depth=0,
            channel_dropout=0.0,
            prompt_dropout=0.0,
            projector_dropout=0.0,
        )
        base.update(overrides)
        return cls(**base)


def make_activation(name: str) -> nn.Module:
    """The activation module for a name in `ACTIVATIONS`."""
    table = {
        "relu": nn.ReLU,
        "gelu": nn.GELU,
        "sigmoid": nn.Sigmoid,
        "softmax": lambda: nn.Softmax(dim=-1),
        "identity": nn.Identity,
    }
    if name not in table:
        raise ConfigError(f"unknown activation {name!r}; expected one of {', '.join(table)}")
    return table[name]()


class FeatureProjector(nn.Module):
    """VAPT's feature projector: g(u) = u + s * W2 drop(act(W1 u)) (residual) or W2 act(W1 u)."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        activation: str = "relu",
        dropout: float = 0.1,
        residual: bool = True,
        learnable_scale: bool = False,
        bias: bool = False,
    ):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = make_activation(activation)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.residual = residual
        self.scale = nn.Parameter(torch.ones(())) if learnable_scale else None

    def forward(self, u: Tensor) -> Tensor:
        """Project prompt features (..., d) -> (..., d)."""
        out = self.fc2(self.dropout(self.act(self.fc1(u))))
        if self.scale is not None:
            out = self.scale * out
        return u + out if self.residual else out


class AdaptivePromptBlock(nn.Module):
    """One block's adaptive prompts: norm -> channel-wise conv -> channel dropout -> token projector."""

    def __init__(self, dim: int, grid_size: tuple[int, int], config: VAPTConfig):
        super().__init__()
        self.dim = dim
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.padding = config.padding
        self.shared_kernel = config.shared_kernel
        self.norm = nn.LayerNorm(dim) if config.pre_norm else nn.Identity()
        h, w = self.grid_size
        if config.conv:
            k = config.kernel_size
            out_h, out_w = h + 2 * config.padding - k + 1, w + 2 * config.padding - k + 1
            if out_h < 1 or out_w < 1:
                raise ConfigError(
                    f"kernel_size={k} with padding={config.padding} does not fit the {h}x{w} patch grid"
                )
            channels = 1 if config.shared_kernel else dim
            self.kernel = nn.Parameter(torch.randn(channels, 1, k, k))
            num_positions = out_h * out_w
        else:
            self.kernel = None
            num_positions = h * w
        self.channel_dropout = nn.Dropout2d(config.channel_dropout)
        self.token_projector = nn.Linear(num_positions, config.num_tokens, bias=config.token_projector_bias)
        nn.init.zeros_(self.token_projector.weight)
        if self.token_projector.bias is not None:
            nn.init.zeros_(self.token_projector.bias)

    def forward(self, patches: Tensor, projector: nn.Module | None = None) -> Tensor:
        """Patch tokens (B, H*W, d) -> prompt tokens (B, Np, d)."""
        b, n, d = patches.shape
        h, w = self.grid_size
        if n != h * w or d != self.dim:
            raise ValueError(f"expected patch tokens of shape (B, {h * w}, {self.dim}), got {tuple(patches.shape)}")
        x = self.norm(patches).transpose(1, 2).reshape(b, d, h, w)
        if self.kernel is not None:
            weight = self.kernel.expand(d, 1, -1, -1) if self.shared_kernel else self.kernel
            x = F.conv2d(x, weight.to(x.dtype), padding=self.padding, groups=d)
        x = self.channel_dropout(x).flatten(2)
        prompts = self.token_projector(x).transpose(1, 2)
        return projector(prompts) if projector is not None else prompts


class AdaptivePromptGenerator(nn.Module):
    """VAPT for a stack of blocks: static VPT prompts for the first `static_depth` blocks, adaptive after."""

    def __init__(self, config: VAPTConfig, dim: int, grid_size: tuple[int, int], num_blocks: int,
                 init_range: float):
        super().__init__()
        if config.static_depth > num_blocks:
            raise ConfigError(f"static_depth={config.static_depth} exceeds the backbone's {num_blocks} blocks")
        self.static_depth = config.static_depth
        self.recompute = config.recompute
        self.static = (
            StaticPrompts(config.static_depth, config.num_tokens, dim, init_range, config.prompt_dropout)
            if config.static_depth > 0
            else None
        )
        num_adaptive = num_blocks - config.static_depth
        self.adaptive = nn.ModuleList(AdaptivePromptBlock(dim, grid_size, config) for _ in range(num_adaptive))
        self.shared_projector = config.shared_projector
        if config.projector and num_adaptive > 0:
            count = 1 if config.shared_projector else num_adaptive
            self.projectors = nn.ModuleList(
                FeatureProjector(dim, config.projector_dim, config.activation, config.projector_dropout,
                                 config.residual_projector, config.learnable_scale, config.projector_bias)
                for _ in range(count)
            )
        else:
            self.projectors = None

    @classmethod
    def for_blocks(cls, config: VAPTConfig, dim: int, grid_size: tuple[int, int], num_blocks: int,
                   init_range: float) -> AdaptivePromptGenerator:
        """The generator for a stack of `num_blocks` blocks of width `dim` on a `grid_size` patch grid."""
        return cls(config, dim, grid_size, num_blocks, init_range)

    def projector_for(self, adaptive_index: int) -> nn.Module | None:
        """The feature projector used by the `adaptive_index`-th adaptive block."""
        if self.projectors is None:
            return None
        return self.projectors[0 if self.shared_projector else adaptive_index]

    def recomputed_prompts(self, index: int) -> tuple[Callable[[Tensor], Tensor], list[nn.Module | None]] | None:
        """Block `index`'s prompt function and modules, to be recomputed in backward (`recompute`, training)."""
        if not (self.recompute and self.training) or index < self.static_depth:
            return None
        j = index - self.static_depth
        block, projector = self.adaptive[j], self.projector_for(j)
        return functools.partial(block, projector=projector), [block, projector]

    def forward(self, index: int, patches: Tensor, prompts: Tensor | None = None) -> Tensor:
        """Prompts for block `index` from that block's input patch tokens (B, H*W, d)."""
        if index < self.static_depth:
            return self.static(index, patches.shape[0])
        j = index - self.static_depth
        block, projector = self.adaptive[j], self.projector_for(j)
        if self.recompute and self.training and torch.is_grad_enabled():
            return checkpoint(block, patches, projector, use_reentrant=False)
        return block(patches, projector)


register_method(MethodSpec("vapt", VAPTConfig, "VAPT", "#d62728", AdaptivePromptGenerator, ablations=ABLATIONS))
