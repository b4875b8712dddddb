"""Method configurations: frozen dataclasses for VPT and VAPT, with dict/YAML round trips."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
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


@dataclass(frozen=True)
class VAPTConfig:
    """Visual Adaptive Prompt Tuning; defaults reproduce the authors' implementation (METHOD.md §3)."""

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
    recompute: bool = False

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
METHODS = ("linear", "full", "vpt_shallow", "vpt_deep", "vapt")


def method_config(method: str | MethodConfig, **overrides: Any) -> MethodConfig:
    """Turn a method name (or config) plus keyword overrides into a validated method config."""
    if isinstance(method, (LinearConfig, FullConfig, VPTConfig, VAPTConfig)):
        return dataclasses.replace(method, **overrides) if overrides else method
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; expected one of {', '.join(METHODS)} or a config object")
    cls, base = {
        "linear": (LinearConfig, {}),
        "full": (FullConfig, {}),
        "vpt_shallow": (VPTConfig, {"deep": False}),
        "vpt_deep": (VPTConfig, {"deep": True}),
        "vapt": (VAPTConfig, {}),
    }[method]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(
            f"option(s) {', '.join(unknown)} do not apply to method {method!r}; "
            f"valid options: {', '.join(sorted(known)) or 'none'}"
        )
    return cls(**{**base, **overrides})


def config_to_dict(config: MethodConfig) -> dict[str, Any]:
    """A JSON/YAML-ready dict of a method config, with its method name under `method`."""
    return {"method": config.name, **dataclasses.asdict(config)}


def config_from_dict(data: dict[str, Any]) -> MethodConfig:
    """Inverse of `config_to_dict`."""
    data = dict(data)
    if "method" not in data:
        raise ConfigError(f"method config dict needs a 'method' field; got keys {sorted(data)}")
    name = data.pop("method")
    if name in ("vpt_shallow", "vpt_deep"):
        data.pop("deep", None)
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
    "VAPTConfig",
    "VPTConfig",
    "config_from_dict",
    "config_from_yaml",
    "config_to_dict",
    "config_to_yaml",
    "method_config",
]
