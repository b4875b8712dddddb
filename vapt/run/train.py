"""One run: backbone + method + dataset + lr + wd + seed -> train, evaluate, checkpoint, result record.

Optimization follows the paper's protocol (docs/protocol.md): SGD (momentum 0.9; AdamW for `full`),
cross-entropy, learning rate = grid value x batch_size / 256, linear warm-up from 0 over w epochs, then
a cosine to 0 over the remaining T - w epochs (as the authors'), stepped once per epoch with timm's
CosineLRScheduler. Warm-up lasts 10 epochs for the paper's 100; for other run lengths it is min(10,
epochs // 10) unless `warmup_epochs` is given. Weight decay applies to every trainable parameter except
the head bias. CUDA runs use bf16 autocast (`--precision fp32` turns it off), CPU runs fp32. VTAB-1K
images are decoded as TensorFlow Datasets does (`--decode`) and resized with TensorFlow v1's bilinear rule
(`--resize`) by default, and preprocessed images come from a uint8 cache built on first use (`--no-cache`:
decode every epoch). Runs made before `--resize`, `--precision` and `--decode` existed used PIL's resize,
bf16 and PIL's decoding and are read so; the run id marks any other value (`_rstf1`, `_fp32`, `_dctfds`),
so a `tf1` or `tfds` run never takes an older PIL run as done.

Each epoch writes `<out>/<run id>/checkpoint.pt` (trainable parameters, optimizer, scheduler and
RNG states); the same command resumes from it, and the data order depends only on (seed, epoch),
so a resumed run ends where an uninterrupted one does. A finished run writes `result.json` and
`trainable.pt` (the trained prompts and head) and is skipped when run again. A NaN or infinite
loss ends the run as `failed` (recorded, not retried; exit code 1).

Backbones load pre-trained weights from the timm hub or its cache unless `--weights PATH` names a
local file; `vit_test` and `--no-pretrained` use random weights drawn from the seed. The model and the
loaders come from `vapt.run.builder.build_run`, which the lens, Grad-CAM and `bench --loader` share.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from vapt.cli import DOCS_HELP, HelpFormatter
from vapt.config import METHODS
from vapt.errors import CheckpointError, ConfigError, OutputError, load_failure, write_failure
from vapt.io import check_writable_dir, save_torch_atomic
from vapt.run import stopping
from vapt.run.builder import build_run
from vapt.run.config import (
    TrainConfig,
    add_run_arguments,
    check_startable,
    config_from_args,
    run_id,
)
from vapt.run.lock import LOCK_NAME, first_missing, remove_if_unused, try_lock
from vapt.run.oom import OUT_OF_MEMORY, OutOfMemory, is_out_of_memory, out_of_memory_message
from vapt.run.record import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    LEGACY_RUN_FIELDS,
    NON_FINITE,
    RECORD_NAME,
    RUNNING,
    RecordError,
    RunRecord,
)
from vapt.run.slurm import job_fields

CHECKPOINT_NAME = "checkpoint.pt"
RESTART_FLAG = "--restart-unreadable"
UNREADABLE_SUFFIX = ".unreadable"

__all__ = ["build_optimizer", "build_scheduler", "cpu_platform", "evaluate", "train"]


def learning_rate(config: TrainConfig) -> float:
    """The optimizer's peak learning rate: grid value x batch_size / 256."""
    return config.lr * config.batch_size / 256


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum 0.9 (AdamW for methods that train the backbone); weight decay on all but the head bias."""
    decay, no_decay = [], []
    for name, param in model.trainable_parameters():
        (no_decay if name == "head.bias" else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.wd}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if METHODS[config.method].trains_backbone:
        return torch.optim.AdamW(groups, lr=learning_rate(config))
    return torch.optim.SGD(groups, lr=learning_rate(config), momentum=0.9)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> Any:
    """timm's CosineLRScheduler, stepped once per epoch: peak x t/w for t < w, then a cosine to 0 over T - w epochs.

    As the authors' schedule: the cosine starts at the peak right after warm-up (`warmup_prefix`).
    """
    from timm.scheduler import CosineLRScheduler

    config = config.resolved()
    return CosineLRScheduler(
        optimizer, t_initial=config.epochs - config.warmup_epochs, warmup_t=config.warmup_epochs,
        warmup_prefix=True, warmup_lr_init=0.0, lr_min=0.0,
    )


def environment(device: torch.device) -> dict[str, str]:
    """Versions, device and host of this run."""
    import timm
    import torchvision

    import vapt

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _processor_name()
    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "timm": timm.__version__,
        "vapt": getattr(vapt, "__version__", "unknown"),
        "device": f"{device.type} ({name})" if name else device.type, "hostname": socket.gethostname(),
    }


def _processor_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo, where platform.processor() is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_platform() -> str:
    """What decides float32 results on this CPU: torch's version, its CPU kernel level and the processor.

    Two machines that differ in any of these may round sums in another order, so runs agree only up to
    float32 rounding, and training carries such differences on.
    """
    return f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, {_processor_name()}"


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


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A run's checkpoint (tensors only, never arbitrary pickles); CheckpointError naming the file otherwise."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} cannot be read ({load_failure(err)}); it is kept "
                              f"in place; pass {RESTART_FLAG} to set it aside and start the run afresh") from None
    needed = ("epoch", "trainable", "optimizer", "scheduler", "rng", "epochs", "wall_time_s")
    if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in needed):
        raise CheckpointError(f"checkpoint {path} is not a vapt run checkpoint (expected the keys "
                              f"{', '.join(needed)}); it is kept in place; pass {RESTART_FLAG} to set it aside "
                              f"and start the run afresh")
    return checkpoint


def set_aside_unreadable(directory: Path) -> list[Path]:
    """Rename a run's unreadable result.json / checkpoint.pt to `<name>.unreadable` (kept, not deleted)."""
    moved = []
    for name, read in ((RECORD_NAME, RunRecord.read), (CHECKPOINT_NAME, read_checkpoint)):
        path = directory / name
        if not path.is_file():
            continue
        try:
            read(path)
        except (RecordError, CheckpointError):
            target = path.with_name(path.name + UNREADABLE_SUFFIX)
            os.replace(path, target)
            print(f"set aside unreadable {path} as {target.name}; the run starts afresh", file=sys.stderr)
            moved.append(target)
    return moved


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


