"""VPT and VAPT (Visual Adaptive Prompt Tuning) for timm Vision Transformers.

The public names below are imported on first use, so torch-free helpers such as `vapt.io` import
without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("BACKBONES", "BackboneSpec", "backbone_spec", "create_backbone"), "vapt.models.backbones"),
    **dict.fromkeys(("METHODS", "MethodConfig", "MethodSpec", "method_config", "register_method"), "vapt.config"),
    **dict.fromkeys(("FullConfig", "LinearConfig"), "vapt.methods.baselines"),
    "VPTConfig": "vapt.methods.vpt",
    "VAPTConfig": "vapt.methods.vapt",
    **dict.fromkeys(("ConfigError", "DataLayoutError", "VaptError", "WeightsError"), "vapt.errors"),
    **dict.fromkeys(("PromptedModel", "count_parameters"), "vapt.models.prompted"),
    **dict.fromkeys(("create_model", "wrap"), "vapt.models.factory"),
    "PromptedViT": "vapt.models.vit",
    "PromptedSwin": "vapt.models.swin",
    **dict.fromkeys(("RunRecord", "RecordError"), "vapt.run.record"),
    "TrainConfig": "vapt.run.config",
    **dict.fromkeys(("gate_mass", "prompt_dependence"), "vapt.report.lens"),
}

def __getattr__(name: str) -> Any:
    """Import a public name from its module on first access."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vapt' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = sorted(_EXPORTS)
