"""The run folder (``--out``): one folder per cell, written atomically, resumable.

Layout::

    cells/<key>/cell.json        what the cell is (its identity's fields)
    cells/<key>/part-*.parquet   per-image records, one file per committed range of positions
    cells/<key>/row.json         the cell's finished row (present = cell done), stamped with when it finished
    results.csv / .parquet / .md, predictions.parquet, run.json   the merged views of every finished cell

Every file is written to a temporary name and renamed into place, so a crash or kill leaves either the
old file or the new one, never a truncated one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..cells import (RECORDED_LATER, CellIdentity, newest_per_slot, normalisation_columns, same_value,
                     unlimited_fingerprints)
from ..errors import UserError
from ..metrics import failed_if_not_finite
from ..io import MARKERS, OwnedFolder, atomic_write_json, atomic_write_parquet, file_lock, remove_stale_temp_files
from ..untrusted import read_json, read_parquet, require_keys
from .provenance import measuring_versions
from .records import PART_SCHEMA
from .shards import Span, complement, merge


#: What a finished cell's row.json must hold for the merged views to place it.
ROW_KEYS = ("cell_key", "model", "scheme", "img_size", "status")
#: row.json's stamp of when the cell finished (seconds since the epoch): which of two versions of one slot
#: is newer (the files changed between them). Not a column: :meth:`CellStore.read_row` leaves it out.
FINISHED = "finished_unix"
#: The key of a part's parquet metadata that names the package versions that measured it.
MEASURED_WITH = b"measured_with"
#: The key of a part's parquet metadata that names the device that measured it (:func:`.provenance.device_kind`).
MEASURED_ON = b"measured_on"


@dataclass
class CellStore:
    """One cell's folder."""

    root: Path

    @property
    def row_path(self) -> Path:
        return self.root / "row.json"

    def is_done(self) -> bool:
        return self.row_path.is_file()

    def lock(self, on_wait=None):
        """Held while a run computes this cell: a second run on the same cell waits, then skips it."""
        return file_lock(self.root / ".lock", on_wait)

    def write_meta(self, fields: dict[str, Any]) -> None:
        if not (self.root / "cell.json").is_file():
            atomic_write_json(self.root / "cell.json", fields)

    def parts(self) -> list[tuple[int, int, Path]]:
        found = []
        for p in self.root.glob("part-*.parquet"):
            _, start, end = p.stem.split("-")
            found.append((int(start), int(end), p))
        return sorted(found)

    def covered(self) -> list[Span]:
        """The positions committed parts hold records of (parts of several ranks leave several spans)."""
        return merge((start, end) for start, end, _ in self.parts())

    def missing(self, n: int) -> list[Span]:
        """The positions of ``[0, n)`` this cell has no records of."""
        return complement(self.covered(), n)

    def done_upto(self) -> int:
        """Records exist for positions ``[0, done_upto)`` without a gap."""
        spans = self.covered()
        return spans[0][1] if spans and spans[0][0] == 0 else 0

    def write_part(self, start: int, end: int, records: pa.Table, forward_s: float, measured_on: str) -> None:
        meta = {b"forward_s": repr(forward_s).encode(), MEASURED_WITH: json.dumps(measuring_versions()).encode(),
                MEASURED_ON: measured_on.encode()}
        table = records.replace_schema_metadata(meta)
        atomic_write_parquet(self.root / f"part-{start:09d}-{end:09d}.parquet", table)

    def _fitted_grid(self, row: dict[str, Any]) -> str | None:
        """The abswin fit's global grid of a row written before rows named it: its cell.json's, where the grid
        changes the cell's numbers (a fitting scheme on a full-grid checkpoint; those versions put the grid
        into every cell.json)."""
        from ..cells import global_size_text
        from ..posembed import reads_global_grid

        if not reads_global_grid(str(row.get("scheme")), row.get("pos_embed_kind")):
            return None
        grid = self._identity().get("global_size")
        if isinstance(grid, list) and len(grid) == 2:  # as those versions wrote it
            return global_size_text(grid)
        return grid if isinstance(grid, str) else None

    def measured_with(self) -> list[dict[str, str] | None]:
        """The distinct package versions that measured this cell's committed parts (None: a part of a version
        that did not record them)."""
        found: list[dict[str, str] | None] = []
        for meta in self._parts_metadata():
            try:
                versions = json.loads(meta[MEASURED_WITH]) if MEASURED_WITH in meta else None
            except ValueError:
                versions = None
            if not isinstance(versions, (dict, type(None))):
                versions = None
            if versions not in found:
                found.append(versions)
        return found

    def measured_on(self) -> list[str]:
        """The distinct devices that measured this cell's committed parts, in the order of their positions (parts of
        versions that did not record it are not counted)."""
        found = [meta[MEASURED_ON].decode(errors="replace") for meta in self._parts_metadata() if MEASURED_ON in meta]
        return list(dict.fromkeys(found))

    def _parts_metadata(self) -> Iterable[dict[bytes, bytes]]:
        for _, _, path in self.parts():
            try:
                yield pq.read_schema(path).metadata or {}
            except (OSError, pa.ArrowException):  # damaged: reading its records says so, with the fix
                continue

    @property
    def fix(self) -> str:
        """What recomputes a damaged file of this cell: its own sweep with --force, or any sweep once it is gone
        (a run folder holds the cells of earlier sweeps too)."""
        return f"delete the folder {self.root} (or re-run the sweep that made it with --force) to recompute it"

    def read_records(self, upto: int | None = None) -> tuple[pd.DataFrame, float]:
        """All records (deduplicated by position) and the forward seconds they took."""
        table, seconds = self.record_table(upto)
        if not table.num_rows:
            return pd.DataFrame({f.name: pd.Series(dtype=object) for f in PART_SCHEMA}), 0.0
        return table.to_pandas(), seconds

    def record_table(self, upto: int | None = None, columns: Iterable[str] | None = None) -> tuple[pa.Table, float]:
        """The records below position ``upto`` (each position once: the first part that holds it) as one Arrow table
        of ``columns`` (every column when None; ``position`` always), and the forward seconds they took. Only the
        columns asked for are read: a cell's top-5 lists are most of its bytes."""
        names = PART_SCHEMA.names if columns is None else ["position", *(c for c in columns if c != "position")]
        tables, seconds, covered = [], 0.0, 0
        for start, end, path in self.parts():
            if end <= covered:
                continue
            table = read_parquet(path, "cell records", self.fix, names)
            seconds += float((table.schema.metadata or {}).get(b"forward_s", b"0"))
            tables.append(table.filter(pc.greater_equal(table["position"], covered)).replace_schema_metadata(None))
            covered = end
        if not tables:
            return pa.schema([PART_SCHEMA.field(name) for name in names]).empty_table(), 0.0
        out = pa.concat_tables(tables, promote_options="permissive")
        return (out if upto is None else out.filter(pc.less(out["position"], upto))), seconds

    def clear(self) -> None:
        """Drop the cell's records and row (``--force``); its identity stays."""
        for _, _, part in self.parts():
            part.unlink(missing_ok=True)
        self.row_path.unlink(missing_ok=True)

    def failed_images(self, upto: int | None = None) -> dict[str, str]:
        """Image id -> error of the images this cell could not decode."""
        records, _ = self.record_table(upto, ("image_id", "failed", "error"))
        bad = records.filter(pc.fill_null(records["failed"], False))
        return dict(zip(bad["image_id"].to_pylist(), bad["error"].to_pylist()))

    def write_row(self, row: dict[str, Any], finished: float | None = None) -> None:
        """Write the cell's finished row, stamped ``finished`` (a row written again keeps its stamp) or now."""
        atomic_write_json(self.row_path, {**row, FINISHED: time.time() if finished is None else finished})

    def read_row(self) -> dict[str, Any]:
        return self.read_stamped_row()[0]

    def _identity(self) -> dict[str, Any]:
        """The cell's cell.json (empty where it has none)."""
        path = self.root / "cell.json"
        return read_json(path, "cell identity", self.fix) if path.is_file() else {}

    def embedding(self) -> str | None:
        """The digest of the embedding the cell was measured with, where its scheme is not hiera-bench's own."""
        digest = self._identity().get("embedding")
        return digest if isinstance(digest, str) else None

    def data_state(self) -> str | None:
        """The state of the data files the cell was measured on (its identity's; None where it has none)."""
        state = self._identity().get("data_state")
        return state if isinstance(state, str) else None

    def read_stamped_row(self) -> tuple[dict[str, Any], float]:
        """The finished row and when it finished: its stamp, or for a row written before rows had one, the
        time row.json was last written."""
        row = dict(require_keys(read_json(self.row_path, "finished cell", self.fix), ROW_KEYS, self.row_path,
                                "finished cell", self.fix))
        stamp = row.pop(FINISHED, None)
        if "global_size" not in row:
            row["global_size"] = self._fitted_grid(row)
        if any(col not in row for col in RECORDED_LATER):  # a row of a version before tables held them
            for col, value in normalisation_columns(self._identity().get("preprocess") or {}).items():
                row.setdefault(col, value)
        row = failed_if_not_finite(row) or row
        if isinstance(stamp, bool) or not isinstance(stamp, (int, float)) or not math.isfinite(stamp):
            try:
                stamp = self.row_path.stat().st_mtime
            except OSError:  # removed since (--force of another run): the oldest
                stamp = 0.0
        return row, float(stamp)


