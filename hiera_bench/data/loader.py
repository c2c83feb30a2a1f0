"""Decode each image once (as timm does) and cut every requested size from that one decode."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from ..preprocess import MultiSizeTransform


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
    crops: dict[int, torch.Tensor]  # size -> uint8 (n_ok, 3, R, R)

    def __len__(self) -> int:
        return len(self.image_ids)

    def pin_memory(self) -> "Batch":
        """Called by the DataLoader (``pin_memory=True``) so that host-to-GPU copies can overlap compute."""
        self.labels = self.labels.pin_memory()
        self.crops = {size: crop.pin_memory() for size, crop in self.crops.items()}
        return self


class MultiSizeImages(torch.utils.data.Dataset):
    """Rows ``start..`` of a common-schema ``datasets.Dataset``, decoded once, cropped to every size."""

    def __init__(self, dataset, transform: MultiSizeTransform, start: int = 0) -> None:
        self.dataset = dataset.with_format(None)
        self.transform = transform
        self.start = start

    def __len__(self) -> int:
        return len(self.dataset) - self.start

    def __getitem__(self, i: int):
        position = self.start + i
        row = self.dataset[position]
        try:
            crops = self.transform(decode(row["image"]))
            error = ""
        except Exception as exc:  # any undecodable file is counted, never fatal (unless --strict)
            crops, error = None, f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        return position, row["image_id"], row["label"], crops, error


def collate(items) -> Batch:
    good = [it[3] for it in items if it[3] is not None]
    sizes = good[0].keys() if good else ()
    return Batch(
        positions=torch.tensor([it[0] for it in items], dtype=torch.long),
        image_ids=[it[1] for it in items],
        labels=torch.tensor([it[2] for it in items], dtype=torch.long),
        ok=torch.tensor([it[3] is not None for it in items], dtype=torch.bool),
        errors=[it[4] for it in items],
        crops={size: torch.stack([g[size] for g in good]) for size in sizes},
    )
