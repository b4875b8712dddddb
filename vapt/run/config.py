"""What defines one run: `TrainConfig`, its run id and folder, and the command-line options that build it.

Resize mode, precision and JPEG decoder: records written before these options existed lack the fields;
they were made with PIL's resize, bf16 autocast and PIL's decoding, and are read as `resize: pil`,
`precision: bf16`, `decode: pil` (`LEGACY_RUN_FIELDS`). The run id marks every other value (`_rstf1`,
`_fp32`, `_dctfds`), so the VTAB-1K defaults `tf1` and `tfds` get run ids of their own and never take an
older PIL run's place; `RunRecord.made_with` checks the same fields before an existing record counts as done.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vapt.config import METHODS
from vapt.data import parse_data
from vapt.data.images import DECODE_MODES, resolve_decode
from vapt.data.resize import RESIZE_MODES, resolve_resize
from vapt.data.spec import AUTHORS_HEAD_WIDTHS
from vapt.errors import ConfigError, check_positive_int
from vapt.run.record import LEGACY_RUN_FIELDS

PAPER_EPOCHS = 100
PAPER_BATCH_SIZE = 64
PRECISIONS: tuple[str, ...] = ("bf16", "fp32")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one run; `run_id` is derived from the fields that change the result."""

    backbone: str
    method: str
    data: str
    data_root: str
    out: str = "runs"
    lr: float = 5.0
    wd: float = 0.001
    seed: int = 42
    epochs: int = PAPER_EPOCHS
    batch_size: int = PAPER_BATCH_SIZE
    warmup_epochs: int | None = None
    image_size: int | None = None
    fraction: float = 1.0
    train_split: str | None = None
    eval_splits: tuple[str, ...] | None = None
    num_tokens: int | None = None
    method_options: tuple[tuple[str, Any], ...] = ()
    num_classes: int | None = None
    weights: str | None = None
    pretrained: bool = True
    device: str = "auto"
    num_workers: int | None = None
    eval_every: int = 1
    resize: str | None = None
    precision: str = "bf16"
    decode: str | None = None
    cache: bool = True
    cache_dir: str | None = None
    compile: bool = False

    def resolved(self) -> TrainConfig:
        """Validate every field and fill the data-dependent defaults (splits, warm-up, resize mode), once per config."""
        if self.__dict__.get("_resolved"):
            return self
        spec = parse_data(self.data, self.num_classes)
        for name in ("epochs", "batch_size", "eval_every"):
            check_positive_int(name, getattr(self, name))
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number, got {self.lr!r}")
        if not (isinstance(self.wd, (int, float)) and math.isfinite(self.wd) and self.wd >= 0):
            raise ConfigError(f"wd must be a number >= 0, got {self.wd!r}")
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"fraction must be in (0, 1], got {self.fraction!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        resize = resolve_resize(spec.benchmark, self.resize)
        decode = resolve_decode(spec.benchmark, self.decode)
        warmup = min(10, self.epochs // 10) if self.warmup_epochs is None else self.warmup_epochs
        if not isinstance(warmup, int) or not 0 <= warmup < self.epochs:
            raise ConfigError(f"warmup_epochs must be an integer in [0, epochs), got {warmup!r}")
        train_split = self.train_split or spec.default_train_split
        eval_splits = tuple(self.eval_splits or spec.default_eval_splits(train_split))
        for split in (train_split, *eval_splits):
            if split not in spec.splits:
                raise ConfigError(
                    f"split {split!r} is not one of {spec.name}'s splits: {', '.join(spec.splits)}"
                )
        return _mark_resolved(dataclasses.replace(
            self, warmup_epochs=warmup, train_split=train_split, eval_splits=eval_splits, resize=resize,
            decode=decode,
            method_options=tuple(sorted((str(k), v) for k, v in self.method_options)),
        ))

    def as_built(self, image_size: int, pretrained: bool) -> TrainConfig:
        """The resolved config with the model's input size and whether hub weights were loaded (as runs record them)."""
        return _mark_resolved(dataclasses.replace(self.resolved(), image_size=image_size, pretrained=pretrained))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        data = dataclasses.asdict(self)
        data["eval_splits"] = list(self.eval_splits) if self.eval_splits is not None else None
        data["method_options"] = {k: v for k, v in self.method_options}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict` (unknown keys are an error)."""
        data = dict(data)
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
        if data.get("eval_splits") is not None:
            data["eval_splits"] = tuple(data["eval_splits"])
        data["method_options"] = tuple(sorted(dict(data.get("method_options") or {}).items()))
        return cls(**data)

    def method_overrides(self) -> dict[str, Any]:
        """Keyword overrides passed to `vapt.create_model` (num_tokens and the method options)."""
        overrides = dict(self.method_options)
        if self.num_tokens is not None:
            overrides["num_tokens"] = self.num_tokens
        return overrides


def _mark_resolved(config: TrainConfig) -> TrainConfig:
    """Mark a config whose fields `resolved` has validated and filled (not a field: equality and dicts ignore it)."""
    object.__setattr__(config, "_resolved", True)
    return config


def _num(value: float) -> str:
    return format(float(value), "g")


def run_id(config: TrainConfig) -> str:
    """A readable path unique to the result-changing fields, e.g. `vtab1k-cifar/vit_b16_in21k/vapt/...`."""
    config = config.resolved()
    benchmark, task = config.data.split("/", 1)
    method = config.method + "".join(f"_{k}{v}" for k, v in sorted(config.method_overrides().items()))
    splits = f"{config.train_split}-{'+'.join(config.eval_splits)}"
    if config.fraction != 1.0:
        splits += f"_frac{_num(config.fraction)}"
    leaf = f"lr{_num(config.lr)}_wd{_num(config.wd)}_s{config.seed}"
    if config.epochs != PAPER_EPOCHS:
        leaf += f"_ep{config.epochs}"
    if config.warmup_epochs != min(10, config.epochs // 10):
        leaf += f"_wu{config.warmup_epochs}"
    if config.batch_size != PAPER_BATCH_SIZE:
        leaf += f"_bs{config.batch_size}"
    if config.num_classes is not None and config.num_classes == AUTHORS_HEAD_WIDTHS.get(config.data):
        leaf += f"_head{config.num_classes}"  # the authors' wider head (KITTI: 196 outputs for 4 classes)
    if config.resize != LEGACY_RUN_FIELDS["resize"]:
        leaf += f"_rs{config.resize}"
    if config.precision != LEGACY_RUN_FIELDS["precision"]:
        leaf += f"_{config.precision}"
    if config.decode != LEGACY_RUN_FIELDS["decode"]:
        leaf += f"_dc{config.decode}"
    parts = [f"{benchmark}-{task}", config.backbone, method, splits, leaf]
    return "/".join(p.replace("/", "_").replace(" ", "_") for p in parts)


def run_dir(config: TrainConfig) -> Path:
    """The folder of a run: `<out>/<run id>`."""
    return Path(config.out) / run_id(config)


def check_startable(config: TrainConfig, data: bool = False) -> None:
    """Check what a run needs before anything is built, launched or written: ConfigError / WeightsError otherwise.

    The method and its options (`--method`, `--num-tokens`, `--set`), the backbone name, a `--weights` file
    and, with `data`, the dataset's folder under the data root (`DataLayoutError`; only runs that still
    have to train need it).
    """
    from vapt.config import method_config
    from vapt.models.backbones import backbone_spec, check_weights_file

    config = config.resolved()
    method_config(config.method, **config.method_overrides())
    spec = backbone_spec(config.backbone)
    if config.weights is not None:
        check_weights_file(spec, config.weights, spec.weight_suffixes)
    if data:
        from vapt.data.fgvc import fgvc_dataset_dir
        from vapt.data.vtab import vtab_task_dir

        task = parse_data(config.data, config.num_classes)
        (vtab_task_dir if task.benchmark == "vtab1k" else fgvc_dataset_dir)(config.data_root, task.task)


def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `train` and `sweep` (everything except lr, wd and seed)."""
    parser.add_argument("--backbone", required=True, help="vit_b16_in21k, ..., a timm ViT name, vit_test")
    parser.add_argument("--method", required=True, choices=list(METHODS), metavar="METHOD",
                        help="one of: " + ", ".join(f"{name} ({spec.label})" for name, spec in METHODS.items()))
    parser.add_argument("--data-root", required=True, help="holds vtab-1k/<task>/ and FGVC <dataset>/")
    parser.add_argument("--out", default="runs", help="runs folder (default: runs)")
    parser.add_argument("--epochs", type=int, default=PAPER_EPOCHS, help="training epochs")
    parser.add_argument("--batch-size", type=int, default=PAPER_BATCH_SIZE,
                        help="images per step; the optimizer's lr is the grid lr x batch / 256")
    parser.add_argument("--warmup-epochs", type=int, default=None, help="default: min(10, epochs // 10)")
    parser.add_argument("--image-size", type=int, default=None, help="input size; must match the backbone")
    parser.add_argument("--fraction", type=float, default=1.0, help="stratified fraction of train split")
    parser.add_argument("--num-tokens", type=int, default=None, help="prompt length (default: method's)")
    parser.add_argument("--set", dest="method_options", action="append", type=_option, default=[],
                        metavar="KEY=VALUE", help="other method option, e.g. kernel_size=3")
    parser.add_argument("--num-classes", type=int, default=None, help="for datasets outside the registries")
    parser.add_argument("--weights", default=None, help="local pre-trained weights file for the backbone")
    parser.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                        help="random backbone weights instead of the timm hub's pre-trained ones")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--num-workers", type=int, default=None, help="loader workers (default 0 on CPU)")
    parser.add_argument("--eval-every", type=int, default=1, help="evaluate every N epochs and at the end")
    parser.add_argument("--resize", choices=RESIZE_MODES, default=None,
                        help="tf1: TensorFlow v1 bilinear (VTAB-1K default), pil: PIL anti-aliased (FGVC default)")
    parser.add_argument("--decode", choices=DECODE_MODES, default=None,
                        help="JPEG decoding: tfds (libjpeg's fast integer IDCT, as TensorFlow Datasets; VTAB-1K "
                             "default) or pil (accurate IDCT; FGVC default)")
    parser.add_argument("--precision", choices=PRECISIONS, default="bf16",
                        help="CUDA autocast precision (default bf16); no effect on CPU, which always runs fp32")
    parser.add_argument("--no-cache", dest="cache", action="store_false",
                        help="decode and resize every image in every epoch instead of using the preprocessed cache")
    parser.add_argument("--cache-dir", default=None,
                        help="preprocessed cache (default: DATA_ROOT/.vapt-cache if writable, else ~/.cache/vapt)")
    parser.add_argument("--compile", action="store_true", help="run the model under torch.compile (off by default)")


def config_from_args(args: argparse.Namespace, **fields: Any) -> TrainConfig:
    """A TrainConfig from parsed `add_run_arguments` options plus explicit fields."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values["method_options"] = tuple(values.get("method_options") or ())
    values.update(fields)
    return TrainConfig(**values)
