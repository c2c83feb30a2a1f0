"""Statistics over per-image records: CIs, paired differences and exact McNemar tests.

Every statistic is computed on the images that decoded (``failed`` is false) and, for a paired
statistic, on the images both cells share. A cell's top-1 gets the exact (Clopper–Pearson) binomial
interval: a bootstrap collapses to zero width at 0 % or 100 % (0 of 64 is not "exactly 0 ± 0").
Paired differences get a percentile bootstrap that resamples images with replacement; it is
vectorised as a matrix product of resample counts with the per-image values, so all statistics over
one image set share one draw. Its seed is fixed, so the same records always give the same intervals.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import beta, binom

from .cells import REFERENCE_SERIES, group_ids, series_keys

N_RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
#: How the statistics were made, recorded in run.json.
SETTINGS = {"top1_ci": "exact binomial (Clopper-Pearson)", "ci": "percentile bootstrap over images (paired differences)",
            "ci_level": LEVEL, "resamples": N_RESAMPLES, "seed": SEED,
            "paired_test": "exact McNemar (two-sided binomial on discordant pairs)"}
#: Elements of one resample-count block (resamples x images); bounds the memory of a draw to ~64 MiB.
_BLOCK = 1 << 23
#: Columns :func:`annotate` adds, all in top-1 percentage points except counts and p-values.
STAT_COLUMNS = [
    "top1_ci_low", "top1_ci_high",
    "delta_ci_low", "delta_ci_high", "delta_b", "delta_c", "delta_p",
    "mcnemar_ref", "scheme_delta", "scheme_delta_ci_low", "scheme_delta_ci_high", "mcnemar_b", "mcnemar_c", "mcnemar_p",
]


def bootstrap_means(values: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> np.ndarray:
    """Means of ``values`` (images x statistics) over ``n_resamples`` resamples of the images.

    Resample ``r`` uses the ``r``-th row of ``default_rng(seed).integers(0, n, (n_resamples, n))``,
    the same draws as a loop of ``integers(0, n, n)`` calls, so a plain loop reproduces it exactly.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    n = values.shape[0]
    if n == 0:
        return np.full((n_resamples, values.shape[1]), np.nan)
    rng = np.random.default_rng(seed)
    means = np.empty((n_resamples, values.shape[1]))
    step = max(1, _BLOCK // n)
    for lo in range(0, n_resamples, step):
        rows = min(step, n_resamples - lo)
        idx = rng.integers(0, n, size=(rows, n))
        flat = (idx + (np.arange(rows) * n)[:, None]).ravel()
        counts = np.bincount(flat, minlength=rows * n).reshape(rows, n)
        means[lo:lo + rows] = counts @ values / n
    return means


def percentile_ci(means: np.ndarray, level: float = LEVEL) -> np.ndarray:
    """Percentile interval of bootstrap means: (statistics x 2) rows of (low, high)."""
    alpha = (1.0 - level) / 2.0
    return np.quantile(np.asarray(means), [alpha, 1.0 - alpha], axis=0).T


def bootstrap_ci(values, n_resamples: int = N_RESAMPLES, level: float = LEVEL, seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values``; for paired 0/1 outcomes pass ``a - b``."""
    low, high = percentile_ci(bootstrap_means(values, n_resamples, seed), level)[0]
    return float(low), float(high)


def binomial_ci(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact (Clopper–Pearson) interval of a proportion ``k / n``, in percent; NaN for ``n == 0``."""
    if n <= 0:
        return math.nan, math.nan
    alpha = (1.0 - level) / 2.0
    low = 0.0 if k <= 0 else float(beta.ppf(alpha, k, n - k + 1))
    high = 1.0 if k >= n else float(beta.ppf(1.0 - alpha, k + 1, n - k))
    return 100.0 * low, 100.0 * high


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (binomial test of b in b + c at 1/2)."""
    n = int(b) + int(c)
    if n == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(int(b), int(c)), n, 0.5)))


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
    preds = predictions.to_pandas() if hasattr(predictions, "to_pandas") else pd.DataFrame(predictions)
    if preds.empty:
        return {}
    preds = with_cell_keys(preds, table)
    good = ~preds["failed"].fillna(True).astype(bool) & preds["correct1"].notna()
    preds = preds[good & preds["cell_key"].notna()]
    return {key: part.drop_duplicates("image_id").set_index("image_id")["correct1"].astype(bool)
            for key, part in preds.groupby("cell_key", sort=False)}


@dataclass
class _Bucket:
    """Statistics over one image set, bootstrapped with one draw."""

    images: pd.Index
    columns: list[np.ndarray] = field(default_factory=list)
    targets: list[tuple[int, str, str]] = field(default_factory=list)  # (row, low column, high column)


class _Plan:
    """Collects statistics by image set, then bootstraps each set once."""

    def __init__(self) -> None:
        self.buckets: dict[str, _Bucket] = {}

    def add(self, values: pd.Series, row: int, low: str, high: str) -> None:
        images = values.index.sort_values()
        digest = hashlib.sha1("\n".join(map(str, images)).encode()).hexdigest()
        bucket = self.buckets.setdefault(digest, _Bucket(images))
        bucket.columns.append(100.0 * values.reindex(bucket.images).to_numpy(dtype=np.float64))
        bucket.targets.append((row, low, high))

    def fill(self, out: pd.DataFrame) -> None:
        for bucket in self.buckets.values():
            cis = percentile_ci(bootstrap_means(np.column_stack(bucket.columns)))
            for (row, low, high), (lo, hi) in zip(bucket.targets, cis):
                out.at[row, low], out.at[row, high] = float(lo), float(hi)


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
    right = outcomes(out, predictions)
    groups = group_ids(out)
    series = series_keys(out)
    plan = _Plan()
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
                    plan.add(a.astype(float) - b.astype(float), row.Index, "delta_ci_low", "delta_ci_high")
                    gained, lost = discordant(a, b)
                    out.loc[row.Index, ["delta_b", "delta_c", "delta_p"]] = gained, lost, mcnemar_exact(gained, lost)
            other = cell.get((ref, int(row.img_size))) if ref else None
            if series[row.Index] != ref and other is not None:
                a, b = _paired(mine, right[other])
                if len(a):
                    plan.add(a.astype(float) - b.astype(float), row.Index, "scheme_delta_ci_low", "scheme_delta_ci_high")
                    gained, lost = discordant(a, b)
                    out.loc[row.Index, ["mcnemar_b", "mcnemar_c", "mcnemar_p"]] = gained, lost, mcnemar_exact(gained, lost)
                    out.at[row.Index, "mcnemar_ref"] = ref
                    out.at[row.Index, "scheme_delta"] = 100.0 * (a.mean() - b.mean())
    plan.fill(out)
    counts = ["delta_b", "delta_c", "mcnemar_b", "mcnemar_c"]
    out[counts] = out[counts].astype("Int64")
    return out


def significance_mark(p: float) -> str:
    """``*`` p < 0.05, ``**`` p < 0.01, ``***`` p < 0.001, else nothing."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""
