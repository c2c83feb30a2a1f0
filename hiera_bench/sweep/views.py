"""The merged views of a run folder — results.csv/.parquet/.md, predictions.parquet, run.json — written as
one consistent set.

All five are written into a new generation folder ``.views/<generation>/``; then one atomic rename
points ``.views/current`` at it. The names at the top of the run folder are symbolic links through
``.views/current``, so a reader sees every view of one generation or every view of the next, never a
mix, whenever the writer is interrupted. A folder written by an older version (plain files) is first
turned into a generation of its own, each step leaving the old views in place.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pyarrow as pa

from ..cells import args_superseded, series_names, slot, unlimited_fingerprints
from ..interrupts import deferred
from ..io import atomic_write_json, atomic_write_parquet, atomic_write_text, writer
from ..pivot import markdown, pivot
from ..stats import annotate, native_deltas
from .provenance import iso_time
from .rows import tidy_table
from .store import VIEWS, DataFiles, RunDir

GENERATIONS = ".views"
CURRENT = "current"


def current_views(root: Path) -> Path:
    """The folder holding a run folder's current views (the run folder itself for older folders)."""
    link = Path(root) / GENERATIONS / CURRENT
    return link.resolve() if link.is_symlink() else Path(root)


def write_views(run_dir: RunDir, table: pd.DataFrame, run_info: dict[str, Any],
                t_start: float | None = None, files: DataFiles | None = None,
                draw: Callable[[pd.DataFrame], None] | None = None,
                refresh: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> pd.DataFrame:
    """Every finished cell of the folder (other sweeps' too) merged with ``table``, annotated with the
    statistics of the per-image records, written as one generation; returns the merged table. With the
    sweep's ``t_start``, run.json's ``finished`` and ``wall_s`` are stamped once the statistics are made; with
    its ``files``, cells of that data measured on files that have changed since are left out of the views
    (counted in run.json's ``cells_of_changed_files``). ``draw`` makes figures of the merged table while it is
    the folder's current one (no other sweep publishes in between); ``refresh`` gives each earlier sweep's row as the
    views show it now (scored again with the sweep's ReaL labels), or None to leave it out."""
    with run_dir.merge_lock():
        mine = table.to_dict("records")
        # of several cells of one slot (the files changed between runs) only one is shown: this sweep's, which
        # measured the files as they are now, or else the one that finished last
        shown, changed = run_dir.shown_rows(files)
        if refresh is not None:
            shown = [now for now in map(refresh, shown) if now is not None]
        free = unlimited_fingerprints([*mine, *shown, *changed])
        taken = {slot(r, free) for r in mine}
        rows = _named_as_now([r for r in shown if slot(r, free) not in taken], mine) + mine
        if files is not None:
            # a place this sweep measured on the files as they are now (whatever their images) is not missed
            now = {slot({**r, "data_fingerprint": files.fingerprint} if files.selected_as_now(r) else r, free)
                   for r in changed}
            run_info["cells_of_changed_files"] = len(now - taken)
        superseded = args_superseded(rows, mine)
        if any(superseded):
            run_info["cells_of_other_model_args"] = sum(superseded)
            rows = [r for r, out in zip(rows, superseded) if not out]
        t_stats = time.time()
        merged = tidy_table(rows)
        merged["top1_delta_vs_native"] = native_deltas(merged)
        predictions = run_dir.predictions(merged["cell_key"].dropna())
        if predictions is not None:
            merged = annotate(merged, predictions)
        done = time.time()
        run_info.setdefault("timing", {})["statistics_s"] = round(done - t_stats, 3)
        if t_start is not None:
            run_info.update(finished=iso_time(done), wall_s=round(done - t_start, 3))
        _publish(run_dir.root, merged, predictions, run_info)
        atomic_write_json(run_dir.history_file(time.time()), run_info)
        if draw is not None:
            draw(merged)
        return merged


def _named_as_now(rows: list[dict[str, Any]], mine: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` of earlier sweeps, those of a checkpoint this sweep measured under the label it gives now: a
    ``--label`` names the checkpoint, so a renamed one stays one column group with its native cell."""
    names = {(r.get("model"), r.get("checkpoint_sha256")): r["label"] for r in mine if r.get("label")}
    return [dict(r, label=names.get((r.get("model"), r.get("checkpoint_sha256")), r.get("label"))) for r in rows]


def _publish(root: Path, table: pd.DataFrame, predictions: pa.Table | None, run_info: dict[str, Any]) -> None:
    generations = root / GENERATIONS
    _adopt_plain_views(root)
    new = generations / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    new.mkdir(parents=True)
    atomic_write_text(new / "results.csv", table.to_csv(index=False))
    atomic_write_parquet(new / "results.parquet", pa.Table.from_pandas(table, preserve_index=False))
    # several measurements of one model (other --limit, data, checkpoint) get a section each
    atomic_write_text(new / "results.md", markdown(pivot(table)) if len(table) else "")
    if predictions is not None:
        atomic_write_parquet(new / "predictions.parquet", predictions)
    atomic_write_json(new / "run.json", run_info)
    _link(generations / CURRENT, new.name)  # the one step that publishes every view at once
    for name in VIEWS:
        _link(root / name, f"{GENERATIONS}/{CURRENT}/{name}")
    for old in generations.iterdir():
        if old.is_dir() and not old.is_symlink() and old.name != new.name:
            shutil.rmtree(old, ignore_errors=True)


def _adopt_plain_views(root: Path) -> None:
    """Views an older version wrote as plain files become generation ``legacy`` first; every step of this
    leaves each name showing the old content."""
    plain = [name for name in VIEWS if (root / name).is_file() and not (root / name).is_symlink()]
    current = root / GENERATIONS / CURRENT
    if current.is_dir() and not current.is_symlink():
        # a copy that followed the links (cp -rL, zip, a CI artifact): the link is a folder of its own now, and no
        # link can replace a folder in one rename; it becomes one more generation, removed once a new one is current
        os.replace(current, current.with_name(f"copied-{writer()}"))
    if not plain or current.is_symlink():
        return
    legacy = root / GENERATIONS / "legacy"
    legacy.mkdir(parents=True, exist_ok=True)
    for name in plain:
        if not (legacy / name).exists():
            os.link(root / name, legacy / name)
    _link(current, "legacy")
    for name in plain:
        _link(root / name, f"{GENERATIONS}/{CURRENT}/{name}")


def _link(path: Path, target: str) -> None:
    """Make ``path`` a symbolic link to ``target`` (relative), replacing what is there in one rename."""
    if path.is_symlink() and os.readlink(path) == target:
        return
    tmp = path.with_name(f".{path.name}.{writer()}.link.tmp")
    with deferred():
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        try:
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _mine(merged: pd.DataFrame, table: pd.DataFrame) -> pd.Series:
    return merged["cell_key"].isin(set(table["cell_key"].dropna())) | merged["cell_key"].isna()


def this_sweeps_rows(merged: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``table`` (this sweep's cells and skipped sizes), now with the merged statistics."""
    return merged[_mine(merged, table)].reset_index(drop=True)


def this_sweeps_series(merged: pd.DataFrame, table: pd.DataFrame) -> pd.Series:
    """The series of :func:`this_sweeps_rows` as the views name them beside the earlier cells: a sweep of a second
    abswin global grid is "abswin (global 2x2)" in results.md, and was plain "abswin" in the sweep's own table."""
    return series_names(merged)[_mine(merged, table)].reset_index(drop=True)
