"""Per-image records: their Arrow schema, built from a batch's outputs, buffered per cell until committed."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..data.loader import Batch
    from .store import CellStore

#: One row per image and cell: what the cell predicted and whether it was right (``failed``: not decoded).
PART_SCHEMA = pa.schema([
    ("position", pa.int64()), ("image_id", pa.string()), ("target", pa.int32()),
    ("topk", pa.list_(pa.int32())), ("correct1", pa.bool_()), ("correct5", pa.bool_()),
    ("nll", pa.float32()), ("confidence", pa.float32()), ("failed", pa.bool_()), ("error", pa.string()),
])


def records_table(batch: Batch, rec: dict[str, np.ndarray] | None, lo: int = 0) -> pa.Table:
    """Part records for batch items ``lo:`` (failed images keep a row with ``failed=True``)."""
    n = len(batch)
    ok = batch.ok.numpy().astype(bool)
    null = ~ok if rec is not None else np.ones(n, dtype=bool)

    def spread(values: np.ndarray | None, dtype) -> pa.Array:
        # arrow arrays built from whole columns: a per-item Python loop costs more than the records are worth
        full = np.zeros(n, dtype=dtype)
        if values is not None:
            full[ok] = values
        return pa.array(full, mask=null)

    k = rec["topk"].shape[1] if rec is not None else 0
    topk_flat = np.zeros((n, k), dtype=np.int32)
    if rec is not None:
        topk_flat[ok] = rec["topk"]
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * k, type=pa.int32())
    topk = pa.ListArray.from_arrays(offsets, pa.array(topk_flat.reshape(-1), type=pa.int32()),
                                    mask=pa.array(null))
    get = (lambda key: rec[key]) if rec is not None else (lambda key: None)
    table = pa.table({
        "position": batch.positions.numpy().astype(np.int64), "image_id": batch.image_ids,
        "target": batch.labels.numpy().astype(np.int32), "topk": topk,
        "correct1": spread(get("correct1"), bool), "correct5": spread(get("correct5"), bool),
        "nll": spread(get("nll"), np.float32), "confidence": spread(get("confidence"), np.float32),
        "failed": ~ok, "error": batch.errors,
    }, schema=PART_SCHEMA)
    return table.slice(lo)


class CellBuffer:
    """Records of one cell not yet committed: one contiguous run of positions, committed as one part.

    Records arrive only for positions the cell lacks (see :mod:`.shards`); a record that does not follow
    the run (the rank's share skipped positions the cell already has) commits the run first, so every
    part names exactly the positions it holds.
    """

    def __init__(self, store: "CellStore", measured_on: str) -> None:
        self.store, self.measured_on, self.start, self.end = store, measured_on, 0, 0
        self.tables: list[pa.Table] = []
        self.seconds = 0.0

    def add(self, table: pa.Table, start: int, end: int, seconds: float) -> None:
        """Records of positions ``[start, end)``."""
        if self.tables and start != self.end:
            self.flush()
        if not self.tables:
            self.start = start
        self.tables.append(table)
        self.end, self.seconds = end, self.seconds + seconds

    def flush(self) -> None:
        if self.tables:
            self.store.write_part(self.start, self.end, pa.concat_tables(self.tables), self.seconds,
                                 self.measured_on)
        self.start, self.tables, self.seconds = self.end, [], 0.0
