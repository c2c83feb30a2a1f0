"""The run directory: per-cell files written atomically, resume keys, and the tidy tables.

Layout of ``--out``::

    cells/<key>/cell.json        what the cell is (its key fields)
    cells/<key>/part-*.parquet   per-image records, one file per committed chunk of images
    cells/<key>/row.json         the cell's finished row (present = cell done)
    results.csv / .parquet / .md, predictions.parquet, run.json   merged views, rebuilt at the end

Every file is written to a temporary name and renamed into place, so a crash or kill leaves
either the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import UserError
from .interrupts import deferred

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: runs into one --out are not serialised
    fcntl = None

#: Columns of the tidy table, in order: one row per model x scheme x size.
COLUMNS = [
    "model", "arch", "pretrained_tag", "checkpoint", "checkpoint_sha256", "pos_embed_kind",
    "scheme", "img_size", "native_size", "rel_size", "crop_pct", "interpolation",
    "n_images", "n_failed", "top1", "top5", "nll", "ece", "top1_delta_vs_native",
    "real_top1", "real_top5", "imgs_per_s", "gflops", "forward_s", "device", "dtype", "status", "reason", "shared_with",
    "explained_energy", "data", "data_layout", "data_fingerprint", "limit", "cell_key",
]

PART_SCHEMA = pa.schema([
    ("position", pa.int64()), ("image_id", pa.string()), ("target", pa.int32()),
    ("topk", pa.list_(pa.int32())), ("correct1", pa.bool_()), ("correct5", pa.bool_()),
    ("nll", pa.float32()), ("confidence", pa.float32()), ("failed", pa.bool_()), ("error", pa.string()),
])


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with deferred():  # a Ctrl-C waits for the rename: no temp file is left, no file is half-published
        # the writer's pid in the name lets a later run remove what a killed writer left behind
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(root: Path) -> int:
    """Delete temp files whose writer process is gone (killed mid-write); returns how many."""
    removed = 0
    for tmp in root.rglob(".*.tmp"):
        parts = tmp.name.split(".")
        pid = next((int(p) for p in parts if p.isdigit()), None)
        if pid is not None and not _pid_alive(pid):
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


@contextmanager
def file_lock(path: Path, on_wait=None):
    """An exclusive advisory lock held for the ``with`` block; ``on_wait()`` is called if it must wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        if fcntl is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait:
                    on_wait()
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def cell_key(fields: dict[str, Any]) -> str:
    """Stable id of a cell from everything that decides its numbers."""
    blob = json.dumps(fields, sort_keys=True, default=_json_default)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


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

    def done_upto(self) -> int:
        """Records exist for positions ``[0, done_upto)`` without a gap."""
        upto = 0
        for start, end, _ in self.parts():
            if start <= upto:
                upto = max(upto, end)
        return upto

    def write_part(self, start: int, end: int, records: pa.Table, forward_s: float) -> None:
        meta = {b"forward_s": repr(forward_s).encode()}
        table = records.replace_schema_metadata(meta)
        atomic_write_parquet(self.root / f"part-{start:09d}-{end:09d}.parquet", table)

    def read_records(self, upto: int | None = None) -> tuple[pd.DataFrame, float]:
        """All records (deduplicated by position) and the forward seconds they took."""
        frames, seconds, covered = [], 0.0, 0
        for start, end, path in self.parts():
            if end <= covered:
                continue
            table = pq.read_table(path)
            seconds += float((table.schema.metadata or {}).get(b"forward_s", b"0"))
            frame = table.to_pandas()
            frames.append(frame[frame["position"] >= covered])
            covered = end
        if not frames:
            return pd.DataFrame({f.name: pd.Series(dtype=object) for f in PART_SCHEMA}), 0.0
        df = pd.concat(frames, ignore_index=True)
        if upto is not None:
            df = df[df["position"] < upto]
        return df, seconds

    def write_row(self, row: dict[str, Any]) -> None:
        atomic_write_json(self.row_path, row)

    def read_row(self) -> dict[str, Any]:
        return json.loads(self.row_path.read_text())


class RunDir:
    """The ``--out`` folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"--out {self.root} is a file, not a folder; choose another --out")
        try:
            (self.root / "cells").mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-probe-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
            remove_stale_temp_files(self.root)
        except OSError as exc:
            raise UserError(f"--out {self.root} is not writable ({exc.strerror}); choose another --out") from exc

    def merge_lock(self):
        """Serialises rebuilding the merged views, so the last run to finish sees every row."""
        return file_lock(self.root / ".merge.lock")

    def cell(self, key: str) -> CellStore:
        return CellStore(self.root / "cells" / key)

    def finished_rows(self) -> list[dict[str, Any]]:
        rows = []
        for path in sorted((self.root / "cells").glob("*/row.json")):
            try:
                rows.append(json.loads(path.read_text()))
            except (OSError, json.JSONDecodeError):
                continue  # a row being replaced right now by another run
        return rows

    def predictions(self, keys: Iterable[str]) -> pa.Table | None:
        tables = []
        for key in keys:
            store = self.cell(key)
            if not store.is_done():
                continue
            row = store.read_row()
            df, _ = store.read_records()
            if df.empty:
                continue
            df.insert(0, "cell_key", key)  # names the cell exactly, even when a run dir holds several subsets
            df.insert(0, "img_size", int(row["img_size"]))
            df.insert(0, "scheme", row["scheme"])
            df.insert(0, "model", row["model"])
            tables.append(pa.Table.from_pandas(df, preserve_index=False))
        return pa.concat_tables(tables, promote_options="default") if tables else None


def tidy_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> the tidy table with :data:`COLUMNS`, sorted by model, size, scheme."""
    df = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in df:
            df[col] = np.nan
    df = df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]
    return df.sort_values(["model", "img_size", "scheme"], kind="stable").reset_index(drop=True)


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, spec)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def format_cell(r: Any, native: int, pm: str = "±", dagger: str = "†", equiv: str = "≡") -> str:
    """top-1, ± half the 95 % CI, Δ vs native with its McNemar stars, † when it differs from the reference scheme."""
    from .stats import significance_mark

    if r["status"] != "ok":
        return f"skipped ({r['reason']})"
    text = _fmt(r["top1"], ".3f")
    low, high = r.get("top1_ci_low"), r.get("top1_ci_high")
    if not (_missing(low) or _missing(high)):
        text += f" {pm} {(high - low) / 2:.2f}"
    if int(r["img_size"]) != native:
        text += f" ({_fmt(r['top1_delta_vs_native'], '+.3f')}{significance_mark(r.get('delta_p'))})"
    p = r.get("mcnemar_p")
    if not _missing(p) and p < 0.05:
        text += dagger
    if isinstance(r.get("shared_with"), str) and r["shared_with"]:
        text += f" {equiv}"
    return text


