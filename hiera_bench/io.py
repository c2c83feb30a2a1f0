"""Files hiera-bench writes, written so that a crash, a kill or a full disk never leaves a torn one.

Every file goes to a temporary name in its folder, is fsynced, then renamed into place: a reader sees
the old file or the new one. Temporary names carry the writer's host and pid, so a later run on the same
host removes what a killed writer left behind (and never a live writer's file on another node of a
torchrun job sharing the folder). Locks serialise runs that share a folder.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import UserError, listed
from .interrupts import deferred

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: runs into one --out are not serialised
    fcntl = None


@cache
def file_mode() -> int:
    """The mode a plain ``open()`` would give a new file (0666 less the umask): temp files are created 0600,
    and results on a shared filesystem must stay readable by the colleagues the umask lets read them."""
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return 0o666 & ~mask


def dir_mode() -> int:
    """The mode a plain ``mkdir()`` would give a new folder (0777 less the umask)."""
    return file_mode() | (file_mode() & 0o444) >> 2


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with deferred():  # a Ctrl-C waits for the rename: no temp file is left, no file is half-published
        # the writer's pid in the name lets a later run remove what a killed writer left behind
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{writer()}.", suffix=".tmp")
        try:
            os.fchmod(fd, file_mode())
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0]) or "host"


def writer() -> str:
    """``<host>-<pid>``: who writes a temp file, in its name (no dots: names are split on them)."""
    return f"{_host()}-{os.getpid()}"


_WRITER = re.compile(r"^(?:(?P<host>[A-Za-z0-9-]+)-)?(?P<pid>\d+)$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def writer_gone(tag: str) -> bool:
    """``tag`` (a :func:`writer`) names a process of this host that is gone. Writers on other hosts are never
    gone here: their pids mean nothing on this one. A tag without a host (older versions) is this host's."""
    match = _WRITER.match(tag)
    if match is None or (match["host"] or _host()) != _host():
        return False
    return not _pid_alive(int(match["pid"]))


def remove_stale_temp_files(root: Path) -> int:
    """Delete temp files whose writer process on this host is gone (killed mid-write); returns how many."""
    removed = 0
    for tmp in root.rglob(".*.tmp"):
        parts = tmp.name.split(".")  # .<name>.<writer>.<random or "link">.tmp: the writer is third from the end
        if len(parts) >= 4 and writer_gone(parts[-3]):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def atomic_write_parquet(path: Path, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


#: What ``flock`` fails with where the filesystem offers no locks (Lustre mounted without ``-o flock``, NFS
#: without a lock daemon, some FUSE mounts).
NO_LOCKS = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL}


@contextmanager
def file_lock(path: Path, on_wait=None):
    """An exclusive advisory lock held for the ``with`` block; ``on_wait()`` is called if it must wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        if fcntl is not None:
            try:
                _flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB, path)
            except BlockingIOError:
                if on_wait:
                    on_wait()
                _flock(fh, fcntl.LOCK_EX, path)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _flock(fh, operation: int, path: Path) -> None:
    try:
        fcntl.flock(fh.fileno(), operation)
    except BlockingIOError:
        raise
    except OSError as exc:
        if exc.errno not in NO_LOCKS:
            raise
        raise UserError(f"{path.parent} is on a filesystem without file locks (flock: {exc.strerror}); runs "
                        "sharing a folder lock it so that no two compute one cell or rewrite the results at once: "
                        "put --out on a filesystem with locks (a local disk; Lustre mounted with -o flock; NFS with "
                        "its lock service)") from exc


def _never(root: Path) -> bool:
    return False


#: The marker of each kind of folder hiera-bench writes: a folder with any of them is hiera-bench's.
MARKERS = {"run": ".hiera-bench-run", "report": ".hiera-bench-report", "inspect": ".hiera-bench-inspect",
           "demo": ".hiera-bench-demo", "export": ".hiera-bench-export"}


def _manifest(marker: Path) -> set[str] | None:
    """The files a marker says its command wrote; None for a marker without that list (a run folder's from before
    it, an export's)."""
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = data.get("files") if isinstance(data, dict) else None
    return {str(f) for f in files} if isinstance(files, list) else None


def written_here(root: Path) -> dict[str, str]:
    """Every file the markers in ``root`` say hiera-bench wrote there -> the kind of folder whose marker lists it
    (``run``, ``report``, ...; the first kind listing it)."""
    found: dict[str, str] = {}
    for kind, marker in MARKERS.items():
        for name in _manifest(Path(root) / marker) or ():
            found.setdefault(name, kind)
    return found


@dataclass(frozen=True)
class OwnedFolder:
    """A folder a command writes files of fixed names into (a run, a report, an inspection, the demo).

    Its ``marker`` lists the files the command wrote there. A file of one of its ``names`` (paths relative to the
    folder) that no marker in the folder lists is someone else's: the folder is refused and the file never
    overwritten (``report -o ~/paper`` must not replace the user's report.tex, nor may a report replace it in a
    folder an ``inspect`` wrote into). ``earlier`` recognises a folder an older hiera-bench wrote before markers,
    and a marker of this kind without a list (an older run folder's) covers the kind's own names.
    """

    marker: str
    option: str
    names: tuple[str, ...]
    earlier: Callable[[Path], bool] = _never

    def foreign(self, root: Path) -> list[str]:
        """The files of ``root`` this folder's writer would replace that it did not write: the user's, or another
        command's (a sweep into a report's folder must not replace the report's figures)."""
        root = Path(root)
        own = root / self.marker
        if not root.is_dir():
            return []
        if own.is_file() and _manifest(own) is None or not own.is_file() and self.earlier(root):
            return []  # written before markers listed files, or before there were markers
        ours = _manifest(own) or set()
        return sorted(name for name in self.names if os.path.lexists(root / name) and name not in ours)

    def refuse_foreign(self, root: Path) -> None:
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise UserError(f"{self.option} {root} is a file, not a folder; choose another {self.option}")
        foreign = self.foreign(root)
        if not foreign:
            return
        by = written_here(root)
        users = [name for name in foreign if name not in by]
        if users:
            raise UserError(f"{self.option} {root} holds {listed(users)} that hiera-bench did not write (no marker "
                            f"lists it); choose another {self.option}, or move those files away")
        kinds = " and ".join(sorted({by[name] for name in foreign}))
        raise UserError(f"{self.option} {root} holds {listed(foreign)} that another hiera-bench command wrote there "
                        f"(its {kinds} output, which this one would replace); choose another {self.option}")

    def claim(self, root: Path) -> Path:
        """``root``, created, with its marker listing this command's files; refused (one line) if it holds
        someone else's file of those names."""
        root = Path(root)
        self.refuse_foreign(root)
        own = root / self.marker
        listed_before = _manifest(own) or set()
        if not set(self.names) <= listed_before:
            atomic_write_json(own, {"written_by": "hiera-bench", "files": sorted(listed_before | set(self.names))})
        return root


def first_line_is(name: str, line: str) -> Callable[[Path], bool]:
    """``earlier`` of an :class:`OwnedFolder`: the folder's file ``name`` starts with ``line`` (an old
    hiera-bench's heading)."""
    def written_by_us(root: Path) -> bool:
        try:
            with open(Path(root) / name, encoding="utf-8", errors="replace") as fh:
                return fh.readline().rstrip("\n") == line
        except OSError:
            return False
    return written_by_us
