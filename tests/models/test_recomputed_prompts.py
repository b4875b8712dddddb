"""VAPT's recomputing path (`recompute=True`): same forward bits, same masks, same gradients, less kept memory.

The gradient comparisons print the measured largest difference per option (relative to the largest
gradient entry); run with `-s` to see them (docs/method.md quotes them).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import vapt
from vapt.methods.vapt import ACTIVATIONS
from vapt.models.recomputed_prompts import DropoutTape, insert_prompts
from vapt.run.bench import BenchSettings, measure_method

OPTIONS = {
    "defaults": {},
    "no-conv": dict(conv=False),
    "per-channel-kernel": dict(shared_kernel=False),
    "kernel3-pad1": dict(kernel_size=3, padding=1),
    "no-projector": dict(projector=False),
    "per-block-projector": dict(shared_projector=False),
    **{f"act-{a}": dict(activation=a) for a in ACTIVATIONS if a != "relu"},
    "scale-and-biases": dict(learnable_scale=True, projector_bias=True),
    "static-depth-0": dict(static_depth=0),
    "static-depth-2": dict(static_depth=2),
    "paper-form": dict(residual_projector=False, token_projector_bias=False, pre_norm=False, static_depth=0,
                       channel_dropout=0.0, prompt_dropout=0.0, projector_dropout=0.0),
}
SWIN_OPTIONS = {"defaults": {}, "per-block-projector": dict(shared_projector=False),
                "static-depth-3": dict(static_depth=3)}


def twin_models(backbone: str, options: dict) -> tuple[nn.Module, nn.Module]:
    """The plain path and the recomputing path of one VAPT model (same weights, training mode)."""
    torch.manual_seed(0)
    plain = vapt.create_model(backbone, "vapt", 5, num_tokens=4, recompute=False, **options).train()
    with torch.no_grad():  # the zero-initialised token projectors would hide the rest of the generator
        for p in plain.prompt.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    recomputed = vapt.create_model(backbone, "vapt", 5, num_tokens=4, recompute=True, **options).train()
    recomputed.load_state_dict(plain.state_dict())
    return plain, recomputed


def training_step(model: nn.Module, images: torch.Tensor, bf16: bool) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """Logits, gradients of the trained parameters and the RNG state after the forward pass of one seeded step."""
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(images)
    rng = torch.get_rng_state()
    logits.float().square().sum().backward()
    return logits.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}, rng


def shared_uses(model: nn.Module, name: str) -> int:
    """How many blocks use the parameter `name` (a shared feature projector serves every adaptive block)."""
    generators = getattr(model.prompt, "stages", [model.prompt])
    for s, generator in enumerate(generators):
        prefix = f"prompt.stages.{s}.projectors.0." if hasattr(model.prompt, "stages") else "prompt.projectors.0."
        if name.startswith(prefix) and generator.shared_projector:
            return len(generator.adaptive)
    return 1


def compare(backbone: str, label: str, options: dict, bf16: bool) -> None:
    plain, recomputed = twin_models(backbone, options)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    logits, grads, rng = training_step(plain, images, bf16)
    logits_r, grads_r, rng_r = training_step(recomputed, images, bf16)
    assert torch.equal(logits_r, logits), "the forward pass must be bit-identical"
    assert torch.equal(rng_r, rng), "the same random numbers must be drawn"
    assert grads.keys() == grads_r.keys()
    eps = torch.finfo(torch.bfloat16 if bf16 else torch.float32).eps
    worst = 0.0
    for name, grad in grads.items():
        assert grad is not None and grads_r[name] is not None, name
        scale = grad.abs().max().item()
        # the only change is the order in which a shared parameter's per-block gradients are summed (in the
        # autocast dtype on the plain path): at most one rounding of the accumulation dtype per use
        tolerance = shared_uses(plain, name) * eps * scale
        torch.testing.assert_close(grads_r[name], grad, rtol=0.0, atol=tolerance, msg=name)
        worst = max(worst, (grads_r[name] - grad).abs().max().item() / max(scale, 1e-30))
    precision = "bf16" if bf16 else "fp32"
    print(f"{backbone} {label} {precision}: largest gradient difference {worst:.2g} of the largest entry")


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("label", OPTIONS)
def test_vit_forward_is_bit_identical_and_gradients_agree(label, bf16):
    compare("vit_test", label, OPTIONS[label], bf16)


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("label", SWIN_OPTIONS)
def test_swin_forward_is_bit_identical_and_gradients_agree(label, bf16):
    compare("swin_test", label, SWIN_OPTIONS[label], bf16)


@pytest.mark.parametrize("layer", [nn.Dropout(0.3), nn.Dropout2d(0.3), nn.Dropout(0.0), nn.Dropout2d(1.0)],
                         ids=["dropout", "dropout2d", "p0", "p1"])
def test_tape_draws_the_masks_torch_draws_and_replays_them_without_drawing(layer):
    x = torch.randn(4, 6, 3, 3) + 2.0
    container = nn.Sequential(layer).train()
    torch.manual_seed(5)
    expected = layer(x)
    tape = DropoutTape([container])
    torch.manual_seed(5)
    with tape.recording():
        recorded = layer(x)
    assert torch.equal(recorded, expected)
    masks, state = tape.masks, torch.get_rng_state()
    with tape.replaying(masks):
        replayed = layer(x)
    assert torch.equal(replayed, expected)
    assert torch.equal(torch.get_rng_state(), state), "replaying draws no random numbers"
    assert layer(x).shape == x.shape and "forward" not in vars(layer), "the layer is restored afterwards"


def test_tape_refuses_layers_it_does_not_reproduce():
    assert DropoutTape.supports([nn.Sequential(nn.Dropout(0.1), nn.Dropout2d(0.1)), None])
    assert not DropoutTape.supports([nn.Sequential(nn.Dropout(0.1, inplace=True))])
    assert not DropoutTape.supports([nn.Sequential(nn.AlphaDropout(0.1))])


def test_the_join_keeps_only_its_output_and_the_masks():
    _, model = twin_models("vit_test", {})
    tokens = torch.randn(2, 1 + 4 + 64, 64, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out, count = insert_prompts(model.prompt, 1, tokens, 1, 4)
    assert count == 4 and out.shape == tokens.shape
    assert saved[0] is out and len(saved) == 3  # the output, the channel mask, the projector's mask
    assert [tuple(t.shape) for t in saved[1:]] == [(2, 64, 1, 1), (2, 4, 8)]
    out.sum().backward()
    assert tokens.grad[:, 1:5].eq(0).all() and tokens.grad[:, 0].eq(1).all()


def test_no_gradients_or_eval_take_the_plain_path():
    plain, recomputed = twin_models("vit_test", {})
    images = torch.randn(2, 3, 32, 32)
    recomputed.eval(), plain.eval()
    with torch.no_grad():
        assert torch.equal(recomputed(images), plain(images))
    assert recomputed.prompt.recomputed_prompts(1) is None
    recomputed.train()
    assert recomputed.prompt.recomputed_prompts(0) is None  # block 0: static prompts
    assert recomputed.prompt.recomputed_prompts(1) is not None


def test_bench_saved_for_backward_of_vapt_is_that_of_vpt_deep():
    settings = BenchSettings(backbone="vit_test", batch=2, num_tokens=4, steps=1, warmup=0, threads=1)
    saved = {m: measure_method(settings, m)["saved_for_backward_mb"] for m in ("vpt_deep", "vapt")}
    plain = measure_method(dataclasses.replace(settings, recompute=False), "vapt")["saved_for_backward_mb"]
    assert plain > 1.1 * saved["vpt_deep"], "the plain path keeps the generator's tensors"
    assert saved["vapt"] <= 1.02 * saved["vpt_deep"], "VAPT's default keeps what VPT-deep keeps"


def test_fused_dropout_masks_replay_exactly(monkeypatch):
    """Where dropout uses the fused kernel (CUDA), the tape keeps its boolean mask and replays it exactly."""
    monkeypatch.setattr("vapt.models.recomputed_prompts.FUSED_DROPOUT_DEVICES", ("cpu",))
    layer = nn.Dropout(0.25).train()
    x = torch.randn(5, 7, requires_grad=True)
    tape = DropoutTape([layer])
    with tape.recording():
        recorded = layer(x)
    (mask,) = tape.masks
    assert mask.dtype == torch.bool and torch.equal(recorded, x * mask * (1 / 0.75))
    with tape.replaying([mask]):
        replayed = layer(x)
    assert torch.equal(replayed, recorded)
    replayed.sum().backward()
    assert torch.equal(x.grad, mask * (1 / 0.75))
