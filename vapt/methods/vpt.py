"""Visual Prompt Tuning (Jia et al. 2022): learnable prompt tokens after the prefix tokens, shallow or deep."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from vapt.config import MethodSpec, register_method
from vapt.errors import check_positive_int, check_probability
from vapt.models.prompts import StaticPrompts


@dataclass(frozen=True)
class VPTConfig:
    """Visual Prompt Tuning (Jia et al. 2022): learnable prompt tokens after the prefix tokens."""

    num_tokens: int = 10
    deep: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_positive_int("num_tokens", self.num_tokens)
        check_probability("dropout", self.dropout)

    @property
    def name(self) -> str:
        return "vpt_deep" if self.deep else "vpt_shallow"

    def for_stage(self, offset: int, depth: int) -> VPTConfig | None:
        """The config of a stage of `depth` blocks starting at block `offset` (shallow: first stage only)."""
        return self if self.deep or offset == 0 else None


class VPTPromptGenerator(nn.Module):
    """VPT-shallow (prompts at block 0 only) or VPT-deep (fresh prompts before every block)."""

    def __init__(self, config: VPTConfig, dim: int, num_blocks: int, init_range: float):
        super().__init__()
        self.deep = config.deep
        self.prompts = StaticPrompts(num_blocks if config.deep else 1, config.num_tokens, dim, init_range,
                                     config.dropout)

    @classmethod
    def for_blocks(cls, config: VPTConfig, dim: int, grid_size: tuple[int, int], num_blocks: int,
                   init_range: float) -> VPTPromptGenerator:
        """The generator for a stack of `num_blocks` blocks of width `dim` (the grid is not used)."""
        return cls(config, dim, num_blocks, init_range)

    def forward(self, index: int, patches: Tensor, prompts: Tensor | None = None) -> Tensor | None:
        """Prompts to insert before block `index`, or None to keep the previous block's outputs."""
        if self.deep or index == 0:
            return self.prompts(index, patches.shape[0])
        return None


register_method(MethodSpec("vpt_shallow", VPTConfig, "VPT-Shallow", "#8fb8de", VPTPromptGenerator, {"deep": False}))
register_method(MethodSpec("vpt_deep", VPTConfig, "VPT-Deep", "#1f77b4", VPTPromptGenerator, {"deep": True}))
