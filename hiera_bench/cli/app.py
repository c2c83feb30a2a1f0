"""The Typer application, its global options and the error contract.

A :class:`~hiera_bench.errors.UserError` becomes one line on stderr and exit code 2; ``--debug``
shows the traceback. Torch and timm are imported inside commands so ``--help`` stays fast.
"""

from __future__ import annotations

import os
import signal
import sys

import typer
from rich.console import Console

from ..errors import is_os_error, os_advice, os_error_text
from ..interrupts import Terminated, on_signal, resume_hint, running_as_the_cli

app = typer.Typer(
    name="hiera-bench",
    help="Measure how Hiera models hold accuracy across input sizes: window-aware (abswin) vs plain interpolation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
_state = {"debug": False}


def print_json(data: object, **dumps: object) -> None:
    """``data`` as JSON on stdout, as it is: never wrapped at the console's width (a long note or path split the
    JSON where stdout is a pipe), no markup or emoji codes read in its strings."""
    import json

    out.print(json.dumps(data, **dumps), markup=False, highlight=False, emoji=False, soft_wrap=True)


def _print_version(value: bool) -> None:
    """``--version``: this package and the versions its numbers depend on, without importing torch (slow)."""
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    out.print(f"hiera-bench {__version__} (timm {of('timm')}, torch {of('torch')}, python {sys.version.split()[0]})",
              markup=False)
    raise typer.Exit()


@app.callback()
def _global(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version of hiera-bench, timm and torch, and exit."),
) -> None:
    _state["debug"] = debug or os.environ.get("HIERA_BENCH_DEBUG") == "1"


MODEL_HELP = "timm Hiera name (with or without .tag) or alias, e.g. hiera_small; optional with a --checkpoint folder."


def one_model(positional: str | None, option: str | None) -> str | None:
    """The model of a command that takes it as ``--model/-m`` (like every command) or, as before, positionally."""
    from ..errors import UserError

    if positional and option and positional != option:
        raise UserError(f"two models given, {positional!r} and --model {option!r}; give one")
    return option or positional


def _on_signal(signum, frame):
    if "signal" in _state:
        # the first signal is already unwinding the run (its cleanup must finish to keep the folder
        # resumable); a second KeyboardInterrupt would cut that cleanup and print a traceback
        return
    _state["signal"] = signum
    on_signal(signum, frame)


def _interrupted(signum: int) -> None:
    # exiting: signals arriving during interpreter teardown (torch's included) would kill it mid-way with a
    # traceback or as -SIGINT; ignored handlers survive teardown, Python ones are reset to the default
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    _state["stopped_by"] = signum
    what = "terminated" if signum == signal.SIGTERM else "interrupted"
    if not _another_rank():  # a torchrun job stopped as a whole says so once, on rank 0
        err.print(f"{what}: finished cells and committed images are kept; {resume_hint()}", markup=False)
    sys.exit(143 if signum == signal.SIGTERM else 130)


def _another_rank() -> bool:
    """This process is a torchrun rank other than 0."""
    return "WORLD_SIZE" in os.environ and os.environ.get("RANK", "0") != "0"


def _os_error_line(exc: OSError) -> str:
    return f"error: {os_error_text(exc)} (nothing finished was lost; {os_advice(exc)}, then {resume_hint()})"


def _subcommands(ctx) -> list[str]:
    """The command names below hiera-bench itself in a click context (``["sweep"]``), whatever the program's
    name (``hiera-bench``, ``python -m hiera_bench``)."""
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return names[::-1]


def _usage_error_line(exc) -> str:
    """click's usage error (unknown option, a value of the wrong type) as the one-line contract."""
    command = " ".join(["hiera-bench", *_subcommands(getattr(exc, "ctx", None))])
    message = " ".join(exc.format_message().split()).rstrip(".")
    return f"error: {message}; see '{command} --help'"


#: Options timm users type bare that take a value here, and the value a bare one means.
BARE_OPTIONS = {"--amp": "auto"}


def with_bare_options(argv: list[str]) -> list[str]:
    """``--amp`` alone (timm's habit) becomes ``--amp=auto``; ``--amp bf16`` is left as it is."""
    fixed = []
    for i, arg in enumerate(argv):
        following = argv[i + 1] if i + 1 < len(argv) else None
        bare = arg in BARE_OPTIONS and (following is None or following.startswith("-"))
        fixed.append(f"{arg}={BARE_OPTIONS[arg]}" if bare else arg)
    return fixed


def entry() -> None:
    """The process's entry (the ``hiera-bench`` script, ``python -m hiera_bench``): :func:`main`, after which a
    command stopped by Ctrl-C ends the process by SIGINT once Python has finished, as an uncaught Ctrl-C does.
    A calling shell then knows the user pressed Ctrl-C: a loop over models stops instead of starting the
    next one, and the shell shows 130. (Exiting 130 instead was not even stable: CPython 3.8+ still ends by
    SIGINT, after any exit status, when the interrupt had passed through code run by exec()/eval(), as
    namedtuple and dataclass creation do.)"""
    _state.pop("stopped_by", None)
    try:
        main()
    except SystemExit:
        if _state.get("stopped_by") != signal.SIGINT:
            raise
        # an uncaught KeyboardInterrupt makes the interpreter finish, then re-raise SIGINT with the default
        # action; the one line is already printed, so the traceback is not
        quiet = KeyboardInterrupt()
        previous = sys.excepthook
        sys.excepthook = lambda kind, exc, tb: None if exc is quiet else previous(kind, exc, tb)
        raise quiet from None


def main(argv: list[str] | None = None) -> None:
    """``hiera-bench ARGV``: exits (``SystemExit``) with the command's status. Ctrl-C and SIGTERM are
    handled while it runs; a program that calls it gets its own handlers back after."""
    from . import commands  # noqa: F401  (registers the commands)

    argv = with_bare_options(sys.argv[1:] if argv is None else list(argv))
    _state.pop("signal", None)  # a new command (tests run several in one process)

    callers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        _command(argv)
    finally:
        if not running_as_the_cli():  # a program that called main() gets its own Ctrl-C back
            for sig, handler in callers.items():
                signal.signal(sig, handler)


def _command(argv: list[str]) -> None:
    """Run one command, turning what it raises into the one-line contract and an exit status."""
    from ..errors import UserError

    try:
        # typer turns KeyboardInterrupt into a returned exit code 130 in non-standalone mode
        code = app(args=argv, standalone_mode=False)
        if "signal" in _state:
            _interrupted(_state["signal"])
        if isinstance(code, int) and code:
            sys.exit(code)
    except UserError as exc:
        if _state["debug"]:
            err.print_exception()
        if not getattr(exc, "quiet", False):  # a torchrun rank whose error rank 0 prints
            err.print(f"error: {exc}", markup=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt as exc:
        if _state["debug"]:
            err.print_exception()
        _interrupted(signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
    except OSError as exc:
        if "signal" in _state and not _state["debug"]:
            _interrupted(_state["signal"])
        if _state["debug"] or not is_os_error(exc):
            raise
        err.print(_os_error_line(exc), markup=False)
        sys.exit(2)
    except SystemExit:
        raise
    except Exception as exc:
        if "signal" in _state and not _state["debug"]:
            # a Ctrl-C inside an import (numpy's, torch's) can surface as another error (a RecursionError from
            # a half-initialised module): once a signal came, the run was interrupted, whatever broke after it
            _interrupted(_state["signal"])
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare command: its help, as --help shows it
            app(args=[*_subcommands(exc.ctx), "--help"], standalone_mode=False)
            sys.exit(exc.exit_code)
        # usage errors of typer's (vendored) click
        if hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int):
            if not _another_rank():  # every rank parses the same command line: rank 0 says what is wrong
                err.print(_usage_error_line(exc), markup=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":
            err.print("aborted")
            sys.exit(130)
        raise
