"""Statistics over per-image records: CIs, paired differences and exact McNemar tests.

Every statistic is computed on the images that decoded (``failed`` is false) and, for a paired
statistic, on the images both cells share. A cell's top-1 gets the exact (Clopper–Pearson) binomial
interval. A paired difference gets the Wald interval with Bonett and Price's (2012) adjustment, one of
the intervals Fagerland, Lydersen and Laake (2014) recommend for paired proportions: it is computed from
the discordant counts alone, keeps a width when no image is discordant (a bootstrap collapses to
"exactly 0" there) and does not claim significance from a handful of discordant images, as a bootstrap
of 4 against 0 does. The test is the exact McNemar test, which is conservative, so near its 5 % boundary an
interval can just exclude 0 while p is above 0.05 (up to p ≈ 0.08 from 20 images on, 0.11 with 10);
never the other way: p below 0.05 always comes with an interval clear of 0.
"""

from __future__ import annotations

import math
from functools import cache
from statistics import NormalDist

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .cells import REFERENCE_SERIES, group_ids, series_keys

LEVEL = 0.95
#: How the statistics were made, recorded in run.json.
SETTINGS = {"top1_ci": "exact binomial (Clopper-Pearson)",
            "ci": "paired differences: Wald with the Bonett-Price adjustment (from the discordant counts)",
            "ci_level": LEVEL, "paired_test": "exact McNemar (two-sided binomial on discordant pairs)"}
#: Columns :func:`annotate` adds, all in top-1 percentage points except counts and p-values.
STAT_COLUMNS = [
    "top1_ci_low", "top1_ci_high",
    "delta_ci_low", "delta_ci_high", "delta_b", "delta_c", "delta_p",
    "mcnemar_ref", "scheme_delta", "scheme_delta_ci_low", "scheme_delta_ci_high", "mcnemar_b", "mcnemar_c", "mcnemar_p",
]


