"""The one exception type for mistakes a user can fix."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix: the CLI prints its one-line message and exits with code 2.

    The message says what is wrong and what to do about it. Anything else raised is a bug
    and keeps its traceback.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))