@dataclass
class DataFiles:
    """The data a sweep reads, as it is now: which rows measured it (fingerprint, ``--data`` name), the state
    of its files and, on demand, that state as earlier versions computed it; where it lies
    (:meth:`~hiera_bench.data.DataSource.place`) and which of its images the sweep selects (``limit``,
    ``per_class``, ``class_subset``)."""

    fingerprint: str
    name: str | None
    state: str
    earlier_states: Callable[[], Iterable[str]]
    place: str | None = None
    selection: dict[str, Any] | None = None
    #: the data where it lies now under another ``(limit, per_class)``: its ``fingerprint``, ``state`` and
    #: ``earlier_states`` (:class:`~hiera_bench.sweep.run.Reselected`)
    reselect: Callable[[int | None, int | None], Any] | None = None

    def changed_since(self, row: dict[str, Any], cell: CellStore) -> bool:
        """Whether ``row`` measured this data on files that have changed since: another state of the same images,
        or other images (added, removed, relabelled) under the same ``--data`` and selection, or under another
        selection of the data where it lies (the selection as it is now read again)."""
        if (row.get("data_name") or None) != (self.name or None):
            return False
        if str(row.get("data_fingerprint")) != self.fingerprint:
            if self._same_place(row):
                return True
            if self.reselect is None or self.place is None or row.get("data_place") != self.place:
                return False
            now = self.reselect(_count(row.get("limit")), _count(row.get("per_class")))
            if str(row.get("data_fingerprint")) != now.fingerprint:
                return True
            return (found := cell.data_state()) is not None and found != now.state and found not in now.earlier_states
        state = cell.data_state()
        return state is not None and state != self.state and state not in self.earlier_states()

    def selected_as_now(self, row: dict[str, Any]) -> bool:
        """Whether ``row`` measured this data selected as this sweep selects it (whatever its images were then)."""
        return str(row.get("data_fingerprint")) == self.fingerprint or self._same_place(row)

    def _same_place(self, row: dict[str, Any]) -> bool:
        """``row`` measured the data where it lies now, selected as now: the images there have changed since (rows
        of versions that did not record the place are kept)."""
        if self.place is None or self.selection is None or row.get("data_place") != self.place:
            return False
        if row.get("data_fingerprint") in unlimited_fingerprints([row]):
            row = {**row, "limit": None}  # a limit at or above the data's size selected every image
        return all(same_value(row.get(name), value) for name, value in self.selection.items())


