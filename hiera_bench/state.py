"""Process-wide settings a sweep changes while it runs (torch's default dtype, datasets' logging, warning
filters), shared by the sweeps of one process: made when the first starts, undone when the last ends, so
sweeps in overlapping threads neither undo each other's settings nor leave theirs behind."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator


class ProcessSetting:
    """A change to process-wide state; ``apply()`` makes it and returns the function that undoes it."""

    def __init__(self, apply: Callable[[], Callable[[], None]]) -> None:
        self._apply = apply
        self._undo: Callable[[], None] | None = None
        self._users = 0
        self._lock = threading.Lock()

    @contextmanager
    def held(self) -> Iterator[None]:
        """The setting in force inside; undone once no one holds it."""
        with self._lock:
            if self._users == 0:
                self._undo = self._apply()
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0 and self._undo is not None:
                    self._undo()
                    self._undo = None