def paired_difference_ci(b: int, c: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Interval of the difference of two paired proportions, in points: Wald with the Bonett–Price adjustment
    (one pseudo-image added to each discordant count). ``b`` / ``c``: images only the first / only the second
    gets right, of ``n`` paired images; NaN for ``n == 0``."""
    if n <= 0:
        return math.nan, math.nan
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    first, second = (b + 1) / (n + 2), (c + 1) / (n + 2)
    centre = first - second
    half = z * math.sqrt((first + second - centre ** 2) / (n + 2))
    return 100.0 * max(-1.0, centre - half), 100.0 * min(1.0, centre + half)


@cache
def _special_ufuncs():
    """scipy.special's compiled functions behind ``scipy.stats.beta.ppf`` and ``binom.cdf`` (None where this scipy
    has none of those names): ``import scipy.stats`` costs 0.75 s of every process's start on a 2-core VM, for the
    two calls a sweep makes of it; scipy.special alone a fraction of that."""
    try:
        from scipy.special import _ufuncs
    except ImportError:  # pragma: no cover - a scipy that moved them
        return None
    return _ufuncs if hasattr(_ufuncs, "_beta_ppf") and hasattr(_ufuncs, "_binom_cdf") else None


def _beta_ppf(q: float, a: int, b: int) -> float:
    """``scipy.stats.beta.ppf(q, a, b)`` for ``0 < q < 1`` and ``a, b >= 1``: the same compiled function (its
    ``* scale + loc`` of 1 and 0 changes no finite value)."""
    ufuncs = _special_ufuncs()
    if ufuncs is None or not (0.0 < q < 1.0 and a >= 1 and b >= 1):
        from scipy.stats import beta

        return float(beta.ppf(q, a, b))
    return float(ufuncs._beta_ppf(float(q), float(a), float(b)))


def _binom_cdf(k: int, n: int, p: float) -> float:
    """``scipy.stats.binom.cdf(k, n, p)`` for ``0 <= k < n`` and ``0 <= p <= 1``: the same compiled function,
    clipped to [0, 1] as scipy.stats clips it."""
    ufuncs = _special_ufuncs()
    if ufuncs is None or not (0 <= k < n and 0.0 <= p <= 1.0):
        from scipy.stats import binom

        return float(binom.cdf(k, n, p))
    return float(np.clip(ufuncs._binom_cdf(float(k), float(n), float(p)), 0, 1))


def binomial_ci(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact (Clopper–Pearson) interval of a proportion ``k / n``, in percent; NaN for ``n == 0``."""
    if n <= 0:
        return math.nan, math.nan
    alpha = (1.0 - level) / 2.0
    low = 0.0 if k <= 0 else _beta_ppf(alpha, k, n - k + 1)
    high = 1.0 if k >= n else _beta_ppf(1.0 - alpha, k + 1, n - k)
    return 100.0 * low, 100.0 * high


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (binomial test of b in b + c at 1/2)."""
    n = int(b) + int(c)
    if n == 0:
        return 1.0
    return float(min(1.0, 2.0 * _binom_cdf(min(int(b), int(c)), n, 0.5)))


def discordant(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(images only ``a`` gets right, images only ``b`` gets right)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    return int(np.sum(a & ~b)), int(np.sum(~a & b))


# --- the tidy table -----------------------------------------------------------------------------

def native_deltas(table: pd.DataFrame) -> pd.Series:
    """top-1 minus the top-1 of the native-size cell of the same series and group, in points, from the
    unrounded accuracies (rounding is for display only)."""
    df = table.assign(_g=group_ids(table), _s=series_keys(table))
    ok = df["status"].eq("ok")
    native = df[ok & (df["img_size"] == df["native_size"])].drop_duplicates(["_g", "_s"])
    base = native.set_index(["_g", "_s"])["top1"]
    keys = pd.MultiIndex.from_arrays([df["_g"], df["_s"]])
    delta = df["top1"].to_numpy(dtype=float) - base.reindex(keys).to_numpy(dtype=float)
    return pd.Series(np.where(ok, delta, np.nan), index=table.index)


def with_cell_keys(preds: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """``preds`` with a ``cell_key`` column; older run folders lack it, so name cells by (model, scheme, size)
    where the table makes that unambiguous."""
    if "cell_key" in preds:
        return preds
    ok = table[table["status"].eq("ok")].drop_duplicates(["model", "scheme", "img_size"], keep=False)
    keymap = ok.set_index(["model", "scheme", "img_size"])["cell_key"]
    where = pd.MultiIndex.from_arrays([preds["model"], preds["scheme"], preds["img_size"].astype(int)])
    return preds.assign(cell_key=keymap.reindex(where).to_numpy())


def outcomes(table: pd.DataFrame, predictions) -> dict[str, pd.Series]:
    """cell_key -> correct@1 (bool) indexed by image id, over the images that decoded."""
    right, ids = _coded_outcomes(table, predictions)
    return {key: pd.Series(correct.to_numpy(), index=pd.Index(ids[correct.index.to_numpy()], name="image_id"), name="correct1")
            for key, correct in right.items()}


def _coded_outcomes(table: pd.DataFrame, predictions) -> tuple[dict[str, pd.Series], np.ndarray]:
    """:func:`outcomes` with each image id as a code (ascending, one record per image: the first) and the ids
    the codes number, one numbering for every cell: a report's 16 M records stay a few bytes each rather than
    Python strings, and two cells pair on integers."""
    preds = predictions if isinstance(predictions, pa.Table) else pa.Table.from_pandas(pd.DataFrame(predictions),
                                                                                        preserve_index=False)
    if not preds.num_rows:
        return {}, np.array([None])
    if "cell_key" not in preds.column_names:  # older run folders: their cells named by model, scheme and size
        preds = pa.Table.from_pandas(with_cell_keys(preds.to_pandas(), table), preserve_index=False)
    failed = pc.fill_null(pc.cast(preds["failed"], pa.bool_()), True)  # no record of decoding: not counted
    counted = pc.and_(pc.invert(failed), pc.is_valid(preds["correct1"])).to_numpy()
    correct = pc.fill_null(pc.cast(preds["correct1"], pa.bool_()), False).to_numpy()
    cells, keys = _codes(preds["cell_key"])
    images, ids = _codes(preds["image_id"])
    starts = _stretches(cells)
    if len(starts) > len(np.unique(cells[starts])):  # a cell in several stretches (not written a cell at a time)
        order = np.argsort(cells, kind="stable")
        cells, images, correct, counted = cells[order], images[order], correct[order], counted[order]
        starts = _stretches(cells)
    right = {}
    for a, b in zip(starts, [*starts[1:], len(cells)]):
        mine = counted[a:b]
        if keys[cells[a]] is not None and mine.any():  # a record without a cell key is no cell's
            right[keys[cells[a]]] = _first_each(images[a:b][mine], correct[a:b][mine], len(ids))
    return right, ids


def _first_each(images: np.ndarray, correct: np.ndarray, n: int) -> pd.Series:
    """``correct`` of each image's first record (as drop_duplicates keeps it), indexed by the images' codes
    (below ``n``), ascending."""
    first = np.full(n, len(images))
    np.minimum.at(first, images, np.arange(len(images)))
    held = np.flatnonzero(first < len(images)).astype(np.int32)
    return pd.Series(correct[first[held]], index=held)


def _stretches(codes: np.ndarray) -> np.ndarray:
    """Where each stretch of equal codes begins."""
    return np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A column's values as int codes, one numbering over all its chunks (a null is a value of its own, as
    drop_duplicates takes it), and the values the codes number."""
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    column = pa.table({"c": column}).unify_dictionaries().column("c").combine_chunks()
    values, codes = column.dictionary.to_numpy(zero_copy_only=False), column.indices
    return (codes.fill_null(len(values)) if codes.null_count else codes).to_numpy(), np.append(values, None)


