"""The MoE lens on tiny ViTs: gate masses equal an explicit softmax(QKᵀ/√d) reference; prompt dependence per method."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import vapt
from tests.float_bounds import gamma, matmul_bound
from tests.lens.conftest import NUM_TOKENS, prompted, randomise_token_projectors, sharpen, tiny_vit
from vapt.config import prompted_methods
from vapt.errors import ConfigError
from vapt.models.factory import create_model
from vapt.models.vit import PromptedViT
from vapt.report import lens

MASSES = ["prompt_mass", "prefix_mass", "patch_mass"]


def blocks_of(model) -> list:
    return list((model.backbone if isinstance(model, PromptedViT) else model).blocks)


def attention_inputs(model, images: torch.Tensor) -> list[torch.Tensor]:
    """Each block's attention input, taken from its norm1 output during a plain forward pass."""
    captured, handles = [], []
    for block in blocks_of(model):
        handles.append(block.norm1.register_forward_hook(lambda module, args, out: captured.append(out.detach())))
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()
    return captured


def reference_attention(block, x: torch.Tensor) -> torch.Tensor:
    """softmax(Q Kᵀ / √d_head) per head, written out from the block's qkv weight and bias (float64)."""
    b, n, d = x.shape
    heads = block.attn.num_heads
    head_dim = d // heads
    weight, bias = block.attn.qkv.weight.double(), block.attn.qkv.bias.double()
    x = x.double()
    q = (x @ weight[:d].T + bias[:d]).view(b, n, heads, head_dim).transpose(1, 2)
    k = (x @ weight[d:2 * d].T + bias[d:2 * d]).view(b, n, heads, head_dim).transpose(1, 2)
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(head_dim), dim=-1)


@torch.no_grad()
def reference_gate_mass(model, images: torch.Tensor, prefix: int, prompts: int) -> pd.DataFrame:
    """The gate-mass table computed independently of the lens, from the reference attention."""
    rows = []
    for layer, (block, x) in enumerate(zip(blocks_of(model), attention_inputs(model, images), strict=True)):
        attention = reference_attention(block, x)
        n = attention.shape[-1]
        # float32 attention rows carry at most p_i (2 e + gamma(n + 4)) each (attention_rounding_bound), so a
        # mass (a float32 sum of them, averaged in float64) at most 2 e + gamma(n + 4) + gamma(n), e the largest
        # logit error; the effective prompt count exp(H) moves by at most exp(H) (H + 1) times the relative
        # error of the normalised per-prompt masses, twice that of each
        relative = 2 * (attention_rounding_bound(block, x, attention) / attention).amax(dim=(0, 2, 3))
        for kind, queries in (("cls", slice(0, 1)), ("patch", slice(prefix + prompts, None))):
            chosen = attention[:, :, queries]
            for head in range(attention.shape[1]):
                a = chosen[:, head]
                mass_atol = float(relative[head]) / 2 + gamma(n)
                per_prompt = a[..., prefix:prefix + prompts].mean(dim=(0, 1))
                p = per_prompt / per_prompt.sum() if prompts else per_prompt
                effective = float(torch.exp(-(p * p.log()).sum())) if prompts else 0.0
                entropy = math.log(effective) if prompts else 0.0
                rows.append({"layer": layer, "head": head, "query": kind,
                             "prompt_mass": float(a[..., prefix:prefix + prompts].sum(-1).mean()),
                             "prefix_mass": float(a[..., :prefix].sum(-1).mean()),
                             "patch_mass": float(a[..., prefix + prompts:].sum(-1).mean()),
                             "effective_prompts": effective, "mass_atol": mass_atol,
                             "effective_atol": effective * (entropy + 1) * float(relative[head])})
    return pd.DataFrame(rows)


def assert_matches_reference(measured: pd.DataFrame, reference: pd.DataFrame) -> None:
    assert list(measured.columns) == list(lens.GATE_COLUMNS)
    assert len(measured) == len(reference)
    pd.testing.assert_frame_equal(measured[["layer", "head", "query"]], reference[["layer", "head", "query"]],
                                  check_dtype=False)
    assert (reference["mass_atol"] < 0.01).all() and (reference["effective_atol"] < 0.05).all()  # meaningful
    for column, atol in [*((m, "mass_atol") for m in MASSES), ("effective_prompts", "effective_atol")]:
        difference = (measured[column] - reference[column]).abs()
        assert (difference <= reference[atol]).all(), (column, float((difference - reference[atol]).max()))


