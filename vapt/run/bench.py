"""Efficiency benchmark: training-step time, evaluation throughput, peak memory, FLOPs and parameters per method.

Every method is measured in its own worker process (forked from a server process that has only imported
the library), so one method's memory peak cannot hide another's; the timed steps go round-robin over
the methods, so changes in the machine's load hit all methods alike. Peak memory is, on CUDA, the
allocator's `torch.cuda.max_memory_allocated` over the training steps; on CPU, the rise of a worker's
peak resident memory (VmHWM) over model building and two training steps, measured in a separate pass
with glibc's mmap threshold fixed at 128 KiB so that freed tensors leave the resident set (with the
default dynamic threshold, heap reuse made the figure vary by about 10 % between runs). Both count
weights, activations, gradients and optimizer state, but not the PyTorch runtime.
Memory kept for the backward pass is the size of the distinct storages that the first training step's forward
pass saves for its backward pass (counted with `torch.autograd.graph.saved_tensors_hooks`; the model's
parameters and buffers excluded): the activation memory a method adds, free of allocator effects.
FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` on one forward pass of one image.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import os
import pickle
import socket
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from vapt import io
from vapt.cli import DOCS_HELP, HelpFormatter
from vapt.config import METHODS, register_method
from vapt.errors import ConfigError, check_positive_int
from vapt.models.backbones import backbone_spec
from vapt.models.factory import create_model
from vapt.models.prompted import PromptedModel, count_parameters
from vapt.run.memory import CpuPeakMemory, saved_for_backward_mb

COLUMNS = ("method", "step_time_s", "eval_images_per_s", "peak_memory_mb", "saved_for_backward_mb", "gflops_per_image",
           "trainable_params")
DETAILS = ("image_size", "cpu_threads")  # reported with the table, not written to the CSV
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class BenchSettings:
    """What to measure: backbone, input, number of prompts, device, precision and step counts."""

    backbone: str = "vit_test"
    batch: int = 4
    num_tokens: int = 10
    device: str = "cpu"
    image_size: int | None = None
    steps: int = 5
    warmup: int = 1
    dtype: str = "fp32"
    recompute: bool | None = None  # VAPT's recomputing path; None: the method's default
    num_classes: int = 10
    threads: int | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("batch", "num_tokens", "steps", "num_classes"):
            check_positive_int(name, getattr(self, name))
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ConfigError(f"warmup must be an integer >= 0, got {self.warmup!r}")
        check_positive_int("image_size", self.image_size, allow_none=True)
        check_positive_int("threads", self.threads, allow_none=True)
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device must be cpu or cuda (or cuda:N), got {self.device!r}")


def method_overrides(method: str, settings: BenchSettings) -> dict[str, Any]:
    """Config overrides of a method for these settings (number of prompts, recomputation where it applies)."""
    if method not in METHODS or not METHODS[method].prompted:
        return {}
    options = METHODS[method].options()
    wanted = {"num_tokens": settings.num_tokens, "recompute": settings.recompute}
    return {k: v for k, v in wanted.items() if k in options and v is not None}


def build_model(settings: BenchSettings, method: str) -> PromptedModel:
    """The benchmarked model: a ViT (named or timm) or a Swin backbone, at `settings.image_size` if given."""
    return create_model(settings.backbone, method, settings.num_classes, image_size=settings.image_size,
                        **method_overrides(method, settings))


def native_image_size(model: PromptedModel) -> int:
    """The square input size a prompted model is built for."""
    return int(model.backbone.patch_embed.img_size[0])


def count_flops(model: torch.nn.Module, images: Tensor) -> int:
    """FLOPs of one forward pass in eval mode, attention included on every device."""
    cpu_attention = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)

    def attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    mapping = {cpu_attention: attention_flops} if cpu_attention is not None else {}
    was_training = model.training
    model.eval()
    try:
        # not under no_grad: the counter's module tracker fails on parameters viewed without autograd
        with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            model(images)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


class MethodBench:
    """One method's model, data and optimizer, ready for timed training and evaluation steps."""

    def __init__(self, settings: BenchSettings, method: str):
        self.settings = settings
        self.device = torch.device(settings.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {settings.device!r} requested but CUDA is not available here")
        if settings.threads is not None:
            torch.set_num_threads(settings.threads)
        self.autocast = (torch.autocast(self.device.type, dtype=DTYPES[settings.dtype]) if settings.dtype != "fp32"
                         else contextlib.nullcontext())
        self.cpu_memory = CpuPeakMemory()
        torch.manual_seed(0)
        self.model = build_model(settings, method).to(self.device)
        if settings.compile:
            self.model.compile()
        size = native_image_size(self.model)
        self.images = torch.randn(settings.batch, 3, size, size, device=self.device)
        self.labels = torch.randint(0, settings.num_classes, (settings.batch,), device=self.device)
        self.summary = {
            "method": method,
            "gflops_per_image": count_flops(self.model, self.images[:1]) / 1e9,
            "trainable_params": count_parameters(self.model)["trainable"],
            "image_size": size,
            "cpu_threads": torch.get_num_threads(),
        }
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(trainable, lr=1e-3, momentum=0.9)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.model.train()
        self.saved_mb: float | None = None
        for _ in range(settings.warmup):
            self._train()
        self.eval_ready = False

    def _train(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        losses = []

        def forward() -> None:
            with self.autocast:
                losses.append(F.cross_entropy(self.model(self.images), self.labels))

        if self.saved_mb is None:  # the first step counts what its forward pass keeps for backward
            self.saved_mb = saved_for_backward_mb(self.model, forward)
        else:
            forward()
        losses.pop().backward()
        self.optimizer.step()

    def _eval(self) -> None:
        with torch.no_grad(), self.autocast:
            self.model(self.images)

    def _timed(self, fn: Callable[[], None]) -> float:
        _synchronize(self.device)
        start = time.perf_counter()
        fn()
        _synchronize(self.device)
        return time.perf_counter() - start

    def train_step(self) -> float:
        """Seconds of one training step: forward, backward and SGD step."""
        return self._timed(self._train)

    def peak_memory_mb(self) -> float:
        """Peak memory so far (MiB): CUDA allocator peak since the model was built, or the CPU peak RSS rise."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return self.cpu_memory.rise_mb()

    def saved_memory_mb(self) -> float:
        """Memory the first training step kept for its backward pass (MiB); runs that step if none ran yet."""
        if self.saved_mb is None:
            self._train()
        return self.saved_mb

    def eval_step(self) -> float:
        """Seconds of one evaluation forward pass without gradients (the first call warms up first)."""
        if not self.eval_ready:
            self.model.eval()
            for _ in range(self.settings.warmup):
                self._eval()
            self.eval_ready = True
        return self._timed(self._eval)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _row(summary: dict[str, Any], batch: int, train: list[float], eval_: list[float], peak: float,
         saved: float) -> dict[str, Any]:
    return {
        **summary,
        "step_time_s": statistics.median(train),
        "eval_images_per_s": batch / statistics.median(eval_),
        "peak_memory_mb": peak,
        "saved_for_backward_mb": saved,
    }


def measure_method(settings: BenchSettings, method: str) -> dict[str, Any]:
    """Measure one method in this process: one row of the benchmark table (plus `DETAILS`)."""
    bench = MethodBench(settings, method)
    train = [bench.train_step() for _ in range(settings.steps)]
    peak = bench.peak_memory_mb()
    eval_ = [bench.eval_step() for _ in range(settings.steps)]
    return _row(bench.summary, settings.batch, train, eval_, peak, bench.saved_memory_mb())


CONTROL_SUFFIX = " (control)"


def control_label(method: str) -> str:
    """The table label of a second, identically built model of `method` (the step-time noise control)."""
    return method + CONTROL_SUFFIX


RESULT_TAG = "vapt-bench-result "


def _work(conn: socket.socket, settings: BenchSettings, method: str) -> None:
    """A forked worker: set up one method, then answer train / eval / memory / stop commands."""
    with conn, conn.makefile("rw") as channel:
        def reply(message: dict[str, Any]) -> None:
            channel.write(json.dumps(message) + "\n")
            channel.flush()

        try:
            bench = MethodBench(settings, method.removesuffix(CONTROL_SUFFIX))
            bench.summary["method"] = method
            reply({"ok": bench.summary})
        except BaseException:
            reply({"error": traceback.format_exc()})
            return
        actions = {"train": bench.train_step, "eval": bench.eval_step, "memory": bench.peak_memory_mb,
                   "saved": bench.saved_memory_mb}
        for line in channel:
            command = json.loads(line)["cmd"]
            if command == "stop":
                reply({"ok": None})
                return
            try:
                reply({"ok": actions[command]()})
            except BaseException:
                reply({"error": traceback.format_exc()})


def serve() -> None:
    """Worker server: fork one worker per method on `start`, relay later commands to it, reply on stdout.

    The server only imports the library and never computes, so every forked worker starts clean.
    """
    workers: dict[str, tuple[int, socket.socket, Any]] = {}
    for line in sys.stdin:
        request = json.loads(line)
        method = request["method"]
        if "spec" in request and method.removesuffix(CONTROL_SUFFIX) not in METHODS:
            register_method(pickle.loads(base64.b64decode(request["spec"])))
        if request["cmd"] == "start":
            ours, theirs = socket.socketpair()
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                ours.close()
                _work(theirs, BenchSettings(**request["settings"]), method)
                os._exit(0)
            theirs.close()
            workers[method] = (pid, ours, ours.makefile("rw"))
        else:
            workers[method][2].write(json.dumps(request) + "\n")
            workers[method][2].flush()
        pid, _, channel = workers[method]
        answer = channel.readline()
        if not answer or request["cmd"] == "stop":
            _, status = os.waitpid(pid, 0)
            channel.close()
            workers.pop(method)[1].close()
            if not answer:
                answer = json.dumps({"error": f"the worker ended (wait status {status}) without answering"})
        sys.stdout.write(RESULT_TAG + answer.strip() + "\n")
        sys.stdout.flush()


def _ask(server: subprocess.Popen, settings: BenchSettings, method: str, command: str) -> Any:
    request = {"cmd": command, "method": method, "settings": dataclasses.asdict(settings)}
    if command == "start":  # the method's registration travels with it, so methods registered at run time work
        request["spec"] = base64.b64encode(pickle.dumps(METHODS[method.removesuffix(CONTROL_SUFFIX)])).decode("ascii")
    server.stdin.write(json.dumps(request) + "\n")
    server.stdin.flush()
    for line in server.stdout:
        if line.startswith(RESULT_TAG):
            answer = json.loads(line[len(RESULT_TAG):])
            break
        sys.stderr.write(line)
    else:
        answer = {"error": f"the worker server exited with code {server.wait()}"}
    if "ok" not in answer:
        raise RuntimeError(f"benchmark of {method!r} on {settings.backbone!r} failed ({command}): {answer['error']}")
    return answer["ok"]


CPU_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}  # freed tensors go back to the OS at once


def _start_server(extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    # the server imports what this process can import (the modules that define registered methods)
    path = os.pathsep.join(p for p in sys.path if p)
    return subprocess.Popen([sys.executable, "-c", "from vapt.run.bench import serve; serve()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": path, **(extra_env or {})})


def _stop_server(server: subprocess.Popen | None) -> None:
    if server is not None:
        server.stdin.close()
        server.wait()


def run_bench(settings: BenchSettings, methods: list[str], control: str | None = None) -> pd.DataFrame:
    """Measure each method in its own worker process; one row per method, columns `COLUMNS` + `DETAILS`.

    All workers are set up first; then the timed steps go round-robin over the methods (one worker
    computes at a time), so a change in the machine's load affects every method alike. On CPU, peak
    memory comes from a second pass, one method at a time, in workers whose allocator returns freed
    memory to the system (`CPU_MEMORY_ENV`), so that resident memory follows the live tensors.
    `control` adds a second, identical model of that method (row `control_label(control)`), measured in
    the same round-robin: its ratio to the first shows how far two identical models differ on this machine.
    """
    for method in [*methods, *([control] if control is not None else [])]:
        if method not in METHODS:
            raise ConfigError(f"unknown method {method!r}; expected some of {', '.join(METHODS)}")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"--methods lists a method twice: {','.join(methods)}")
    if control is not None:
        methods = [*methods, control_label(control)]
    cpu = torch.device(settings.device).type == "cpu"
    server = _start_server()
    memory_server = _start_server(CPU_MEMORY_ENV) if cpu else None
    try:
        summaries = {m: _ask(server, settings, m, "start") for m in methods}
        train: dict[str, list[float]] = {m: [] for m in methods}
        eval_: dict[str, list[float]] = {m: [] for m in methods}
        for _ in range(settings.steps):
            for m in methods:
                train[m].append(_ask(server, settings, m, "train"))
        peaks = {m: _ask(server, settings, m, "memory") for m in methods}
        saved = {m: _ask(server, settings, m, "saved") for m in methods}
        for _ in range(settings.steps):
            for m in methods:
                eval_[m].append(_ask(server, settings, m, "eval"))
        for m in methods:
            _ask(server, settings, m, "stop")
        if memory_server is not None:
            two_steps = dataclasses.replace(settings, warmup=1)  # the second step runs with optimizer state
            for m in methods:
                _ask(memory_server, two_steps, m, "start")
                _ask(memory_server, two_steps, m, "train")
                peaks[m] = _ask(memory_server, two_steps, m, "memory")
                _ask(memory_server, two_steps, m, "stop")
    finally:
        _stop_server(server)
        _stop_server(memory_server)
    rows = [_row(summaries[m], settings.batch, train[m], eval_[m], peaks[m], saved[m]) for m in methods]
    return pd.DataFrame(rows, columns=[*COLUMNS, *DETAILS])


def ratios(table: pd.DataFrame, reference: str) -> pd.DataFrame | None:
    """Every measure divided by the `reference` method's (None when the reference was not measured)."""
    if reference not in set(table["method"]):
        return None
    values = table.set_index("method")[list(COLUMNS[1:])].astype(float)
    return values / values.loc[reference]


def format_report(table: pd.DataFrame, settings: BenchSettings) -> str:
    """The printed report: settings, the measured table and ratio tables to vpt_deep and full."""
    memory = "CUDA max_memory_allocated" if settings.device.startswith("cuda") else "CPU peak RSS rise"
    first = table.iloc[0]
    lines = [
        f"backbone {settings.backbone}, batch {settings.batch}, {int(first['image_size'])} px, "
        f"Np {settings.num_tokens}, {settings.device} {settings.dtype}, {int(first['cpu_threads'])} CPU threads, "
        f"recompute {({True: 'on', False: 'off'}).get(settings.recompute, 'default')}, "
        f"median of {settings.steps} steps after {settings.warmup} warm-up; memory: {memory}; "
        f"saved_for_backward_mb: what the forward pass keeps for backward",
        "",
        table[list(COLUMNS)].to_string(index=False, float_format=lambda v: f"{v:.4g}"),
    ]
    for reference in ("vpt_deep", "full"):
        relative = ratios(table, reference)
        if relative is not None:
            lines += ["", f"ratio to {reference}:", relative.to_string(float_format=lambda v: f"{v:.3f}")]
    return "\n".join(lines)


def write_csv(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the table with columns `COLUMNS` to `path` atomically."""
    io.write_csv(table, path, list(COLUMNS))


def parse_args(argv: list[str] | None) -> tuple[BenchSettings, list[str], str | None, str | None]:
    """Settings, methods, output path and control method from the command line."""
    parser = argparse.ArgumentParser(prog="python -m vapt bench", epilog=DOCS_HELP, description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--backbone", default="vit_test", help="named ViT or Swin backbone, or a timm name")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated, from " + ",".join(METHODS))
    parser.add_argument("--batch", type=int, default=4, help="images per training / evaluation step")
    parser.add_argument("--num-tokens", type=int, default=10, help="prompts per block (Np)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--image-size", type=int, default=None, help="input size in pixels (default: native)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (the median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones")
    parser.add_argument("--dtype", "--precision", dest="dtype", default="fp32", choices=sorted(DTYPES),
                        help="autocast precision (default fp32)")
    parser.add_argument("--recompute", action=argparse.BooleanOptionalAction, default=None,
                        help="VAPT: recompute the adaptive prompts in the backward pass (on by default), or keep "
                             "the generator's tensors instead (--no-recompute)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per worker (default: PyTorch's)")
    parser.add_argument("--compile", action="store_true", help="run each model under torch.compile (off by default)")
    parser.add_argument("--control", default=None, metavar="METHOD",
                        help="also measure a second, identical model of METHOD (printed as 'METHOD (control)', "
                             "not written to --out): its ratio to METHOD is the step-time noise of the machine")
    parser.add_argument("--out", default=None, help="write the table to this CSV file")
    parser.add_argument("--loader", action="store_true",
                        help="measure the data path instead (cold vs cached); see `bench --loader --help`")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise ConfigError(f"--methods needs at least one of {', '.join(METHODS)}, got {args.methods!r}")
    settings = BenchSettings(
        backbone=args.backbone, batch=args.batch, num_tokens=args.num_tokens, device=args.device,
        image_size=args.image_size, steps=args.steps, warmup=args.warmup, dtype=args.dtype,
        recompute=args.recompute, threads=args.threads, compile=args.compile,
    )
    return settings, methods, args.out, args.control


def main(argv: list[str] | None = None) -> int:
    """`python -m vapt bench`: measure the methods, print the table and ratios, optionally write a CSV."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--loader" in argv:
        from vapt.run.loader_bench import main as loader_main

        return loader_main([a for a in argv if a != "--loader"])
    settings, methods, out, control = parse_args(argv)
    if settings.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {settings.device} requested but CUDA is not available on this machine")
    backbone_spec(settings.backbone)  # unknown names fail here, before any worker starts
    if out is not None:
        io.check_writable_file(out, "--out file")
    table = run_bench(settings, methods, control)
    print(format_report(table, settings))
    if out is not None:
        write_csv(table[~table["method"].str.endswith(CONTROL_SUFFIX)], out)
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
