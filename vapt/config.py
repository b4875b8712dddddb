"""`METHODS`, the one registry of methods, and the validation and (de)serialisation of method configs.

A method is a module that defines its config (a frozen dataclass with a `name` property), its prompt
generator (None when nothing is prompted) and one `register_method(MethodSpec(...))` call; the built-in
methods live in `vapt.methods` and are registered when this module is imported. Every other module asks
the registry instead of listing method names (docs/method.md, "Adding a method").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Protocol

from vapt.errors import ConfigError


class MethodConfig(Protocol):
    """What every method config is: a frozen dataclass whose `name` is its registered method."""

    @property
    def name(self) -> str: ...


@dataclass(frozen=True)
class MethodSpec:
    """One registered method: config class and defaults, prompt generator, label, colour, report knowledge.

    `generator` is the prompt generator class (with a `for_blocks` constructor; see `vapt.models.prompts`),
    None when nothing is prompted. `ablations` names the config options varied by ablation runs: a run of
    this method belongs to the main tables only when each of them has its default value.
    """

    name: str
    config_class: type
    label: str
    colour: str
    generator: type | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    trains_backbone: bool = False
    ablations: tuple[str, ...] = ()

    @property
    def prompted(self) -> bool:
        """Whether the method adds prompt tokens (and so takes `num_tokens`)."""
        return self.generator is not None

    def options(self) -> set[str]:
        """The option names a user may set for this method."""
        return {f.name for f in dataclasses.fields(self.config_class)} - set(self.defaults)

    def default_options(self) -> dict[str, Any]:
        """The default value of each ablation option (the main setting of this method)."""
        default = self.config_class(**self.defaults)
        return {name: getattr(default, name) for name in self.ablations}


METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add a method to `METHODS` (its name must be new)."""
    if spec.name in METHODS:
        raise ConfigError(f"method {spec.name!r} is already registered")
    METHODS[spec.name] = spec
    return spec


def prompted_methods() -> tuple[str, ...]:
    """Names of the registered methods that add prompts, in registration order."""
    return tuple(name for name, spec in METHODS.items() if spec.prompted)


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


import vapt.methods  # noqa: E402,F401  (registers the built-in methods)

__all__ = [
    "METHODS",
    "MethodConfig",
    "MethodSpec",
    "config_from_dict",
    "config_from_yaml",
    "config_to_dict",
    "config_to_yaml",
    "method_config",
    "prompted_methods",
    "register_method",
]
