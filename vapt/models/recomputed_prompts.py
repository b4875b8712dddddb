"""Prompts joined to the token sequence by one autograd function that recomputes them in the backward pass.

`insert_prompts` is how a prompted backbone puts a block's prompts into its token sequence
`[prefix, prompts, patches]`. For a generator that offers it (VAPT with `recompute`, while training),
`JoinRecomputedPrompts` computes the prompts from the patch tokens and joins them in one step. It keeps for
the backward pass only its output, which the next block saves anyway (its first LayerNorm saves its
input), and the dropout masks the generator drew; in the backward pass it runs the generator again from the
patch tokens of that output, with the same masks and the same autocast state, and backpropagates through
it. Nothing of the generator's intermediate tensors (normalised tokens, convolution output) and no view of
the previous block's output stays alive between the forward and the backward pass.

The masks are drawn with the same random calls as `torch.nn.Dropout` / `torch.nn.Dropout2d` make, in the
same order, so a seeded run draws the same masks and the forward output is bit-identical to the plain path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

#: Devices on which `torch.nn.functional.dropout` draws its mask with the fused `native_dropout` kernel.
FUSED_DROPOUT_DEVICES = ("cuda", "xpu", "lazy", "privateuseone")

PromptFunction = Callable[[Tensor], Tensor]


class DropoutTape:
    """Dropout masks of some modules' `nn.Dropout` / `nn.Dropout2d` layers: drawn once, then replayed.

    While `recording()`, each call of one of these layers draws its mask exactly as the layer would (same
    random calls, same arithmetic) and keeps it; while `replaying(masks)`, the calls apply the kept masks in
    the same order without drawing anything.
    """

    def __init__(self, modules: Sequence[nn.Module | None]):
        seen: dict[int, nn.Module] = {}
        for module in modules:
            for layer in module.modules() if module is not None else ():
                if isinstance(layer, nn.Dropout | nn.Dropout2d):
                    seen.setdefault(id(layer), layer)
        self.layers = list(seen.values())
        self.entries: list[tuple[str, float]] = []  # (kind, scale) per call: identity, noise or fused
        self.masks: list[Tensor] = []

    @staticmethod
    def supports(modules: Sequence[nn.Module | None]) -> bool:
        """Whether every dropout layer in `modules` is one the tape reproduces (plain Dropout / Dropout2d)."""
        for module in modules:
            for layer in module.modules() if module is not None else ():
                if isinstance(layer, nn.modules.dropout._DropoutNd):
                    if type(layer) not in (nn.Dropout, nn.Dropout2d) or layer.inplace:
                        return False
        return True

    @contextlib.contextmanager
    def _patched(self, call: Callable[[nn.Module, Tensor], Tensor]) -> Iterator[None]:
        for layer in self.layers:
            layer.forward = lambda x, layer=layer: call(layer, x)
        try:
            yield
        finally:
            for layer in self.layers:
                del layer.forward

    def recording(self) -> contextlib.AbstractContextManager[None]:
        """Run the layers as torch does, keeping their masks."""
        self.entries, self.masks = [], []
        return self._patched(self._record)

    def replaying(self, masks: Sequence[Tensor]) -> contextlib.AbstractContextManager[None]:
        """Run the layers with the masks recorded before (in call order)."""
        self._next = iter(zip(self.entries, _split(self.entries, masks), strict=True))
        return self._patched(self._replay)

    def _record(self, layer: nn.Module, x: Tensor) -> Tensor:
        p = float(layer.p)
        if not layer.training or p == 0.0 or x.numel() == 0:
            self.entries.append(("identity", 1.0))
            return x
        if p == 1.0:
            noise = torch.zeros((), dtype=x.dtype, device=x.device)
            kind = "noise"
        elif isinstance(layer, nn.Dropout2d):  # one mask value per sample and channel
            noise = x.new_empty((*x.shape[:2], *(1,) * (x.dim() - 2))).bernoulli_(1 - p).div_(1 - p)
            kind = "noise"
        elif x.device.type in FUSED_DROPOUT_DEVICES:
            out, mask = torch.native_dropout(x, p, True)
            self.entries.append(("fused", 1.0 / (1.0 - p)))
            self.masks.append(mask)
            return out
        else:
            noise = torch.empty_like(x).bernoulli_(1 - p).div_(1 - p)
            kind = "noise"
        self.entries.append((kind, 1.0))
        self.masks.append(noise)
        return x * noise

    def _replay(self, layer: nn.Module, x: Tensor) -> Tensor:
        (kind, scale), mask = next(self._next)
        if kind == "identity":
            return x
        if kind == "fused":
            return torch.ops.aten.native_dropout_backward(x, mask, scale)
        return x * mask


def _split(entries: list[tuple[str, float]], masks: Sequence[Tensor]) -> list[Tensor | None]:
    """The mask of each recorded call (None for calls that kept their input)."""
    stored = iter(masks)
    return [None if kind == "identity" else next(stored) for kind, _ in entries]


def _autocast_state(device_type: str) -> tuple[str, bool, torch.dtype]:
    return device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)


class JoinRecomputedPrompts(torch.autograd.Function):
    """`[prefix, prompt_fn(patches), patches]` from `[prefix, previous prompts, patches]`, recomputed in backward."""

    @staticmethod
    def forward(ctx, prompt_fn: PromptFunction, tape: DropoutTape, prefix: int, previous: int, tokens: Tensor,
                *params: Tensor) -> Tensor:
        """Compute and join the prompts; keep the output and the dropout masks."""
        patches = tokens[:, prefix + previous:]
        with tape.recording():
            prompts = prompt_fn(patches)
        out = torch.cat([tokens[:, :prefix], prompts.to(tokens.dtype), patches], dim=1)
        ctx.prompt_fn, ctx.tape, ctx.params = prompt_fn, tape, params
        ctx.layout = (prefix, previous, prompts.shape[1])
        ctx.autocast = _autocast_state(tokens.device.type)
        ctx.save_for_backward(out, *tape.masks)
        tape.masks = []
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        """Recompute the prompts from the output's patch tokens and backpropagate through them."""
        out, *masks = ctx.saved_tensors
        prefix, previous, count = ctx.layout
        start = prefix + count
        wants_tokens = ctx.needs_input_grad[4]
        patches = out[:, start:].detach().requires_grad_(wants_tokens)
        device_type, enabled, dtype = ctx.autocast
        with torch.enable_grad(), torch.autocast(device_type, dtype=dtype, enabled=enabled), \
                ctx.tape.replaying(masks):
            prompts = ctx.prompt_fn(patches).to(out.dtype)
        wanted = [p for p, need in zip(ctx.params, ctx.needs_input_grad[5:], strict=True) if need]
        inputs = ([patches] if wants_tokens else []) + wanted
        grads = list(torch.autograd.grad(prompts, inputs, grad_out[:, prefix:start], allow_unused=True))
        grad_tokens = None
        if wants_tokens:
            through = grads.pop(0)
            grad_patches = grad_out[:, start:] if through is None else grad_out[:, start:] + through
            pieces = [grad_out[:, :prefix]]
            if previous:
                pieces.append(grad_out.new_zeros(grad_out.shape[0], previous, grad_out.shape[2]))
            grad_tokens = torch.cat([*pieces, grad_patches], dim=1)
        grads_in = iter(grads)
        param_grads = [next(grads_in) if need else None for need in ctx.needs_input_grad[5:]]
        return None, None, None, None, grad_tokens, *param_grads


