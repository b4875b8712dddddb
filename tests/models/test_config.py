"""Method configs: validation, names and dict/YAML round trips."""

from __future__ import annotations

import pytest

from vapt.config import (
    config_from_dict,
    config_from_yaml,
    config_to_dict,
    config_to_yaml,
    method_config,
)
from vapt.errors import ConfigError
from vapt.methods.baselines import FullConfig, LinearConfig
from vapt.methods.vapt import VAPTConfig
from vapt.methods.vpt import VPTConfig


@pytest.mark.parametrize(
    "config",
    [LinearConfig(), FullConfig(), VPTConfig(num_tokens=5, deep=False), VPTConfig(num_tokens=50, dropout=0.1),
     VAPTConfig(kernel_size=3, activation="gelu", shared_projector=False), VAPTConfig.paper_form()],
)
def test_round_trips(config):
    assert config_from_dict(config_to_dict(config)) == config
    assert config_from_yaml(config_to_yaml(config)) == config


def test_method_names_and_defaults():
    assert method_config("vpt_shallow") == VPTConfig(deep=False)
    assert method_config("vpt_deep").name == "vpt_deep"
    vapt_default = method_config("vapt")
    assert (vapt_default.kernel_size, vapt_default.padding, vapt_default.projector_dim) == (2, 0, 8)
    assert (vapt_default.static_depth, vapt_default.prompt_dropout, vapt_default.activation) == (1, 0.1, "relu")
    paper = VAPTConfig.paper_form()
    assert not paper.residual_projector and not paper.token_projector_bias and paper.static_depth == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(num_tokens=0), "num_tokens must be a positive integer, got 0"),
     (dict(prompt_dropout=1.5), "prompt_dropout must be a probability"),
     (dict(padding=-1), "padding must be an integer >= 0"),
     (dict(static_depth=-2), "static_depth")],
)
def test_invalid_values_name_the_field(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        VAPTConfig(**kwargs)


def test_bad_dict_and_yaml():
    with pytest.raises(ConfigError, match="needs a 'method' field"):
        config_from_dict({"num_tokens": 3})
    with pytest.raises(ConfigError, match="expected a YAML mapping"):
        config_from_yaml("- a\n- b\n")


def test_the_method_registry_knows_each_method_once():
    from vapt.config import METHODS, MethodSpec, register_method

    built_in = {name: spec for name, spec in METHODS.items() if spec.generator is None
                or spec.generator.__module__.startswith("vapt.methods.")}
    assert list(built_in) == ["linear", "full", "vpt_shallow", "vpt_deep", "vapt"]
    assert [s.label for s in built_in.values()] == ["Linear", "Full", "VPT-Shallow", "VPT-Deep", "VAPT"]
    assert len({s.colour for s in METHODS.values()}) == len(METHODS)
    assert [m for m, s in built_in.items() if s.prompted] == ["vpt_shallow", "vpt_deep", "vapt"]
    assert [m for m, s in built_in.items() if s.trains_backbone] == ["full"]
    assert METHODS["vapt"].default_options()["kernel_size"] == 2 and METHODS["vpt_deep"].default_options() == {}
    assert "num_tokens" in METHODS["vapt"].options() and "deep" not in METHODS["vpt_deep"].options()
    with pytest.raises(ConfigError, match="already registered"):
        register_method(MethodSpec("vapt", VAPTConfig, "VAPT", "#000000"))


def test_create_model_resizes_vit_and_swin_inputs():
    import torch

    import vapt

    for backbone in ("vit_test", "swin_test"):
        model = vapt.create_model(backbone, "vapt", 3, image_size=64, num_tokens=2)
        assert model.image_size == 64
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)
    with pytest.raises(ConfigError, match="image_size"):
        vapt.create_model("vit_test", "linear", 3, image_size=0)
