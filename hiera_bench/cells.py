"""What a cell is: the one place that says which fields identify it, which cells share a native cell,
which must agree before two cells are compared, and how a cell is labelled.

A *cell* is one (checkpoint, scheme, input size) evaluated under one preprocessing on one data set.
:class:`CellIdentity` holds those fields and hashes them into the key that names the cell's folder
(resume and dedup). The module constants describe the same fields as columns of the tidy table, for
everything that reads tables: statistics (:func:`group_ids`, :data:`SERIES_COLUMNS`), ``check`` and
``compare`` (:data:`MUST_MATCH`) and reports (:func:`section_labels`).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import dataclass
from typing import Any, Collection, Iterable, Mapping

import pandas as pd

#: Cells sharing these values have one native cell per series; sizes within them are paired on the same images.
GROUP_COLUMNS = ("model", "checkpoint_sha256", "model_args", "native_size", "data_fingerprint", "limit", "per_class",
                 "crop_pct", "interpolation", "crop_mode", "mean", "std", "decode", "dtype", "class_subset")
#: Names the user gave that keep measurements apart although they are not part of a cell's numbers: the data
#: set's name (``--data NAME=PATH``: two sets may share ids and labels, e.g. val and a corrupted copy) and the
#: label. Statistics never pair images across them.
NAME_COLUMNS = ("data_name", "label")
#: Within a group, a series is one line of a plot and one column of a pivot: a scheme, and the global grid
#: of the abswin fit where one was chosen (full-grid checkpoints only).
SERIES_COLUMNS = ("scheme", "global_size")
#: The series every other series is tested against at the same size, when a group has it.
REFERENCE_SERIES = "interp"
#: Fields two cells must agree on to be compared (``check``, ``compare``), and how to name them in an error.
MUST_MATCH = {
    "data_fingerprint": "data (fingerprint of image ids and labels)",
    "limit": "data subset (--limit)",
    "per_class": "data subset (--per-class)",
    "crop_pct": "preprocessing (crop_pct)",
    "interpolation": "preprocessing (interpolation)",
    "crop_mode": "preprocessing (crop_mode)",
    "mean": "preprocessing (normalisation mean)",
    "std": "preprocessing (normalisation std)",
    "decode": "preprocessing (--decode)",
    "checkpoint_sha256": "checkpoint (sha256)",
    "model_args": "architecture (the checkpoint folder's config.json model_args)",
    "native_size": "native size (the checkpoint's; interp resamples from its grid)",
    "class_subset": "scoring (--class-subset)",
}
#: :data:`MUST_MATCH` columns tables of earlier versions did not write: compared where both rows have them; a
#: comparison with a table without them says so in a note (:func:`unrecorded`).
RECORDED_LATER = ("crop_mode", "mean", "std")
#: Fields two compared cells may differ in, said in a note (``check``, ``compare``): the numbers are still of
#: the same images under the same preprocessing, but a change in them moves the numbers too.
NOTED = {"dtype": "precision (dtype)"}
#: How a row's ``device`` names the devices of a cell whose records several devices measured (a cell resumed on
#: another machine, or a job whose ranks ran on GPUs of different models).
DEVICES_JOINED = " + "
#: Counts two compared cells must share: every metric is over the images that decoded, so a cell that lost
#: images to decoding errors measured other images (a table without these columns is not held to them).
IMAGE_COUNTS = {"n_images": "evaluated", "n_failed": "failed to decode"}
#: How a group field that tells two measurements of one model apart is shown in a section label.
LABEL_FIELDS = {"checkpoint_sha256": ("ckpt", 8), "model_args": ("args", 8), "data_name": ("data", None), "data_fingerprint": ("data", 8), "limit": ("limit", None),
                "per_class": ("per class", None), "crop_pct": ("crop", None), "interpolation": ("interp", None),
                "crop_mode": ("crop mode", None), "mean": ("mean", None), "std": ("std", None),
                "native_size": ("native", None), "decode": ("decode", None), "dtype": ("dtype", None),
                "class_subset": ("classes", None)}
#: Columns newer than the first tables, and what a table without one means (every other identity column
#: was always written: a table without it is missing provenance).
COLUMN_DEFAULTS = {"decode": "pil", "per_class": None, "global_size": None, "class_subset": None}


@dataclass(frozen=True)
class CellIdentity:
    """Everything that decides a cell's numbers. ``global_size`` (the abswin fit's global grid, ``"7x7"``) is
    set only for the abswin scheme of a full-grid checkpoint, the one cell whose numbers it changes;
    ``data_state`` (sizes and mtimes of local files) only makes a re-run recompute when the files changed."""

    model: str
    checkpoint_sha256: str
    scheme: str
    img_size: int
    preprocess: Mapping[str, Any]
    data_fingerprint: str
    limit: int | None
    per_class: int | None
    dtype: str
    global_size: str | None = None
    data_state: str | None = None
    class_subset: str | None = None  # scored over these classes only (ImageNet-R/-A); None: all of the model's
    model_args: str | None = None  # a checkpoint folder's architecture arguments (models.args_digest)
    embedding: str | None = None  # for a scheme hiera-bench does not version: its embedding's digest
    # an abs-win checkpoint's native size: its weights do not say it, and interp resamples from its grid
    native_size: int | None = None

    def fields(self) -> dict[str, Any]:
        """The cell's ``cell.json``: every field; ``data_state``, ``class_subset``, ``model_args``, ``embedding`` and
        ``native_size`` only where set (the keys of cells made before they existed stay the same)."""
        out = {"model": self.model, "checkpoint_sha256": self.checkpoint_sha256, "preprocess": dict(self.preprocess),
               "data_fingerprint": self.data_fingerprint, "limit": self.limit, "per_class": self.per_class,
               "dtype": self.dtype, "global_size": self.global_size, "scheme": self.scheme, "img_size": self.img_size}
        if self.data_state is not None:
            out["data_state"] = self.data_state
        if self.class_subset is not None:
            out["class_subset"] = self.class_subset
        if self.model_args is not None:
            out["model_args"] = self.model_args
        if self.embedding is not None:
            out["embedding"] = self.embedding
        if self.native_size is not None:
            out["native_size"] = self.native_size
        return out

    @property
    def key(self) -> str:
        """Stable id of the cell: the hash of :meth:`fields`."""
        blob = json.dumps(self.fields(), sort_keys=True, default=_jsonable)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def columns(self) -> dict[str, Any]:
        """The tidy-table columns this identity fills."""
        return {"model": self.model, "checkpoint_sha256": self.checkpoint_sha256, "model_args": self.model_args,
                "scheme": self.scheme,
                "img_size": self.img_size, "crop_pct": self.preprocess["crop_pct"],
                "interpolation": self.preprocess["interpolation"], **normalisation_columns(self.preprocess),
                "decode": self.preprocess.get("decode", "pil"),
                "dtype": self.dtype, "data_fingerprint": self.data_fingerprint, "limit": self.limit,
                "per_class": self.per_class, "global_size": self.global_size, "class_subset": self.class_subset,
                "cell_key": self.key}


def normalisation_columns(preprocess: Mapping[str, Any]) -> dict[str, Any]:
    """``crop_mode``, ``mean`` and ``std`` of a cell's preprocessing as table columns (``"0.485,0.456,0.406"``);
    those a preprocessing does not hold (a cell.json of an older version) are left out."""
    out: dict[str, Any] = {}
    if isinstance(preprocess.get("crop_mode"), str):
        out["crop_mode"] = preprocess["crop_mode"]
    for name in ("mean", "std"):
        values = preprocess.get(name)
        if isinstance(values, (list, tuple)) and all(isinstance(v, numbers.Real) for v in values):
            out[name] = ",".join(repr(float(v)) for v in values)
    return out


def global_size_text(size: tuple[int, int] | None) -> str | None:
    return None if size is None else f"{int(size[0])}x{int(size[1])}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# --- the same fields as columns of a tidy table ---------------------------------------------------

def with_defaults(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the identity columns an older table lacks, filled as that table meant them, and a
    ``label`` (the model's name where a table has none: labels came later)."""
    missing = {c: v for c, v in COLUMN_DEFAULTS.items() if c not in table}
    for col, default in COLUMN_DEFAULTS.items():  # rows of an older table merged with newer ones: NaN there
        if default is not None and col in table and table[col].isna().any():
            missing[col] = table[col].where(table[col].notna(), default)
    if "limit" in table and "data_fingerprint" in table and table["limit"].notna().any():
        free = unlimited_fingerprints(table.to_dict("records"))
        missing["limit"] = table["limit"].where(~table["data_fingerprint"].isin(free), None)
    if "label" not in table and "model" in table:
        missing["label"] = table["model"].astype(str)
    elif "label" in table and table["label"].isna().any():
        missing["label"] = table["label"].where(table["label"].notna(), table["model"].astype(str))
    return table.assign(**missing) if missing else table


