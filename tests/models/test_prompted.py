"""PromptedViT: the explicit block loop, freezing, prompts, pooling and sample independence."""

from __future__ import annotations

import copy

import pytest
import torch

import vapt
from vapt.config import method_config, prompted_methods
from vapt.methods.baselines import LinearConfig
from vapt.methods.vapt import VAPTConfig
from vapt.methods.vpt import VPTConfig
from vapt.models.vit import PromptedViT

PROMPT_METHODS = prompted_methods()


def wrap(vit, method, num_classes=5, **overrides):
    return PromptedViT(copy.deepcopy(vit), method_config(method, **overrides), num_classes)


@pytest.mark.parametrize(
    "overrides",
    [dict(), dict(reg_tokens=2), dict(class_token=False, global_pool="avg"), dict(global_pool="avg"),
     dict(global_pool="map"), dict(class_token=False, reg_tokens=4, global_pool="avg")],
    ids=["cls", "cls+2reg", "no-cls-avg", "cls-avg", "map", "no-cls-4reg-avg"],
)
def test_linear_equals_timm_forward(tiny_vit, images, overrides):
    vit = tiny_vit(**overrides)
    model = wrap(vit, "linear", num_classes=7).eval()
    reference = copy.deepcopy(vit)
    reference.reset_classifier(7)
    reference.head.load_state_dict(model.head.state_dict())
    assert model.num_prefix_tokens == vit.num_prefix_tokens
    torch.testing.assert_close(model(images), reference(images), rtol=0, atol=0)


@pytest.mark.parametrize("overrides", [dict(), dict(reg_tokens=3), dict(class_token=False, global_pool="avg"),
                                       dict(global_pool="map")])
@pytest.mark.parametrize("method", PROMPT_METHODS)
def test_prompts_inserted_after_prefix_tokens(tiny_vit, images, method, overrides):
    vit = tiny_vit(**overrides)
    model = wrap(vit, method, num_tokens=4).eval()
    tokens, num_prompts = model.forward_tokens(images)
    assert num_prompts == 4
    assert tokens.shape == (3, vit.num_prefix_tokens + 4 + 64, 32)
    assert model(images).shape == (3, 5)


def test_vpt_deep_replaces_prompt_slots_before_every_block(tiny_vit, images):
    model = wrap(tiny_vit(), "vpt_deep", num_tokens=3).eval()
    seen = []
    for block in model.backbone.blocks:
        block.register_forward_pre_hook(lambda mod, args: seen.append(args[0][:, 1:4].clone()))
    model(images)
    for index, slots in enumerate(seen):
        torch.testing.assert_close(slots, model.prompt.prompts.tokens[index].expand(3, -1, -1))


def test_vpt_shallow_prompts_travel_through_blocks(tiny_vit, images):
    model = wrap(tiny_vit(), "vpt_shallow", num_tokens=3).eval()
    seen = []
    for block in model.backbone.blocks:
        block.register_forward_pre_hook(lambda mod, args: seen.append(args[0][:, 1:4].clone()))
    model(images)
    torch.testing.assert_close(seen[0], model.prompt.prompts.tokens[0].expand(3, -1, -1))
    assert not torch.allclose(seen[1], seen[0])


@pytest.mark.parametrize("method", ("linear", "full") + PROMPT_METHODS)
def test_only_prompts_and_head_train_and_backbone_stays_in_eval(tiny_vit, method):
    model = wrap(tiny_vit(drop_rate=0.1, proj_drop_rate=0.1, drop_path_rate=0.1), method)
    model.train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if method == "full":
        assert trainable == {n for n, _ in model.named_parameters()}
        assert model.backbone.training
        return
    assert trainable, "the head must train"
    assert all(n.startswith(("prompt.", "head.")) for n in trainable), trainable
    assert {"head.weight", "head.bias"} <= trainable
    assert all(not m.training for m in model.backbone.modules())
    if model.prompt is not None:
        assert all(m.training for m in model.prompt.modules())
    model.eval()
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("method", ("linear", "full") + PROMPT_METHODS)
def test_eval_outputs_are_independent_across_the_batch(tiny_vit, images, method):
    model = wrap(tiny_vit(reg_tokens=1), method).eval()
    with torch.no_grad():
        before = model(images)
        changed = images.clone()
        changed[1] = torch.randn_like(changed[1]) * 3
        after = model(changed)
    torch.testing.assert_close(after[[0, 2]], before[[0, 2]])
    assert not torch.allclose(after[1], before[1])


def test_vapt_prompts_are_zero_at_initialization(tiny_vit, images):
    model = wrap(tiny_vit(), "vapt", num_tokens=4).train()
    patches = torch.randn(3, 64, 32)
    for index in range(1, 3):
        assert torch.count_nonzero(model.prompt(index, patches)) == 0
    assert torch.count_nonzero(model.prompt(0, patches)) > 0, "block 0 uses static VPT prompts"


