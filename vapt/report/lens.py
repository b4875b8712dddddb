"""The MoE lens: how a prompted ViT's attention heads use their prompt experts, and how input-dependent they are.

Each attention head mixes experts (the value vectors of all key tokens) with softmax gates. With VPT or
VAPT some keys are prompt tokens. `gate_mass` measures, per layer, head and query kind (CLS or patch),
the mean gate mass on prompt, prefix (CLS and register) and patch keys and how many prompts share the
prompt mass; `prompt_dependence` measures, per layer, the share of the prompt tokens' (and of their
value vectors') second moment that varies with the input image: 0 for static VPT prompts, > 0 for
prompts computed from the input (VAPT) or carried through earlier blocks (VPT-shallow), and how many
distinct prompts the block holds (1 when its prompts are copies of each other).

Both run the model's own forward pass with hooks that capture each block's input and its attention
input, and recompute the gates from the block's qkv projection, q/k norms, scale and head count; the
logits and softmax are computed in float32, so bf16 models work. Hooks are removed afterwards and the
model's train/eval mode is restored: the forward pass itself is untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from vapt.errors import ConfigError, check_positive_int

QUERY_KINDS: tuple[str, ...] = ("cls", "patch")
GATE_COLUMNS: tuple[str, ...] = (
    "layer", "head", "query", "prompt_mass", "prefix_mass", "patch_mass", "effective_prompts",
)
DEPENDENCE_COLUMNS: tuple[str, ...] = ("layer", "dependence", "value_dependence", "distinct_prompts", "prompt_spread")


# ------------------------------------------------------------------------------- model adapter
@dataclass(frozen=True)
class LensLayout:
    """What the lens needs to know about a ViT: its blocks and the token layout of every block's input.

    A block's input is `[prefix (CLS, registers), prompts, patches]` with `prompt_tokens[i]` prompts.
    """

    name: str
    blocks: tuple[nn.Module, ...]
    num_prefix_tokens: int
    class_token: bool
    num_patches: int
    image_size: tuple[int, int]
    prompt_tokens: tuple[int, ...]


def lens_layout(model: nn.Module) -> LensLayout:
    """The one place that reads a prompted model's internals: blocks, prefix tokens, prompts per block.

    Accepts a `vapt.PromptedViT` (any method) or a plain timm `VisionTransformer` (no prompts); Swin
    models and anything else raise ConfigError.
    """
    from timm.models.swin_transformer import SwinTransformer
    from timm.models.vision_transformer import VisionTransformer

    from vapt.models.swin import PromptedSwin
    from vapt.models.vit import PromptedViT

    if isinstance(model, (PromptedSwin, SwinTransformer)):
        raise ConfigError(
            f"the MoE lens does not support Swin models (got a {type(model).__name__}): its windowed attention "
            f"has no single softmax over prompt, prefix and patch keys; use a ViT backbone"
        )
    if isinstance(model, PromptedViT):
        vit, name = model.backbone, model.method
        num_tokens = int(model.config.num_tokens) if model.prompt is not None else 0
    elif isinstance(model, VisionTransformer):
        vit, name, num_tokens = model, "unprompted", 0
    else:
        raise ConfigError(
            f"the MoE lens needs a vapt.PromptedViT or a timm VisionTransformer, got a {type(model).__name__}"
        )
    blocks = tuple(vit.blocks)
    return LensLayout(
        name=name,
        blocks=blocks,
        num_prefix_tokens=int(vit.num_prefix_tokens),
        class_token=getattr(vit, "cls_token", None) is not None,
        num_patches=int(vit.patch_embed.num_patches),
        image_size=tuple(int(s) for s in vit.patch_embed.img_size),
        prompt_tokens=(num_tokens,) * len(blocks),
    )


# ------------------------------------------------------------------------------------ public API
def num_prompt_tokens(model: nn.Module) -> int:
    """Prompt tokens in the input of the model's blocks (0 for a model without prompts)."""
    return max(lens_layout(model).prompt_tokens, default=0)


