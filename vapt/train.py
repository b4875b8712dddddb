"""One run: backbone + method + dataset + lr + wd + seed -> train, evaluate, checkpoint, result record.

Optimization follows PROTOCOL.md §3: SGD (momentum 0.9; AdamW for `full`), cross-entropy, learning
rate = grid value x batch_size / 256, linear warm-up from 0 then cosine to 0, stepped once per
epoch with timm's CosineLRScheduler. Warm-up lasts 10 epochs for the paper's 100; for other run
lengths it is min(10, epochs // 10) unless `warmup_epochs` is given. Weight decay applies to every
trainable parameter except the head bias. CUDA runs use bf16 autocast (`--precision fp32` turns it
off), CPU runs fp32. VTAB-1K images are resized with TensorFlow v1's bilinear rule by default (`--resize`),
and preprocessed images come from a uint8 cache built on first use (`--no-cache`: decode every epoch).

Each epoch writes `<out>/<run id>/checkpoint.pt` (trainable parameters, optimizer, scheduler and
RNG states); the same command resumes from it, and the data order depends only on (seed, epoch),
so a resumed run ends where an uninterrupted one does. A finished run writes `result.json` and
`trainable.pt` (the trained prompts and head) and is skipped when run again. A NaN or infinite
loss ends the run as `failed` (recorded, not retried; exit code 1).

Backbones load pre-trained weights from the timm hub or its cache unless `--weights PATH` names a
local file; `vit_test` and `--no-pretrained` use random weights drawn from the seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import random
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from vapt.atomic import save_torch_atomic, write_json_atomic
from vapt.backbones import TEST_BACKBONES
from vapt.data import DataSpec, build_dataset, parse_data, stratified_fraction
from vapt.data.cache import cached_run_loaders
from vapt.data.resize import DEFAULT_RESIZE, RESIZE_MODES, resolve_resize
from vapt.errors import ConfigError

PAPER_EPOCHS = 100
PRECISIONS: tuple[str, ...] = ("bf16", "fp32")
PAPER_BATCH_SIZE = 64
NON_FINITE = "non_finite_loss"


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
    cache: bool = True
    cache_dir: str | None = None
    compile: bool = False

    def resolved(self) -> TrainConfig:
        """Validate every field and fill the data-dependent defaults (splits, warm-up)."""
        spec = parse_data(self.data, self.num_classes)
        for name in ("epochs", "batch_size", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
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
        return dataclasses.replace(
            self, warmup_epochs=warmup, train_split=train_split, eval_splits=eval_splits, resize=resize,
            method_options=tuple(sorted((str(k), v) for k, v in self.method_options)),
        )

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
    if config.resize != DEFAULT_RESIZE[benchmark]:
        leaf += f"_rs{config.resize}"
    if config.precision != "bf16":
        leaf += f"_{config.precision}"
    parts = [f"{benchmark}-{task}", config.backbone, method, splits, leaf]
    return "/".join(p.replace("/", "_").replace(" ", "_") for p in parts)


def run_dir(config: TrainConfig) -> Path:
    """The folder of a run: `<out>/<run id>`."""
    return Path(config.out) / run_id(config)


def learning_rate(config: TrainConfig) -> float:
    """The optimizer's peak learning rate: grid value x batch_size / 256."""
    return config.lr * config.batch_size / 256


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum 0.9 (AdamW for full fine-tuning); weight decay on all but the head bias."""
    decay, no_decay = [], []
    for name, param in model.trainable_parameters():
        (no_decay if name == "head.bias" else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.wd}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if config.method == "full":
        return torch.optim.AdamW(groups, lr=learning_rate(config))
    return torch.optim.SGD(groups, lr=learning_rate(config), momentum=0.9)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> Any:
    """timm's CosineLRScheduler, stepped once per epoch: linear warm-up from 0, cosine to 0."""
    from timm.scheduler import CosineLRScheduler

    config = config.resolved()
    return CosineLRScheduler(
        optimizer, t_initial=config.epochs, warmup_t=config.warmup_epochs, warmup_lr_init=0.0, lr_min=0.0
    )


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda when available, else cpu; asking for an absent GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for, but CUDA is not available; use --device cpu")
    return torch.device(name)


def environment(device: torch.device) -> dict[str, str]:
    """Versions, device and host of this run."""
    import timm
    import torchvision

    import vapt

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "timm": timm.__version__,
        "vapt": getattr(vapt, "__version__", "unknown"),
        "device": f"{device.type} ({name})" if name else device.type, "hostname": socket.gethostname(),
    }


