"""Local parquet files in the hub ``ILSVRC/imagenet-1k`` format, given as a folder, a file or a glob.

Rows carry ``image {bytes, path}`` and a ``label`` ClassLabel named by description; the image path
(or a ``path`` column) is ``ILSVRC2012_val_00000001_n01751748.JPEG``. The wnid in that path is the
truth; the ClassLabel index is only used when no path names a wnid, after checking that its names
are timm's classes in timm's order (see :func:`~.base.wnids_for_names`).
"""

from __future__ import annotations

import glob
from pathlib import Path

import datasets
import numpy as np
import pyarrow.compute as pc

from ..errors import UserError
from ..untrusted import REDOWNLOAD, check_parquet, odd_one_out, reading
from .base import (WNID, ClassIndex, common_dataset, image_id_from_path, labels_for_wnids, read_column,
                   refuse_other_splits, register_layout, validation_files, wnids_for_names)

GLOB_CHARS = "*?["


def parquet_files(location: str) -> list[str]:
    """The parquet files at ``location``: a glob, a file, or a folder (its validation split's files if any)."""
    if any(ch in location for ch in GLOB_CHARS):
        return sorted(f for f in glob.glob(location, recursive=True) if f.endswith(".parquet"))
    root = Path(location)
    if root.is_file():
        return [str(root)] if root.suffix == ".parquet" else []
    if not root.is_dir():
        return []
    found = sorted(root.glob("*.parquet")) or sorted(root.glob("data/*.parquet"))
    # a full copy of the hub repo also holds train and test shards: only validation is ours
    return [str(f) for f in validation_files(found)]


def _image_column(dataset: datasets.Dataset) -> str:
    images = [k for k, f in dataset.features.items() if isinstance(f, datasets.Image)]
    if "image" in dataset.features:
        return "image"
    if not images:
        raise UserError(f"no image column among {', '.join(dataset.column_names)}")
    return images[0]


def from_hub_schema(dataset: datasets.Dataset, classes: ClassIndex, where: str) -> datasets.Dataset:
    """Hub-format rows (``image``, ``label`` ClassLabel, optional ``path``) -> the common schema."""
    image_column = _image_column(dataset)
    image = read_column(dataset, image_column)
    paths = read_column(dataset, "path") if "path" in dataset.column_names else pc.struct_field(image, "path")
    paths = [p or "" for p in paths.to_pylist()]
    wnids = [found.group(1) if (found := WNID.search(Path(p).name)) else None for p in paths]
    if all(wnids):
        labels = labels_for_wnids(wnids, classes, where)
    else:
        labels = _labels_from_classlabel(dataset, classes, where)
    ids = [image_id_from_path(p) if p else f"{i:08d}" for i, p in enumerate(paths)]
    return common_dataset(dataset, image_column, ids, labels)


def _labels_from_classlabel(dataset: datasets.Dataset, classes: ClassIndex, where: str) -> np.ndarray:
    feature = dataset.features.get("label")
    if not isinstance(feature, datasets.ClassLabel):
        raise UserError(f"{where}: no wnid in the image paths and no 'label' ClassLabel column; "
                        "this does not look like ImageNet val with labels")
    wnids = wnids_for_names(feature.names, where)
    index = read_column(dataset, "label").to_numpy()
    if (index < 0).any():
        raise UserError(f"{where}: some labels are -1 (unlabelled); the test split has no labels, use validation")
    return labels_for_wnids([wnids[i] for i in index], classes, where)


@register_layout("parquet", priority=70)
class ParquetLayout:
    description = "parquet files in the hub ILSVRC/imagenet-1k format (folder, file or glob)"

    def detect(self, location: str) -> bool:
        return bool(parquet_files(location))

    def load(self, location: str, classes: ClassIndex) -> datasets.Dataset:
        files = parquet_files(location)
        if not files:
            raise UserError(f"--data {location}: no .parquet files found (give a folder, a file or a glob)")
        refuse_other_splits(files, location)
        columns = {file: check_parquet(file, "parquet data file", REDOWNLOAD) for file in files}
        odd_one_out(columns, "parquet data file", "columns", "re-download the odd one")
        with reading(location, "parquet data", REDOWNLOAD):
            loaded = datasets.load_dataset("parquet", data_files={"validation": files}, split="validation")
        return from_hub_schema(loaded, classes, where=f"parquet {location}")

    def data_files(self, location: str) -> list[str]:
        return parquet_files(location)
