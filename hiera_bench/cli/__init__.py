"""Command-line interface: a thin Typer shell over the library."""

from .app import app, main

__all__ = ["app", "main"]
