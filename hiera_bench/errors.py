"""The one exception type for mistakes a user can fix, and a helper that keeps its message one line."""

from __future__ import annotations

import errno
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


#: What helps with an OS error the library did not turn into a UserError, by errno (writes, mostly).
OS_ADVICE = {
    errno.ENOSPC: "free space",
    errno.EDQUOT: "free space or raise your quota",
    errno.EACCES: "fix permissions",
    errno.EPERM: "fix permissions",
    errno.EROFS: "choose a writable folder",
}


def is_os_error(exc: BaseException) -> bool:
    """An OS error with an errno (a full disk, a permission): one line that names the file and what helps."""
    return isinstance(exc, OSError) and exc.errno is not None


def os_error_text(exc: OSError) -> str:
    """``No space left on device: /run/cells/x``: the error and the file, where known."""
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or errno.errorcode.get(exc.errno or 0, 'OS error')}{where}"


def os_advice(exc: OSError) -> str:
    """What helps with ``exc`` (``free space``)."""
    return OS_ADVICE.get(exc.errno or 0, "check the path")
