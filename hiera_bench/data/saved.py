"""A dataset written by ``datasets``' ``save_to_disk`` (a ``Dataset`` or a ``DatasetDict``), via ``load_from_disk``.

Two schemas are read: the common one (``image_id``, ``label``, ``image``), whose integer labels are
ImageNet-1k indices in timm order unless ``label`` is a ClassLabel, which is mapped by its names;
and the hub's (``image``, ``label`` ClassLabel), as ``load_dataset("ILSVRC/imagenet-1k")`` saves it.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from ..errors import UserError
from ..untrusted import check_arrow, read_json, reading, wrong
from .base import (ClassIndex, common_dataset, labels_for_imagenet_index, labels_for_wnids, read_column,
                   register_layout, wnids_for_names)
from .parquet import from_hub_schema

SPLIT_NAMES = ("validation", "val", "valid")  # never "test": ImageNet's test split is unlabelled


def _pick_split(loaded: datasets.DatasetDict, where: str) -> datasets.Dataset:
    if len(loaded) == 1:
        return next(iter(loaded.values()))
    for name in SPLIT_NAMES:
        if name in loaded:
            return loaded[name]
    raise UserError(f"{where}: splits {', '.join(loaded)}; none is the validation split")


def _from_common_schema(dataset: datasets.Dataset, classes: ClassIndex, where: str) -> datasets.Dataset:
    feature = dataset.features["label"]
    index = read_column(dataset, "label").to_numpy()
    if isinstance(feature, datasets.ClassLabel):
        wnids = wnids_for_names(feature.names, where)
        labels = labels_for_wnids([wnids[i] for i in index], classes, where)
    else:
        labels = labels_for_imagenet_index(index, classes, where)
    ids = read_column(dataset, "image_id").to_pylist()
    return common_dataset(dataset, "image", ids, labels)


SAVE_FIX = "save it again with datasets' save_to_disk, or re-copy the folder"


def check_files(root: Path) -> None:
    """Every Arrow file of the folder read through, its columns those its ``dataset_info.json`` lists:
    ``load_from_disk`` fails on a bad one without naming it."""
    for arrow in sorted(root.rglob("*.arrow")):
        columns = check_arrow(arrow, "saved dataset file", SAVE_FIX)
        info = arrow.parent / "dataset_info.json"
        features = list(read_json(info, "saved dataset info", SAVE_FIX).get("features") or {}) if info.is_file() else []
        if features and sorted(columns) != sorted(features):
            raise wrong(arrow, "saved dataset file", f"has the columns {', '.join(columns)} but {info.name} lists "
                        f"{', '.join(features)}", SAVE_FIX)


@register_layout("saved", priority=90)
class SavedLayout:
    description = "a datasets.save_to_disk folder (common or hub schema)"

    def detect(self, location: str) -> bool:
        root = Path(location)
        return (root / "dataset_dict.json").is_file() or (
            (root / "state.json").is_file() and (root / "dataset_info.json").is_file())

    def load(self, location: str, classes: ClassIndex) -> datasets.Dataset:
        where = f"saved dataset {location}"
        check_files(Path(location))
        with reading(location, "saved dataset", SAVE_FIX):
            loaded = datasets.load_from_disk(location)
        dataset = _pick_split(loaded, where) if isinstance(loaded, datasets.DatasetDict) else loaded
        if "label" not in dataset.column_names:
            raise UserError(f"{where}: no 'label' column (columns: {', '.join(dataset.column_names)})")
        if "image_id" in dataset.column_names:
            return _from_common_schema(dataset, classes, where)
        return from_hub_schema(dataset, classes, where)

    def data_files(self, location: str) -> list[str]:
        return sorted(str(p) for p in Path(location).rglob("*") if p.is_file())
