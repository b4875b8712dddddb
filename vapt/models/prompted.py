"""PromptedModel: what every prompted backbone shares (head, freezing, trainable state), and parameter counts."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from vapt.config import METHODS, MethodConfig
from vapt.io import save_torch_atomic
from vapt.models.prompts import vpt_init_range

HEAD_BIAS_INIT = -math.log((1 - 0.01) / 0.01)


def init_vpt_head(head: nn.Linear) -> None:
    """VPT's head init: Kaiming-normal (fan_out) weight, bias -log((1 - 0.01) / 0.01)."""
    nn.init.kaiming_normal_(head.weight, mode="fan_out")
    nn.init.constant_(head.bias, HEAD_BIAS_INIT)


class PromptedModel(nn.Module):
    """A frozen timm backbone with prompts and a new linear head: the part every backbone family shares.

    It owns `backbone` (timm model without classifier), `head` (new linear classifier, VPT's init),
    `prompt` (the method's prompt generator, or None), `config` (the method config), the freezing
    and train/eval rules and the trainable state. `fixed_parameters` names backbone parameters that stay
    frozen even under full fine-tuning (MoCo v3's fixed sin-cos `pos_embed`). A subclass adapts one
    backbone family: it builds the prompt generators (`build_prompts`) and runs the blocks with prompts
    (`forward_features`).
    """

    backbone: nn.Module
    head: nn.Linear
    prompt: nn.Module | None
    config: MethodConfig

    def __init__(self, backbone: nn.Module, config: MethodConfig, num_classes: int,
                 prompts_in_pool: bool = False, fixed_parameters: tuple[str, ...] = ()):
        super().__init__()
        self.check_backbone(backbone)
        backbone.reset_classifier(0)
        self.backbone = backbone
        self.config = config
        self.prompts_in_pool = prompts_in_pool
        self.fixed_parameters = tuple(fixed_parameters)
        self.head = nn.Linear(backbone.num_features, num_classes)
        init_vpt_head(self.head)
        self.prompt = self.build_prompts()
        self._freeze()

    def check_backbone(self, backbone: nn.Module) -> None:
        """Raise ConfigError when `backbone` is not of this wrapper's family."""

    def build_prompts(self) -> nn.Module | None:
        """The prompt generator(s) of `self.config` on `self.backbone` (None for linear probing / full)."""
        raise NotImplementedError

    def init_range(self, dim: int) -> float:
        """VPT's uniform init bound of static prompts of width `dim` on this backbone's patches."""
        return vpt_init_range(tuple(self.backbone.patch_embed.patch_size), dim)

    @property
    def image_size(self) -> int:
        """Native input size in pixels (square)."""
        return int(self.backbone.patch_embed.img_size[0])

    def forward_features(self, images: Tensor) -> Tensor:
        """Pooled features before the head."""
        raise NotImplementedError

    def forward(self, images: Tensor) -> Tensor:
        """Class logits (B, num_classes)."""
        return self.head(self.forward_features(images))

    @property
    def method(self) -> str:
        """The registered method name (a key of `vapt.METHODS`)."""
        return self.config.name

    @property
    def trains_backbone(self) -> bool:
        """Whether the method trains the backbone (full fine-tuning) instead of freezing it."""
        return METHODS[self.config.name].trains_backbone

    def extra_head_modules(self) -> list[nn.Module]:
        """Freshly initialized backbone modules trained and counted with the head (e.g. MAE's fc_norm)."""
        return []

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the classification head (and the fresh modules that belong to it)."""
        yield from self.head.parameters()
        for module in self.extra_head_modules():
            yield from module.parameters()

    def _freeze(self) -> None:
        self.backbone.requires_grad_(self.trains_backbone)
        for name in self.fixed_parameters:
            self.backbone.get_parameter(name).requires_grad_(False)
        for p in self.head_parameters():
            p.requires_grad_(True)

    def train(self, mode: bool = True) -> PromptedModel:
        """Switch prompt modules and head; a frozen backbone stays in eval mode (no dropout / drop-path)."""
        super().train(mode)
        if not self.trains_backbone:
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


def count_parameters(model: PromptedModel) -> dict[str, int]:
    """Parameter counts: `prompt` (trainable outside the head), `head`, `backbone` (all), `trainable`."""
    head_ids = {id(p) for p in model.head_parameters()}
    head = sum(p.numel() for p in model.head_parameters())
    backbone = sum(p.numel() for p in model.backbone.parameters() if id(p) not in head_ids)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    prompt = sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in head_ids)
    return {"prompt": prompt, "head": head, "backbone": backbone, "trainable": trainable}