def read_result(path: Path) -> dict[str, Any] | None:
    """The record at `path`, or None when there is none."""
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def is_done(record: dict[str, Any] | None) -> bool:
    """A finished run, or one that failed for good (non-finite loss): not run again."""
    return record is not None and (
        record.get("status") == "finished" or record.get("failure") == NON_FINITE
    )


def _rng_state(loader_generator: torch.Generator) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "python": random.getstate(),
        "loader": loader_generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], loader_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    loader_generator.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of the data order of one epoch."""
    return seed * 100_003 + epoch


def _batches(loader: DataLoader, desc: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    yield from tqdm(loader, desc=desc, leave=False, disable=None, file=sys.stderr)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device, precision: str = "bf16") -> float:
    """Top-1 accuracy in percent (0-100); `precision` is the CUDA autocast precision (CPU always runs fp32)."""
    model.eval()
    correct = total = 0
    for images, labels in _batches(loader, "eval"):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with _autocast(device, precision):
            logits = model(images)
        correct += int((logits.argmax(dim=1) == labels).sum())
        total += labels.numel()
    return 100.0 * correct / total


def _autocast(device: torch.device, precision: str = "bf16") -> Any:
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _loader(dataset: Dataset, config: TrainConfig, device: torch.device, shuffle: bool,
            generator: torch.Generator) -> DataLoader:
    workers = config.num_workers if config.num_workers is not None else (
        0 if device.type == "cpu" else min(8, os.cpu_count() or 1))
    return DataLoader(dataset, batch_size=config.batch_size, shuffle=shuffle, generator=generator,
                      num_workers=workers, pin_memory=device.type == "cuda", drop_last=False)


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


def train(config: TrainConfig, stop_after: int | None = None) -> dict[str, Any]:
    """Run (or resume, or skip when done) one training run; returns its result record.

    `stop_after=k` stops after k completed epochs as an interruption would (checkpoint written,
    no result); the returned record then has status `interrupted`.
    """
    config = config.resolved()
    directory = run_dir(config)
    result_path, checkpoint_path = directory / "result.json", directory / "checkpoint.pt"
    existing = read_result(result_path)
    if is_done(existing):
        print(f"skipping {run_id(config)}: already {existing['status']} ({result_path})")
        return existing

    import vapt
    from vapt.config import config_to_dict

    device = resolve_device(config.device)
    spec: DataSpec = parse_data(config.data, config.num_classes)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    pretrained = config.pretrained and config.weights is None and config.backbone not in TEST_BACKBONES
    model = vapt.create_model(config.backbone, config.method, spec.num_classes, pretrained=pretrained,
                              weights=config.weights, **config.method_overrides())
    if config.image_size not in (None, model.image_size):
        raise ConfigError(f"image_size {config.image_size} does not match backbone {config.backbone!r}, "
                          f"which takes {model.image_size} px input")
    config = dataclasses.replace(config, image_size=model.image_size, pretrained=pretrained)

    train_set: Dataset = build_dataset(spec, config.data_root, config.train_split, config.image_size, True,
                                       config.resize)
    if config.fraction < 1.0:
        train_set = Subset(train_set, stratified_fraction(train_set.targets, config.fraction, config.seed))
    eval_sets = {s: build_dataset(spec, config.data_root, s, config.image_size, resize=config.resize)
                 for s in config.eval_splits}
    model.to(device)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)
    loader_generator = torch.Generator()
    train_loader = _loader(train_set, config, device, shuffle=True, generator=loader_generator)
    eval_loaders = {s: _loader(d, config, device, False, torch.Generator()) for s, d in eval_sets.items()}
    if config.cache:
        train_loader, eval_loaders = cached_run_loaders(config, train_set, eval_sets, device, loader_generator)
    if config.compile:
        model.compile()

    record: dict[str, Any] = {
        "run_id": run_id(config), "config": config.to_dict(), "epochs": [], "final": {},
        "method_config": config_to_dict(model.config), "params": vapt.count_parameters(model),
        "samples": {"train": len(train_set), **{s: len(d) for s, d in eval_sets.items()}},
        "wall_time_s": 0.0, "env": environment(device),
        "status": "running",
    }
    start_epoch, elapsed_before = 0, 0.0
    if checkpoint_path.is_file():
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        model.load_trainable_state_dict(checkpoint["trainable"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        _set_rng_state(checkpoint["rng"], loader_generator)
        start_epoch, elapsed_before = checkpoint["epoch"], checkpoint["wall_time_s"]
        record["epochs"] = json.loads(checkpoint["epochs"])
        print(f"resuming {record['run_id']} after epoch {start_epoch}")
    else:
        print(f"run {record['run_id']} on {device}")
    started = time.perf_counter()

    def finish(status: str, **extra: Any) -> dict[str, Any]:
        record.update(status=status, wall_time_s=elapsed_before + time.perf_counter() - started, **extra)
        if status != "interrupted":
            write_json_atomic(result_path, record)
        return record

    try:
        for epoch in range(start_epoch, config.epochs):
            scheduler.step(epoch)
            lr = optimizer.param_groups[0]["lr"]
            loader_generator.manual_seed(epoch_seed(config.seed, epoch))
            model.train()
            loss_sum, seen = 0.0, 0
            for images, labels in _batches(train_loader, f"epoch {epoch + 1}/{config.epochs}"):
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                with _autocast(device, config.precision):
                    logits = model(images)
                loss = F.cross_entropy(logits.float(), labels)
                if not torch.isfinite(loss):
                    raise NonFiniteLoss(f"loss became {loss.item()} in epoch {epoch + 1}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * labels.numel()
                seen += labels.numel()
            row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / seen}
            if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
                for split, loader in eval_loaders.items():
                    row[f"{split}_top1"] = evaluate(model, loader, device, config.precision)
            record["epochs"].append(row)
            print(" ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
            save_torch_atomic(checkpoint_path, {
                "epoch": epoch + 1, "trainable": model.trainable_state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": _rng_state(loader_generator), "epochs": json.dumps(record["epochs"]),
                "wall_time_s": elapsed_before + time.perf_counter() - started,
            })
            if stop_after is not None and epoch + 1 >= stop_after and epoch + 1 < config.epochs:
                return finish("interrupted")
    except NonFiniteLoss as err:
        print(f"failed {record['run_id']}: {err}")
        return finish("failed", error=str(err), failure=NON_FINITE)
    except Exception as err:
        finish("failed", error=f"{type(err).__name__}: {err}", failure="exception")
        raise
    last = record["epochs"][-1]
    record["final"] = {split: last[f"{split}_top1"] for split in config.eval_splits}
    model.save_trainable(directory / "trainable.pt")
    finish("finished")
    checkpoint_path.unlink(missing_ok=True)
    scores = ", ".join(f"{split} top-1 {value:.2f}" for split, value in record["final"].items())
    print(f"finished {record['run_id']}: {scores}")
    return record


def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `train` and `sweep` (everything except lr, wd and seed)."""
    parser.add_argument("--backbone", required=True, help="vit_b16_in21k, ..., a timm ViT name, vit_test")
    parser.add_argument("--method", required=True, help="linear, full, vpt_shallow, vpt_deep or vapt")
    parser.add_argument("--data-root", required=True, help="holds vtab-1k/<task>/ and FGVC <dataset>/")
    parser.add_argument("--out", default="runs", help="runs folder (default: runs)")
    parser.add_argument("--epochs", type=int, default=PAPER_EPOCHS)
    parser.add_argument("--batch-size", type=int, default=PAPER_BATCH_SIZE)
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


def main(argv: list[str] | None = None) -> int:
    """`python -m vapt train ...`: one run; exit 0 when finished, 1 when it failed (e.g. NaN loss)."""
    parser = argparse.ArgumentParser(prog="python -m vapt train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="vtab1k/<task> or fgvc/<dataset>")
    add_run_arguments(parser)
    parser.add_argument("--lr", type=float, required=True, help="grid value; optimizer uses lr x batch/256")
    parser.add_argument("--wd", type=float, required=True, help="weight decay")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--train-split", default=None, help="default: train800 (VTAB-1K), train (FGVC)")
    parser.add_argument("--eval-splits", nargs="+", default=None,
                        help="default: val200 after train800, test after train800val200, FGVC: val test")
    args = parser.parse_args(argv)
    eval_splits = tuple(args.eval_splits) if args.eval_splits else None
    record = train(config_from_args(args, eval_splits=eval_splits))
    return 0 if record["status"] == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