def train(config: TrainConfig, stop_after: int | None = None, restart_unreadable: bool = False) -> RunRecord:
    """Run (or resume, or skip when done) one training run; returns its result record.

    `stop_after=k` stops after k completed epochs as an interruption would (checkpoint written,
    no result); the returned record then has status `interrupted`. An unreadable result.json or
    checkpoint.pt is an error naming the file, unless `restart_unreadable` sets it aside and starts afresh.
    The run folder is locked while the run trains: when another process holds it, this call skips the
    run with a message and returns a `running` record (nothing is written). Method, options, backbone and
    weights file are checked before any folder is made, and a run that stops before writing anything
    leaves no folder behind. Running out of CPU or GPU memory records the run as failed and raises
    `OutOfMemory` naming the sizes to lower.
    """
    config = config.resolved()
    check_startable(config)
    identity = run_id(config)
    check_writable_dir(config.out, "--out folder")
    created = first_missing(Path(config.out) / identity)
    directory = check_writable_dir(Path(config.out) / identity, "run folder")
    lock = try_lock(directory)
    if lock is None:
        print(f"skipping {identity}: another process is training it now (it holds {directory / LOCK_NAME}); "
              f"run the same command again when it has finished", file=sys.stderr)
        return RunRecord(run_id=identity, config=config.to_dict(), status=RUNNING)
    try:
        with stopping.saving(f"{identity} had not finished an epoch, so nothing of it was saved"):
            return _train_locked(config, identity, directory, stop_after, restart_unreadable)
    except (RuntimeError, MemoryError) as err:  # memory ran out before training started (model, loaders, cache)
        if not (isinstance(err, MemoryError) or is_out_of_memory(err)):
            raise
        message = out_of_memory_message(err, config.batch_size, config.num_tokens, config.image_size,
                                        where="while building the run")
        _record_failure(config, identity, directory / RECORD_NAME, message)
        raise OutOfMemory(f"{identity}: {message}; recorded as failed in {directory / RECORD_NAME}") from None
    except OSError as err:
        failure = write_failure(err, "run output")
        if failure is None:
            raise
        raise OutputError(f"{failure}; files written before are intact: free space (or choose another --out) and "
                          f"run the same command to resume") from None
    finally:
        remove_if_unused(directory, created)
        lock.release()


def _record_failure(config: TrainConfig, identity: str, path: Path, message: str) -> None:
    """Record a run that failed before its first epoch as `failed` (kept when a record is already there)."""
    if not path.is_file():
        RunRecord(run_id=identity, config=config.to_dict(), status=FAILED, error=message,
                  failure=OUT_OF_MEMORY).write(path)


