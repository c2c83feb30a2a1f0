"""Opt-in decoding on the device (``--decode device``): ``torchvision.io.decode_jpeg`` (nvJPEG on a GPU), then
timm's own eval geometry (the same torchvision ``Resize`` and ``CenterCrop``) applied to the decoded tensor.

Not bit-identical to timm: another JPEG decoder and torch's antialiased bicubic instead of PIL's move
pixels by a level or so (measured with nvJPEG on an H200 over 450 real ImageNet JPEGs: 0.24-0.27 levels
on average, 97.7-98.4 % of values within one level), so these cells carry their own preprocessing identity
(``decode: device:cuda``) and never mix with PIL cells. It exists for hosts whose CPUs cannot decode as
fast as the GPU evaluates (measured on an H200 host: PIL in 15 workers 814 img/s, this path 2507 img/s,
compiled hiera_small forwards 1163 img/s). Worker processes only read the files; the main process decodes
each batch on the device, after the work already queued there has run (see ``_decode``). Files nvJPEG
cannot read (PNG, CMYK, broken) are decoded by PIL instead, resized on the device the same way, and counted.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch

from ..preprocess import MultiSizeTransform, View, pil_to_uint8
from .loader import Batch, decode, image_error

JPEG_MAGIC = b"\xff\xd8\xff"


def read_bytes(image: dict[str, Any]) -> bytes:
    """The encoded file of a ``{bytes, path}`` row, as stored."""
    if image.get("bytes") is not None:
        return image["bytes"]
    with open(image["path"], "rb") as fh:
        return fh.read()


class EncodedImages(torch.utils.data.Dataset):
    """Rows ``start..`` of a common-schema dataset as encoded bytes (workers read, the device decodes)."""

    def __init__(self, dataset, start: int = 0) -> None:
        self.dataset = dataset.with_format(None)
        self.start = start

    def __len__(self) -> int:
        return len(self.dataset) - self.start

    def __getitem__(self, i: int):
        position = self.start + i
        row = self.dataset[position]
        try:
            data, error = read_bytes(row["image"]), ""
        except Exception as exc:  # an unreadable file is counted, never fatal (unless --strict)
            data, error = None, image_error(exc)
        return position, row["image_id"], row["label"], data, error


def collate_encoded(items) -> Batch:
    """A :class:`Batch` whose ``encoded`` holds each readable file's bytes; crops come on the device later."""
    batch = Batch(
        positions=torch.tensor([it[0] for it in items], dtype=torch.long),
        image_ids=[it[1] for it in items],
        labels=torch.tensor([it[2] for it in items], dtype=torch.long),
        ok=torch.tensor([it[3] is not None for it in items], dtype=torch.bool),
        errors=[it[4] for it in items],
        crops={},
    )
    batch.encoded = [torch.frombuffer(bytearray(it[3]), dtype=torch.uint8) if it[3] else torch.empty(0, dtype=torch.uint8)
                     for it in items if it[3] is not None]
    return batch


class DeviceCrops:
    """Decodes a batch of encoded images on ``device`` and cuts every size with timm's geometry there."""

    def __init__(self, transform: MultiSizeTransform, device: torch.device) -> None:
        self.transform, self.device = transform, device
        self.fallbacks = 0  # images PIL decoded because nvJPEG could not

    def __call__(self, batch: Batch) -> dict[View, torch.Tensor]:
        """Crops of ``batch``'s images on the device; images neither decoder can read are marked failed."""
        readable = np.flatnonzero(batch.ok.numpy())
        decoded = self._decode(batch.encoded or [])
        kept = []
        for i, (image, error) in zip(readable, decoded):
            if image is None:
                batch.ok[i] = False
                batch.errors[i] = error
            else:
                kept.append(image)
        return {view: self._cut(kept, view) for view in self.transform.views} if kept else {}

    def _decode(self, encoded: list[torch.Tensor]) -> list[tuple[torch.Tensor | None, str]]:
        from torchvision.io import ImageReadMode, decode_jpeg

        jpeg = [i for i, data in enumerate(encoded) if bytes(data[:3].tolist()) == JPEG_MAGIC]
        out: list[torch.Tensor | None] = [None] * len(encoded)
        if self.device.type == "cuda":
            # nvJPEG's hardware decoder writes its outputs before the work already queued on its stream has
            # run, and the caching allocator may hand it blocks that queued kernels still read: on an H200 the
            # full sweep died of a device-side assert in the records of an earlier batch (torchcodec#1634,
            # vision#9606). Draining the stream first is the fix verified upstream (0 of 200 corrupted).
            torch.cuda.current_stream(self.device).synchronize()
        try:
            for i, image in zip(jpeg, decode_jpeg([encoded[i] for i in jpeg], mode=ImageReadMode.RGB,
                                                  device=self.device)):
                out[i] = image
        except RuntimeError:  # one file nvJPEG rejects fails the batched call: decode one by one
            for i in jpeg:
                try:
                    out[i] = decode_jpeg(encoded[i], mode=ImageReadMode.RGB, device=self.device)
                except RuntimeError:
                    pass
        return [(image, "") if image is not None else self._pil(data) for image, data in zip(out, encoded)]

    def _pil(self, data: torch.Tensor) -> tuple[torch.Tensor | None, str]:
        """PIL's decode (timm's) of a file nvJPEG cannot read, moved to the device; or why it failed."""
        try:
            image = decode({"bytes": data.numpy().tobytes(), "path": None})
        except Exception as exc:  # counted as a failed image by the caller
            return None, image_error(exc)
        self.fallbacks += 1
        return pil_to_uint8(image).to(self.device), ""

    def _cut(self, images: list[torch.Tensor], view: View) -> torch.Tensor:
        """Every image resized and center-cropped to ``view`` by timm's own transform, in input order;
        images of one shape go through together."""
        step, size = self.transform.steps[view], view[0]
        by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, image in enumerate(images):
            by_shape[tuple(image.shape[-2:])].append(i)
        out = torch.empty((len(images), 3, size, size), dtype=torch.uint8, device=self.device)
        for members in by_shape.values():
            out[members] = step(torch.stack([images[i] for i in members]))
        return out
