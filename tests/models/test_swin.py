"""PromptedSwin: equality with timm, per-window prompts, sample independence, parameters, freezing."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from timm.models.swin_transformer import SwinTransformer

from tests.float_bounds import assert_equal_up_to_rounding
from vapt import ConfigError, WeightsError, count_parameters, create_model, method_config
from vapt.config import prompted_methods
from vapt.models.backbones import BACKBONES, create_backbone, is_swin_backbone
from vapt.models.swin import PromptedSwin, prompted_block

TINY = dict(img_size=32, patch_size=2, embed_dim=16, depths=(2, 2), num_heads=(2, 4), mlp_ratio=2.0)


def tiny_swin(num_classes: int = 0, **kwargs) -> SwinTransformer:
    torch.manual_seed(0)
    return SwinTransformer(num_classes=num_classes, **{**TINY, "window_size": 4, **kwargs})


def randomize(module: torch.nn.Module, std: float = 0.3) -> None:
    """Make zero-initialized prompt parameters non-trivial so prompts actually differ per sample."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)


@pytest.mark.parametrize(
    "kwargs",
    [dict(window_size=4), dict(window_size=3), dict(window_size=4, strict_img_size=False)],
    ids=["shifted", "padded", "dynamic-mask"],
)
@pytest.mark.parametrize("method", ["linear", "full"])
def test_without_prompts_output_equals_timm(kwargs, method):
    reference = tiny_swin(num_classes=5, **kwargs).eval()
    assert any(any(b.shift_size) for stage in reference.layers for b in stage.blocks)
    state = reference.state_dict()
    model = PromptedSwin(tiny_swin(**kwargs), method_config(method), 5)
    model.backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")})
    model.head.load_state_dict({"weight": state["head.fc.weight"], "bias": state["head.fc.bias"]})
    model.eval()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        exact = copy.deepcopy(reference).double()(images.double())
        assert_equal_up_to_rounding(model(images), reference(images), exact)