def legend(part: pd.DataFrame) -> list[str]:
    """The notes a pivot of ``part`` needs, one per line."""
    notes = []
    if "top1_ci_low" in part and part["top1_ci_low"].notna().any():
        notes.append("± half-width of the 95 % bootstrap CI (images resampled); Δ vs the native size of the same "
                     "scheme, paired over the same images; * p<0.05, ** p<0.01, *** p<0.001 (exact McNemar).")
    if "mcnemar_p" in part and (part["mcnemar_p"] < 0.05).any():
        ref = next(r for r in part["mcnemar_ref"] if isinstance(r, str) and r)
        notes.append(f"† differs from {ref} at this size (exact McNemar, p<0.05).")
    if part["shared_with"].fillna("").astype(str).str.len().gt(0).any():
        notes.append("≡ identical embedding to another scheme at this size: evaluated once, reported for both.")
    return notes


def markdown_pivot(df: pd.DataFrame) -> str:
    """Per model: rows = size, columns = scheme, cells = top-1 ± CI (Δ vs native, significance); ready to paste."""
    out = []
    for model, part in df.groupby("model", sort=False):
        native = int(part["native_size"].iloc[0])
        schemes = list(dict.fromkeys(part["scheme"]))
        out.append(f"### {model} (native {native} px, top-1 % and Δ vs native)\n")
        out.append("| size | rel | " + " | ".join(schemes) + " |")
        out.append("|---:|---:|" + "---:|" * len(schemes))
        for size, at in part.groupby("img_size", sort=True):
            cells = []
            for scheme in schemes:
                row = at[at["scheme"] == scheme]
                cells.append("" if row.empty else format_cell(row.iloc[0], native))
            mark = " **native**" if int(size) == native else ""
            out.append(f"| {int(size)}{mark} | {_fmt(float(size) / native, '.2f')} | " + " | ".join(cells) + " |")
        notes = legend(part)
        if notes:
            out.append("\n" + "  \n".join(notes))
        out.append("\n" + headline(part) + "\n")
    return "\n".join(out).rstrip() + "\n"


def headline(part: pd.DataFrame) -> str:
    """One line: the best size and scheme against the native size of that scheme, and whether it is significant."""
    ok = part[part["status"] == "ok"]
    if ok.empty:
        return "no cell evaluated"
    # ties go to the size closest to native: a change of size must earn its place
    ranked = ok.assign(_dist=(ok["img_size"] / ok["native_size"] - 1.0).abs())
    best = ranked.sort_values(["top1", "_dist", "img_size"], ascending=[False, True, True], kind="stable").iloc[0]
    native = int(best["native_size"])
    base = ok[ok["img_size"] == native]
    base = base[base["scheme"] == best["scheme"]] if (base["scheme"] == best["scheme"]).any() else base
    rel = 100.0 * (int(best["img_size"]) / native - 1.0)
    text = f"best: {best['scheme']} @{int(best['img_size'])} ({rel:+.0f} %): {best['top1']:.3f} top-1"
    if not base.empty:
        text += f", {best['top1'] - base['top1'].iloc[0]:+.3f} vs native {native} ({base['top1'].iloc[0]:.3f})"
        low, high, p = best.get("delta_ci_low"), best.get("delta_ci_high"), best.get("delta_p")
        if int(best["img_size"]) != native and not (_missing(low) or _missing(p)):
            verdict = "significant" if p < 0.05 else "not significant"
            text += f", 95 % CI [{low:+.2f}, {high:+.2f}], p={p:.2g} ({verdict})"
    return text


def write_tables(root: Path, df: pd.DataFrame) -> None:
    """results.csv, results.parquet and results.md, each atomically."""
    atomic_write_text(root / "results.csv", df.to_csv(index=False))
    atomic_write_parquet(root / "results.parquet", pa.Table.from_pandas(df, preserve_index=False))
    # several measurements of one model (other --limit, data, checkpoint) get a section each
    from .report import section_labels

    atomic_write_text(root / "results.md", markdown_pivot(df.assign(model=section_labels(df))) if len(df) else "")
