"""Merge run folders into one annotated tidy table and write it as markdown, CSV, LaTeX and plots.

Runs may hold different models, checkpoints or data subsets: cells are merged by their key and label, and
statistics only pair cells of the same model, checkpoint, data, preprocessing and label
(:func:`hiera_bench.cells.group_ids`). Each run is named by its label (``sweep --label``, or
``report --label`` per run; by default the model's name); one label measured under several of those gets
one column group per combination, named by what differs (:func:`hiera_bench.cells.section_labels`).
Everything goes into one table and one set of overlaid figures.
"""

from __future__ import annotations

import json
import numbers
import time
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa

from .cells import (GROUP_COLUMNS, missing, same_value, section_labels, slot, unlimited_fingerprints, with_defaults,
                    with_row_keys)
from .errors import UserError, listed
from .io import MARKERS, OwnedFolder, atomic_write_parquet, atomic_write_text, first_line_is
from .metrics import NO_RESULT, failed_if_not_finite
from .pivot import latex, markdown, pivot
from .stats import STAT_COLUMNS, annotate, outcomes, with_cell_keys
from .untrusted import (RESWEEP, check_label, parquet_columns, read_json, read_parquet, reading,
                        require_whole_rows)
from .sweep.rows import tidy_table
from .sweep.views import GENERATIONS, current_views

#: What every predictions.parquet has (``cell_key`` came later; older folders name their cells by model, scheme
#: and size).
_PRED_REQUIRED = ["model", "scheme", "img_size", "image_id", "correct1", "failed"]


@dataclass
class Run:
    """One run folder's tidy table and where its per-image predictions are (read by :func:`read_records`, only the
    cells asked for)."""

    root: Path
    table: pd.DataFrame
    records: Path | None


def read_table(path: Path) -> pd.DataFrame:
    """A results table from a run folder (its results.parquet, else results.csv) or a results file; the file
    read is in ``.attrs["source"]`` (a run folder's views folder, where its run.json is, in ``.attrs["views"]``, and
    the run folder in ``.attrs["run_folder"]``; its own results file counts as the folder).
    A run folder whose results.csv no longer says what its parquet says
    (edited by hand, or half-copied) is refused rather than read one way or the other."""
    path, views, folder = Path(path), None, None
    if path.is_dir():
        views, folder = current_views(path), path
        found = next((views / n for n in ("results.parquet", "results.csv") if (views / n).is_file()), None)
        if found is None:
            raise UserError(f"{path} is not a run folder (no results.parquet or results.csv); give the --out of a sweep")
        df = _read_results_file(found)
        if found.suffix == ".parquet" and (views / "results.csv").is_file():
            _same_as_csv(df, views / "results.csv", path)
        source = path / found.name
    elif path.is_file():
        df, source = _read_results_file(path), path
        beside = path.resolve().parent
        own = beside.parent.name == GENERATIONS or (beside / MARKERS["run"]).is_file()  # copied without links too
        if own and (beside / "run.json").is_file():  # a run folder's own file: read as the folder
            views, folder = beside, (beside.parent.parent if beside.parent.name == GENERATIONS else beside)
    elif path.exists():
        raise UserError(f"{path} is neither a folder nor a file; give a run folder or a results .csv/.parquet file")
    else:
        raise UserError(f"{path} does not exist; give a run folder or a results .csv/.parquet file")
    missing = [c for c in ("model", "scheme", "img_size", "native_size", "status", "top1") if c not in df]
    if missing:
        raise UserError(f"{source} is not a hiera-bench results table (no column {', '.join(missing)})")
    df = _typed(df, source)
    unnamed = _unnamed_grids(df)
    df = with_row_keys(with_defaults(_failed_where_not_finite(df)))
    df.attrs["source"] = str(source)
    df.attrs["unnamed_grids"] = unnamed
    if views is not None:
        df.attrs.update(views=str(views), run_folder=str(folder))
    return df


#: Columns of whole numbers (sizes, counts, subsets) and of other numbers: a value of another kind (``64px``, a
#: decimal comma, text) is refused where the table is read, not met as a traceback deep in a comparison.
WHOLE_COLUMNS = ("img_size", "native_size", "n_images", "n_failed", "n_correct1", "n_correct5", "limit", "per_class")
NUMBER_COLUMNS = ("crop_pct", "rel_size", "top1", "top5", "nll", "ece", "top1_delta_vs_native", "real_top1",
                  "real_top5", "imgs_per_s", "gflops", "forward_s", *(c for c in STAT_COLUMNS if c != "mcnemar_ref"))
