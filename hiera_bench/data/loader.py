"""Decode each image once (as timm does) and cut every requested size from that one decode."""

from __future__ import annotations

import io
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from ..preprocess import MultiSizeTransform, View
from .shared import DecodedCrops


def ignore_large_image_warnings(_worker: int | None = None) -> None:
    """PIL warns (once per image, from whichever thread or worker decodes it) about images above MAX_IMAGE_PIXELS;
    timm decodes them all the same, so a sweep does too and says how many there were once, in its summary. Set
    within a sweep's :func:`~hiera_bench.data.quiet_data` and in each DataLoader worker (its ``worker_init_fn``)."""
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def is_large(image: Image.Image) -> bool:
    """Above PIL's decompression-bomb warning limit (89 Mpx by default): decoded, but counted."""
    limit = Image.MAX_IMAGE_PIXELS
    return limit is not None and image.width * image.height > limit


def decode(image: dict[str, Any]) -> Image.Image:
    """``{bytes, path}`` -> RGB PIL image: ``Image.open(...).convert("RGB")`` like timm (no EXIF rotation)."""
    # b"" (a zero-byte file stored inline) is data, not absent: it must fail as an image, not as a path
    source = io.BytesIO(image["bytes"]) if image.get("bytes") is not None else image["path"]
    with Image.open(source) as img:
        return img.convert("RGB")


@dataclass
class Batch:
    positions: torch.Tensor  # (n,) position in the data source, every item
    image_ids: list[str]  # every item
    labels: torch.Tensor  # (n,)
    ok: torch.Tensor  # (n,) bool: decoded
    errors: list[str]  # "" where ok
    crops: dict[View, torch.Tensor]  # (size R, crop_pct) -> uint8 (n_ok, 3, R, R)
    encoded: list[torch.Tensor] | None = None  # --decode gpu: each readable file's bytes, decoded on the device
    large: int = 0  # images above PIL's decompression-bomb limit (decoded all the same)
    shared: int = 0  # images whose crops an earlier checkpoint of the command kept (not decoded again)

    def __len__(self) -> int:
        return len(self.image_ids)

    def pin_memory(self) -> "Batch":
        """Called by the DataLoader (``pin_memory=True``) so that host-to-GPU copies can overlap compute."""
        self.labels = self.labels.pin_memory()
        self.crops = {view: crop.pin_memory() for view, crop in self.crops.items()}
        return self


class MultiSizeImages(torch.utils.data.Dataset):
    """Rows ``start..`` of a common-schema ``datasets.Dataset``, decoded once, cropped to every view (size, crop).

    ``threads > 1`` decodes a batch's images on that many threads (PIL releases the GIL while it
    decodes and resamples): on a CPU device, where worker processes would run beside the forward and
    stall its intra-op threads, the batch is decoded on every core between forwards instead.
    """

    def __init__(self, dataset, transform: MultiSizeTransform, start: int = 0, threads: int = 1,
                 shared: DecodedCrops | None = None) -> None:
        self.dataset = dataset.with_format(None)
        self.transform = transform
        self.shared = shared
        self.start = start
        self.threads = max(1, int(threads))
        self._pool: ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        return len(self.dataset) - self.start

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pool": None}  # a worker process makes its own pool

    def __getitem__(self, i: int):
        position = self.start + i
        return self._item(position, self.dataset[position])

    def __getitems__(self, indices: list[int]) -> list:
        """A batch (the DataLoader's batched fetch): rows read in order, images decoded in parallel."""
        positions = [self.start + i for i in indices]
        rows = [self.dataset[p] for p in positions]
        if self.threads == 1 or len(rows) == 1:
            return [self._item(p, r) for p, r in zip(positions, rows)]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="hiera-bench-decode")
        return list(self._pool.map(self._item, positions, rows))

    def _item(self, position: int, row: dict[str, Any]):
        kept = self.shared.read(position) if self.shared is not None else None
        if kept is not None:
            return position, row["image_id"], row["label"], kept[0], "", kept[1], True
        large = False
        try:
            image = decode(row["image"])
            large = is_large(image)
            crops = self.transform(image)
            error = ""
        except Exception as exc:  # any undecodable file is counted, never fatal (unless --strict)
            crops, error = None, image_error(exc)
        if crops is not None and self.shared is not None:
            self.shared.keep(position, crops, large)
        return position, row["image_id"], row["label"], crops, error, large, False


#: A Python object's repr names its address: an image held as bytes fails as ``<_io.BytesIO object at 0x7f…>``,
#: which would make each run's (and each rank's) record of one bad image differ.
_OBJECT_AT = re.compile(r"<([\w.]+) object at 0x[0-9a-fA-F]+>")


def image_error(exc: BaseException) -> str:
    """The one-line record of why an image could not be read or decoded, the same in every run."""
    return _OBJECT_AT.sub(r"<\1>", f"{type(exc).__name__}: {exc}".splitlines()[0])[:200]


def collate(items) -> Batch:
    good = [it[3] for it in items if it[3] is not None]
    views = good[0].keys() if good else ()
    return Batch(
        positions=torch.tensor([it[0] for it in items], dtype=torch.long),
        image_ids=[it[1] for it in items],
        labels=torch.tensor([it[2] for it in items], dtype=torch.long),
        ok=torch.tensor([it[3] is not None for it in items], dtype=torch.bool),
        errors=[it[4] for it in items],
        crops={view: torch.stack([g[view] for g in good]) for view in views},
        large=sum(bool(it[5]) for it in items),
        shared=sum(bool(it[6]) for it in items),
    )
