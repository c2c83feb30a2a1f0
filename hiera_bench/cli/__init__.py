"""Command-line interface: a thin Typer shell over the library."""

from ..interrupts import exit_quietly_on_signals

# before the imports below (typer, rich; torch in the commands): a Ctrl-C while they load, when nothing has
# run yet, ends the process with one line instead of an import's KeyboardInterrupt traceback. ``main``
# installs the handlers that keep finished work once the command runs.
exit_quietly_on_signals()

from .app import app, entry, main  # noqa: E402

__all__ = ["app", "entry", "main"]