#: Number columns in percent: a value outside 0–100 is no measurement (a hand-edited table).
PERCENT_COLUMNS = ("top1", "top5", "ece", "real_top1", "real_top5")
#: Columns every row must fill: what names a cell and its place in a table.
FILLED_COLUMNS = ("model", "scheme", "img_size", "native_size", "status")
#: Names and keys: text wherever they are compared or joined, though a hand-made table may hold numbers there.
TEXT_COLUMNS = ("label", "model", "scheme", "cell_key", "data_name")


def _typed(df: pd.DataFrame, source: Path) -> pd.DataFrame:
    """``df`` with its number columns as numbers; a value that is not one (or a blank where a cell's name needs
    one) is refused in one line naming the column, the row and the value."""
    fix = "give the results a sweep wrote, or fix that value"
    for col in FILLED_COLUMNS:
        if _blank(df[col]).any():
            raise UserError(f"{source}: row {_first(_blank(df[col]))} has no {col}; {fix}")
    out = {}
    for col in (c for c in (*WHOLE_COLUMNS, *NUMBER_COLUMNS) if c in df):
        given = df[col]
        values = given if pd.api.types.is_numeric_dtype(given) else pd.to_numeric(given.astype(object), errors="coerce")
        bad = values.isna() & ~_blank(given)
        if col in WHOLE_COLUMNS:
            bad |= values.notna() & ((values != values.round()) | (values <= 0 if col.endswith("_size") else False))
        if col in PERCENT_COLUMNS:  # infinities are a failed cell's, said where rows are read
            bad |= values.abs().lt(float("inf")) & ~values.between(0, 100)
        if bad.any():
            value = given.iloc[_first(bad) - 1]
            kind = "a whole number" + (" above 0" if col.endswith("_size") else "") if col in WHOLE_COLUMNS else \
                "a percentage (0 to 100)" if values.iloc[_first(bad) - 1] == values.iloc[_first(bad) - 1] else "a number"
            comma = " (a decimal comma? write the file with decimal points)" if "," in str(value) else ""
            shown = f"{value:g}" if isinstance(value, numbers.Real) else repr(value)
            raise UserError(f"{source}: {col} {shown} (row {_first(bad)}) is not {kind}{comma}; {fix}")
        if values is not given:
            out[col] = values
    for col in (c for c in TEXT_COLUMNS if c in df and not pd.api.types.is_string_dtype(df[c])):
        out[col] = df[col].map(lambda v: v if missing(v) else str(v), na_action="ignore")
    return df.assign(**out) if out else df


def _blank(values: pd.Series) -> pd.Series:
    return values.isna() | values.astype(str).str.strip().isin(("", "nan", "NaN"))


def _first(where: pd.Series) -> int:
    """The 1-based row of the first True."""
    return int(where.to_numpy().argmax()) + 1


def unfinished_since_views(table: pd.DataFrame) -> float | None:
    """When a sweep of the table's models into its run folder began, where one began after the sweep its views
    show and has not finished (interrupted, failed or still running: the views are the earlier sweep's results);
    None where none did, or the table is not a run folder's. Sweeps of other models into the folder do not count."""
    from .sweep.store import unfinished_sweeps

    folder, views = table.attrs.get("run_folder"), table.attrs.get("views")
    if not folder:
        return None
    shown = table.attrs.get("views_started")
    if shown is None and views and (Path(views) / "run.json").is_file():
        shown = read_json(Path(views) / "run.json", "run.json", RESWEEP).get("started_unix")
    models = set(table["model"].dropna().astype(str)) if "model" in table else set()
    later = [when for when, model in unfinished_sweeps(Path(folder), float(shown) if isinstance(shown, (int, float))
                                                          and not isinstance(shown, bool) else 0.0)
             if model is None or model in models]
    return max(later) if later else None


