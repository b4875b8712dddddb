"""The efficiency benchmark: CSV output, FLOP counts, Swin support, recomputation, argument errors."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import vapt
from tests.float_bounds import assert_equal_up_to_rounding
from vapt import ConfigError, count_parameters
from vapt.models.factory import create_model
from vapt.run.bench import (
    COLUMNS,
    BenchSettings,
    build_model,
    count_flops,
    main,
    measure_method,
    parse_args,
    write_csv,
)

METHODS = list(vapt.METHODS)


@pytest.mark.slow
def test_cli_measures_every_method_and_writes_the_csv(tmp_path, capsys):
    out = tmp_path / "bench" / "vit_test.csv"
    argv = ["--backbone", "vit_test", "--methods", ",".join(METHODS), "--batch", "2", "--num-tokens", "3",
            "--device", "cpu", "--steps", "2", "--warmup", "0", "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    table = pd.read_csv(out)
    assert tuple(table.columns) == COLUMNS
    assert list(table["method"]) == METHODS
    assert (table[list(COLUMNS[1:])] > 0).all().all()
    for method, trainable in zip(table["method"], table["trainable_params"], strict=True):
        extra = {"num_tokens": 3} if vapt.METHODS[method].prompted else {}
        assert trainable == count_parameters(vapt.create_model("vit_test", method, 10, **extra))["trainable"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["vit_test.csv"]
    printed = capsys.readouterr().out
    assert "ratio to vpt_deep:" in printed and "ratio to full:" in printed


def test_control_is_an_identical_model_printed_beside_the_methods(tmp_path, capsys):
    out = tmp_path / "b.csv"
    argv = ["--methods", "vpt_deep,vapt", "--control", "vpt_deep", "--batch", "2", "--num-tokens", "3",
            "--steps", "2", "--warmup", "0", "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert list(pd.read_csv(out)["method"]) == ["vpt_deep", "vapt"]  # the control is printed only
    table = printed.split("ratio to vpt_deep:")[1]
    control = next(line for line in table.splitlines() if line.startswith("vpt_deep (control)")).split()
    assert [float(v) for v in control[-3:]] == [1.0, 1.0, 1.0]  # same saved tensors, FLOPs and parameters
    with pytest.raises(ConfigError, match="prefix"):
        main(["--methods", "vpt_deep", "--control", "prefix"])


def vit_test_flops(images: torch.Tensor) -> int:
    """FLOPs of the linear-probe vit_test forward, counted by hand (attention included)."""
    tokens, dim, hidden, depth, classes = 65, 64, 128, 4, 10
    block = 2 * tokens * dim * 3 * dim + 4 * tokens**2 * dim + 2 * tokens * dim * dim + 4 * tokens * dim * hidden
    return images.shape[0] * (depth * block + 2 * 64 * 48 * dim + 2 * dim * classes)


def test_flops_count_attention_and_order_the_methods():
    images = torch.randn(1, 3, 32, 32)
    flops = {m: count_flops(vapt.create_model("vit_test", m, 10, **({} if m == "linear" else {"num_tokens": 8})),
                            images) for m in ("linear", "vpt_deep", "vapt")}
    assert flops["linear"] == vit_test_flops(images)
    assert flops["vapt"] > flops["vpt_deep"] > flops["linear"]


def test_swin_is_benchmarked_too():
    images = torch.randn(1, 3, 32, 32)
    flops = {m: count_flops(create_model("swin_test", m, 10, **({} if m == "linear" else {"num_tokens": 4})),
                            images) for m in ("linear", "vpt_deep", "vapt")}
    assert flops["vapt"] > flops["vpt_deep"] > flops["linear"]
    row = measure_method(BenchSettings(backbone="swin_test", batch=2, num_tokens=4, steps=1, warmup=0), "vapt")
    assert row["image_size"] == 32
    assert all(row[c] > 0 for c in COLUMNS[1:])
    assert row["trainable_params"] == count_parameters(create_model("swin_test", "vapt", 10, num_tokens=4))[
        "trainable"]


def prompt_gradients(recompute: bool, dtype: torch.dtype = torch.float32) -> tuple[dict[str, torch.Tensor], int]:
    """Prompt gradients of one training step of VAPT on vit_test, and the bytes saved for backward."""
    torch.manual_seed(0)
    model = vapt.create_model("vit_test", "vapt", 10, num_tokens=4, recompute=recompute)
    with torch.no_grad():
        for p in model.prompt.parameters():  # the zero-initialized token projectors would hide the conv path
            p.add_(torch.randn_like(p) * 0.1)
    model.to(dtype).train()
    images, labels = torch.randn(4, 3, 32, 32).to(dtype), torch.tensor([0, 1, 2, 3])
    saved = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    torch.manual_seed(1)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if n.startswith("prompt.")}, sum(saved)


def test_recompute_gives_the_same_gradients_with_less_saved_memory():
    plain, plain_bytes = prompt_gradients(recompute=False)
    recomputed, recomputed_bytes = prompt_gradients(recompute=True)
    exact, _ = prompt_gradients(recompute=False, dtype=torch.float64)
    assert plain.keys() == recomputed.keys()
    for name, grad in plain.items():
        assert grad.abs().sum() > 0, name
        assert_equal_up_to_rounding(recomputed[name], grad, exact[name])
    assert recomputed_bytes < plain_bytes


def test_dropout_is_active_in_the_recompute_comparison():
    torch.manual_seed(0)
    model = vapt.create_model("vit_test", "vapt", 10, num_tokens=4).train()
    with torch.no_grad():
        for p in model.prompt.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    images = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    first = model(images)
    torch.manual_seed(2)
    assert not torch.allclose(model(images), first)


def test_recompute_flag_reaches_vapt_only():
    on = BenchSettings(recompute=True)
    assert build_model(on, "vapt").prompt.recompute
    assert not build_model(BenchSettings(recompute=False), "vapt").prompt.recompute
    assert build_model(BenchSettings(), "vapt").prompt.recompute  # VAPT's default
    assert build_model(on, "vpt_deep").prompt is not None
    assert parse_args(["--no-recompute"])[0].recompute is False and parse_args([])[0].recompute is None


def test_csv_is_replaced_whole_with_exact_columns(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("old contents\n")
    row = dict(zip(COLUMNS, ["vapt", 0.1, 10.0, 5.0, 2.0, 0.02, 100], strict=True))
    write_csv(pd.DataFrame([{**row, "image_size": 32}]), path)
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--methods", "linear,prefix"], "prefix"),
        (["--backbone", "resnet_nonexistent"], "resnet_nonexistent"),
        (["--batch", "0"], "batch"),
        (["--methods", ","], "--methods"),
    ],
)
def test_bad_arguments_are_named(argv, message):
    with pytest.raises(ConfigError, match=message):
        main(argv)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        main(["--device", "cuda"])
