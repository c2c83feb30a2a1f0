"""The common shape every data layout produces, and the registry layouts add themselves to.

A layout turns what is on disk (or on the hub) into a ``datasets.Dataset`` with exactly the
columns of :data:`FEATURES`: ``image_id`` (a stable id: the val number such as
``ILSVRC2012_val_00000001`` where the layout knows it, else the file stem), ``label`` (index
into the model's class list, which for ImageNet is timm's sorted-wnid order) and ``image``
(undecoded ``{bytes, path}``; decoding happens later, as timm does it).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import datasets

from ..errors import UserError

FEATURES = datasets.Features(
    {"image_id": datasets.Value("string"), "label": datasets.Value("int64"), "image": datasets.Image(decode=False)}
)

VAL_ID = re.compile(r"(ILSVRC2012_val_\d{8})")
WNID = re.compile(r"(n\d{8})")


class ClassIndex:
    """Class names (WordNet ids for ImageNet) -> label index, by name, never by position."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self._index = {n: i for i, n in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: str) -> bool:
        return name in self._index

    def index(self, name: str, where: str = "") -> int:
        try:
            return self._index[name]
        except KeyError:
            raise UserError(
                f"class {name!r}{f' in {where}' if where else ''} is not one of the model's "
                f"{len(self.names)} classes (e.g. {', '.join(self.names[:3])}); check --data and --model"
            ) from None


def image_id_from_path(path: str) -> str:
    """The val number when the name holds one, else the file stem."""
    found = VAL_ID.search(Path(path).name)
    return found.group(1) if found else Path(path).stem


class Layout(Protocol):
    name: str
    description: str

    def detect(self, location: str) -> bool: ...

    def load(self, location: str, classes: ClassIndex) -> datasets.Dataset: ...


@dataclass(frozen=True)
class _Entry:
    layout: Layout
    priority: int


_LAYOUTS: dict[str, _Entry] = {}


def register_layout(name: str, priority: int = 50) -> Callable[[type], type]:
    """Class decorator: register a layout; detection tries higher ``priority`` first."""

    def wrap(cls: type) -> type:
        instance = cls()
        instance.name = name
        _LAYOUTS[name] = _Entry(instance, priority)
        return cls

    return wrap


def list_layouts() -> list[str]:
    return list(_LAYOUTS)


def get_layout(name: str) -> Layout:
    try:
        return _LAYOUTS[name].layout
    except KeyError:
        raise UserError(f"unknown --data-format {name!r}; choose from {', '.join(_LAYOUTS)}") from None


def detect_layout(location: str) -> Layout:
    for entry in sorted(_LAYOUTS.values(), key=lambda e: -e.priority):
        if entry.layout.detect(location):
            return entry.layout
    raise UserError(
        f"--data {location}: no known ImageNet layout found (class folders, parquet, webdataset tars, "
        f"flat val folder + labels, save_to_disk); force one with --data-format {{{','.join(_LAYOUTS)}}}"
    )


@dataclass
class DataSource:
    """An evaluation set in the common shape, sorted by image id."""

    dataset: datasets.Dataset
    layout: str
    location: str
    class_names: list[str]
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.dataset)

    def fingerprint(self) -> str:
        """Hash of the (image id, label) pairs in order: equal sets evaluate equally."""
        digest = hashlib.sha256()
        table = self.dataset.select_columns(["image_id", "label"]).with_format("arrow")[:]
        digest.update("\n".join(table.column("image_id").to_pylist()).encode())
        digest.update(table.column("label").to_numpy().astype("<i8").tobytes())
        return digest.hexdigest()[:16]


def standardise(dataset: datasets.Dataset) -> datasets.Dataset:
    """Keep the common columns, typed as :data:`FEATURES`."""
    extra = [c for c in dataset.column_names if c not in FEATURES]
    if extra:
        dataset = dataset.remove_columns(extra)
    return dataset.cast(FEATURES)
