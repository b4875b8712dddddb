"""VPT and VAPT (Visual Adaptive Prompt Tuning) for timm Vision Transformers."""

from __future__ import annotations

from typing import Any

from vapt.backbones import BACKBONES, BackboneSpec, backbone_spec, create_backbone
from vapt.config import (
    METHODS,
    FullConfig,
    LinearConfig,
    MethodConfig,
    VAPTConfig,
    VPTConfig,
    method_config,
)
from vapt.errors import ConfigError, DataLayoutError, VaptError, WeightsError
from vapt.prompted import PromptedModel, PromptedViT, count_parameters
from vapt.swin import SWIN_BACKBONES, PromptedSwin, create_swin_model, is_swin_backbone

__version__ = "0.1.0"
_LAZY = {"gate_mass": "vapt.report.lens", "prompt_dependence": "vapt.report.lens"}


def __getattr__(name: str) -> Any:
    """Import the MoE lens (pandas) only when `vapt.gate_mass` or `vapt.prompt_dependence` is used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vapt' has no attribute {name!r}")


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
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    if is_swin_backbone(backbone):
        return create_swin_model(backbone, method, num_classes, pretrained=pretrained, weights=weights,
                                 **config_overrides)
    config = method_config(method, **config_overrides)
    model, spec = create_backbone(backbone, pretrained=pretrained, weights=weights)
    return PromptedViT(model, config, num_classes, prompts_in_pool=spec.prompts_in_pool)


__all__ = [
    "BACKBONES",
    "METHODS",
    "SWIN_BACKBONES",
    "BackboneSpec",
    "ConfigError",
    "DataLayoutError",
    "FullConfig",
    "LinearConfig",
    "MethodConfig",
    "PromptedModel",
    "PromptedSwin",
    "PromptedViT",
    "VAPTConfig",
    "VPTConfig",
    "VaptError",
    "WeightsError",
    "backbone_spec",
    "count_parameters",
    "create_backbone",
    "create_model",
    "create_swin_model",
    "gate_mass",
    "method_config",
    "prompt_dependence",
]
