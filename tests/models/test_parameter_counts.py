"""Trainable-parameter counts against the closed forms in docs/method.md (ViT-B/16 and a tiny ViT)."""

from __future__ import annotations

import dataclasses

import pytest

import vapt
from vapt.methods.vapt import VAPTConfig
from vapt.methods.vpt import VPTConfig
from vapt.models.vit import PromptedViT


def expected_vapt_prompt_params(depth: int, dim: int, grid: tuple[int, int], cfg: VAPTConfig) -> int:
    """docs/method.md's count: adaptive blocks x (token projector + kernel + LayerNorm) + projector(s) + static."""
    h, w = grid
    adaptive = depth - cfg.static_depth
    if cfg.conv:
        k, p = cfg.kernel_size, cfg.padding
        positions = (h + 2 * p - k + 1) * (w + 2 * p - k + 1)
        kernel = k * k * (1 if cfg.shared_kernel else dim)
    else:
        positions, kernel = h * w, 0
    per_block = positions * cfg.num_tokens + (cfg.num_tokens if cfg.token_projector_bias else 0) + kernel
    per_block += 2 * dim if cfg.pre_norm else 0
    projector = 0
    if cfg.projector:
        one = 2 * cfg.projector_dim * dim + (cfg.projector_dim + dim if cfg.projector_bias else 0)
        one += 1 if cfg.learnable_scale else 0
        projector = one * (1 if cfg.shared_projector else adaptive)
    return adaptive * per_block + projector + cfg.static_depth * cfg.num_tokens * dim


@pytest.fixture(scope="module")
def vit_b16():
    backbone, _ = vapt.create_backbone("vit_b16_in21k")
    return backbone


@pytest.mark.slow  # ViT-B/16-sized models
@pytest.mark.parametrize("num_tokens, expected", [(10, 55_608), (50, 161_128), (100, 293_028)])
def test_vapt_vit_b16_matches_the_papers_count(vit_b16, num_tokens, expected):
    model = PromptedViT(vit_b16, VAPTConfig(num_tokens=num_tokens), num_classes=100)
    counts = vapt.count_parameters(model)
    assert counts["prompt"] == 2638 * num_tokens + 29228 == expected
    assert counts["backbone"] == 85_798_656
    assert counts["head"] == 768 * 100 + 100
    assert counts["trainable"] == counts["prompt"] + counts["head"]


@pytest.mark.slow  # ViT-B/16-sized models
@pytest.mark.parametrize("num_tokens", [1, 10, 50])
def test_vpt_vit_b16_counts(vit_b16, num_tokens):
    deep = vapt.count_parameters(PromptedViT(vit_b16, VPTConfig(num_tokens=num_tokens, deep=True), 10))
    shallow = vapt.count_parameters(PromptedViT(vit_b16, VPTConfig(num_tokens=num_tokens, deep=False), 10))
    assert deep["prompt"] == 9216 * num_tokens
    assert shallow["prompt"] == 768 * num_tokens


@pytest.mark.slow  # ViT-B/16-sized models
def test_linear_and_full_counts(vit_b16):
    linear = vapt.count_parameters(PromptedViT(vit_b16, vapt.LinearConfig(), 10))
    assert linear["prompt"] == 0 and linear["trainable"] == 7690
    full = vapt.count_parameters(PromptedViT(vit_b16, vapt.FullConfig(), 10))
    assert full["prompt"] == 85_798_656
    vit_b16.requires_grad_(False)


ABLATIONS = {
    "default": {},
    "no_conv": {"conv": False},
    "per_channel_kernels": {"shared_kernel": False},
    "no_projector": {"projector": False},
    "per_block_projector": {"shared_projector": False},
    "kernel_3": {"kernel_size": 3},
    "padding_1": {"padding": 1},
    "r_16": {"projector_dim": 16},
    "static_depth_0": {"static_depth": 0},
    "static_depth_2": {"static_depth": 2},
    "learnable_scale": {"learnable_scale": True},
    "no_pre_norm": {"pre_norm": False},
    "no_token_bias": {"token_projector_bias": False},
    "gelu": {"activation": "gelu"},
    "paper_form": None,
}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_each_ablation_switch_changes_the_count_as_specified(tiny_vit, name):
    cfg = VAPTConfig.paper_form(num_tokens=3) if ABLATIONS[name] is None else VAPTConfig(num_tokens=3,
                                                                                          **ABLATIONS[name])
    vit = tiny_vit(depth=4)
    model = PromptedViT(vit, cfg, num_classes=5)
    assert vapt.count_parameters(model)["prompt"] == expected_vapt_prompt_params(4, 32, (8, 8), cfg)


@pytest.mark.slow  # ViT-B/16-sized models
def test_ablation_deltas_on_vit_b16(vit_b16):
    base = VAPTConfig(num_tokens=10)

    def prompt_count(cfg):
        return vapt.count_parameters(PromptedViT(vit_b16, cfg, 10))["prompt"]

    reference = prompt_count(base)
    assert prompt_count(dataclasses.replace(base, conv=False)) - reference == 11 * ((196 - 169) * 10 - 4)
    assert prompt_count(dataclasses.replace(base, shared_kernel=False)) - reference == 11 * 767 * 4
    assert prompt_count(dataclasses.replace(base, projector=False)) - reference == -2 * 8 * 768
    assert prompt_count(dataclasses.replace(base, shared_projector=False)) - reference == 10 * 2 * 8 * 768
    assert prompt_count(dataclasses.replace(base, kernel_size=3)) - reference == 11 * ((144 - 169) * 10 + 5)


@pytest.mark.slow  # ViT-B/16-sized models
@pytest.mark.parametrize("method", ["linear", "vpt_deep", "vapt"])
def test_mae_fc_norm_is_frozen_and_not_counted_as_tuned(method):
    import torch

    options = {} if method == "linear" else {"num_tokens": 10}
    with torch.device("meta"):
        mae = vapt.create_model("vit_b16_mae", method, 10, **options)
        in21k = vapt.create_model("vit_b16_in21k", method, 10, **options)
    counts, reference = vapt.count_parameters(mae), vapt.count_parameters(in21k)
    assert not any(name.startswith("backbone.") for name, _ in mae.trainable_parameters())
    assert counts["head"] == 768 * 10 + 10 and counts["trainable"] == counts["prompt"] + counts["head"]
    # the same trained parameters as the ImageNet-21k backbone (fc_norm replaces the final norm, 1,536 each)
    assert counts == reference
