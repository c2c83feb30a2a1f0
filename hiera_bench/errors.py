"""The one exception type for mistakes a user can fix, and a helper that keeps its message one line."""

from __future__ import annotations

from typing import Sequence


class UserError(Exception):
    """A problem the user can fix: the CLI prints its one-line message and exits with code 2.

    The message says what is wrong and what to do about it. Anything else raised is a bug
    and keeps its traceback.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


def listed(items: Sequence[str], most: int = 3) -> str:
    """The first ``most`` items and how many more (``a, b, c (+4)``): a message naming them stays one line."""
    return ", ".join(items[:most]) + (f" (+{len(items) - most})" if len(items) > most else "")