def unlimited_fingerprints(rows: Iterable[Mapping[str, Any]]) -> set[str]:
    """The data fingerprints (of the images a cell evaluated) that some row reaches with no effective ``--limit``:
    none, or one above the images it evaluated (older versions kept a limit at or above the data's size, newer
    ones drop it when they open the data). Every row of such a fingerprint evaluated the same images."""
    free = set()
    for row in rows:
        fingerprint, limit = row.get("data_fingerprint"), row.get("limit")
        if missing(fingerprint):
            continue
        counted = [row.get("n_images"), row.get("n_failed")]
        if missing(limit) or (not any(missing(c) for c in counted) and limit > sum(counted)):
            free.add(fingerprint)
    return free


def with_row_keys(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a ``cell_key`` on every row: a table made by hand has none, so each row's slot names it
    (rows of one slot are one cell, as they are when a sweep writes them)."""
    if "cell_key" in table:
        return table
    keys = ["hand-" + hashlib.sha256(repr(slot(r)).encode()).hexdigest()[:16] for r in table.to_dict("records")]
    return table.assign(cell_key=keys)


#: The group columns of a row's place. A checkpoint folder's architecture arguments are not among them: rows of
#: versions that did not record them lack them, and a folder measured again after its config.json changed shows
#: the new cells where the old ones were.
SLOT_GROUP = tuple(c for c in GROUP_COLUMNS if c != "model_args")


def slot(row: Mapping[str, Any], unlimited: Collection[str] = ()) -> tuple:
    """The place a row fills in a table: its group, data name, series and size. Two cells of one slot (the files
    changed between runs, so the state differs) are two versions of one measurement: the newer one is shown.
    ``unlimited``: fingerprints whose rows' limits select every image (:func:`unlimited_fingerprints`)."""
    if row.get("data_fingerprint") in unlimited:
        row = {**row, "limit": None}
    values = (_or_default(row.get(c), c) for c in (*SLOT_GROUP, "data_name", *SERIES_COLUMNS, "img_size"))
    return tuple(None if missing(value) else _short(value) for value in values)


def args_superseded(rows: list[Mapping[str, Any]], current: list[Mapping[str, Any]]) -> list[bool]:
    """Per row: measured under other checkpoint-folder ``model_args`` than the same checkpoint's rows in ``current``
    (a sweep's own, after config.json changed), or, for a checkpoint ``current`` does not have, without them (an
    older version) beside rows that have them. Such a row may be of another net, so it is not shown beside them:
    one label would mix two models, or split with its native cell on one side only."""
    now = {(row.get("model"), row.get("checkpoint_sha256")): row.get("model_args") for row in current}
    recorded = {(row.get("model"), row.get("checkpoint_sha256")) for row in rows if not missing(row.get("model_args"))}
    stale = []
    for row in rows:
        place, args = (row.get("model"), row.get("checkpoint_sha256")), row.get("model_args")
        if place in now:
            stale.append(not same_value(args, now[place]))
        else:
            stale.append(missing(args) and place in recorded)
    return stale


def newest_per_slot(rows: Iterable[tuple[Mapping[str, Any], float]]) -> list[Mapping[str, Any]]:
    """Of rows given with when each finished, the newest of each :func:`slot` (the later one on a tie), in
    the order given."""
    rows = list(rows)
    free = unlimited_fingerprints(row for row, _ in rows)
    places = [slot(row, free) for row, _ in rows]
    newest: dict[tuple, int] = {}
    for i, (row, finished) in enumerate(rows):
        place = places[i]
        if place not in newest or finished >= rows[newest[place]][1]:
            newest[place] = i
    return [rows[i][0] for i in sorted(newest.values())]


def group_ids(table: pd.DataFrame, ignore: Collection[str] = ()) -> pd.Series:
    """One id per set of cells that share a native cell (same model, checkpoint, data, preprocessing, dtype, and
    the same data name and label); ``ignore``: group columns left out (the crop of ``--crop-pct`` lists, to
    gather a label's crops)."""
    table = with_defaults(table)
    cols = [c for c in (*GROUP_COLUMNS, *NAME_COLUMNS) if c in table and c not in ignore]
    if table.empty:
        return pd.Series(0, index=table.index, dtype=int)
    return table.groupby(cols, sort=False, dropna=False).ngroup()  # missing values compare equal


def series_keys(table: pd.DataFrame) -> pd.Series:
    """Each row's series as a string: the scheme, ``scheme|7x7`` where the abswin fit's global grid is set."""
    table = with_defaults(table)
    return pd.Series([s if missing(g) else f"{s}|{g}" for s, g in zip(table["scheme"], table["global_size"])],
                     index=table.index, dtype=object)


def series_names(table: pd.DataFrame) -> pd.Series:
    """A pivot column per series: the scheme, plus its global grid when a group has several for it."""
    table = with_defaults(table)
    keys = series_keys(table)
    groups = group_ids(table)
    names = table["scheme"].astype(str).copy()
    for _, part in keys.groupby([groups, table["scheme"]], sort=False):
        if part.nunique() > 1:
            for idx in part.index:
                grid = keys[idx].partition("|")[2]
                names[idx] = f"{table.at[idx, 'scheme']} (global {grid or 'learned'})"
    return names


def section_labels(table: pd.DataFrame, ignore: Collection[str] = ()) -> pd.Series:
    """Each row's label (``--label``, by default the model's name), plus whatever tells several measurements
    under one label apart (e.g. ``data 1a2b3c4d``), except the fields in ``ignore``."""
    table = with_defaults(table)
    groups = group_ids(table, ignore)
    labels = table["label"].astype(str).copy()
    for model, part in table.groupby(labels, sort=False):
        if groups[part.index].nunique() < 2:
            continue
        varying = [c for c in LABEL_FIELDS if c in part and c not in ignore and part[c].astype(str).nunique(dropna=False) > 1]
        if "data_name" in varying and "data_fingerprint" in varying:  # the names the user gave tell the sets apart
            varying.remove("data_fingerprint")
        for idx in part.index:
            bits = []
            for col in varying:
                name, width = LABEL_FIELDS[col]
                value = part.at[idx, col]
                bits.append(f"{name} {'all' if missing(value) else _short(value)[:width]}")
            labels[idx] = f"{model} [{', '.join(bits)}]"
    return labels


def differences(a: pd.Series, b: pd.Series) -> list[str]:
    """What makes row ``a`` not comparable with row ``b`` (empty: comparable)."""
    return [f"{MUST_MATCH[col]}: run {_shown(a, col)}, baseline {_shown(b, col)}" for col in differing(a, b)]


def differing(a: pd.Series, b: pd.Series) -> list[str]:
    """The :data:`MUST_MATCH` columns rows ``a`` and ``b`` both have (or imply) and differ in."""
    present = [col for col in MUST_MATCH if (col in a.index or col in COLUMN_DEFAULTS) and (col in b.index or col in COLUMN_DEFAULTS)
               and not (col in RECORDED_LATER and (missing(_get(a, col)) or missing(_get(b, col))))]
    if "data_fingerprint" in present and not missing(_get(a, "data_fingerprint")) \
            and same_value(_get(a, "data_fingerprint"), _get(b, "data_fingerprint")):
        present = [col for col in present if col != "limit"]  # the same images: a limit at or above their number
    return [col for col in present if not same_value(_get(a, col), _get(b, col))]


def noted_differences(a: pd.Series, b: pd.Series) -> list[str]:
    """The :data:`NOTED` fields rows ``a`` and ``b`` both have and differ in."""
    return [col for col in NOTED
            if not (missing(_get(a, col)) or missing(_get(b, col))) and not same_value(_get(a, col), _get(b, col))]


def measured_on(devices: list[str], device: str, kind: str | None) -> str:
    """A row's ``device``: this run's (``device``, named in full) where the cell's records name no device
    (``devices``) or only this run's ``kind``; else every device they name."""
    return device if not devices or devices == [kind] else DEVICES_JOINED.join(devices)


def on_several_devices(device: Any) -> bool:
    """Whether a row's ``device`` names several devices (:func:`measured_on`)."""
    return DEVICES_JOINED in str(device)


def several_devices_note(rows: pd.DataFrame) -> str | None:
    """What to say of ``rows`` (a table's cells) whose records several devices measured; None where there are none."""
    if "device" not in rows.columns:
        return None
    if "cell_key" in rows.columns:  # sizes the model cannot take measured nothing
        rows = rows[rows["cell_key"].notna()]
    mixed = rows["device"][rows["device"].map(on_several_devices).astype(bool)]
    if mixed.empty:
        return None
    return (f"{len(mixed)} of {len(rows)} cell(s) have records measured on several devices "
            f"({'; '.join(sorted(set(mixed.astype(str))))}): the numbers mix the devices' kernels; sweep with --force "
            "on one device to measure them again")


def counts_differ(a: pd.Series, b: pd.Series) -> bool:
    """Whether rows ``a`` and ``b`` were evaluated on different numbers of images (:data:`IMAGE_COUNTS`; a
    count either row lacks is not compared)."""
    return any(not (missing(_get(a, col)) or missing(_get(b, col))) and not same_value(_get(a, col), _get(b, col))
               for col in IMAGE_COUNTS)


def counts_text(row: pd.Series) -> str:
    """``22 images (2 failed to decode)``: what the row has of :data:`IMAGE_COUNTS`."""
    evaluated, failed = (_get(row, col) for col in IMAGE_COUNTS)
    shown = "? images" if missing(evaluated) else f"{int(evaluated)} images"
    return shown + ("" if missing(failed) else f" ({int(failed)} {IMAGE_COUNTS['n_failed']})")


#: :data:`MUST_MATCH` columns whose absence is a value, not missing provenance: no limit (every image), no cap
#: per class, no model_args (timm's architecture for the name; a table of a version before they were recorded
#: is not held to them, and ``check`` says so).
MAY_BE_EMPTY = ("limit", "per_class", "model_args")
#: The :data:`MUST_MATCH` columns that say which model was measured (the rest say on what and how).
MODEL_IDENTITY = ("checkpoint_sha256", "model_args")


def missing_provenance(row: pd.Series) -> list[str]:
    """The :data:`MUST_MATCH` columns a row lacks (an old or hand-made table)."""
    return [col for col in MUST_MATCH if col not in COLUMN_DEFAULTS and col not in MAY_BE_EMPTY
            and col not in RECORDED_LATER and (col not in row.index or missing(row[col]))]


def unrecorded(table: pd.DataFrame, other: pd.DataFrame) -> list[str]:
    """The :data:`RECORDED_LATER` columns ``other`` holds and some evaluated row of ``table`` lacks (a table of an
    earlier version, or rows of one merged in): there they could not be compared."""
    def lacking(t: pd.DataFrame) -> set[str]:
        ok = t[t["status"].eq("ok")] if "status" in t else t
        return {col for col in RECORDED_LATER if col not in ok or ok[col].isna().any()}

    return [col for col in RECORDED_LATER if col in lacking(table) and col not in lacking(other)]


def same_value(a: Any, b: Any) -> bool:
    if missing(a) and missing(b):
        return True
    if isinstance(a, numbers.Real) and isinstance(b, numbers.Real) and not (missing(a) or missing(b)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return str(a) == str(b)


def _get(row: pd.Series, col: str) -> Any:
    return _or_default(row[col] if col in row.index else None, col)


def _or_default(value: Any, col: str) -> Any:
    """``value``, or what a row of an older table without it meant (:data:`COLUMN_DEFAULTS`)."""
    return COLUMN_DEFAULTS.get(col) if missing(value) else value


def _shown(row: pd.Series, col: str) -> str:
    value = _get(row, col)
    return "none" if missing(value) else str(value)


def _short(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def missing(value: Any) -> bool:
    """None, NaN or NA: a value a table does not have."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))
