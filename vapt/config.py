"""Method configurations (frozen dataclasses) and `METHODS`, the one registry of methods.

A method is a config class plus one `MethodSpec` registration: its name, the config class and the
defaults the name implies, the prompt generator that realises it (None when nothing is prompted),
its label and colour in tables and figures, and whether it trains the backbone. Every other
module asks the registry instead of listing method names.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any

from vapt.errors import ConfigError

ACTIVATIONS = ("relu", "gelu", "sigmoid", "softmax", "identity")


@dataclass(frozen=True)
class LinearConfig:
    """Linear probing: frozen backbone, new linear head."""

    @property
    def name(self) -> str:
        return "linear"


@dataclass(frozen=True)
class FullConfig:
    """Full fine-tuning: every backbone parameter and the head are trained."""

    @property
    def name(self) -> str:
        return "full"


@dataclass(frozen=True)
class VPTConfig:
    """Visual Prompt Tuning (Jia et al. 2022): learnable prompt tokens after the prefix tokens."""

    num_tokens: int = 10
    deep: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_positive_int("num_tokens", self.num_tokens)
        _check_probability("dropout", self.dropout)

    @property
    def name(self) -> str:
        return "vpt_deep" if self.deep else "vpt_shallow"

    def for_stage(self, offset: int, depth: int) -> VPTConfig | None:
        """The config of a stage of `depth` blocks starting at block `offset` (shallow: first stage only)."""
        return self if self.deep or offset == 0 else None


@dataclass(frozen=True)
class VAPTConfig:
    """Visual Adaptive Prompt Tuning; defaults reproduce the authors' implementation (docs/method.md)."""

    num_tokens: int = 10
    kernel_size: int = 2
    padding: int = 0
    conv: bool = True
    shared_kernel: bool = True
    projector: bool = True
    shared_projector: bool = True
    projector_dim: int = 8
    activation: str = "relu"
    residual_projector: bool = True
    projector_bias: bool = False
    learnable_scale: bool = False
    token_projector_bias: bool = True
    pre_norm: bool = True
    static_depth: int = 1
    prompt_dropout: float = 0.1
    channel_dropout: float = 0.1
    projector_dropout: float = 0.1
    recompute: bool = True

    def __post_init__(self) -> None:
        _check_positive_int("num_tokens", self.num_tokens)
        _check_positive_int("kernel_size", self.kernel_size)
        _check_positive_int("projector_dim", self.projector_dim)
        if not isinstance(self.padding, int) or self.padding < 0:
            raise ConfigError(f"VAPTConfig.padding must be an integer >= 0, got {self.padding!r}")
        if not isinstance(self.static_depth, int) or self.static_depth < 0:
            raise ConfigError(f"VAPTConfig.static_depth must be an integer >= 0, got {self.static_depth!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"VAPTConfig.activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}"
            )
        for name in ("prompt_dropout", "channel_dropout", "projector_dropout"):
            _check_probability(name, getattr(self, name))

    @property
    def name(self) -> str:
        return "vapt"

    def for_stage(self, offset: int, depth: int) -> VAPTConfig:
        """The config of a stage of `depth` blocks starting at block `offset`: its share of `static_depth`."""
        return dataclasses.replace(self, static_depth=min(max(self.static_depth - offset, 0), depth))

    @classmethod
    def paper_form(cls, **overrides: Any) -> VAPTConfig:
        """The paper's equations: g(u) = W2 act(W1 u), no bias in the token projector, every block adaptive."""
        base = dict(
            residual_projector=False,
            token_projector_bias=False,
            pre_norm=False,
            static_depth=0,
            channel_dropout=0.0,
            prompt_dropout=0.0,
            projector_dropout=0.0,
        )
        base.update(overrides)
        return cls(**base)


MethodConfig = LinearConfig | FullConfig | VPTConfig | VAPTConfig


