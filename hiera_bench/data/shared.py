"""Decoded crops shared by the checkpoints of one command (``sweep -m A -m B``, ``-c X -c Y``).

One model is in memory at a time, so checkpoint B cannot ride along on checkpoint A's image loop. Instead A's
loop keeps every uint8 crop it cuts (the output of :class:`~hiera_bench.preprocess.MultiSizeTransform`,
before normalisation) in a file per view (size, crop_pct), and B's loop reads them back where its preprocessing geometry and
data are the same, decoding only what A did not keep. The crops are the same bytes either way, so B's numbers
are those of a run of its own; cells do not change.

Files live in a folder of their own under the system temp dir (``$TMPDIR``: node-local scratch under SLURM),
have their space reserved when they are made, and are deleted when the command ends; a folder a killed command left behind is
removed by the next one on the host. Sharing is skipped, with a note, when the temp dir lacks the space (or
refuses to reserve it), under
torchrun (ranks on several nodes would not see one another's files) and for ``--decode device``;
``HIERA_BENCH_SHARE_DECODES=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..io import writer, writer_gone
from ..preprocess import View

PREFIX = "hiera-bench-decoded-"
#: Room left free in the temp dir beyond the crops themselves.
SPARE_BYTES = 1 << 30
#: A flag per (view, position): not yet kept, kept, kept and above PIL's decompression-bomb limit.
ABSENT, KEPT, KEPT_LARGE = 0, 1, 2


def geometry_key(preprocess_fields: dict[str, Any], data_fingerprint: str, data_state: str) -> str:
    """What decides a crop's bytes besides its view (size and crop_pct): the data's files and the resize
    geometry (mean and std are applied later, on the device)."""
    geometric = {k: preprocess_fields[k] for k in ("interpolation", "crop_mode")}
    blob = json.dumps([geometric, data_fingerprint, data_state], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def crop_bytes(n_images: int, views: Sequence[View]) -> int:
    return n_images * sum(3 * size * size for size, _ in views)


def _name(view: View) -> str:
    return f"{view[0]}-{view[1]:g}"


@dataclass
class DecodedCrops:
    """The kept crops of one data set under one geometry: ``(n_images, 3, R, R)`` uint8 per view (size R, crop),
    mapped lazily in each process that reads or writes them (DataLoader workers included)."""

    folder: Path
    n_images: int
    views: tuple[View, ...]
    write: bool = True  # False for the command's last checkpoint: nothing after it would read them
    _maps: dict[View, tuple[np.memmap, np.memmap]] = field(default_factory=dict, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": {}}  # a worker maps the files itself; a pickled memmap is a copy

    def _map(self, view: View) -> tuple[np.memmap, np.memmap]:
        if view not in self._maps:
            size = view[0]
            crops = np.memmap(self.folder / f"crops-{_name(view)}.u8", np.uint8, "r+",
                              shape=(self.n_images, 3, size, size))
            flags = np.memmap(self.folder / f"flags-{_name(view)}.u8", np.uint8, "r+", shape=(self.n_images,))
            self._maps[view] = crops, flags
        return self._maps[view]

    def read(self, position: int) -> tuple[dict[View, torch.Tensor], bool] | None:
        """``(crop per view, large)`` when every view of this loop was kept for ``position``, else None."""
        flags = [self._map(view)[1][position] for view in self.views]
        if not all(flags):
            return None
        return ({view: torch.from_numpy(np.array(self._map(view)[0][position])) for view in self.views},
                any(f == KEPT_LARGE for f in flags))

    def keep(self, position: int, crops: dict[View, torch.Tensor], large: bool) -> None:
        """Keep ``position``'s crops for the checkpoints after this one (the flag last: a crop is read only
        once it is whole)."""
        if not self.write:
            return
        for view, crop in crops.items():
            data, flags = self._map(view)
            if not flags[position]:
                data[position] = crop.numpy()
                flags[position] = KEPT_LARGE if large else KEPT


class SharedDecodes:
    """The decoded crops of one command, for the checkpoints it sweeps one after the other (``runs``: how
    many; the last one only reads). A context manager: its folder is removed on exit."""

    def __init__(self, runs: int, log: Callable[[str], None] = print, root: Path | None = None) -> None:
        self.runs, self.log = runs, log
        self.root = Path(root or tempfile.gettempdir())
        self.folder: Path | None = None
        self.started = 0

    def __enter__(self) -> "SharedDecodes":
        remove_stale(self.root)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def crops(self, preprocess_fields: dict[str, Any], data_fingerprint: str, data_state: str, n_images: int,
              views: Sequence[View]) -> DecodedCrops | None:
        """The crops a run's loop reads and keeps; None when they cannot be shared (see the module)."""
        self.started += 1
        if self.runs < 2 or os.environ.get("HIERA_BENCH_SHARE_DECODES", "1") == "0":
            return None
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{writer()}-", dir=self.root))
        folder = self.folder / geometry_key(preprocess_fields, data_fingerprint, data_state)
        folder.mkdir(exist_ok=True)
        new = [v for v in views if not (folder / f"crops-{_name(v)}.u8").exists()]
        if self.started == self.runs:  # the last run only reads: at a view no earlier run kept there is nothing
            return None if new else DecodedCrops(folder, n_images, tuple(views), write=False)
        need, free = crop_bytes(n_images, new), shutil.disk_usage(self.folder).free
        if need + SPARE_BYTES > free:
            self.log(f"decoded images are not shared between checkpoints: they need {need / 1e9:.1f} GB in "
                     f"{self.root} and {free / 1e9:.1f} GB are free (point TMPDIR at a larger disk to share them)")
            return None
        made = []
        try:
            for view in new:
                size = view[0]
                for name, length in ((f"crops-{_name(view)}.u8", n_images * 3 * size * size),
                                     (f"flags-{_name(view)}.u8", n_images)):
                    made.append(folder / name)
                    reserve(made[-1], length)
        except OSError as exc:
            for path in made:
                path.unlink(missing_ok=True)
            self.log(f"decoded images are not shared between checkpoints: {self.root} could not reserve the "
                     f"{need / 1e9:.1f} GB they need ({exc.strerror or exc}; point TMPDIR at a larger disk to share them)")
            return None
        return DecodedCrops(folder, n_images, tuple(views))


def reserve(path: Path, length: int) -> None:
    """A file of ``length`` bytes whose blocks are allocated now. The crops are written through memory maps: into a
    sparse file on a disk that filled since (other jobs on the node), a write kills the process with SIGBUS, no
    message and no clean-up; a reservation fails here instead, as an OSError."""
    with open(path, "wb") as fh:
        if length and hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fh.fileno(), 0, length)
        elif length:  # macOS and Windows have no posix_fallocate: sparse, as the space check left it
            fh.truncate(length)


def remove_stale(root: Path) -> int:
    """Delete crop folders whose command on this host is gone (killed); returns how many."""
    removed = 0
    for folder in root.glob(f"{PREFIX}*"):
        if writer_gone(folder.name[len(PREFIX):].rsplit("-", 1)[0]):  # <host>-<pid>-<mkdtemp suffix>
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed
