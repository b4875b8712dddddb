"""Named backbones -> timm models (ViT and Swin), pooling, and offline-friendly weight loading.

One registry, `BACKBONES`, holds every named backbone; each spec says its family (`vit` or `swin`),
and the family names the prompted wrapper class that adapts it (`BackboneSpec.wrapper`).
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import timm
import torch
from timm.models import swin_transformer, vision_transformer
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from vapt.errors import ConfigError, WeightsError, check_positive_int, load_failure
from vapt.models.swin import PromptedSwin
from vapt.models.vit import PromptedViT

WEIGHT_SUFFIXES = (".npz", ".pth", ".pth.tar", ".pt", ".safetensors")
TEST_BACKBONES = ("vit_test", "swin_test")  # tiny architectures with random weights unless a file is given


@dataclass(frozen=True)
class BackboneSpec:
    """A named backbone: its timm model, pooling, and where its weights come from."""

    name: str
    timm_name: str
    global_pool: str | None = "token"  # None: the timm model's own pooling
    prompts_in_pool: bool = False
    on_hub: bool = True
    weights_hint: str = ""
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    family: str = "vit"

    @property
    def wrapper(self) -> type:
        """The prompted model class for this backbone's family (PromptedViT or PromptedSwin)."""
        return FAMILIES[self.family].wrapper

    @property
    def weight_suffixes(self) -> tuple[str, ...]:
        """Local weight file formats this backbone loads (Google's .npz only for ViT)."""
        return FAMILIES[self.family].weight_suffixes


@dataclass(frozen=True)
class Family:
    """A kind of timm backbone: its model class, checkpoint filter, prompted wrapper and weight formats."""

    model_class: type
    checkpoint_filter: Any
    wrapper: type
    weight_suffixes: tuple[str, ...]


FAMILIES: dict[str, Family] = {
    "vit": Family(VisionTransformer, vision_transformer.checkpoint_filter_fn, PromptedViT,
                  WEIGHT_SUFFIXES),
    "swin": Family(SwinTransformer, swin_transformer.checkpoint_filter_fn, PromptedSwin,
                   tuple(s for s in WEIGHT_SUFFIXES if s != ".npz")),
}


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            "vit_b16_in21k", "vit_base_patch16_224.orig_in21k",
            weights_hint="Google's ViT-B_16.npz (ImageNet-21k), or timm's vit_base_patch16_224.orig_in21k",
        ),
        BackboneSpec(
            "vit_l16_in21k", "vit_large_patch16_224.orig_in21k",
            weights_hint="Google's ViT-L_16.npz (ImageNet-21k), or timm's vit_large_patch16_224.orig_in21k",
        ),
        BackboneSpec(
            "vit_h14_in21k", "vit_huge_patch14_224.orig_in21k",
            weights_hint="Google's ViT-H_14.npz (ImageNet-21k), or timm's vit_huge_patch14_224.orig_in21k",
        ),
        BackboneSpec(
            "vit_b16_mae", "vit_base_patch16_224.mae", global_pool="avg", prompts_in_pool=True,
            weights_hint="MAE's mae_pretrain_vit_base.pth, or timm's vit_base_patch16_224.mae",
        ),
        BackboneSpec(
            "vit_b16_mocov3", "vit_base_patch16_224", on_hub=False,
            weights_hint="MoCo v3's released linear-vit-b-300ep.pth.tar (the 'module.' prefix is stripped)",
        ),
        BackboneSpec(
            "vit_test", "vit_test", on_hub=False,
            weights_hint="a checkpoint of the tiny test ViT (32 px, patch 4, depth 4, width 64)",
            timm_kwargs=dict(img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0),
        ),
        BackboneSpec(
            "swin_b_in22k", "swin_base_patch4_window7_224.ms_in22k", global_pool="avg", family="swin",
            weights_hint="Microsoft's swin_base_patch4_window7_224_22k.pth (ImageNet-22k), "
                         "or timm's swin_base_patch4_window7_224.ms_in22k",
        ),
        BackboneSpec(
            "swin_test", "swin_test", global_pool="avg", on_hub=False, family="swin",
            weights_hint="a checkpoint of the tiny test Swin (32 px, patch 2, window 4, width 16, depths 2-2)",
            timm_kwargs=dict(img_size=32, patch_size=2, window_size=4, embed_dim=16, depths=(2, 2),
                             num_heads=(2, 4), mlp_ratio=2.0),
        ),
    )
}


@functools.cache
def timm_family(name: str) -> str | None:
    """The family (`vit` or `swin`) of a timm model name, or None when it is neither.

    Decided by the class timm builds (subclasses included, e.g. DeiT's distilled `VisionTransformerDistilled`),
    built on the meta device so that no memory is allocated and no weights are touched.
    """
    if not timm.is_model(name):
        return None
    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False, num_classes=0)
    except Exception:  # a model that cannot be built without further arguments is no backbone here
        return None
    return next((family for family, kind in FAMILIES.items() if isinstance(model, kind.model_class)), None)


def is_swin_backbone(name: str) -> bool:
    """Whether `name` is a named Swin backbone here or a timm Swin Transformer model name."""
    if name in BACKBONES:
        return BACKBONES[name].family == "swin"
    return timm_family(name) == "swin"


def backbone_spec(name: str) -> BackboneSpec:
    """The spec of a named backbone; any other timm ViT (its own pooling) or Swin (average pooling) name as is."""
    if name in BACKBONES:
        return BACKBONES[name]
    if timm.is_model(name):
        family = timm_family(name)
        if family is None:
            raise ConfigError(
                f"backbone {name!r} is a timm model but not a VisionTransformer or SwinTransformer; prompts need "
                f"one of those (e.g. vit_small_patch16_224.augreg_in21k, vit_base_patch16_reg4_gap_256, "
                f"swin_base_patch4_window7_224.ms_in22k) or a named backbone: {', '.join(BACKBONES)}"
            )
        if family == "swin":
            return BackboneSpec(name, name, global_pool="avg", weights_hint=f"timm's {name}", family="swin")
        return BackboneSpec(name, name, global_pool=None, weights_hint=f"timm's {name}")
    raise ConfigError(
        f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)} or a timm ViT or Swin model name "
        f"(e.g. vit_small_patch16_224.augreg_in21k)"
    )


def create_backbone(name: str, pretrained: bool = False, weights: str | os.PathLike | None = None,
                    image_size: int | None = None) -> tuple[nn.Module, BackboneSpec]:
    """A timm ViT or Swin without classifier; weights from the hub (`pretrained`) or a local file.

    `image_size` resizes the input (position embeddings / attention windows follow, as timm does).
    """
    spec = backbone_spec(name)
    if pretrained and weights is not None:
        raise ConfigError("pass either pretrained=True (hub) or weights=PATH (local file), not both")
    check_positive_int("image_size", image_size, allow_none=True)
    path = check_weights_file(spec, weights, spec.weight_suffixes) if weights is not None else None
    hub_state = hub_state_dict(spec) if pretrained else None
    model = _build(spec)
    if path is not None:
        load_weights_file(model, path, spec)
    elif hub_state is not None:
        load_backbone_state(model, hub_state, source=f"timm hub {spec.timm_name}")
    if image_size is not None and int(model.patch_embed.img_size[0]) != image_size:
        model.set_input_size(img_size=(image_size, image_size))
    return model, spec


def _build(spec: BackboneSpec) -> nn.Module:
    model_class = FAMILIES[spec.family].model_class
    pool = {} if spec.global_pool is None else {"global_pool": spec.global_pool}
    if not timm.is_model(spec.timm_name):  # architectures defined here, e.g. the tiny `vit_test`
        model = model_class(num_classes=0, **pool, **spec.timm_kwargs)
    else:
        model = timm.create_model(spec.timm_name, pretrained=False, num_classes=0, **pool, **spec.timm_kwargs)
    if not isinstance(model, model_class):
        raise ConfigError(
            f"backbone {spec.name!r} builds a {type(model).__name__}; expected a timm {model_class.__name__} "
            f"(the backbone families are {', '.join(FAMILIES)})"
        )
    return model


