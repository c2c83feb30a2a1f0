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

app = typer.Typer(
    name="hiera-bench",
    help="Measure how Hiera models hold accuracy across input sizes: window-aware (abswin) vs plain interpolation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

err = Console(stderr=True, highlight=False)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
_state = {"debug": False}


@app.callback()
def _global(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _state["debug"] = debug or os.environ.get("HIERA_BENCH_DEBUG") == "1"


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: finished work stays, the run can be resumed."""


def _on_sigterm(signum, frame):  # noqa: ARG001
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    from ..errors import UserError
    from . import commands  # noqa: F401  (registers the commands)

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        app(args=argv, standalone_mode=False)
    except UserError as exc:
        if _state["debug"]:
            err.print_exception()
        err.print(f"error: {exc}", markup=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt as exc:
        if _state["debug"]:
            err.print_exception()
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        err.print(f"{what}: finished cells and committed images are kept; re-run the same command to resume",
                  markup=False)
        sys.exit(130 if not isinstance(exc, Terminated) else 143)
    except OSError as exc:
        if _state["debug"] or exc.errno is None:
            raise
        err.print(f"error: {exc.strerror}: {exc.filename or ''} (nothing finished was lost; free space or fix "
                  "permissions, then re-run to resume)", markup=False)
        sys.exit(2)
    except SystemExit:
        raise
    except Exception as exc:
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            err.print("aborted")
            sys.exit(130)
        raise