def join_recomputed(prompt_fn: PromptFunction, modules: Sequence[nn.Module | None], tokens: Tensor, prefix: int,
                    previous: int) -> Tensor:
    """`tokens` with `prompt_fn(patches)` in place of the `previous` prompts, recomputed in the backward pass.

    `modules` are the modules `prompt_fn` runs (their trainable parameters get gradients, their dropout
    layers are taped).
    """
    params = list({id(p): p for m in modules if m is not None for p in m.parameters() if p.requires_grad}.values())
    return JoinRecomputedPrompts.apply(prompt_fn, DropoutTape(modules), prefix, previous, tokens, *params)


def insert_prompts(generator: nn.Module, index: int, tokens: Tensor, prefix: int, previous: int,
                   carried: Tensor | None = None) -> tuple[Tensor, int]:
    """Tokens `[prefix, prompts, patches]` of block `index` and the number of prompts in them.

    `tokens` hold `previous` prompt tokens after `prefix` prefix tokens. The generator's prompts for block
    `index` replace them (when it returns None, the tokens are returned unchanged). The generator is called
    as `generator(index, patches, prompts)` with the previous block's prompt outputs: `carried` when given
    (Swin carries them beside the tokens), else the `previous` prompt tokens (None when there are none).
    A generator whose `recomputed_prompts(index)` gives a prompt function and its modules has them
    computed and joined by `JoinRecomputedPrompts` whenever gradients are recorded outside `torch.compile`.
    """
    offer = getattr(generator, "recomputed_prompts", None)
    fused = offer(index) if offer is not None else None
    if (fused is not None and torch.is_grad_enabled() and not torch.compiler.is_compiling()
            and DropoutTape.supports(fused[1])):
        prompt_fn, modules = fused
        out = join_recomputed(prompt_fn, modules, tokens, prefix, previous)
        return out, out.shape[1] - tokens.shape[1] + previous
    patches = tokens[:, prefix + previous:]
    if carried is None and previous:
        carried = tokens[:, prefix:prefix + previous]
    prompts = generator(index, patches, carried)
    if prompts is None:
        return tokens, previous
    return torch.cat([tokens[:, :prefix], prompts.to(tokens.dtype), patches], dim=1), prompts.shape[1]