def _train_locked(config: TrainConfig, identity: str, directory: Path, stop_after: int | None,
                  restart_unreadable: bool) -> RunRecord:
    result_path, checkpoint_path = directory / RECORD_NAME, directory / CHECKPOINT_NAME
    if restart_unreadable:
        set_aside_unreadable(directory)
    try:
        existing = RunRecord.read_if_present(result_path)
    except RecordError as err:
        raise RecordError(f"{err}; it is kept in place; pass {RESTART_FLAG} to set it aside and start the run "
                          f"afresh") from None
    if existing is not None and not existing.made_with(config):
        made = ", ".join(f"{k} {existing.config.get(k)}" for k in LEGACY_RUN_FIELDS)
        wanted = ", ".join(f"{k} {getattr(config, k)}" for k in LEGACY_RUN_FIELDS)
        raise ConfigError(f"{result_path} was made with {made}, not {wanted}; move it away to train this run")
    if existing is not None and existing.is_done:
        print(f"skipping {identity}: already {existing.status} ({result_path})")
        return existing

    import vapt
    from vapt.config import config_to_dict

    built = build_run(config)
    config, model, device = built.config, built.model, built.device
    train_loader, eval_loaders, loader_generator = built.train_loader, built.eval_loaders, built.loader_generator
    for warning in built.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)
    if config.compile:
        model.compile()

    record = RunRecord(
        run_id=identity, config=config.to_dict(), method_config=config_to_dict(model.config),
        params=vapt.count_parameters(model), samples=built.samples, env=environment(device),
        **job_fields(),
    )
    start_epoch, elapsed_before = 0, 0.0
    if checkpoint_path.is_file():
        checkpoint = read_checkpoint(checkpoint_path)
        try:
            model.load_trainable_state_dict(checkpoint["trainable"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            _set_rng_state(checkpoint["rng"], loader_generator)
        except (KeyError, ValueError, RuntimeError, TypeError) as err:
            raise CheckpointError(f"checkpoint {checkpoint_path} does not fit this run ({load_failure(err)}); "
                                  f"it is kept in place; pass {RESTART_FLAG} to set it aside and start the run afresh"
                                  ) from None
        start_epoch, elapsed_before = checkpoint["epoch"], checkpoint["wall_time_s"]
        record.epochs = json.loads(checkpoint["epochs"])
        print(f"resuming {record.run_id} after epoch {start_epoch}")
        stopping.update(f"epoch {start_epoch} of {config.epochs} of {record.run_id} is checkpointed in "
                        f"{checkpoint_path}")
    else:
        print(f"run {record.run_id} on {device}")
    started = time.perf_counter()

    def finish(status: str, error: str | None = None, failure: str | None = None) -> RunRecord:
        record.status, record.error, record.failure = status, error, failure
        record.wall_time_s = elapsed_before + time.perf_counter() - started
        if status != INTERRUPTED:
            record.write(result_path)
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
            record.epochs.append(row)
            print(" ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
            with stopping.deferred():  # the stop line names exactly the checkpoint on disk
                save_torch_atomic(checkpoint_path, {
                    "epoch": epoch + 1, "trainable": model.trainable_state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": _rng_state(loader_generator), "epochs": json.dumps(record.epochs),
                    "wall_time_s": elapsed_before + time.perf_counter() - started,
                })
                stopping.update(f"epoch {epoch + 1} of {config.epochs} of {record.run_id} is checkpointed in "
                                f"{checkpoint_path}")
            if stop_after is not None and epoch + 1 >= stop_after and epoch + 1 < config.epochs:
                return finish(INTERRUPTED)
    except NonFiniteLoss as err:
        print(f"failed {record.run_id}: {err}")
        return finish(FAILED, error=str(err), failure=NON_FINITE)
    except Exception as err:
        if is_out_of_memory(err):
            message = out_of_memory_message(err, config.batch_size, config.num_tokens,
                                            config.image_size, model, where=f"in epoch {len(record.epochs) + 1}")
            finish(FAILED, error=message, failure=OUT_OF_MEMORY)
            raise OutOfMemory(f"{record.run_id}: {message}; recorded as failed in {result_path}") from None
        try:
            finish(FAILED, error=f"{type(err).__name__}: {err}", failure="exception")
        except OSError as record_err:  # a full or read-only disk takes no record either; the first error says why
            if write_failure(record_err) is None:
                raise
        raise
    last = record.epochs[-1]
    record.final = {split: last[f"{split}_top1"] for split in config.eval_splits}
    model.save_trainable(directory / "trainable.pt")
    finish(FINISHED)
    checkpoint_path.unlink(missing_ok=True)
    scores = ", ".join(f"{split} top-1 {value:.2f}" for split, value in record.final.items())
    print(f"finished {record.run_id}: {scores}")
    return record


def main(argv: list[str] | None = None) -> int:
    """`python -m vapt train ...`: one run; exit 0 when finished, 1 when it failed (e.g. NaN loss)."""
    parser = argparse.ArgumentParser(prog="python -m vapt train", epilog=DOCS_HELP, description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--data", required=True, help="vtab1k/<task> or fgvc/<dataset>")
    add_run_arguments(parser)
    parser.add_argument("--lr", type=float, required=True, help="grid value; optimizer uses lr x batch/256")
    parser.add_argument("--wd", type=float, required=True, help="weight decay")
    parser.add_argument("--seed", type=int, default=42, help="seed of the new parameters and the data order")
    parser.add_argument("--train-split", default=None, help="default: train800 (VTAB-1K), train (FGVC)")
    parser.add_argument("--eval-splits", nargs="+", default=None,
                        help="default: val200 after train800, test after train800val200, FGVC: val test")
    parser.add_argument(RESTART_FLAG, dest="restart_unreadable", action="store_true",
                        help="set an unreadable checkpoint.pt / result.json aside (renamed to *.unreadable) and "
                             "start the run afresh")
    args = parser.parse_args(argv)
    eval_splits = tuple(args.eval_splits) if args.eval_splits else None
    record = train(config_from_args(args, eval_splits=eval_splits), restart_unreadable=args.restart_unreadable)
    return 0 if record.finished else 1


if __name__ == "__main__":
    sys.exit(main())
