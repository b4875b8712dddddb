"""One builder from a run's config to its model and loaders: train, the lens, Grad-CAM and `bench --loader` use it."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import vapt
import vapt.run.loader_bench as loader_bench
import vapt.run.train as train_module
from vapt.__main__ import main as vapt_main
from vapt.report.gradcam import load_run_images
from vapt.report.lens_command import load_run, run_images
from vapt.report.runs import load_run_model
from vapt.run import builder
from vapt.run.builder import build_run, loads_hub_weights
from vapt.run.config import TrainConfig, run_dir
from vapt.run.record import RECORD_NAME, RunRecord


@pytest.fixture
def data_root(fixture_roots: Callable[..., Path]) -> Path:
    """The cifar fixture with 4 classes (read-only)."""
    return fixture_roots(("vtab1k/cifar",), num_classes=4)


def _config(data_root: Path, tmp_path: Path, **fields: Any) -> TrainConfig:
    values = dict(backbone="vit_test", method="vapt", data="vtab1k/cifar", data_root=str(data_root),
                  out=str(tmp_path / "runs"), epochs=1, batch_size=8, num_tokens=3, seed=0, device="cpu",
                  cache_dir=str(tmp_path / "cache"))
    return TrainConfig(**{**values, **fields})


def _first_batch(loader: Any, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    if generator is not None:
        generator.manual_seed(0)
    return next(iter(loader))


def _same_state(left: torch.nn.Module, right: torch.nn.Module) -> None:
    right_state = right.state_dict()
    assert left.state_dict().keys() == right_state.keys()
    for name, tensor in left.state_dict().items():
        assert torch.equal(tensor, right_state[name]), name


def test_the_pretrained_rule_is_one_function() -> None:
    base = TrainConfig(backbone="vit_b16_in21k", method="vapt", data="vtab1k/cifar", data_root="data")
    assert loads_hub_weights(base)
    assert not loads_hub_weights(dataclasses.replace(base, pretrained=False))
    assert not loads_hub_weights(dataclasses.replace(base, weights="w.npz"))
    assert not loads_hub_weights(dataclasses.replace(base, backbone="vit_test"))  # test backbones: seeded draw


def test_a_config_is_resolved_once() -> None:
    config = TrainConfig(backbone="vit_test", method="vapt", data="vtab1k/cifar", data_root="data").resolved()
    assert config.resolved() is config and config.resize == "tf1"
    built = config.as_built(image_size=32, pretrained=False)
    assert built.resolved() is built and built.image_size == 32 and built == dataclasses.replace(
        config, image_size=32, pretrained=False)


def test_train_trains_what_the_builder_builds(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[builder.BuiltRun] = []

    def spy(config: TrainConfig) -> builder.BuiltRun:
        built.append(build_run(config))
        return built[-1]

    monkeypatch.setattr(train_module, "build_run", spy)
    config = _config(data_root, tmp_path)
    record = train_module.train(config)
    assert record.finished and len(built) == 1
    assert record.config == built[0].config.to_dict() and record.samples == built[0].samples
    assert record.config["pretrained"] is False and record.config["image_size"] == 32
    # the run trained the builder's frozen backbone and its batches: a fresh build gives the same ones
    fresh = build_run(config)
    _same_state(built[0].model.backbone, fresh.model.backbone)
    first = _first_batch(built[0].train_loader, built[0].loader_generator)
    expected = _first_batch(fresh.train_loader, fresh.loader_generator)
    assert torch.equal(first[0], expected[0]) and torch.equal(first[1], expected[1])


def test_lens_and_grad_cam_rebuild_the_trained_model_and_read_the_runs_images(
        data_root: Path, tmp_path: Path) -> None:
    config = _config(data_root, tmp_path, cache=False)
    record = train_module.train(config)
    folder = run_dir(config)
    built = build_run(config)
    torch.manual_seed(0)  # how a vit_test backbone is drawn: from the run's seed
    drawn = vapt.create_model("vit_test", "vapt", 4, num_tokens=3)
    for model in (load_run_model(folder), load_run(folder)[0]):
        _same_state(model.backbone, built.model.backbone)
        _same_state(model.backbone, drawn.backbone)
    # the lens reads the evaluation split as the run's uncached evaluation loader does
    lens_inputs = run_images(record, None, "val200", count=8, image_size=32)
    assert torch.equal(lens_inputs, _first_batch(built.eval_loaders["val200"])[0])
    _, cam_inputs, _ = load_run_images(folder, count=1, split="val200")
    assert torch.equal(cam_inputs[0], lens_inputs[0])
    # a record that says `pretrained: true` for a test backbone (no hub weights exist) rebuilds the same draw
    path = folder / RECORD_NAME
    data = json.loads(path.read_text())
    data["config"]["pretrained"] = True
    RunRecord.from_dict(data).write(path)
    _same_state(load_run_model(folder).backbone, drawn.backbone)


def test_bench_loader_measures_the_loaders_and_model_of_a_run(data_root: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {"loaders": [], "models": []}
    real_loader, real_model = builder.build_loader, builder.build_model

    def loader_spy(config: TrainConfig, split: str, device: torch.device, training: bool, shuffle: bool,
                   generator: torch.Generator) -> Any:
        twin, _ = real_loader(config, split, device, training, shuffle, torch.Generator().manual_seed(0))
        seen["loaders"].append((config.cache, next(iter(twin))))
        return real_loader(config, split, device, training, shuffle, generator)

    def model_spy(config: TrainConfig, keep_random_state: bool = False) -> Any:
        seen["models"].append(real_model(config, keep_random_state))
        return seen["models"][-1]

    monkeypatch.setattr(loader_bench, "build_loader", loader_spy)
    monkeypatch.setattr(loader_bench, "build_model", model_spy)
    argv = ["bench", "--loader", "--data", "vtab1k/cifar", "--data-root", str(data_root), "--image-size", "32",
            "--batch-size", "8", "--backbone", "vit_test", "--steps", "1", "--device", "cpu",
            "--cache-dir", str(tmp_path / "cache")]
    assert vapt_main(argv) == 0
    assert {cache for cache, _ in seen["loaders"]} == {True, False} and len(seen["models"]) == 1
    # what train builds for the same config (vapt's default prompts, seed 0, the same cache folder)
    config = _config(data_root, tmp_path, num_tokens=None)
    for cache, (images, labels) in seen["loaders"]:
        run = build_run(dataclasses.replace(config, cache=cache))
        expected = _first_batch(run.train_loader, run.loader_generator)
        assert torch.equal(images, expected[0]) and torch.equal(labels, expected[1]), cache
    _same_state(seen["models"][0][0].backbone, build_run(config).model.backbone)  # the bench steps train prompts