def naive_prompted_block(block, x: torch.Tensor, prompts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A slow per-sample, per-window reference of one prompted Swin block (no padding)."""
    b, h, w, c = x.shape
    wh, ww = block.window_size
    sh, sw = block.shift_size
    attn = block.attn
    heads = attn.num_heads
    np_ = prompts.shape[1]
    table = attn.relative_position_bias_table

    def region(r: int, q: int) -> int:
        """Which of the 3 x 3 pieces of the rolled map a cell came from (cells of different pieces don't attend)."""
        rr = 0 if r < h - wh else (1 if r < h - sh else 2)
        qq = 0 if q < w - ww else (1 if q < w - sw else 2)
        return 3 * rr + qq

    maps, outs = [], []
    for i in range(b):
        tokens = torch.cat([prompts[i], x[i].reshape(h * w, c)])
        normed = block.norm1(tokens)
        grid = torch.roll(normed[np_:].reshape(h, w, c), shifts=(-sh, -sw), dims=(0, 1))
        new_grid = torch.zeros_like(grid)
        prompt_sum = torch.zeros(np_, c, dtype=x.dtype)
        count = 0
        for r0 in range(0, h, wh):
            for c0 in range(0, w, ww):
                cells = [(r, q) for r in range(r0, r0 + wh) for q in range(c0, c0 + ww)]
                seq = torch.cat([normed[:np_], torch.stack([grid[r, q] for r, q in cells])])
                n = seq.shape[0]
                bias = torch.zeros(heads, n, n, dtype=x.dtype)
                for a, (ra, qa) in enumerate(cells):
                    for z, (rz, qz) in enumerate(cells):
                        index = (ra - rz + wh - 1) * (2 * ww - 1) + (qa - qz + ww - 1)
                        bias[:, np_ + a, np_ + z] = table[index]
                        if (sh or sw) and region(ra, qa) != region(rz, qz):
                            bias[:, np_ + a, np_ + z] -= 100.0
                q, k, v = attn.qkv(seq).reshape(n, 3, heads, -1).permute(1, 2, 0, 3)
                weights = torch.softmax(q @ k.transpose(-1, -2) * attn.scale + bias, dim=-1)
                out = attn.proj((weights @ v).transpose(0, 1).reshape(n, -1))
                prompt_sum = prompt_sum + out[:np_]
                count += 1
                for a, (r, q_) in enumerate(cells):
                    new_grid[r, q_] = out[np_ + a]
        new_grid = torch.roll(new_grid, shifts=(sh, sw), dims=(0, 1))
        tokens = tokens + torch.cat([prompt_sum / count, new_grid.reshape(h * w, c)])
        tokens = tokens + block.mlp(block.norm2(tokens))
        maps.append(tokens[np_:].reshape(h, w, c))
        outs.append(tokens[:np_])
    return torch.stack(maps), torch.stack(outs)


@pytest.mark.parametrize("block_index", [0, 1], ids=["regular", "shifted"])
def test_prompted_block_matches_per_window_reference(block_index):
    swin = tiny_swin(window_size=4).eval()
    block = swin.layers[0].blocks[block_index]
    torch.manual_seed(1)
    x, prompts = torch.randn(2, 16, 16, 16), torch.randn(2, 3, 16)
    assert block.shift_size == ((2, 2) if block_index else (0, 0))
    with torch.no_grad():
        got_map, got_prompts = prompted_block(block, x, prompts)
        want_map, want_prompts = naive_prompted_block(block, x, prompts)
        exact_map, exact_prompts = naive_prompted_block(copy.deepcopy(block).double(), x.double(), prompts.double())
    assert_equal_up_to_rounding(got_map, want_map, exact_map)
    assert_equal_up_to_rounding(got_prompts, want_prompts, exact_prompts)


@pytest.mark.parametrize("method", prompted_methods())
def test_changing_one_sample_leaves_the_others_unchanged(method):
    model = PromptedSwin(tiny_swin(), method_config(method, num_tokens=3), 4)
    randomize(model.prompt)
    model.eval()
    images = torch.randn(3, 3, 32, 32)
    changed = images.clone()
    changed[1] = torch.randn(3, 32, 32)
    with torch.no_grad():
        before, after = model(images), model(changed)
        exact = copy.deepcopy(model).double()(images.double())
    assert_equal_up_to_rounding(after[[0, 2]], before[[0, 2]], exact[[0, 2]])
    assert not torch.allclose(after[1], before[1])


def expected_prompt_parameters(method: str, num_tokens: int, kernel: int = 2, hidden: int = 8) -> int:
    dims = [TINY["embed_dim"] * 2**s for s in range(2)]
    grids = [TINY["img_size"] // TINY["patch_size"] // 2**s for s in range(2)]
    depths = TINY["depths"]
    if method == "vpt_shallow":
        return num_tokens * dims[0]
    if method == "vpt_deep":
        return sum(depth * num_tokens * dim for depth, dim in zip(depths, dims, strict=True))
    total = num_tokens * dims[0]  # the first block of the network has static prompts
    for stage, (dim, grid, depth) in enumerate(zip(dims, grids, depths, strict=True)):
        adaptive = depth - (1 if stage == 0 else 0)
        positions = (grid - kernel + 1) ** 2
        total += adaptive * (positions * num_tokens + num_tokens + kernel**2 + 2 * dim) + 2 * hidden * dim
    return total


@pytest.mark.parametrize("method", ["linear", *prompted_methods()])
@pytest.mark.parametrize("num_tokens", [1, 5])
def test_parameter_counts_follow_the_architecture(method, num_tokens):
    extra = {} if method == "linear" else {"num_tokens": num_tokens}
    model = PromptedSwin(tiny_swin(), method_config(method, **extra), 7)
    counts = count_parameters(model)
    width = TINY["embed_dim"] * 2
    assert counts["head"] == width * 7 + 7
    assert counts["prompt"] == (0 if method == "linear" else expected_prompt_parameters(method, num_tokens))
    assert counts["trainable"] == counts["prompt"] + counts["head"]


def test_swin_b_deep_prompt_count():
    backbone = timm.create_model("swin_base_patch4_window7_224", num_classes=0, device="meta")
    model = PromptedSwin(backbone, method_config("vpt_deep", num_tokens=10), 10)
    assert count_parameters(model)["prompt"] == 10 * (2 * 128 + 2 * 256 + 18 * 512 + 2 * 1024)


@pytest.mark.parametrize("method", prompted_methods())
def test_gradients_reach_every_prompt_parameter(method):
    model = PromptedSwin(tiny_swin(), method_config(method, num_tokens=3), 4)
    randomize(model.prompt, std=0.1)
    model.train()
    loss = torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 3]))
    loss.backward()
    names = [n for n, _ in model.trainable_parameters()]
    assert any(n.startswith("prompt.") for n in names)
    for name, p in model.trainable_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.backbone.parameters())


