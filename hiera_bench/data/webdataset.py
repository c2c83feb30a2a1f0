"""WebDataset tar shards as in ``timm/imagenet-1k-wds`` (``imagenet1k-validation-*.tar``), via ``datasets``.

Each sample holds ``jpg`` (the image), ``cls`` (timm's class index) and ``json`` (``{"filename":
"n01751748/ILSVRC2012_val_00000001.JPEG", "label": 65, ...}``); ``__key__`` is the val number. The
wnid in the json filename is the truth when present; ``cls`` is read as a timm ImageNet-1k index.
"""

from __future__ import annotations

import glob
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import UserError
from ..untrusted import REDOWNLOAD, check_tar, odd_one_out, reading
from .base import (VAL_ID, WNID, ClassIndex, common_dataset, labels_for_imagenet_index, labels_for_wnids,
                   refuse_other_splits, register_layout, validation_files)

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


def tar_files(location: str) -> list[str]:
    """The shards at ``location``: a glob, one .tar, or a folder (its validation split's shards if any)."""
    if any(ch in location for ch in "*?["):
        return sorted(f for f in glob.glob(location) if f.endswith(".tar"))
    root = Path(location)
    if root.is_file():
        return [str(root)] if root.suffix == ".tar" else []
    if not root.is_dir():
        return []
    return [str(f) for f in validation_files(sorted(root.glob("*.tar")))]


def _json_field(samples: pa.ChunkedArray | None, field: str) -> list | None:
    if samples is None or not pa.types.is_struct(samples.type) or samples.type.get_field_index(field) < 0:
        return None
    return pc.struct_field(samples, field).to_pylist()


@register_layout("webdataset", priority=80)
class WebDatasetLayout:
    description = "WebDataset shards (*.tar with jpg/cls/json, as timm/imagenet-1k-wds)"

    def detect(self, location: str) -> bool:
        return bool(tar_files(location))

    def load(self, location: str, classes: ClassIndex) -> datasets.Dataset:
        files = tar_files(location)
        if not files:
            raise UserError(f"--data {location}: no .tar shards found (give a folder, a shard or a glob)")
        refuse_other_splits(files, location)
        where = f"webdataset {location}"
        kinds = {file: check_tar(file, "webdataset shard", REDOWNLOAD) for file in files}
        odd_one_out(kinds, "webdataset shard", "member kinds", "re-download the odd one")
        with reading(location, "webdataset", REDOWNLOAD):
            loaded = datasets.load_dataset("webdataset", data_files={"validation": files}, split="validation")
        image_key = next((k for k in IMAGE_KEYS if k in loaded.column_names), None)
        if image_key is None:
            raise UserError(f"{where}: samples have no image ({'/'.join(IMAGE_KEYS)}); keys are {loaded.column_names}")
        table = loaded.select_columns([c for c in ("__key__", "cls", "json") if c in loaded.column_names])
        columns = table.with_format("arrow")[:]
        keys = columns.column("__key__").to_pylist()
        info = columns.column("json") if "json" in columns.column_names else None
        filenames = _json_field(info, "filename") or [""] * len(keys)
        ids = [_val_id(f, k) for f, k in zip(filenames, keys)]
        wnids = [found.group(1) if (found := WNID.search(f or "")) else None for f in filenames]
        if all(wnids):
            labels = labels_for_wnids(wnids, classes, where)
        elif "cls" in columns.column_names:
            labels = labels_for_imagenet_index(columns.column("cls").to_numpy(), classes, where)
        else:
            raise UserError(f"{where}: samples have neither a cls label nor a json filename with a wnid")
        return common_dataset(loaded, image_key, ids, labels)

    def data_files(self, location: str) -> list[str]:
        return tar_files(location)


def _val_id(filename: str | None, key: str) -> str:
    """The val number from the json filename or the sample key, else the key itself."""
    for text in (filename or "", key):
        found = VAL_ID.search(text)
        if found:
            return found.group(1)
    return Path(filename).stem if filename else key