def gate_mass(model: nn.Module, images: Tensor, batch_size: int = 32) -> pd.DataFrame:
    """Mean softmax gate mass on prompt, prefix and patch keys per (layer, head, query kind).

    Columns: `layer, head, query` (`cls`: the CLS token's query, present when the model has one;
    `patch`: the patch tokens' queries), `prompt_mass, prefix_mass, patch_mass` (means over images and
    queries of the attention on those keys; they sum to 1) and `effective_prompts`: exp of the entropy
    of the mean per-prompt mass normalised over the prompts (1 = one prompt takes all of it, Np = all
    prompts alike; 0 for a model without prompts). `images` is (N, 3, H, W) at the model's input size.
    """
    layout = lens_layout(model)
    stats = [_GateStats(layout, i) for i in range(len(layout.blocks))]

    def collect(index: int, block_input: Tensor, attn: nn.Module, attn_input: Tensor) -> None:
        q, k, _ = _qkv(attn, attn_input)
        stats[index].add(q, k, attn.scale)

    _run_with_hooks(model, layout, images, batch_size, collect)
    return pd.DataFrame([row for s in stats for row in s.rows()], columns=list(GATE_COLUMNS))


def prompt_dependence(model: nn.Module, images: Tensor, batch_size: int = 32) -> pd.DataFrame:
    """Per layer, the input-dependent share E‖P(x) − E P‖² / E‖P(x)‖² of the prompt tokens entering it.

    Columns: `layer, dependence` (of the prompt tokens in the block's input: 0 for static prompts, NaN
    where they are all zero, as VAPT's adaptive prompts are at initialisation), `value_dependence`
    (the same for the prompt experts' values, the value projections of the prompt tokens),
    `distinct_prompts` (the effective rank of the prompts' mean Gram matrix E[P Pᵀ] (Np x Np): exp of the
    entropy of its normalised eigenvalues; 1 when the block's prompts are copies, Np when they are
    orthogonal and equally large) and `prompt_spread` (E Σ_k‖P_k − P̄‖² / E Σ_k‖P_k‖², the share of the
    prompts' second moment that differs between the prompts of a block; 0 for copies). Expectations are
    over `images`, (N, 3, H, W) at the model's input size. A model without prompts raises ConfigError.
    """
    layout = lens_layout(model)
    if not any(layout.prompt_tokens):
        raise ConfigError(
            f"prompt_dependence needs a model with prompt tokens (VPT or VAPT); this {layout.name} model has none"
        )
    tokens = [_SpreadStats() for _ in layout.blocks]
    values = [_SpreadStats() for _ in layout.blocks]
    grams = [_GramStats() for _ in layout.blocks]

    def collect(index: int, block_input: Tensor, attn: nn.Module, attn_input: Tensor) -> None:
        prompts = _prompt_slice(layout, index)
        _, _, v = _qkv(attn, attn_input[:, prompts])
        tokens[index].add(block_input[:, prompts])
        grams[index].add(block_input[:, prompts])
        values[index].add(v.transpose(1, 2).flatten(2))  # (B, Np, heads * head_dim)

    _run_with_hooks(model, layout, images, batch_size, collect)
    rows = [(i, t.share(), v.share(), *g.distinct()) for i, (t, v, g) in enumerate(zip(tokens, values, grams,
                                                                                        strict=True))]
    return pd.DataFrame(rows, columns=list(DEPENDENCE_COLUMNS))


# ------------------------------------------------------------------------------------- internals
def _prompt_slice(layout: LensLayout, index: int) -> slice:
    start = layout.num_prefix_tokens
    return slice(start, start + layout.prompt_tokens[index])


