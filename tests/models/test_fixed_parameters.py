"""MoCo v3's fixed 2-D sin-cos position embedding stays frozen under full fine-tuning, as in the authors' code;
MAE's (a learnable parameter of its fine-tuning ViT) and the in21k ViT's are trained."""

from __future__ import annotations

import pytest
import torch

import vapt
from vapt.models.backbones import BACKBONES
from vapt.run.config import TrainConfig
from vapt.run.train import build_optimizer

POS_EMBED_B16 = 197 * 768  # 151,296: CLS + 14 x 14 patches, width 768


@pytest.mark.slow
@pytest.mark.parametrize(("backbone", "trained"), [("vit_b16_mocov3", False), ("vit_b16_mae", True),
                                                    ("vit_b16_in21k", True)])
def test_full_fine_tuning_trains_pos_embed_only_where_the_authors_do(backbone: str, trained: bool) -> None:
    model = vapt.create_model(backbone, "full", num_classes=10)
    assert model.backbone.pos_embed.numel() == POS_EMBED_B16
    assert model.backbone.pos_embed.requires_grad is trained
    everything = sum(p.numel() for p in model.parameters())
    assert vapt.count_parameters(model)["trainable"] == everything - (0 if trained else POS_EMBED_B16)
    names = {n for n, _ in model.trainable_parameters()}
    assert ("backbone.pos_embed" in names) is trained
    assert ("backbone.pos_embed" in model.trainable_state_dict()) is trained
    config = TrainConfig(backbone, "full", "vtab1k/cifar", "DATA", lr=0.001, wd=0.0)
    optimized = {id(p) for group in build_optimizer(model, config).param_groups for p in group["params"]}
    assert (id(model.backbone.pos_embed) in optimized) is trained


def test_fixed_parameters_stay_frozen_in_a_training_step() -> None:
    model = vapt.create_model("vit_test", "full", num_classes=3)
    model.fixed_parameters = ("pos_embed",)
    model._freeze()
    before = model.backbone.pos_embed.detach().clone()
    patch_before = model.backbone.patch_embed.proj.weight.detach().clone()
    optimizer = torch.optim.SGD([p for _, p in model.trainable_parameters()], lr=1.0)
    model.train()
    torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0])).backward()
    optimizer.step()
    assert torch.equal(model.backbone.pos_embed, before)
    assert model.backbone.pos_embed.grad is None
    assert not torch.equal(model.backbone.patch_embed.proj.weight, patch_before)  # the step did train the rest


def test_only_mocov3_fixes_parameters() -> None:
    assert {name for name, spec in BACKBONES.items() if spec.fixed_parameters} == {"vit_b16_mocov3"}
    assert BACKBONES["vit_b16_mocov3"].fixed_parameters == ("pos_embed",)