def _count(value: Any) -> int | None:
    """A row's ``limit`` or ``per_class`` as a count (None: not set)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else int(value)


#: The merged views a run folder shows at its top (see :mod:`.views`).
VIEWS = ("results.csv", "results.parquet", "results.md", "predictions.parquet", "run.json")
#: A run folder's own mark: files of the names in :data:`VIEWS` elsewhere are someone else's.
MARKER = MARKERS["run"]


def _cells_of_older_version(root: Path) -> bool:
    return any((root / "cells").glob("*/cell.json"))


def run_folder() -> OwnedFolder:
    """The ``--out`` folder of a sweep: its merged views and the PNGs of ``--plots``."""
    from ..plots import figure_files

    return OwnedFolder(MARKER, "--out", VIEWS + tuple(f"plots/{name}" for name in figure_files(formats=("png",))),
                       earlier=_cells_of_older_version)


#: The name end of a begun sweep's mark in ``runs/`` (:meth:`RunDir.begin_sweep`).
UNFINISHED = ".unfinished.json"


def unfinished_sweeps(root: Path, since: float) -> list[tuple[float, str | None]]:
    """When sweeps into run folder ``root`` began that started after ``since`` (the sweep its views show) and have
    not finished (:meth:`RunDir.begin_sweep`), and the model each measures."""
    begun = []
    for mark in sorted((Path(root) / "runs").glob(f"*{UNFINISHED}")):
        try:
            told = json.loads(mark.read_text())
            when, model = float(told["started_unix"]), told.get("model")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # a mark that cannot be read marks nothing
        if when > since:
            begun.append((when, model if isinstance(model, str) else None))
    return begun


def history_file(root: Path, when: float, suffix: str = ".json") -> Path:
    """``runs/<time>-<pid>-<id><suffix>`` of run folder ``root``: a name of its own per sweep, several of one
    process in one second included."""
    stamp = f"{time.strftime('%Y%m%dT%H%M%S', time.localtime(when))}-{os.getpid()}-{os.urandom(3).hex()}"
    return Path(root) / "runs" / f"{stamp}{suffix}"


def _write_mark(mark: Path, started: float, model: str | None) -> Path:
    atomic_write_json(mark, {"started_unix": round(started, 3), "pid": os.getpid(), "model": model})
    return mark


def rewrite_mark(mark: Path, started: float, model: str) -> None:
    """A :func:`mark_begun` mark, now naming the model it measures (so that ``check`` of other models in the folder
    is not held up by it)."""
    try:
        _write_mark(mark, started, model)
    except OSError:
        pass  # the mark as it was still marks the sweep, for any model


def mark_begun(root: Path, started: float, model: str | None = None) -> Path | None:
    """Mark a sweep as begun in ``root`` as soon as its run folder is known, before the checkpoint and the data
    load (``model`` None: not known yet, which ``check`` takes as any model's): a sweep that fails or is killed
    while it loads leaves the folder's earlier views unable to pass for its results. Only a folder that already
    is a run folder is marked (a new one holds no results to mistake); None where nothing was marked."""
    root = Path(root).expanduser()
    if not (root / MARKER).is_file():
        return None
    try:
        return _write_mark(history_file(root, started, UNFINISHED), started, model)
    except OSError:  # an unwritable folder: preparing it says so, with the fix
        return None


class RunDir:
    """The ``--out`` folder. It carries :data:`MARKER`; a folder with view-named files but no marker (nor
    cells of an older hiera-bench) belongs to someone else and is refused, never overwritten.

    Only the primary process (rank 0 of a torchrun job) checks, creates and cleans it: the other ranks
    only write cell parts into it, and another node's temp files must not look like a dead writer's."""

    def __init__(self, root: Path, primary: bool = True) -> None:
        self.root = Path(root)
        if not primary:
            if self.root.exists() and not self.root.is_dir():
                raise UserError(f"--out {self.root} is a file, not a folder; choose another --out")
            return
        folder = run_folder()
        folder.refuse_foreign(self.root)
        try:
            (self.root / "cells").mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".write-probe-"):  # a name of its own per call
                pass
            remove_stale_temp_files(self.root)
            folder.claim(self.root)  # the marker, listing the views and plots
        except OSError as exc:
            raise UserError(f"--out {self.root} is not writable ({exc.strerror}); choose another --out") from exc

    def begin_sweep(self, started: float, model: str, mark: Path | None = None) -> Path:
        """Mark a sweep into the folder as begun (``mark``: the one :func:`mark_begun` made before the folder was
        prepared, now naming the model); :meth:`end_sweep` removes the mark once its views are published.
        A mark left (an interrupted, failed or running sweep) tells ``check`` the views are not its results."""
        return _write_mark(mark or history_file(self.root, started, UNFINISHED), started, model)

    def history_file(self, when: float, suffix: str = ".json") -> Path:
        return history_file(self.root, when, suffix)

    @staticmethod
    def end_sweep(mark: Path) -> None:
        mark.unlink(missing_ok=True)

    def merge_lock(self):
        """Serialises rebuilding the merged views, so the last run to finish sees every row."""
        return file_lock(self.root / ".merge.lock")

    def cell(self, key: str) -> CellStore:
        return CellStore(self.root / "cells" / key)

    def _holds_cells(self) -> bool:
        folder = self.root / "cells"
        return folder.is_dir() and any(True for _ in folder.iterdir())

    def known_identity(self, identity: CellIdentity, earlier_states: Callable[[], Iterable[str]]) -> CellIdentity:
        """``identity``, or the same cell as an earlier version keyed it where only that one is in this folder:
        by a ``data_state`` it computed, or without the ``native_size`` it did not record (a finished cell
        whose row says the same native size). After an upgrade the folder's finished cells still count."""
        if self.cell(identity.key).root.is_dir() or not self._holds_cells():
            return identity  # a new folder has no earlier cells: its files are not stat'ed a second time
        unrecorded = self._without_native_size(identity)
        if unrecorded is not None:
            return unrecorded
        if identity.data_state is None:
            return identity
        for state in earlier_states():
            earlier = replace(identity, data_state=state)
            for version in (earlier, self._without_native_size(earlier)):
                if version is not None and self.cell(version.key).root.is_dir():
                    return version
        return identity

    def _without_native_size(self, identity: CellIdentity) -> CellIdentity | None:
        """``identity`` keyed as before cells recorded an abs-win checkpoint's native size, where that cell is
        finished at the same native size (its row says which; an unfinished one cannot tell: measured again)."""
        if identity.native_size is None:
            return None
        earlier = replace(identity, native_size=None)
        store = self.cell(earlier.key)
        if not store.is_done():
            return None
        try:
            native = store.read_row().get("native_size")
        except UserError:
            return None
        return earlier if same_value(native, identity.native_size) else None

    def finished_rows(self) -> list[dict[str, Any]]:
        """Every finished cell's row, older versions of a slot included (see :meth:`shown_rows`)."""
        return [row for row, _ in self.stamped_rows()]

    def stamped_rows(self) -> list[tuple[dict[str, Any], float]]:
        """Every finished cell's row and when it finished, in the order of the cells' keys."""
        # rows are replaced by one rename, so a row that cannot be read is damaged, never half-written
        return [CellStore(path.parent).read_stamped_row() for path in sorted((self.root / "cells").glob("*/row.json"))]

    def shown_rows(self, files: "DataFiles | None" = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The finished rows the views show, and those left out as measured on other files. With
        ``files`` (the data as a sweep reads it now), a cell of that data measured on files that have changed
        since is left out (it stays in ``cells/``); of the rest, of the cells of one slot the one that finished
        last."""
        rows = self.stamped_rows()
        if files is None:
            return newest_per_slot(rows), []
        stale = [files.changed_since(row, self.cell(str(row["cell_key"]))) for row, _ in rows]
        return (newest_per_slot(r for r, out in zip(rows, stale) if not out),
                [row for (row, _), out in zip(rows, stale) if out])

    def predictions(self, keys: Iterable[str]) -> pa.Table | None:
        tables = []
        for key in keys:
            store = self.cell(key)
            if not store.is_done():
                continue
            row = store.read_row()
            records, _ = store.record_table()
            if not records.num_rows:
                continue
            n = records.num_rows
            # the cell named exactly (its key), even when a run dir holds several subsets
            named = {"model": pa.repeat(pa.scalar(row["model"], pa.string()), n),
                     "scheme": pa.repeat(pa.scalar(row["scheme"], pa.string()), n),
                     "img_size": pa.repeat(pa.scalar(int(row["img_size"]), pa.int64()), n),
                     "cell_key": pa.repeat(pa.scalar(key, pa.string()), n)}
            tables.append(pa.Table.from_arrays([*named.values(), *records.columns], [*named, *records.column_names]))
        return pa.concat_tables(tables, promote_options="default") if tables else None
