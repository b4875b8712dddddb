"""`create_model`: a named backbone + a method -> the prompted model (the library's one entry point)."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from vapt.config import MethodConfig, method_config
from vapt.errors import ConfigError, check_positive_int
from vapt.models.backbones import FAMILIES, create_backbone
from vapt.models.prompted import PromptedModel


def create_model(
    backbone: str,
    method: str | MethodConfig,
    num_classes: int,
    pretrained: bool = False,
    weights: str | os.PathLike | None = None,
    image_size: int | None = None,
    **config_overrides: Any,
) -> PromptedModel:
    """A backbone with `method` (a name in `vapt.METHODS` or a method config) and a new head.

    ViT names give a `PromptedViT`; Swin names (`swin_b_in22k` or any timm Swin) give a `PromptedSwin`.
    `image_size` resizes the backbone's input (default: its native size).
    """
    check_positive_int("num_classes", num_classes)
    config = method_config(method, **config_overrides)
    model, spec = create_backbone(backbone, pretrained=pretrained, weights=weights, image_size=image_size)
    return spec.wrapper(model, config, num_classes, prompts_in_pool=spec.prompts_in_pool,
                        fixed_parameters=spec.fixed_parameters)


def wrap(
    model: nn.Module,
    method: str | MethodConfig,
    num_classes: int,
    prompts_in_pool: bool = False,
    **config_overrides: Any,
) -> PromptedModel:
    """Add `method` and a new `num_classes` head to a timm VisionTransformer or SwinTransformer you already hold.

    The same prompted model `create_model` builds from a name (with the model's own weights, config and
    pooling); the model's classifier is removed in place. `prompts_in_pool=True` keeps the prompts in an
    average pool, as the MAE backbone does.
    """
    check_positive_int("num_classes", num_classes)
    family = next((kind for kind in FAMILIES.values() if isinstance(model, kind.model_class)), None)
    if family is None:
        raise ConfigError(f"cannot wrap a {type(model).__name__}; expected a timm VisionTransformer or "
                          f"SwinTransformer")
    config = method_config(method, **config_overrides)
    return family.wrapper(model, config, num_classes, prompts_in_pool=prompts_in_pool)