def test_reference_attention_is_what_timm_computes(images):
    """The explicit reference equals the probabilities of timm's own (non-fused) attention."""
    model = prompted("vpt_deep")
    inputs = attention_inputs(model, images)
    probabilities, handles = [], []
    for block in blocks_of(model):
        block.attn.fused_attn = False
        handles.append(block.attn.attn_drop.register_forward_hook(lambda m, a, out: probabilities.append(out)))
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()
    for block, x, timm_attention in zip(blocks_of(model), inputs, probabilities, strict=True):
        reference = reference_attention(block, x)
        bound = attention_rounding_bound(block, x, reference)
        # every probability pinned to 1 % of its value: a wrong scale, bias or head split cannot hide in the bound
        assert (bound / reference).max() < 0.01
        assert ((reference - timm_attention.double()).abs() <= bound).all()


def attention_rounding_bound(block, x: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
    """Elementwise bound on float32 softmax(Q Kᵀ / √d) against exact arithmetic, as timm computes it.

    q and k: dot products of length d plus the bias; the logits: q scaled (one rounding), then dot products
    of length d_head over q and k that are themselves off by their bound; a logit error e moves each
    probability p_i by at most p_i (e_i + Σ_j p_j e_j) <= 2 p_i max_j e_j; the softmax adds its own
    roundings (exp, a sum of n terms, a division: (n + 3) u p_i) and the reference's cast to float32 u p_i.
    """
    b, n, d = x.shape
    heads, head_dim = block.attn.num_heads, d // block.attn.num_heads
    weight, bias = block.attn.qkv.weight.double(), block.attn.qkv.bias.double()

    def projection(rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        exact = x.double() @ weight[rows].T + bias[rows]
        error = matmul_bound(x, weight[rows].T, extra_terms=1) + gamma(1) * bias[rows].abs()

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, heads, head_dim).transpose(1, 2)
        return split(exact.abs()), split(error)

    (q, dq), (k, dk) = projection(slice(0, d)), projection(slice(d, 2 * d))
    scale = head_dim ** -0.5
    q_error = scale * (dq + gamma(1) * (q + dq))  # q * scale: one more rounding of the already rounded q
    logit_error = (gamma(head_dim) * (scale * (q + dq)) @ (k + dk).transpose(-2, -1)
                   + q_error @ (k + dk).transpose(-2, -1) + scale * q @ dk.transpose(-2, -1))
    largest = logit_error.amax(dim=-1, keepdim=True)
    return probabilities * (2 * largest + gamma(n + 4))


@pytest.mark.parametrize("method", prompted_methods())
def test_gate_mass_equals_the_explicit_softmax_reference(method, images):
    model = prompted(method)
    if method == "vapt":
        randomise_token_projectors(model)
    measured = vapt.gate_mass(model, images, batch_size=4)
    sums = measured[MASSES].sum(axis=1)
    assert np.abs(sums - 1).max() < 1e-5
    assert (measured["prompt_mass"] > 0).all() and measured["prompt_mass"].max() > 0.05  # prompts are used
    assert ((measured["effective_prompts"] >= 1 - 1e-6) & (measured["effective_prompts"] <= NUM_TOKENS + 1e-6)).all()
    assert measured["effective_prompts"].std() > 0.01  # not all prompts alike: the entropy is really measured
    assert_matches_reference(measured, reference_gate_mass(model, images, prefix=1, prompts=NUM_TOKENS))
    assert len(measured) == 3 * 2 * 2  # layers x heads x query kinds


def test_gate_mass_does_not_depend_on_the_batch_size(images):
    model = prompted("vapt")
    randomise_token_projectors(model)
    whole, batched = vapt.gate_mass(model, images, batch_size=7), vapt.gate_mass(model, images, batch_size=2)
    # each mass is a float32 sum of at most `keys` probabilities (each <= 1) per query: batching may change its
    # roundings by at most gamma(keys); the means over images and queries are taken in float64
    keys = 1 + NUM_TOKENS + 64
    np.testing.assert_allclose(whole[MASSES + ["effective_prompts"]], batched[MASSES + ["effective_prompts"]],
                               atol=gamma(keys) * NUM_TOKENS, rtol=0)


def test_register_tokens_count_as_prefix(images):
    model = prompted("vpt_deep", reg_tokens=2)
    assert lens.lens_layout(model).num_prefix_tokens == 3  # CLS + 2 registers
    measured = vapt.gate_mass(model, images)
    assert_matches_reference(measured, reference_gate_mass(model, images, prefix=3, prompts=NUM_TOKENS))
    dependence = vapt.prompt_dependence(model, images)
    assert (dependence["dependence"] == 0).all()


def test_lens_leaves_the_model_as_it_was(images):
    model = prompted("vapt").train()
    randomise_token_projectors(model)
    model.eval()
    with torch.no_grad():
        before = model(images)
    model.train()
    vapt.gate_mass(model, images)
    vapt.prompt_dependence(model, images)
    assert model.training and model.prompt.training and not model.backbone.training
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(images), before)
    for block in blocks_of(model):
        assert not block._forward_pre_hooks and not block.attn._forward_pre_hooks


