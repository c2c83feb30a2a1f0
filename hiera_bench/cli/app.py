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

from ..interrupts import Terminated, on_signal

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


@app.callback()
def _global(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _state["debug"] = debug or os.environ.get("HIERA_BENCH_DEBUG") == "1"


def _on_signal(signum, frame):
    _state["signal"] = signum
    on_signal(signum, frame)


def _interrupted(signum: int) -> None:
    what = "terminated" if signum == signal.SIGTERM else "interrupted"
    err.print(f"{what}: finished cells and committed images are kept; re-run the same command to resume",
              markup=False)
    sys.exit(143 if signum == signal.SIGTERM else 130)


def main(argv: list[str] | None = None) -> None:
    from ..errors import UserError
    from . import commands  # noqa: F401  (registers the commands)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
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
        if _state["debug"] or exc.errno is None:
            raise
        err.print(f"error: {exc.strerror}: {exc.filename or ''} (nothing finished was lost; free space or fix "
                  "permissions, then re-run to resume)", markup=False)
        sys.exit(2)
    except SystemExit:
        raise
    except Exception as exc:
        # usage errors of typer's (vendored) click: they print their own message
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":
            err.print("aborted")
            sys.exit(130)
        raise