def unfinished_note(table: pd.DataFrame) -> str | None:
    """:func:`unfinished_since_views` said in a sentence."""
    when = unfinished_since_views(table)
    if when is None:
        return None
    models = ", ".join(sorted(set(table["model"].dropna().astype(str))))
    return (f"{table.attrs['run_folder']}: a sweep of {models} into it began at "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(when))}, after the one its results show, and has not "
            "finished (interrupted, failed or still running); its results are the earlier sweep's")


def _failed_where_not_finite(df: pd.DataFrame) -> pd.DataFrame:
    """A table whose sweep-written ``ok`` rows with a NaN mean nll (written before such cells failed) show them
    failed (:func:`~.metrics.failed_if_not_finite`)."""
    if "nll" not in df or "cell_key" not in df:
        return df
    fixed = [failed_if_not_finite(row) for row in df.to_dict("records")]
    if not any(fixed):
        return df
    out = df.copy()
    out["reason"] = out["reason"].astype(object) if "reason" in out else ""
    for i, row in zip(out.index, fixed):
        if row is not None:
            for column in ("status", "reason", *NO_RESULT):
                out.at[i, column] = row[column]
    return out


def _unnamed_grids(df: pd.DataFrame) -> bool:
    """A table of a version before the global_size column with cells whose numbers depend on the abswin fit's
    grid (abswin of a full-grid checkpoint): their grid is not known from the table."""
    if "global_size" in df or "pos_embed_kind" not in df:
        return False
    from .posembed import reads_global_grid

    return any(reads_global_grid(str(s), k) for s, k in zip(df["scheme"], df["pos_embed_kind"]))


def _read_results_file(path: Path) -> pd.DataFrame:
    with reading(path, "results table", RESWEEP):
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        if path.suffix.lower() == ".csv":  # a compressed one (.csv.gz) is read whole or not at all
            require_whole_rows(path)
        return pd.read_csv(path)


def _same_as_csv(table: pd.DataFrame, csv: Path, folder: Path) -> None:
    """Refuse a run folder whose results.csv disagrees with its results.parquet in any value."""
    written = _read_results_file(csv)
    # the parquet's table through the same CSV text and parser as the file: equal unless a value was changed
    expected = pd.read_csv(StringIO(table.to_csv(index=False)))
    if not expected.equals(written):
        raise UserError(f"{folder}: results.csv differs from results.parquet (edited by hand?); the parquet is what "
                        "hiera-bench reads — re-run the sweep to rebuild both, or give the .csv file itself")


def read_run(root: Path, label: str | None = None) -> Run:
    """A run folder, named ``label`` when given; its predictions.parquet is checked for the columns the statistics
    read, and read later, a few cells at a time (:func:`read_records`)."""
    root = Path(root)
    table = read_table(root)
    if label is not None:
        table = table.assign(label=label)
    path = current_views(root) / "predictions.parquet"
    if not path.is_file():
        return Run(root, table, None)
    parquet_columns(path, "predictions", RESWEEP, _PRED_REQUIRED)
    return Run(root, table, path)


#: How :func:`read_records` hands every run's records: cell keys and image ids as codes into per-file dictionaries
#: (ImageNet's 50 000 ids once, not a Python string per record: 270 bytes a record in pandas).
RECORDS = pa.schema([("cell_key", pa.dictionary(pa.int32(), pa.string())),
                     ("image_id", pa.dictionary(pa.int32(), pa.string())), ("correct1", pa.bool_()),
                     ("failed", pa.bool_())])


def read_records(run: Run, keys: Iterable[str]) -> pa.Table:
    """The per-image records of the run's cells ``keys`` names (the rest of its file stays on disk), as
    :data:`RECORDS`; older folders name their cells by model, scheme and size (:func:`~.stats.with_cell_keys`)."""
    keys = sorted(set(keys))
    if run.records is None or not keys:
        return RECORDS.empty_table()
    if not run.records.exists() and current_views(run.root) != run.records.parent:
        raise UserError(f"{run.root} changed while this command read it (a sweep into it finished and replaced its "
                        "views); run the command again")
    legacy = "cell_key" not in parquet_columns(run.records, "predictions", RESWEEP, _PRED_REQUIRED, ["cell_key"])
    if legacy:
        read = with_cell_keys(read_parquet(run.records, "predictions", RESWEEP, _PRED_REQUIRED).to_pandas(), run.table)
        read = read.loc[read["cell_key"].isin(keys), RECORDS.names].astype({"cell_key": object})  # no key: all NaN
        records = pa.Table.from_pandas(read, preserve_index=False)
    else:
        records = read_parquet(run.records, "predictions", RESWEEP, RECORDS.names, where=[("cell_key", "in", keys)],
                               dictionary=["cell_key", "image_id"])
    with reading(run.records, "predictions", RESWEEP):  # a column of another type than a sweep writes
        records = records.select(RECORDS.names).cast(RECORDS)
    return records.unify_dictionaries().combine_chunks()  # the ids once, not once a row group (or batch) of the file