def test_bf16_model_gives_float32_softmax_masses(images):
    model = prompted("vpt_deep")
    full = vapt.gate_mass(model, images)
    half = vapt.gate_mass(model.to(torch.bfloat16), images)
    assert np.abs(half[MASSES].sum(axis=1) - 1).max() < 1e-5
    np.testing.assert_allclose(half[MASSES], full[MASSES], atol=0.03)


def test_vpt_deep_prompts_are_input_independent_in_every_layer(images):
    dependence = vapt.prompt_dependence(prompted("vpt_deep"), images, batch_size=4)
    assert list(dependence.columns) == list(lens.DEPENDENCE_COLUMNS)
    assert list(dependence["layer"]) == [0, 1, 2]
    assert (dependence["dependence"] == 0).all()
    assert (dependence["value_dependence"] < 1e-10).all()


def test_vpt_shallow_prompts_become_input_dependent_after_the_first_block(images):
    dependence = vapt.prompt_dependence(prompted("vpt_shallow"), images, batch_size=4)
    assert dependence.loc[0, "dependence"] == 0
    assert (dependence.loc[1:, "dependence"] > 1e-4).all()
    assert (dependence.loc[1:, "value_dependence"] > 1e-4).all()


def test_vapt_adaptive_prompts_are_zero_at_init_and_input_dependent_once_trained(images):
    model = prompted("vapt")
    at_init = vapt.prompt_dependence(model, images)
    assert at_init.loc[0, "dependence"] == 0  # block 0: static VPT prompts
    assert at_init.loc[1:, "dependence"].isna().all()  # adaptive prompts are all zero: undefined, not an error
    randomise_token_projectors(model)
    trained = vapt.prompt_dependence(model, images, batch_size=3)
    assert trained.loc[0, "dependence"] == 0
    assert (trained.loc[1:, "dependence"] > 0.05).all()
    assert (trained.loc[1:, "value_dependence"] > 0.01).all()


def test_dependence_equals_an_explicit_variance_ratio(images):
    model = prompted("vapt")
    randomise_token_projectors(model)
    captured, handles = [], []
    for block in blocks_of(model):
        hook = block.register_forward_pre_hook(lambda module, args: captured.append(args[0][:, 1:1 + NUM_TOKENS]))
        handles.append(hook)
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()
    measured = vapt.prompt_dependence(model, images, batch_size=2)
    for layer, prompts in enumerate(captured):
        p = prompts.double().flatten(1)
        expected = float(((p - p.mean(0)) ** 2).sum(1).mean() / (p ** 2).sum(1).mean())
        # float32 tokens differ slightly between batch sizes
        assert measured.loc[layer, "dependence"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("model_kind", ["linear", "plain timm ViT"])
def test_a_model_without_prompts_has_zero_prompt_mass(model_kind, images):
    model = prompted("linear") if model_kind == "linear" else sharpen(tiny_vit())
    measured = vapt.gate_mass(model, images)
    assert (measured["prompt_mass"] == 0).all() and (measured["effective_prompts"] == 0).all()
    assert_matches_reference(measured, reference_gate_mass(model, images, prefix=1, prompts=0))
    with pytest.raises(ConfigError, match="no prompt tokens|has none"):
        vapt.prompt_dependence(model, images)


def test_wrong_image_size_names_the_expected_size():
    with pytest.raises(ConfigError, match="32x32 px"):
        vapt.gate_mass(prompted("vpt_deep"), torch.randn(2, 3, 64, 64))
    with pytest.raises(ConfigError, match=r"\(N, 3, 32, 32\)"):
        vapt.prompt_dependence(prompted("vpt_deep"), torch.randn(3, 32, 32))


def test_swin_and_other_models_are_refused(images):
    swin = create_model("swin_test", "vpt_deep", 3, num_tokens=2)
    with pytest.raises(ConfigError, match="Swin"):
        vapt.gate_mass(swin, images)
    with pytest.raises(ConfigError, match="Swin"):
        vapt.prompt_dependence(swin, images)
    with pytest.raises(ConfigError, match="PromptedViT"):
        vapt.gate_mass(torch.nn.Linear(3, 3), images)


def test_exports_are_the_lens_functions():
    assert vapt.gate_mass is lens.gate_mass and vapt.prompt_dependence is lens.prompt_dependence
    assert {"gate_mass", "prompt_dependence"} <= set(vapt.__all__)
    with pytest.raises(AttributeError):
        vapt.no_such_name  # noqa: B018
