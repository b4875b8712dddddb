"""Stopping a command (Ctrl-C, SIGTERM) visibly: one line saying what is saved, the conventional exit status.

`install()` (called by `python -m vapt`) turns SIGTERM into a `Stopped` exception, as Ctrl-C is a
`KeyboardInterrupt`, so `finally` blocks run (run locks are released, atomic writes complete or leave
the previous file). The command's main loop says what a stop would keep with `saving(...)`; the line
printed is `stopped by SIGTERM: <what is saved>; run the same `train` command again to resume`, and the
exit status is 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM). A second signal while the first
one unwinds prints the same line at once (if it was not printed yet) and ends the process there.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

NOTHING_SAVED = "nothing was lost (every file is written atomically)"


class Stopped(KeyboardInterrupt):
    """A stop request by a signal (SIGTERM, or SIGINT raised as this after the handlers are installed)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_saved: list[str] = []  # what a stop keeps, innermost last (a sweep's runs, then the run being trained)
_state: dict[str, object] = {"command": None, "signum": None, "said": False, "saved": None}


@contextmanager
def saving(text: str) -> Iterator[None]:
    """While the block runs, a stop reports `text` as what is saved (`update` changes it)."""
    _saved.append(text)
    slot = len(_saved) - 1
    try:
        yield
    except KeyboardInterrupt:
        if _state["saved"] is None:  # the innermost block says it, as the stop unwinds through it
            _state["saved"] = _saved[-1]
        raise
    finally:
        del _saved[slot:]


def update(text: str) -> None:
    """Replace what the innermost `saving` block reports (e.g. after each epoch's checkpoint)."""
    if _saved:
        _saved[-1] = text


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends (e.g. a checkpoint write and the note naming it)."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = mask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, previous)


def exit_status(err: BaseException | None = None) -> int:
    """128 + the signal number: 143 for SIGTERM, 130 for Ctrl-C (a plain KeyboardInterrupt)."""
    signum = getattr(err, "signum", None) or _state["signum"] or signal.SIGINT
    return 128 + int(signum)


def message(command: str, err: BaseException | None = None) -> str:
    """The one line printed when `command` is stopped."""
    signum = getattr(err, "signum", None) or _state["signum"] or signal.SIGINT
    how = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    saved = _state["saved"] or (_saved[-1] if _saved else NOTHING_SAVED)
    return f"stopped by {how}: {saved}; run the same `{command}` command again to resume"


def say(command: str, err: BaseException | None = None) -> None:
    """Print the stop line to stderr once (later calls do nothing); further signals are ignored meanwhile."""
    if _state["said"]:
        return
    _state["said"] = True
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
    print(message(command, err), file=sys.stderr, flush=True)


def _handle(signum: int, frame: object) -> None:
    if _state["signum"] is None:
        _state["signum"] = signum
        raise Stopped(signum)
    say(str(_state["command"]))  # a second signal while the first unwinds: say it now and end here
    os._exit(exit_status())


def install(command: str) -> None:
    """Route SIGINT and SIGTERM of this process through `Stopped` (main thread only; elsewhere nothing)."""
    if threading.current_thread() is not threading.main_thread():
        return
    _state.update(command=command, signum=None, said=False, saved=None)
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _handle)


__all__ = ["NOTHING_SAVED", "Stopped", "deferred", "exit_status", "install", "message", "saving", "say", "update"]