@dataclass(frozen=True)
class MethodSpec:
    """One registered method: config class and defaults, prompt generator, label, colour."""

    name: str
    config_class: type
    label: str
    colour: str
    generator: str | None = None  # "module:Class" of the prompt generator, imported when a model is built
    defaults: dict[str, Any] = field(default_factory=dict)
    trains_backbone: bool = False

    @property
    def prompted(self) -> bool:
        """Whether the method adds prompt tokens (and so takes `num_tokens`)."""
        return self.generator is not None

    def generator_class(self) -> type | None:
        """The prompt generator class (with a `for_blocks` constructor), or None."""
        if self.generator is None:
            return None
        module, _, name = self.generator.partition(":")
        return getattr(importlib.import_module(module), name)

    def options(self) -> set[str]:
        """The option names a user may set for this method."""
        return {f.name for f in dataclasses.fields(self.config_class)} - set(self.defaults)


METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add a method to `METHODS` (its name must be new)."""
    if spec.name in METHODS:
        raise ConfigError(f"method {spec.name!r} is already registered")
    METHODS[spec.name] = spec
    return spec


for _spec in (
    MethodSpec("linear", LinearConfig, "Linear", "#8c8c8c"),
    MethodSpec("full", FullConfig, "Full", "#4c4c4c", trains_backbone=True),
    MethodSpec("vpt_shallow", VPTConfig, "VPT-Shallow", "#8fb8de", "vapt.models.prompts:VPTPromptGenerator",
               {"deep": False}),
    MethodSpec("vpt_deep", VPTConfig, "VPT-Deep", "#1f77b4", "vapt.models.prompts:VPTPromptGenerator",
               {"deep": True}),
    MethodSpec("vapt", VAPTConfig, "VAPT", "#d62728", "vapt.models.prompts:AdaptivePromptGenerator"),
):
    register_method(_spec)


def method_config(method: str | MethodConfig, **overrides: Any) -> MethodConfig:
    """Turn a method name (or config) plus keyword overrides into a validated method config."""
    if isinstance(method, tuple(spec.config_class for spec in METHODS.values())):
        return dataclasses.replace(method, **overrides) if overrides else method
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; expected one of {', '.join(METHODS)} or a config object")
    spec = METHODS[method]
    known = {f.name for f in dataclasses.fields(spec.config_class)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(
            f"option(s) {', '.join(unknown)} do not apply to method {method!r}; "
            f"valid options: {', '.join(sorted(known)) or 'none'}"
        )
    return spec.config_class(**{**spec.defaults, **overrides})


def config_to_dict(config: MethodConfig) -> dict[str, Any]:
    """A JSON/YAML-ready dict of a method config, with its method name under `method`."""
    return {"method": config.name, **dataclasses.asdict(config)}


def config_from_dict(data: dict[str, Any]) -> MethodConfig:
    """Inverse of `config_to_dict`."""
    data = dict(data)
    if "method" not in data:
        raise ConfigError(f"method config dict needs a 'method' field; got keys {sorted(data)}")
    name = data.pop("method")
    for key in METHODS[name].defaults if name in METHODS else ():
        data.pop(key, None)
    return method_config(name, **data)


def config_to_yaml(config: MethodConfig) -> str:
    """YAML text of a method config."""
    import yaml

    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def config_from_yaml(text: str) -> MethodConfig:
    """Method config from YAML text."""
    import yaml

    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigError(f"expected a YAML mapping for a method config, got {type(data).__name__}")
    return config_from_dict(data)


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _check_probability(name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1), got {value!r}")


__all__ = [
    "ACTIVATIONS",
    "METHODS",
    "FullConfig",
    "LinearConfig",
    "MethodConfig",
    "MethodSpec",
    "VAPTConfig",
    "VPTConfig",
    "config_from_dict",
    "config_from_yaml",
    "config_to_dict",
    "config_to_yaml",
    "method_config",
    "register_method",
]