#: Joins a cell's key to the run that holds it under a second label, while the statistics pair each label's cells.
_RUN_MARK = "~run"


def merge_runs(runs: list[Run]) -> tuple[pd.DataFrame, pa.Table | None]:
    """One row per cell and label (the first run of a label that has a cell wins) and the predictions of those
    cells. A cell two labels hold (the native cell of a checkpoint swept under two labels, or a re-run on
    another device) stays in each label's group, paired with that run's own records: its key carries the run
    (see :func:`plain_keys`) until the statistics are made."""
    unnamed = [str(r.root) for r in runs if r.table.attrs.get("unnamed_grids")]
    if unnamed and len(runs) > 1:
        raise UserError(f"{listed(unnamed)}: the table of an older hiera-bench that does not name the abswin fit's "
                        "global grid, so its abswin cells cannot be placed beside another run's; sweep it again with "
                        "this version (its table then names the grid), or report it alone")
    tables = [r.table for r in runs]
    df = pd.concat(tables, ignore_index=True)
    # two --data names may hold one cell (identical files): each name keeps its rows
    held_by = ["label", *(["data_name"] if "data_name" in df else []), "cell_key"]
    ok = df[df["status"].eq("ok")].drop_duplicates(held_by).copy()
    later = ok["_run"] != ok.groupby("cell_key")["_run"].transform("min")
    ok.loc[later, "cell_key"] = ok.loc[later, "cell_key"] + _RUN_MARK + ok.loc[later, "_run"].astype(str)
    free = unlimited_fingerprints(ok.to_dict("records"))
    ok = ok.assign(_slot=[slot(r, free) for r in ok.to_dict("records")])
    ok = _drop_repeated_measurements(ok, runs)
    _refuse_two_versions(ok, runs)
    ok = ok.drop(columns="_slot")
    where = [c for c in GROUP_COLUMNS if c in df] + ["scheme", "img_size"]
    rest = df[~df["status"].eq("ok")].drop_duplicates(where)
    rest = rest.merge(ok[where].drop_duplicates(), on=where, how="left", indicator=True)
    rest = rest[rest["_merge"] == "left_only"].drop(columns="_merge")  # a skip is moot where a run measured it
    table = tidy_table(pd.concat([ok, rest], ignore_index=True).to_dict("records"))
    # each cell's records are read from the run whose row the table shows, and no other: records are unique per
    # cell and image by construction (a cell stores each position once), so nothing needs dropping across runs
    preds = []
    for i, run in enumerate(runs):
        if run.records is not None:
            keys = ok.loc[ok["_run"].eq(i), "cell_key"]
            preds.append(_renamed(read_records(run, plain_keys(keys)), keys))
    return table, (pa.concat_tables(preds) if preds else None)


def _renamed(records: pa.Table, keys: pd.Series) -> pa.Table:
    """``records`` with the cell keys ``keys`` names (one carrying its run, :func:`merge_runs`): renamed in each
    chunk's dictionary, a few hundred keys, not per record."""
    names = {plain: key for plain, key in zip(plain_keys(keys), keys)}
    column = records["cell_key"]
    chunks = [pa.DictionaryArray.from_arrays(chunk.indices, pa.array(
        [names.get(k, k) for k in chunk.dictionary.to_pylist()], pa.string())) for chunk in column.chunks]
    return records.set_column(0, "cell_key", pa.chunked_array(chunks, column.type))


def plain_keys(keys: pd.Series) -> pd.Series:
    """Cell keys without the run :func:`merge_runs` joined to a cell held under a second label."""
    return keys.str.replace(rf"{_RUN_MARK}\d+$", "", regex=True)