def _paired(a: pd.Series, b: pd.Series) -> tuple[pd.Series, pd.Series]:
    common = a.index.intersection(b.index)
    return a.reindex(common), b.reindex(common)


def annotate(table: pd.DataFrame, predictions) -> pd.DataFrame:
    """The tidy table with :data:`STAT_COLUMNS` from the per-image predictions (NaN where not computable).

    ``top1_ci_*``: exact 95 % binomial CI of the cell's top-1. ``delta_*``: the paired difference to the native-size
    cell of the same scheme (CI, discordant counts gained ``b`` / lost ``c``, exact McNemar p). ``scheme_delta``
    and ``mcnemar_*``: the paired difference to the reference scheme (``mcnemar_ref``) at the same size.
    """
    out = table.copy().reset_index(drop=True)
    for col in STAT_COLUMNS:
        out[col] = "" if col == "mcnemar_ref" else np.nan
    if out.empty:
        return out
    out["top1_delta_vs_native"] = native_deltas(out)
    if predictions is None or "cell_key" not in out:
        return out
    right, _ = _coded_outcomes(out, predictions)
    groups = group_ids(out)
    series = series_keys(out)
    for _, part in out[out["status"].eq("ok")].groupby(groups, sort=False):
        cell = {(series[i], int(r.img_size)): r.cell_key for i, r in zip(part.index, part.itertuples())
                if r.cell_key in right}
        ref = REFERENCE_SERIES if any(series[i] == REFERENCE_SERIES for i in part.index) else None
        for row in part.itertuples():
            mine = right.get(row.cell_key)
            if mine is None or mine.empty:
                continue
            out.loc[row.Index, ["top1_ci_low", "top1_ci_high"]] = binomial_ci(int(mine.sum()), len(mine))
            native = cell.get((series[row.Index], int(row.native_size)))
            if native is not None:
                a, b = _paired(mine, right[native])
                if len(a):
                    gained, lost = discordant(a, b)
                    out.loc[row.Index, ["delta_ci_low", "delta_ci_high"]] = (  # the native cell: itself, zero
                        (0.0, 0.0) if native == row.cell_key else paired_difference_ci(gained, lost, len(a)))
                    out.loc[row.Index, ["delta_b", "delta_c", "delta_p"]] = gained, lost, mcnemar_exact(gained, lost)
            other = cell.get((ref, int(row.img_size))) if ref else None
            if series[row.Index] != ref and other is not None:
                a, b = _paired(mine, right[other])
                if len(a):
                    gained, lost = discordant(a, b)
                    one_forward = ref in str(getattr(row, "shared_with", "") or "").split(",")  # zero by construction
                    out.loc[row.Index, ["scheme_delta_ci_low", "scheme_delta_ci_high"]] = (
                        (0.0, 0.0) if one_forward else paired_difference_ci(gained, lost, len(a)))
                    out.loc[row.Index, ["mcnemar_b", "mcnemar_c", "mcnemar_p"]] = gained, lost, mcnemar_exact(gained, lost)
                    out.at[row.Index, "mcnemar_ref"] = ref
                    out.at[row.Index, "scheme_delta"] = 100.0 * (a.mean() - b.mean())
    counts = ["delta_b", "delta_c", "mcnemar_b", "mcnemar_c"]
    out[counts] = out[counts].astype("Int64")
    return out


def significance_mark(p: float) -> str:
    """``*`` p < 0.05, ``**`` p < 0.01, ``***`` p < 0.001, else nothing."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""
