"""Evaluation data: a registry of on-disk layouts, all producing one schema in the model's class order."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, ContextManager

import datasets
import pyarrow.compute as pc

from ..errors import UserError
from ..state import ProcessSetting
from .base import (FEATURES, ClassIndex, DataSource, Layout, detect_layout, get_layout, list_layouts, read_column,
                   register_layout)
from . import classfolder, wnidnames  # noqa: F401  (register their layouts)
from .loader import ignore_large_image_warnings

for _optional in ("parquet", "hub", "webdataset", "flatval", "saved"):
    try:
        __import__(f"{__name__}.{_optional}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"{__name__}.{_optional}":
            raise

DEFAULT_DATA = "hf:ILSVRC/imagenet-1k"

def _quiet_datasets() -> Callable[[], None]:
    """datasets' progress bars and logs off (``HIERA_BENCH_VERBOSE=1`` keeps them), and warnings nobody can act
    on ignored; returns the undo (the caller's settings back, the filters added here removed)."""
    bars_off, level = datasets.utils.are_progress_bars_disabled(), datasets.logging.get_verbosity()
    before = list(warnings.filters)
    # datasets' sort still passes the pyarrow<25 argument
    warnings.filterwarnings("ignore", message="Specifying null_placement", category=FutureWarning)
    ignore_large_image_warnings()
    added = [entry for entry in warnings.filters[:2] if entry not in before]  # a filter the caller had stays
    if os.environ.get("HIERA_BENCH_VERBOSE") != "1":
        datasets.disable_progress_bars()
        # CRITICAL, not ERROR: a file datasets fails to read is logged (over many lines) and then raised, and
        # the raise becomes hiera-bench's one-line error naming the file
        datasets.logging.set_verbosity(datasets.logging.CRITICAL)

    def undo() -> None:
        for entry in added:
            if entry in warnings.filters:
                warnings.filters.remove(entry)
        getattr(warnings, "_filters_mutated", lambda: None)()
        datasets.logging.set_verbosity(level)
        if not bars_off:
            datasets.enable_progress_bars()

    return undo


_QUIET = ProcessSetting(_quiet_datasets)


def quiet_data() -> ContextManager[None]:
    """While hiera-bench reads data (every sweep of the process, in any thread): datasets quiet, see
    :func:`_quiet_datasets`; the caller's settings once the last one ends."""
    return _QUIET.held()


def default_location() -> str:
    """``$HIERA_BENCH_DATA`` or the hub's ImageNet-1k validation split."""
    return os.environ.get("HIERA_BENCH_DATA") or DEFAULT_DATA


def _per_class(dataset, k: int):
    seen: dict[int, int] = {}
    keep = []
    for i, label in enumerate(read_column(dataset, "label").to_pylist()):
        if seen.get(label, 0) < k:
            seen[label] = seen.get(label, 0) + 1
            keep.append(i)
    return dataset.select(keep)


def _refuse_repeated_ids(dataset, location: str) -> None:
    """The statistics pair images by id: two images under one id would pair the wrong outcomes."""
    counts = pc.value_counts(read_column(dataset, "image_id"))
    repeated = counts.filter(pc.greater(counts.field("counts"), 1)).field("values").to_pylist()
    if repeated:
        n = len(repeated)
        raise UserError(
            f"--data {location}: {n} image id{' occurs' if n == 1 else 's occur'} more than once "
            f"(e.g. {', '.join(map(str, repeated[:3]))}); every image needs an id of its own: "
            "rename or remove the repeated images"
        )


def open_data(
    location: str | None,
    class_names: list[str],
    data_format: str | None = None,
    limit: int | None = None,
    per_class: int | None = None,
) -> DataSource:
    """Open an evaluation set; labels index ``class_names``; sorted by image id, then cut by ``limit``/``per_class``."""
    with quiet_data():
        return _open(location or default_location(), class_names, data_format, limit, per_class)


def _open(location: str, class_names: list[str], data_format: str | None, limit: int | None,
          per_class: int | None) -> DataSource:
    if data_format:
        layout = get_layout(data_format)
    elif location.startswith("hf:"):
        layout = get_layout("hub")
    else:
        if not any(ch in location for ch in "*?[") and not Path(location).exists():
            raise UserError(f"--data {location} does not exist; give the path of your ImageNet val set")
        if Path(location).is_dir() and not any(Path(location).iterdir()):
            raise UserError(f"--data {location} is an empty folder; give the folder that holds your ImageNet val set")
        layout = detect_layout(location)
        # detection sees no model: folders 0..9 of a fine-tune whose classes are named so are not ImageNet-V2's
        other = layout.yields_to(location, class_names) if hasattr(layout, "yields_to") else None
        if other:
            layout = get_layout(other)
    try:
        dataset = layout.load(location, ClassIndex(class_names))
    except OSError as exc:  # a layout's own listing of the location failed: not a folder, no permission, a loop
        raise UserError(f"--data {location} cannot be read as the {layout.name} layout "
                        f"({exc.strerror or type(exc).__name__}: {exc.filename or location}); "
                        "check --data and --data-format") from exc
    if len(dataset) == 0:
        raise UserError(f"--data {location}: the dataset is empty")
    _refuse_repeated_ids(dataset, location)
    if dataset.num_rows > 1:
        dataset = dataset.sort("image_id")
    return selected(DataSource(dataset, layout.name, location, list(class_names)), limit, per_class)


def selected(source: DataSource, limit: int | None = None, per_class: int | None = None) -> DataSource:
    """``source``'s images as ``--per-class`` then ``--limit`` select them (of all its images, whatever ``source``
    itself selected: another sweep's selection of the same data)."""
    whole = source.whole if source.whole is not None else source.dataset
    dataset = _per_class(whole, per_class) if per_class is not None else whole
    if limit is not None and limit >= len(dataset):
        limit = None  # it selects every image, as no limit does
    if limit is not None:
        dataset = dataset.select(range(limit))
    return DataSource(dataset, source.layout, source.location, source.class_names, limit=limit, whole=whole)


__all__ = [
    "FEATURES", "ClassIndex", "DataSource", "Layout", "DEFAULT_DATA", "default_location", "detect_layout",
    "get_layout", "list_layouts", "open_data", "quiet_data", "register_layout", "selected",
]