def _drop_repeated_measurements(ok: pd.DataFrame, runs: list[Run]) -> pd.DataFrame:
    """``ok`` (with each row's ``_slot``) without the rows that repeat an earlier run's measurement of the same place
    under the same label although their cells are keyed apart (an older hiera-bench keyed its cells otherwise; files
    touched but not changed): the same images, each right or wrong alike, the same counts, top-5 and nll. The first
    run's row stays, as for one cell that two runs hold."""
    read: dict[int, dict[str, pd.Series]] = {}  # per run, the statistics' own reading, made where it is needed

    def correct(row: pd.Series) -> pd.Series | None:
        i = int(row["_run"])
        if i not in read:  # the run's cells in ``ok``, read at once
            read[i] = outcomes(runs[i].table, read_records(runs[i], plain_keys(ok.loc[ok["_run"].eq(i), "cell_key"])))
        return read[i].get(plain_keys(pd.Series([row["cell_key"]])).iloc[0])

    def same(a: pd.Series, b: pd.Series) -> bool:
        if not all(same_value(a.get(col), b.get(col)) for col in ("n_images", "n_failed")):
            return False
        # older versions rounded top-5 and nll in their tables: equal to that rounding
        if not all(abs(float(a[col]) - float(b[col])) <= tol for col, tol in (("top5", 1e-3), ("nll", 1e-4))):
            return False
        found = [correct(row) for row in (a, b)]
        return all(f is not None and not f.empty for f in found) and found[0].sort_index().equals(found[1].sort_index())

    repeated = []
    for _, part in ok.groupby(["label", "_slot"], sort=False):
        repeated += [idx for idx, row in part.iloc[1:].iterrows() if same(part.iloc[0], row)]
    return ok.drop(index=repeated)


def _refuse_two_versions(ok: pd.DataFrame, runs: list[Run]) -> None:
    """Two different cells in one place (``ok``'s ``_slot``) of one label (the same checkpoint, data ids and
    preprocessing, measured on files whose sizes or mtimes differed) cannot be shown or paired as one: say which and
    how to part them."""
    twice = ok[ok.duplicated(["label", "_slot"], keep=False)]
    if twice.empty:
        return
    first = twice.iloc[0]
    same = twice[twice["_slot"].apply(lambda s: s == first["_slot"]) & twice["label"].eq(first["label"])]
    where = sorted({str(runs[int(i)].root) for i in same["_run"]})
    what = f"{first['label']} {first['scheme']} @{int(first['img_size'])}"
    if len(where) > 1:
        raise UserError(f"{' and '.join(where)} both hold {what} (same checkpoint, data ids and preprocessing) with "
                        "different numbers, measured on different files (their sizes or mtimes differ); give each "
                        "run its own --label")
    raise UserError(f"{where[0]} holds two versions of {what} (the data files changed between sweeps); re-run a sweep "
                    "into that folder to rebuild its views, or give the report another run")


def build(paths: list[Path], labels: list[str] | None = None) -> pd.DataFrame:
    """The merged, annotated tidy table of the given run folders; ``labels`` (one per run) rename them, and
    the ``label`` column tells every column group of the report apart."""
    if not paths:
        raise UserError("give at least one run folder (the --out of a sweep)")
    labels = list(labels or [])
    if labels and len(labels) != len(paths):
        raise UserError(f"{len(labels)} --label for {len(paths)} runs; give one --label per run, in the same order")
    for label in labels:
        check_label(label)
    runs = [read_run(Path(p), labels[i] if labels else None) for i, p in enumerate(paths)]
    for i, run in enumerate(runs):
        run.table = run.table.assign(_run=i)  # the report keeps the order the runs were given in
    table, preds = merge_runs(runs)
    if table.empty:
        raise UserError(f"{', '.join(str(r.root) for r in runs)}: no cell to report (the results table has no rows); "
                        "re-run the sweep into that folder")
    out = annotate(table, preds)
    out = _stored_statistics(out, table.reset_index(drop=True), _without_records(table, runs, preds))
    out["label"] = section_labels(out, ignore=("crop_pct",))  # crops of one label stay one label (a column apart)
    out = out.sort_values("_run", kind="stable").drop(columns="_run").reset_index(drop=True)
    out["cell_key"] = plain_keys(out["cell_key"])
    out = out[["label"] + [c for c in out.columns if c != "label"]]
    out.attrs["unfinished"] = [note for note in map(unfinished_note, (r.table for r in runs)) if note]
    return out