def test_vapt_gradients_reach_every_parameter(tiny_vit, images):
    """First backward: zero-init token projectors receive gradient (their input, the conv map, is non-zero).

    The kernel, LayerNorm and feature projector sit behind the zero-initialized token projector, so their
    first gradient is exactly zero; after one SGD step every VAPT parameter receives a non-zero gradient.
    """
    model = wrap(tiny_vit(), "vapt", num_tokens=4).train()
    labels = torch.tensor([0, 1, 2])
    params = dict(model.prompt.named_parameters())

    torch.nn.functional.cross_entropy(model(images), labels).backward()
    first = {n: p.grad.clone() for n, p in params.items()}
    for name, grad in first.items():
        if "token_projector" in name or name.startswith("static."):
            assert grad.abs().sum() > 0, name
        else:
            assert grad.abs().sum() == 0, f"{name} is behind the zero-initialized token projector"

    torch.optim.SGD(model.parameters(), lr=1.0).step()
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    for name, p in params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_vapt_prompts_adapt_to_the_input_after_training_starts(tiny_vit, images):
    model = wrap(tiny_vit(), "vapt", num_tokens=4).eval()
    with torch.no_grad():
        for block in model.prompt.adaptive:
            block.token_projector.weight.normal_()
        patches = torch.randn(2, 64, 32)
        prompts = model.prompt(1, patches)
    assert not torch.allclose(prompts[0], prompts[1])


def test_mae_style_average_pooling_includes_prompts(tiny_vit, images):
    vit = tiny_vit(global_pool="avg")
    model = PromptedViT(copy.deepcopy(vit), VPTConfig(num_tokens=4), 5, prompts_in_pool=True).eval()
    tokens, _ = model.forward_tokens(images)
    expected = model.backbone.fc_norm(tokens[:, 1:].mean(1))
    torch.testing.assert_close(model.forward_features(images), expected)
    stripped = PromptedViT(copy.deepcopy(vit), VPTConfig(num_tokens=4), 5).eval()
    stripped.load_state_dict(model.state_dict())
    assert not torch.allclose(stripped.forward_features(images), expected)
    # the fresh fc_norm stays frozen at its identity affine, as in the authors' code
    assert not {n for n, _ in model.trainable_parameters()} & {"backbone.fc_norm.weight", "backbone.fc_norm.bias"}
    assert torch.equal(model.backbone.fc_norm.weight, torch.ones(32))
    assert torch.equal(model.backbone.fc_norm.bias, torch.zeros(32))


def test_trainable_state_round_trip(tiny_vit, images, tmp_path):
    model = wrap(tiny_vit(), "vapt").eval()
    with torch.no_grad():
        for p in model.prompt.parameters():
            p.add_(torch.randn_like(p))
    path = tmp_path / "prompts.pt"
    model.save_trainable(path)
    state = model.trainable_state_dict()
    assert all(k.startswith(("prompt.", "head.")) for k in state)
    other = wrap(tiny_vit(), "vapt").eval()
    other.backbone.load_state_dict(model.backbone.state_dict())
    assert not torch.allclose(other(images), model(images))
    other.load_trainable(path)
    torch.testing.assert_close(other(images), model(images))
    with pytest.raises(ValueError, match="vpt_deep"):
        wrap(tiny_vit(), "vpt_deep").load_trainable(path)