def _qkv(attn: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Queries, keys (after the attention's q/k norms) and values (B, heads, N, head_dim), as the block computes."""
    for name in ("qkv", "num_heads", "scale"):
        if not hasattr(attn, name):
            raise ConfigError(f"the MoE lens needs timm's Attention (qkv, num_heads, scale); got {type(attn).__name__}")
    b, n, _ = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q_norm, k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
    if q_norm is not None:
        q = q_norm(q)
    if k_norm is not None:
        k = k_norm(k)
    return q, k, v


def _check_images(images: Tensor, layout: LensLayout) -> None:
    h, w = layout.image_size
    expected = f"(N, 3, {h}, {w}) images: this model takes {h}x{w} px input"
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ConfigError(f"the MoE lens expects {expected}; got {shape}")
    if tuple(images.shape[-2:]) != (h, w):
        raise ConfigError(f"images are {images.shape[-2]}x{images.shape[-1]} px; expected {expected}")
    if images.shape[0] == 0:
        raise ConfigError(f"no images given; expected {expected}")


def _run_with_hooks(model: nn.Module, layout: LensLayout, images: Tensor, batch_size: int, collect) -> None:
    """Run `model` over `images` in batches; `collect(index, block input, attn, attn input)` sees every block."""
    _check_images(images, layout)
    check_positive_int("batch_size", batch_size)
    param = next(model.parameters())
    block_inputs: dict[int, Tensor] = {}
    expected_length = [layout.num_prefix_tokens + n + layout.num_patches for n in layout.prompt_tokens]

    def block_hook(index: int):
        def hook(module: nn.Module, args: tuple) -> None:
            if args[0].shape[1] != expected_length[index]:
                raise RuntimeError(
                    f"block {index} got {args[0].shape[1]} tokens, the lens expected {expected_length[index]} "
                    f"({layout.num_prefix_tokens} prefix + {layout.prompt_tokens[index]} prompts + "
                    f"{layout.num_patches} patches)"
                )
            block_inputs[index] = args[0]
        return hook

    def attn_hook(index: int):
        def hook(module: nn.Module, args: tuple) -> None:
            with torch.autocast(args[0].device.type, enabled=False):
                collect(index, block_inputs.pop(index), module, args[0])
        return hook

    handles = []
    was_training = model.training
    try:
        for index, block in enumerate(layout.blocks):
            handles.append(block.register_forward_pre_hook(block_hook(index)))
            handles.append(block.attn.register_forward_pre_hook(attn_hook(index)))
        model.eval()
        with torch.no_grad():
            for batch in images.split(batch_size):
                model(batch.to(device=param.device, dtype=param.dtype))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


class _GateStats:
    """Running sums of one block's gate mass per head and query kind."""

    def __init__(self, layout: LensLayout, index: int):
        self.layout, self.index = layout, index
        self.prompts = _prompt_slice(layout, index)
        self.kinds = [k for k in QUERY_KINDS if k == "patch" or layout.class_token]
        self.mass: dict[str, Tensor] = {}  # kind -> (heads, 3) sums of prompt / prefix / patch mass
        self.per_prompt: dict[str, Tensor] = {}  # kind -> (heads, Np) sums of mass per prompt
        self.count: dict[str, int] = {}  # kind -> number of (image, query) pairs summed

    def _queries(self, kind: str) -> slice:
        return slice(0, 1) if kind == "cls" else slice(self.prompts.stop, None)

    def add(self, q: Tensor, k: Tensor, scale: float) -> None:
        """Add a batch of queries and keys (B, heads, N, head_dim)."""
        prefix = self.layout.num_prefix_tokens
        keys = k.float().transpose(-2, -1)
        for kind in self.kinds:
            queries = q[:, :, self._queries(kind)].float()
            attention = torch.softmax((queries * scale) @ keys, dim=-1)  # (B, heads, Nq, N) in float32
            prompt = attention[..., self.prompts]
            parts = torch.stack([prompt.sum(-1), attention[..., :prefix].sum(-1),
                                 attention[..., self.prompts.stop:].sum(-1)], dim=-1)
            mass = parts.double().sum(dim=(0, 2))
            per_prompt = prompt.double().sum(dim=(0, 2))
            if kind in self.mass:
                self.mass[kind] += mass
                self.per_prompt[kind] += per_prompt
            else:
                self.mass[kind], self.per_prompt[kind] = mass, per_prompt
            self.count[kind] = self.count.get(kind, 0) + queries.shape[0] * queries.shape[2]

    def rows(self) -> list[tuple]:
        """One row per (head, query kind) in GATE_COLUMNS order."""
        out = []
        for kind in self.kinds:
            mass = (self.mass[kind] / self.count[kind]).cpu().numpy()
            per_prompt = self.per_prompt[kind].cpu().numpy()
            for head in range(mass.shape[0]):
                out.append((self.index, head, kind, *map(float, mass[head]), _effective(per_prompt[head])))
        return out


def _effective(per_prompt: np.ndarray) -> float:
    """exp(entropy) of a non-negative vector normalised to sum 1 (0 for an empty or all-zero vector)."""
    total = per_prompt.sum()
    if per_prompt.size == 0 or total <= 0:
        return 0.0
    p = per_prompt / total
    p = p[p > 0]
    return float(math.exp(-(p * np.log(p)).sum()))


class _SpreadStats:
    """Running E‖X − E X‖² and E‖X‖² over samples X (the leading axis), shifted by the first sample.

    Shifting by a sample keeps the sums exact for identical samples (static prompts give exactly 0).
    """

    def __init__(self) -> None:
        self.count = 0
        self.shift: Tensor | None = None
        self.shifted_sum: Tensor | None = None
        self.shifted_square = 0.0
        self.square = 0.0

    def add(self, samples: Tensor) -> None:
        """Add samples (B, ...)."""
        x = samples.double().flatten(1)
        if self.shift is None:
            self.shift = x[0].clone()
            self.shifted_sum = torch.zeros_like(self.shift)
        centred = x - self.shift
        self.shifted_sum += centred.sum(0)
        self.shifted_square += float((centred * centred).sum())
        self.square += float((x * x).sum())
        self.count += x.shape[0]

    def share(self) -> float:
        """E‖X − E X‖² / E‖X‖²; NaN when every sample is zero."""
        if self.count == 0 or self.square == 0.0:
            return math.nan
        mean_shifted = self.shifted_sum / self.count
        spread = self.shifted_square / self.count - float((mean_shifted * mean_shifted).sum())
        return max(spread, 0.0) / (self.square / self.count)


class _GramStats:
    """Running sum of the prompts' Gram matrices P Pᵀ (Np x Np) over images, in float64."""

    def __init__(self) -> None:
        self.gram: Tensor | None = None

    def add(self, prompts: Tensor) -> None:
        """Add a batch of prompt tokens (B, Np, d)."""
        x = prompts.double()
        gram = (x @ x.transpose(1, 2)).sum(0)
        self.gram = gram if self.gram is None else self.gram + gram

    def distinct(self) -> tuple[float, float]:
        """(effective rank of the mean Gram matrix, share of the second moment between prompts); NaN if all zero."""
        if self.gram is None or float(self.gram.trace()) == 0.0:
            return math.nan, math.nan
        gram = self.gram.cpu().numpy()
        eigen = np.clip(np.linalg.eigvalsh(gram), 0.0, None)
        spread = (np.trace(gram) - gram.sum() / gram.shape[0]) / np.trace(gram)
        return _effective(eigen), float(max(spread, 0.0))


__all__ = [
    "DEPENDENCE_COLUMNS",
    "GATE_COLUMNS",
    "QUERY_KINDS",
    "LensLayout",
    "gate_mass",
    "lens_layout",
    "num_prompt_tokens",
    "prompt_dependence",
]