def _without_records(table: pd.DataFrame, runs: list[Run], preds: pa.Table | None) -> np.ndarray:
    """Which of ``table``'s rows came without per-image records: a run given as a results file, or a cell its run's
    predictions.parquet does not hold (edited, or of another folder's views)."""
    import pyarrow.compute as pc

    held = set(pc.unique(preds["cell_key"]).to_pylist()) if preds is not None and preds.num_rows else set()
    no_file = table["_run"].isin([i for i, r in enumerate(runs) if r.records is None])
    return (no_file | (table["status"].eq("ok") & ~table["cell_key"].isin(held))).to_numpy()


def _stored_statistics(annotated: pd.DataFrame, table: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """The CIs and tests of the ``rows`` that came without per-image records (:func:`_without_records`): the ones
    their sweep computed from those records and stored in the table, where it has them. Recomputing them is
    impossible without the records, and blanks would read as "not significant"."""
    if not rows.any():
        return annotated
    annotated = annotated.copy()
    for col in STAT_COLUMNS:
        if col not in table:
            continue
        stored = table.loc[rows, col]
        if col == "mcnemar_ref":  # the one text column
            annotated.loc[rows, col] = ["" if missing(v) else str(v) for v in stored]
        else:  # a file edited by hand may hold anything: what is not a number is not a statistic
            annotated.loc[rows, col] = pd.to_numeric(stored, errors="coerce").to_numpy(dtype=float)
    annotated.attrs["stored_statistics"] = sorted({str(label) for label in table.loc[rows, "label"]})
    return annotated


#: A report's first line, which also tells a report folder of an older hiera-bench (before its marker).
REPORT_HEADING = "# hiera-bench report"


def markdown_report(df: pd.DataFrame, sources: list[Path]) -> str:
    """The combined pivot, its headlines and the runs it came from."""
    lines = [REPORT_HEADING, "", "Runs: " + ", ".join(f"`{p}`" for p in sources), "", markdown(pivot(df))]
    if df.attrs.get("stored_statistics"):
        lines += ["", STORED_NOTE.format(labels=", ".join(df.attrs["stored_statistics"])), ""]
    lines += [f"Note: {note}." for note in df.attrs.get("unfinished", [])]
    return "\n".join(lines)


#: Said where a run came without per-image records (:func:`_stored_statistics`), in report.md and on stderr.
STORED_NOTE = ("Note: {labels}: no per-image records (predictions.parquet) to recompute CIs and tests from; shown "
               "are those the results table holds.")


def headlines(df: pd.DataFrame) -> dict[str, str]:
    return {group.label: group.headline for group in pivot(df).groups}


def report_folder() -> OwnedFolder:
    """The ``-o`` folder of ``report``: the files it rewrites, and its marker."""
    from .plots import figure_files

    names = ("report.md", "report.csv", "report.parquet", "report.tex", "headlines.json")
    return OwnedFolder(MARKERS["report"], "-o", names + tuple(f"plots/{name}" for name in figure_files()),
                       earlier=first_line_is("report.md", REPORT_HEADING))


def write_report(df: pd.DataFrame, sources: list[Path], out: Path) -> list[Path]:
    """report.md/.csv/.parquet/.tex and plots/<figure>.png/.svg under ``out``; returns the paths. A folder
    holding files of those names that hiera-bench did not write is refused."""
    from .plots import write_plots

    out = report_folder().claim(Path(out))
    paths = [out / "report.md", out / "report.csv", out / "report.parquet", out / "report.tex"]
    atomic_write_text(paths[0], markdown_report(df, sources))
    atomic_write_text(paths[1], df.to_csv(index=False))
    atomic_write_parquet(paths[2], pa.Table.from_pandas(df, preserve_index=False))
    atomic_write_text(paths[3], latex(pivot(df), key="hiera-bench-" + "-".join(dict.fromkeys(df["label"]))))
    paths += write_plots(df, out / "plots")
    atomic_write_text(out / "headlines.json", json.dumps(headlines(df), indent=1, ensure_ascii=False) + "\n")
    return paths + [out / "headlines.json"]

