"""PromptedViT: a frozen timm VisionTransformer run block by block, with prompts inserted per block."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from vapt.config import FullConfig, MethodConfig, VAPTConfig, VPTConfig
from vapt.io import save_torch_atomic
from vapt.prompts import AdaptivePromptGenerator, VPTPromptGenerator, vpt_init_range

HEAD_BIAS_INIT = -math.log((1 - 0.01) / 0.01)


def init_vpt_head(head: nn.Linear) -> None:
    """VPT's head init: Kaiming-normal (fan_out) weight, bias -log((1 - 0.01) / 0.01)."""
    nn.init.kaiming_normal_(head.weight, mode="fan_out")
    nn.init.constant_(head.bias, HEAD_BIAS_INIT)


class PromptedModel(nn.Module):
    """Shared behaviour of prompted backbones: freezing, train/eval handling, trainable state.

    Subclasses own `backbone` (frozen timm model without classifier), `head` (new linear classifier),
    `prompt` (prompt generator or None) and `config` (the method config).
    """

    backbone: nn.Module
    head: nn.Linear
    prompt: nn.Module | None
    config: MethodConfig

    @property
    def method(self) -> str:
        """The method name: linear, full, vpt_shallow, vpt_deep or vapt."""
        return self.config.name

    def extra_head_modules(self) -> list[nn.Module]:
        """Freshly initialized backbone modules trained and counted with the head (e.g. MAE's fc_norm)."""
        return []

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the classification head (and the fresh modules that belong to it)."""
        yield from self.head.parameters()
        for module in self.extra_head_modules():
            yield from module.parameters()

    def _freeze(self) -> None:
        full = isinstance(self.config, FullConfig)
        self.backbone.requires_grad_(full)
        for p in self.head_parameters():
            p.requires_grad_(True)

    def train(self, mode: bool = True) -> PromptedModel:
        """Switch prompt modules and head; a frozen backbone stays in eval mode (no dropout / drop-path)."""
        super().train(mode)
        if not isinstance(self.config, FullConfig):
            self.backbone.eval()
            for module in self.extra_head_modules():
                module.train(mode)
        return self

    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) pairs of everything that is trained; head names start with `head.`."""
        return ((n, p) for n, p in self.named_parameters() if p.requires_grad)

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """State of the trained parameters only (prompts and head; everything for full fine-tuning)."""
        names = {n for n, _ in self.trainable_parameters()}
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k in names}

    def load_trainable_state_dict(self, state: dict[str, Tensor]) -> None:
        """Load a `trainable_state_dict`; keys must match this model's trainable parameters exactly."""
        names = {n for n, _ in self.trainable_parameters()}
        missing, unexpected = sorted(names - set(state)), sorted(set(state) - names)
        if missing or unexpected:
            raise KeyError(
                f"trainable state does not match this {self.method} model: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        self.load_state_dict(state, strict=False)

    def save_trainable(self, path: str | os.PathLike) -> None:
        """Write the trainable state to `path` atomically."""
        save_torch_atomic(path, {"method": self.method, "state": self.trainable_state_dict()})

    def load_trainable(self, path: str | os.PathLike) -> None:
        """Read a file written by `save_trainable`."""
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("method") != self.method:
            raise ValueError(f"{path} holds a {payload.get('method')!r} model, this model is {self.method!r}")
        self.load_trainable_state_dict(payload["state"])


class PromptedViT(PromptedModel):
    """A timm VisionTransformer with VPT / VAPT prompts, a new linear head and a frozen backbone.

    The forward pass is patch embed -> position embedding -> blocks (prompts inserted after the
    prefix tokens) -> final norm -> prompts stripped (or kept for average pooling) -> pooling -> head.
    """

    def __init__(self, backbone: nn.Module, config: MethodConfig, num_classes: int,
                 prompts_in_pool: bool = False):
        super().__init__()
        backbone.reset_classifier(0)
        self.backbone = backbone
        self.config = config
        self.prompts_in_pool = prompts_in_pool
        self.head = nn.Linear(backbone.num_features, num_classes)
        init_vpt_head(self.head)
        dim = backbone.embed_dim
        num_blocks = len(backbone.blocks)
        init_range = vpt_init_range(tuple(backbone.patch_embed.patch_size), dim)
        if isinstance(config, VPTConfig):
            self.prompt = VPTPromptGenerator(config, dim, num_blocks, init_range)
        elif isinstance(config, VAPTConfig):
            self.prompt = AdaptivePromptGenerator(config, dim, self.grid_size, num_blocks, init_range)
        else:
            self.prompt = None
        self._freeze()

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid (H, W) of the native input size."""
        return tuple(int(s) for s in self.backbone.patch_embed.grid_size)

    @property
    def image_size(self) -> int:
        """Native input size in pixels (square)."""
        return int(self.backbone.patch_embed.img_size[0])

    @property
    def num_prefix_tokens(self) -> int:
        """CLS and register tokens that precede the prompts."""
        return int(self.backbone.num_prefix_tokens)

    def extra_head_modules(self) -> list[nn.Module]:
        fc_norm = getattr(self.backbone, "fc_norm", None)
        return [fc_norm] if isinstance(fc_norm, nn.LayerNorm) else []

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
                patches = x[:, prefix + num_prompts:]
                prompts = self.prompt(index, patches)
                if prompts is not None:
                    x = torch.cat([x[:, :prefix], prompts.to(x.dtype), patches], dim=1)
                    num_prompts = prompts.shape[1]
            x = block(x)
        return vit.norm(x), num_prompts

    def forward_features(self, images: Tensor) -> Tensor:
        """Pooled features before the head."""
        x, num_prompts = self.forward_tokens(images)
        if num_prompts and not self.prompts_in_pool:
            prefix = self.num_prefix_tokens
            x = torch.cat([x[:, :prefix], x[:, prefix + num_prompts:]], dim=1)
        return self.backbone.forward_head(x, pre_logits=True)

    def forward(self, images: Tensor) -> Tensor:
        """Class logits (B, num_classes)."""
        return self.head(self.forward_features(images))


def count_parameters(model: PromptedModel) -> dict[str, int]:
    """Parameter counts: `prompt` (trainable outside the head), `head`, `backbone` (all), `trainable`."""
    head_ids = {id(p) for p in model.head_parameters()}
    head = sum(p.numel() for p in model.head_parameters())
    backbone = sum(p.numel() for p in model.backbone.parameters() if id(p) not in head_ids)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    prompt = sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in head_ids)
    return {"prompt": prompt, "head": head, "backbone": backbone, "trainable": trainable}


def create_model(
    backbone: str,
    method: str | MethodConfig,
    num_classes: int,
    pretrained: bool = False,
    weights: str | None = None,
    **config_overrides: Any,
) -> PromptedModel:
    """A backbone with `method` (linear, full, vpt_shallow, vpt_deep, vapt or a config) and a new head.

    ViT names give a `PromptedViT`; Swin names (`swin_b_in22k` or any timm Swin) give a `PromptedSwin`.
    """
    from vapt.backbones import create_backbone
    from vapt.config import method_config
    from vapt.errors import ConfigError
    from vapt.swin import create_swin_model, is_swin_backbone

    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    if is_swin_backbone(backbone):
        return create_swin_model(backbone, method, num_classes, pretrained=pretrained, weights=weights,
                                 **config_overrides)
    config = method_config(method, **config_overrides)
    model, spec = create_backbone(backbone, pretrained=pretrained, weights=weights)
    return PromptedViT(model, config, num_classes, prompts_in_pool=spec.prompts_in_pool)