@pytest.mark.parametrize("method", ["vpt_deep", "vapt", "linear"])
def test_backbone_frozen_and_in_eval_mode_after_train(method):
    model = create_model("swin_test", method, 3).train()
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert all(not m.training for m in model.backbone.modules())
    assert model.head.training
    if model.prompt is not None:
        assert all(m.training for m in model.prompt.modules())
    model.eval()
    assert not any(m.training for m in model.modules())


def test_full_fine_tuning_trains_the_backbone():
    model = create_model("swin_test", "full", 3).train()
    assert all(p.requires_grad for p in model.backbone.parameters())
    assert model.backbone.training and model.prompt is None


def test_trainable_state_round_trip(tmp_path):
    model = create_model("swin_test", "vapt", 3, num_tokens=2)
    randomize(model.prompt)
    model.save_trainable(tmp_path / "vapt.pt")
    other = create_model("swin_test", "vapt", 3, num_tokens=2)
    other.backbone.load_state_dict(model.backbone.state_dict())
    other.load_trainable(tmp_path / "vapt.pt")
    images = torch.randn(2, 3, 32, 32)
    model.eval(), other.eval()
    with torch.no_grad():
        torch.testing.assert_close(other(images), model(images))


def test_local_weights_file_is_loaded(tmp_path):
    source, _ = create_backbone("swin_test")
    torch.save({"model": source.state_dict()}, tmp_path / "swin_test.pth")
    loaded, _ = create_backbone("swin_test", weights=tmp_path / "swin_test.pth")
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    with pytest.raises(WeightsError, match="missing.pth"):
        create_backbone("swin_test", weights=tmp_path / "missing.pth")
    (tmp_path / "swin_test.npz").write_bytes(b"")
    with pytest.raises(WeightsError, match="unknown format"):
        create_backbone("swin_test", weights=tmp_path / "swin_test.npz")
    with pytest.raises(WeightsError, match="no weights on the timm hub"):
        create_backbone("swin_test", pretrained=True)


def test_backbone_names_and_errors():
    assert BACKBONES["swin_b_in22k"].timm_name == "swin_base_patch4_window7_224.ms_in22k"
    assert is_swin_backbone("swin_b_in22k") and is_swin_backbone("swin_tiny_patch4_window7_224.ms_in1k")
    assert not is_swin_backbone("vit_base_patch16_224") and not is_swin_backbone("vit_test")
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("swin_test", "vpt_deep", 0)
    with pytest.raises(ConfigError, match="static_depth=9"):
        create_model("swin_test", "vapt", 3, static_depth=9)
    with pytest.raises(ConfigError, match="SwinTransformer"):
        PromptedSwin(torch.nn.Linear(2, 2), method_config("vpt_deep"), 3)