def test_recompute_gives_identical_outputs_and_gradients(tiny_vit, images):
    base = wrap(tiny_vit(), "vapt", recompute=False).train()
    with torch.no_grad():
        for block in base.prompt.adaptive:
            block.token_projector.weight.normal_()
    recompute = PromptedViT(copy.deepcopy(base.backbone), VAPTConfig(recompute=True), 5).train()
    recompute.load_state_dict(base.state_dict())
    grads = []
    for model in (base, recompute):
        torch.manual_seed(1)
        model(images).square().sum().backward()
        grads.append({n: p.grad for n, p in model.prompt.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


def test_create_model_validates_its_arguments():
    with pytest.raises(vapt.ConfigError, match="unknown method 'vpt'"):
        vapt.create_model("vit_test", "vpt", num_classes=3)
    with pytest.raises(vapt.ConfigError, match="kernel_size.*do not apply to method 'vpt_deep'"):
        vapt.create_model("vit_test", "vpt_deep", num_classes=3, kernel_size=3)
    with pytest.raises(vapt.ConfigError, match="unknown backbone 'vit_nope'"):
        vapt.create_model("vit_nope", "vapt", num_classes=3)
    with pytest.raises(vapt.ConfigError, match="num_classes"):
        vapt.create_model("vit_test", "vapt", num_classes=0)
    with pytest.raises(vapt.ConfigError, match="activation"):
        vapt.VAPTConfig(activation="tanh")
    with pytest.raises(vapt.ConfigError, match="does not fit the 8x8 patch grid"):
        vapt.create_model("vit_test", "vapt", num_classes=3, kernel_size=9)


def test_create_model_accepts_config_objects_and_timm_names():
    model = vapt.create_model("vit_test", vapt.VPTConfig(num_tokens=3, deep=False), num_classes=4)
    assert model.method == "vpt_shallow" and model.image_size == 32
    assert isinstance(model.config, VPTConfig)
    other = vapt.create_model("vit_tiny_patch16_224", "linear", num_classes=4)
    assert isinstance(other.config, LinearConfig) and other.grid_size == (14, 14)
    swin = vapt.create_model("swin_test", "vapt", num_classes=4)
    assert isinstance(swin, vapt.PromptedSwin) and swin.method == "vapt"
    assert vapt.count_parameters(swin)["prompt"] > 0


@pytest.mark.parametrize(
    "overrides",
    [dict(global_pool="avg"), dict(global_pool="map"), dict(class_token=False, global_pool="avg"),
     dict(reg_tokens=4, global_pool="avg")],
    ids=["avg", "map", "no-cls-avg", "4reg-avg"],
)
def test_own_pooling_sees_no_prompts(tiny_vit, images, overrides):
    """The backbone's own pooling gets the prefix and patch tokens only, never the prompts."""
    vit = tiny_vit(**overrides)
    model = wrap(vit, "vpt_shallow", num_tokens=4).eval()
    tokens, num_prompts = model.forward_tokens(images)
    prefix = vit.num_prefix_tokens
    without = torch.cat([tokens[:, :prefix], tokens[:, prefix + num_prompts:]], dim=1)
    torch.testing.assert_close(model.forward_features(images), model.backbone.forward_head(without, pre_logits=True),
                               rtol=0, atol=0)
    assert without.shape[1] == prefix + 64
    if vit.global_pool == "avg":  # written out: the mean of the patch tokens only, then fc_norm
        expected = model.backbone.fc_norm(tokens[:, prefix + num_prompts:].mean(1))
        torch.testing.assert_close(model.forward_features(images), expected)


@pytest.mark.parametrize("name", ["vit_base_patch16_reg4_gap_256", "vit_medium_patch16_gap_256",
                                  "vit_base_patch16_siglip_224"])
def test_timm_vits_without_a_class_token_build_with_their_own_pooling(name):
    from vapt.models.backbones import backbone_spec, create_backbone

    spec = backbone_spec(name)
    assert spec.global_pool is None
    with torch.device("meta"):
        backbone, _ = create_backbone(name)
    reference_pool = {"vit_base_patch16_siglip_224": "map"}.get(name, "avg")
    assert backbone.global_pool == reference_pool


def test_wrap_equals_create_model_on_the_same_weights(images):
    from timm.models.vision_transformer import VisionTransformer

    from vapt.models.backbones import BACKBONES

    built = vapt.create_model("vit_test", "vapt", 5, num_tokens=4).eval()
    held = VisionTransformer(num_classes=1000, **BACKBONES["vit_test"].timm_kwargs)  # a user's own model
    held.load_state_dict(built.backbone.state_dict(), strict=False)
    wrapped = vapt.wrap(held, "vapt", 5, num_tokens=4).eval()
    assert type(wrapped) is type(built) and wrapped.config == built.config
    assert set(wrapped.state_dict()) == set(built.state_dict())
    wrapped.load_state_dict(built.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(wrapped(x), built(x), rtol=0, atol=0)
    assert vapt.count_parameters(wrapped) == vapt.count_parameters(built)
    with pytest.raises(vapt.ConfigError, match="cannot wrap a Linear"):
        vapt.wrap(torch.nn.Linear(2, 2), "vapt", 5)


@pytest.mark.parametrize(("name", "prefix"), [("deit_small_patch16_224", 1), ("deit3_small_patch16_224", 1),
                                              ("deit_tiny_distilled_patch16_224", 2)])
def test_deit_models_are_vision_transformers(name, prefix, images):
    """DeiT, DeiT-III and distilled DeiT (a VisionTransformer subclass) build by name, with their own pooling."""
    from vapt.models.backbones import backbone_spec

    assert backbone_spec(name).family == "vit"
    prompted = vapt.create_model(name, "vpt_deep", num_classes=5, image_size=32, num_tokens=3).eval()
    assert isinstance(prompted, PromptedViT) and prompted.num_prefix_tokens == prefix
    assert prompted(images).shape == (3, 5)
    linear = vapt.create_model(name, "linear", num_classes=5, image_size=32).eval()
    backbone = linear.backbone  # linear probing: the features are the backbone's own pre-logits, bit for bit
    torch.testing.assert_close(linear.forward_features(images),
                               backbone.forward_head(backbone.forward_features(images), pre_logits=True),
                               rtol=0, atol=0)


def test_timm_models_that_are_not_vits_are_refused():
    with pytest.raises(vapt.ConfigError, match="'resnet18' is a timm model but not a VisionTransformer"):
        vapt.create_model("resnet18", "vapt", num_classes=3)
