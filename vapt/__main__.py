"""`python -m vapt <command> [options]`: the project's command line."""

from __future__ import annotations

import importlib
import sys

from vapt.errors import VaptError
from vapt.run import stopping

# command -> (module with `main(argv: list[str] | None) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("vapt.run.train", "train and evaluate one run (backbone + method + dataset + lr + wd + seed)"),
    "sweep": ("vapt.run.sweep", "the paper's protocol: grid search on validation, final seeds, test"),
    "table": ("vapt.report.tables", "collect result records into long-format CSV and per-task tables"),
    "figures": ("vapt.paper.draw", "draw every paper figure from runs, a bench CSV and a theory run"),
    "smoke": ("vapt.paper.smoke", "run every experiment at toy scale on CPU (cached by code version)"),
    "bench": ("vapt.run.bench", "measure step time, memory, throughput, FLOPs and parameters per method"),
    "lens": ("vapt.report.lens_command", "the MoE lens: prompt gate mass and input dependence of trained runs"),
    "fixtures": ("vapt.data.fixtures", "write tiny datasets in the real VTAB-1K / FGVC layouts"),
    "data": ("vapt.data.check", "`data check`: layouts, split sizes, classes, unreadable images; a manifest"),
    "gpu-check": ("vapt.run.gpu_check", "the prepared GPU check: bench, train, compile; a cost summary"),
    "reproduce": ("vapt.paper.reproduce", "one paper item (T1 ... lens, or all): its sweeps, then tables and figures"),
}


def _usage() -> str:
    lines = ["usage: python -m vapt <command> [options]", "", "commands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `python -m vapt <command> --help` for a command's options; the method and the paper's",
              "protocol are described in docs/ (docs/README.md)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a command's `main`; user errors are printed without a traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; expected one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    stopping.install(name)
    try:
        return int(module.main(rest) or 0)
    except VaptError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: one line on what is saved, then 130 / 143
        stopping.say(name, err)
        return stopping.exit_status(err)


if __name__ == "__main__":
    sys.exit(main())
