"""Ctrl-C and SIGTERM: raised as exceptions so finished work is kept, but never inside an atomic write.

hiera-bench's CLI installs :func:`on_signal` for SIGINT and SIGTERM. Inside :func:`deferred` (every
atomic write) a signal is remembered and raised when the block ends, so a write is never cut between
its temporary file and the rename that publishes it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

_depth = 0
_pending: list[int] = []


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: finished work stays, the run can be resumed."""


#: How a stopped sweep is resumed; a sweep with ``--force`` says to leave it out (a re-run with it starts over).
SAME_COMMAND = "re-run the same command to resume"
_resume = {"hint": SAME_COMMAND}


def resume_hint() -> str:
    """The advice every "stopped" message ends with."""
    return _resume["hint"]


def starting_over(force: bool, later: list[str] = ()) -> None:
    """Called before each sweep of a command: with ``force`` a re-run of the same command would clear what this
    sweep committed, and one without it would keep the old cells of the ``later`` sweeps, which had not started."""
    if not force:
        _resume["hint"] = SAME_COMMAND
        return
    _resume["hint"] = "re-run the command without --force to resume (with --force it starts over)"
    if later:
        _resume["hint"] += f"; {', '.join(later)} had not started: sweep {'them' if len(later) > 1 else 'it'} with --force after"


def running_as_the_cli() -> bool:
    """This process is hiera-bench's own (its script, or ``python -m hiera_bench``, whose ``argv[0]`` is ``-m``
    while the package loads), not a program (a notebook, a test runner) that imported the package."""
    first = sys.argv[0] if sys.argv else ""
    return first == "-m" or os.path.basename(first) == "hiera-bench" or \
        first.endswith(os.path.join("hiera_bench", "__main__.py"))


def exit_quietly_on_signals() -> None:
    """Until a command runs, SIGINT/SIGTERM end the process with one line, by SIGINT (as every Ctrl-C of
    hiera-bench does: see ``cli.app.entry``) or with 143: nothing to keep yet. Only in hiera-bench's own
    process: a program that imports the package keeps its handlers (a notebook's Ctrl-C must not end it)."""
    if not running_as_the_cli():
        return

    def leave(signum: int, frame=None) -> None:  # noqa: ARG001  (a signal handler's signature)
        sys.stderr.write("interrupted while starting; nothing had run\n")
        if signum == signal.SIGINT:
            sys.stderr.flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        raise SystemExit(143 if signum == signal.SIGTERM else 130)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, leave)


@contextmanager
def ends_at_once_on_signals() -> Iterator[None]:
    """In hiera-bench's own process, Ctrl-C and SIGTERM end it at once inside the block: a call that blocks in C++
    (joining a torchrun job waits up to half an hour for the other ranks) holds back Python's handlers until it
    returns. Only for a block before anything is written: there is nothing to keep."""
    if not running_as_the_cli() or threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {sig: signal.signal(sig, signal.SIG_DFL) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def raise_for(signum: int) -> None:
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def on_signal(signum: int, frame=None) -> None:  # noqa: ARG001  (a signal handler's signature)
    if _depth:
        _pending.append(signum)
        return
    raise_for(signum)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold Ctrl-C / SIGTERM (when :func:`on_signal` handles them) until the block is done."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending:
            signum = _pending[-1]
            _pending.clear()
            raise_for(signum)
