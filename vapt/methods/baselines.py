"""Linear probing and full fine-tuning: no prompts, a new linear head."""

from __future__ import annotations

from dataclasses import dataclass

from vapt.config import MethodSpec, register_method


@dataclass(frozen=True)
class LinearConfig:
    """Linear probing: frozen backbone, new linear head."""

    @property
    def name(self) -> str:
        return "linear"


@dataclass(frozen=True)
class FullConfig:
    """Full fine-tuning: every backbone parameter and the head are trained."""

    @property
    def name(self) -> str:
        return "full"


register_method(MethodSpec("linear", LinearConfig, "Linear", "#8c8c8c"))
register_method(MethodSpec("full", FullConfig, "Full", "#4c4c4c", trains_backbone=True))
