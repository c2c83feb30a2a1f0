"""The tidy table: its columns, and the one builder of a cell's row from the cell's committed records.

One row per (model, scheme, size, crop, data): a cell. Accuracy columns are percentages computed from
the counts beside them and never rounded here; the statistics columns (:data:`~hiera_bench.stats.STAT_COLUMNS`)
are added from the per-image records when the views are written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..cells import CellIdentity, measured_on
from ..metrics import NO_RESULT, cell_metrics, non_finite_reason
from .store import CellStore

#: Columns of the tidy table, in order.
COLUMNS = [
    "label", "model", "arch", "pretrained_tag", "checkpoint", "checkpoint_sha256", "model_args", "pos_embed_kind",
    "scheme", "global_size", "img_size", "native_size", "rel_size", "crop_pct", "interpolation", "crop_mode", "mean", "std", "decode",
    "num_classes", "n_images", "n_failed", "n_correct1", "n_correct5", "top1", "top5", "nll", "ece",
    "top1_delta_vs_native", "real_top1", "real_top5", "real_labels", "imgs_per_s", "gflops", "forward_s", "device", "dtype", "status", "reason", "shared_with",
    "explained_energy", "data", "data_name", "data_layout", "data_place", "data_fingerprint", "limit", "per_class",
    "class_subset", "cell_key",
]


@dataclass(frozen=True)
class SweepColumns:
    """What every row of one sweep shares: the checkpoint and data as loaded, and where it ran."""

    label: str
    model: str
    arch: str
    pretrained_tag: str
    checkpoint: str
    pos_embed_kind: str
    native_size: int
    explained_energy: float
    data: str
    data_layout: str
    device: str
    num_classes: int
    data_name: str | None = None
    data_place: str | None = None  # where the data lies (data_place), whatever --data it was given as
    device_kind: str | None = None  # what the records this run commits name as their device (device_kind)

    def for_size(self, size: int) -> dict[str, Any]:
        return {"label": self.label, "model": self.model, "num_classes": self.num_classes, "arch": self.arch,
                "pretrained_tag": self.pretrained_tag,
                "checkpoint": self.checkpoint, "pos_embed_kind": self.pos_embed_kind, "img_size": size,
                "native_size": self.native_size, "rel_size": round(size / self.native_size, 4),
                "data": self.data, "data_name": self.data_name, "data_layout": self.data_layout,
                "data_place": self.data_place, "device": self.device}


def cell_row(shared: SweepColumns, cell: CellIdentity, store: CellStore, n_total: int, shared_with: list[str],
             gflops: float | None, uses_fit: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """The row of a cell whose records are all committed, and its failed images (id -> error).

    A cell with no image evaluated is never ``ok``: its status says why, so no NaN passes for a result.
    """
    records, seconds = store.read_records(upto=n_total)
    if len(records) < n_total:
        raise RuntimeError(f"cell {cell.scheme}@{cell.img_size} has {len(records)} of {n_total} records")
    bad = records["failed"].astype(bool)
    ok = records[~bad]
    failed = dict(zip(records.loc[bad, "image_id"], records.loc[bad, "error"]))
    metrics = cell_metrics(ok["correct1"].astype(bool).to_numpy(), ok["correct5"].astype(bool).to_numpy(),
                           ok["nll"].to_numpy(), ok["confidence"].to_numpy())
    reason = why_not_ok(records, ok)
    if reason:  # no figure of a cell that failed passes for a result
        metrics.update(dict.fromkeys(NO_RESULT, float("nan")))
    row = {
        **shared.for_size(cell.img_size), **cell.columns(), **metrics, "n_failed": int(bad.sum()),
        "device": measured_on(store.measured_on(), shared.device, shared.device_kind),
        "imgs_per_s": round(len(ok) / seconds, 2) if seconds > 0 else float("nan"),
        "gflops": round(gflops, 4) if gflops is not None else float("nan"), "forward_s": round(seconds, 3),
        "status": "failed" if reason else "ok",
        "reason": reason,
        "shared_with": ",".join(shared_with),
        "explained_energy": round(shared.explained_energy, 6) if uses_fit else float("nan"),
    }
    return row, failed


def why_not_ok(records: pd.DataFrame, ok: pd.DataFrame) -> str:
    """Why a cell's numbers are no result (empty: they are): no image decoded, or the forward gave non-finite
    logits (an overflow: NaN logits rank first in top-k, so top-1 would look plausible)."""
    if not len(ok):
        return f"none of the {len(records)} images could be decoded"
    nonfinite = int((~np.isfinite(ok["nll"].to_numpy(dtype=np.float64))).sum())
    return non_finite_reason(f"{nonfinite} of {len(ok)} images") if nonfinite else ""


def skipped_row(shared: SweepColumns, cell: CellIdentity, reason: str) -> dict[str, Any]:
    """The row of a size the model cannot take (no key: nothing was evaluated)."""
    return {**shared.for_size(cell.img_size), **cell.columns(), "cell_key": None, "status": "skipped", "reason": reason}


def real_columns(real, store: CellStore, class_names: list[str] | None, n_total: int) -> dict[str, Any]:
    """real_top1 / real_top5 / n_real of a cell from its committed records."""
    from ..data.real import real_accuracy

    records, _ = store.record_table(n_total, ("image_id", "topk", "failed"))
    ok = records.to_pandas()
    ok = ok[~ok["failed"].astype(bool)]
    topk = np.stack(ok["topk"].to_numpy()) if len(ok) else np.zeros((0, 5), dtype=np.int64)
    return real_accuracy(real, list(ok["image_id"]), topk, class_names)


def tidy_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> the tidy table with :data:`COLUMNS`, sorted by model, size, scheme."""
    df = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in df:
            df[col] = np.nan
    df = df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]
    return df.sort_values(["model", "img_size", "scheme"], kind="stable").reset_index(drop=True)