def check_weights_file(spec: BackboneSpec, weights: str | os.PathLike,
                       suffixes: tuple[str, ...] = WEIGHT_SUFFIXES) -> Path:
    """The path of an existing weights file with a known format, or a WeightsError saying what was expected."""
    path = Path(weights).expanduser()
    expected = f"a {'/'.join(suffixes)} checkpoint for {spec.name} ({spec.timm_name}): {spec.weights_hint}"
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} not found; expected {expected}")
    if not str(path).endswith(suffixes):
        raise WeightsError(f"weights file {str(path)!r} has an unknown format; expected {expected}")
    return path


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a `.pth` / `.pth.tar` / `.pt` / `.safetensors` checkpoint, unwrapped and prefix-stripped."""
    path = str(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            state = load_file(path)
        except Exception as err:
            raise WeightsError(f"could not read weights file {path!r} as safetensors ({load_failure(err)}); "
                               f"expected a safetensors state dict") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle errors carry no file name; untrusted files are never unpickled in full
            raise WeightsError(f"could not read weights file {path!r} as a PyTorch checkpoint ({load_failure(err)}); "
                               f"expected a state dict of tensors saved with torch.save") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"weights file {path!r} holds a {type(state).__name__}, expected a state dict")
    for prefix in ("module.base_encoder.", "module.", "base_encoder."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def load_weights_file(model: nn.Module, path: str | os.PathLike, spec: BackboneSpec) -> None:
    """Load a local checkpoint into `model`; the classifier and a fresh fc_norm are left as they are."""
    path = str(path)
    if path.endswith(".npz") and spec.family == "vit":
        reference = _build(spec)
        try:
            reference.load_pretrained(path)
        except Exception as err:
            raise WeightsError(f"could not load {path!r} as a Google ViT .npz checkpoint: {err}") from err
        state = reference.state_dict()
    else:
        state = FAMILIES[spec.family].checkpoint_filter(read_state_dict(path), model)
    load_backbone_state(model, state, source=path)


def load_backbone_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load backbone tensors; every backbone parameter except the head and fc_norm must be present."""
    skip = ("head.", "fc_norm.")
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(skip) and k in own}
    wrong = [k for k, v in state.items() if v.shape != own[k].shape]
    missing = [k for k in own if not k.startswith(skip) and k not in state]
    if wrong or missing:
        details = []
        if missing:
            details.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
        if wrong:
            details.append(
                "shape mismatch for " + ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                                                  for k in wrong[:3])
            )
        raise WeightsError(f"weights in {source!r} do not fit this backbone: {'; '.join(details)}")
    model.load_state_dict(state, strict=False)


def _hub_host() -> str:
    from huggingface_hub import constants

    return urlparse(constants.ENDPOINT).hostname or ""


def _hub_reachable(timeout: float = 3.0) -> bool:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        with socket.create_connection((_hub_host(), 443), timeout=timeout):
            return True
    except OSError:
        return False


def _in_hub_cache(timm_name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(timm_name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return False
    files = ("model.safetensors", "pytorch_model.bin", getattr(cfg, "hf_hub_filename", None))
    return any(f and isinstance(try_to_load_from_cache(hub_id, f), str) for f in files)


def hub_state_dict(spec: BackboneSpec) -> dict[str, torch.Tensor]:
    """Backbone tensors from the timm hub (or its local cache when there is no connection)."""
    hint = f"pass weights=PATH (--weights PATH) to a local copy of {spec.weights_hint}"
    if not spec.on_hub:
        raise WeightsError(f"backbone {spec.name!r} has no weights on the timm hub; {hint}")
    from huggingface_hub import constants

    online = _hub_reachable()
    if not online and not _in_hub_cache(spec.timm_name):
        raise WeightsError(
            f"no connection to {_hub_host()} and {spec.timm_name} is not in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}); {hint}"
        )
    previous = constants.HF_HUB_OFFLINE
    if not online:
        constants.HF_HUB_OFFLINE = True
    try:
        source = timm.create_model(spec.timm_name, pretrained=True, num_classes=0)
    except Exception as err:
        where = "the hub" if online else f"the local cache (no connection to {_hub_host()})"
        raise WeightsError(f"could not load pretrained weights for {spec.name!r} ({spec.timm_name}) from {where}: "
                           f"{type(err).__name__}; {hint}") from err
    finally:
        constants.HF_HUB_OFFLINE = previous
    return source.state_dict()


