"""The common shape every data layout produces, and the registry layouts add themselves to.

A layout turns what is on disk (or on the hub) into a ``datasets.Dataset`` with exactly the
columns of :data:`FEATURES`: ``image_id`` (a stable id, unique in the set: the val number such as
``ILSVRC2012_val_00000001`` where the layout knows it, else the file stem), ``label`` (index
into the model's class list, which for ImageNet is timm's sorted-wnid order) and ``image``
(undecoded ``{bytes, path}``; decoding happens later, as timm does it).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol, Sequence

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets.table import InMemoryTable

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


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """timm's ImageNet-1k class order (sorted wnids): what every integer ImageNet label in the wild indexes."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo().label_names())


@functools.cache
def _imagenet_descriptions() -> tuple[str, ...]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return tuple(info.index_to_description(i) for i in range(len(imagenet_wnids())))


def wnids_for_names(names: Sequence[str], where: str) -> list[str]:
    """The wnid of each ``ClassLabel`` name: names that are wnids stay; descriptions must be timm's 1000.

    The hub's ``ILSVRC/imagenet-1k`` names its ClassLabel by description ("tench, Tinca tinca") in
    sorted-wnid order, so index i is timm's class i. That is checked here against timm's own
    descriptions rather than assumed, because a relabelled copy would otherwise score silently wrong.
    """
    names = list(names)
    if names and all(WNID.fullmatch(n) for n in names):
        return names
    reference = _imagenet_descriptions()
    if len(names) == len(reference):
        same = sum(_first_term(a) == _first_term(b) for a, b in zip(names, reference))
        if same >= 0.95 * len(names):
            return list(imagenet_wnids())
    raise UserError(
        f"{where}: its label names ({', '.join(map(repr, names[:2]))}, ...) are neither wnids nor ImageNet-1k's "
        f"1000 classes in timm order; relabel it with wnids or use a class-folder copy"
    )


def _first_term(description: str) -> str:
    return description.split(",")[0].strip().lower()


def labels_for_wnids(wnids: Sequence[str], classes: ClassIndex, where: str) -> np.ndarray:
    """Label index of each wnid in ``classes`` (an unknown class is a :class:`UserError`)."""
    unique, inverse = np.unique(np.asarray(wnids, dtype=str), return_inverse=True)
    table = np.array([classes.index(str(w), where=where) for w in unique], dtype=np.int64)
    return table[inverse.reshape(-1)]


def labels_for_imagenet_index(indices: Sequence[int], classes: ClassIndex, where: str) -> np.ndarray:
    """Label index in ``classes`` of each ImageNet-1k index (timm order)."""
    indices = np.asarray(indices, dtype=np.int64)
    wnids = imagenet_wnids()
    bad = indices[(indices < 0) | (indices >= len(wnids))]
    if bad.size:
        raise UserError(f"{where}: label {int(bad[0])} is not an ImageNet-1k class index (0-999); "
                        "is this the unlabelled test split?")
    return labels_for_wnids([wnids[i] for i in indices], classes, where)


def common_dataset(dataset: datasets.Dataset, image_column: str, image_ids: Sequence[str],
                   labels: Sequence[int]) -> datasets.Dataset:
    """``dataset``'s images with the given ids and labels, in the common schema.

    Columns are swapped rather than mapped so that image bytes (tens of GB for ImageNet) are never rewritten.
    """
    dataset = dataset.select_columns([image_column])
    if image_column != "image":
        dataset = dataset.rename_column(image_column, "image")
    dataset = dataset.add_column("image_id", list(image_ids)).add_column("label", np.asarray(labels, dtype=np.int64))
    return standardise(dataset)


def arrow_dataset(image_ids: Sequence[str], labels: Sequence[int], paths: Sequence[str]) -> datasets.Dataset:
    """A common-schema dataset of image files, built as Arrow columns (``from_dict`` encodes row by row:
    2 s for ImageNet val's 50 000 paths)."""
    try:
        ids, files = pa.array(list(image_ids), pa.string()), pa.array(list(paths), pa.string())
    except UnicodeEncodeError:
        raise _not_utf8(paths) from None
    table = pa.table({
        "image_id": ids,
        "label": pa.array(np.asarray(labels, dtype=np.int64)),
        "image": pa.StructArray.from_arrays([pa.nulls(len(paths), pa.binary()), files], names=["bytes", "path"]),
    }, schema=FEATURES.arrow_schema)
    return datasets.Dataset(InMemoryTable(table), info=datasets.DatasetInfo(features=FEATURES))


def _not_utf8(paths: Sequence[str]) -> UserError:
    """The error for file names that are not UTF-8 (Python keeps their bytes as surrogates; ids must be text)."""
    bad = []
    for path in paths:
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            bad.append(path)
    shown = bad[0].encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") if bad else "?"
    return UserError(f"{shown}: the file name is not UTF-8 ({len(bad)} such name(s) in the set, often from an archive "
                     "made on Windows); rename them to UTF-8 (e.g. convmv -f latin1 -t utf8 -r --notest FOLDER) and re-run")


#: How hub repos and shard writers name a split in a file name (``validation-00000-of-00014.parquet``,
#: ``val-0.parquet``, ``imagenet1k-validation-00.tar``): a word of its own, between ``-``, ``_`` or ``.``.
SPLIT_WORD = r"(?:^|[-_.])({})(?=[-_.0-9]|$)"
VALIDATION_SPLIT = re.compile(SPLIT_WORD.format("validation|valid|val"), re.IGNORECASE)
OTHER_SPLIT = re.compile(SPLIT_WORD.format("training|train|testing|test"), re.IGNORECASE)


def validation_files(files: Sequence[Path]) -> list[Path]:
    """Of a folder's data files, those of the validation split where the names tell splits apart, else all."""
    validation = [f for f in files if VALIDATION_SPLIT.search(f.name)]
    return validation or list(files)


def refuse_other_splits(files: Sequence[str], location: str) -> None:
    """A folder whose files are named as both the train and the test split, none as validation: reading all would
    score two splits as one (a single split, as many one-split sets name theirs ``train-*``, is read; files or a
    glob given by name are read as given)."""
    splits = {found.group(1).lower().removesuffix("ing") for f in files if (found := OTHER_SPLIT.search(os.path.basename(f)))}
    if Path(location).is_dir() and len(splits) > 1 and not any(VALIDATION_SPLIT.search(os.path.basename(f)) for f in files):
        named = ", ".join(os.path.basename(f) for f in files[:2]) + (" ..." if len(files) > 2 else "")
        raise UserError(f"--data {location}: its files ({named}) are of the {' and '.join(sorted(splits))} splits, "
                        "no validation; give the files of the split to evaluate (a file or a glob, e.g. "
                        f"--data '{os.path.join(location, 'test-*')}')")


def image_id_from_path(path: str) -> str:
    """The val number when the name holds one, else the file stem."""
    name = os.path.basename(path)  # os.path, not pathlib: this runs once per image (50 000 for ImageNet val)
    found = VAL_ID.search(name)
    return found.group(1) if found else os.path.splitext(name)[0]


class Layout(Protocol):
    """An on-disk layout. It may also define ``near_miss(location) -> str | None``: the one-line error for a
    location it almost reads (asked only when no layout detects the location)."""

    name: str
    description: str

    def detect(self, location: str) -> bool: ...

    def load(self, location: str, classes: ClassIndex) -> datasets.Dataset: ...

    def data_files(self, location: str) -> list[str]:
        """The files that rows with inline image bytes are read from (parquet, tar shards, arrow files).

        :meth:`DataSource.state` stats them; layouts whose rows point at image files return none.
        """
        ...


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


def _detected(location: str) -> Layout | None:
    """The highest-priority layout that reads ``location``."""
    return next((e.layout for e in sorted(_LAYOUTS.values(), key=lambda e: -e.priority) if e.layout.detect(location)),
                None)


def detect_layout(location: str) -> Layout:
    found = _detected(location)
    if found is not None:
        return found
    for entry in _LAYOUTS.values():  # a layout may say why an almost-matching location is not its
        why = entry.layout.near_miss(location) if hasattr(entry.layout, "near_miss") else None
        if why:
            raise UserError(why)
    inside = layout_one_level_down(location)
    if inside is not None:
        folder, layout = inside
        raise UserError(f"--data {location}: no known ImageNet layout here, but {folder} is one ({layout.name}); "
                        f"give --data {folder}")
    raise UserError(
        f"--data {location}: no known ImageNet layout found (class folders, parquet, webdataset tars, "
        f"flat val folder + labels, save_to_disk); force one with --data-format {{{','.join(_LAYOUTS)}}}"
    )


def layout_one_level_down(location: str, look_at: int = 8) -> tuple[str, Layout] | None:
    """A val-named subfolder of ``location`` some layout reads (``imagenet/`` given for ``imagenet/val/``; at
    most ``look_at``). Only val-named ones: a class folder one level down would read as a set of its own."""
    root = Path(location)
    if not root.is_dir():
        return None
    folders = sorted(p for p in root.iterdir() if p.is_dir() and "val" in p.name.lower() and not p.name.startswith("."))
    for folder in folders[:look_at]:
        found = _detected(str(folder))
        if found is not None:
            return str(folder), found
    return None


def read_column(dataset: datasets.Dataset, name: str) -> pa.ChunkedArray:
    """One column of every selected row as one Arrow array, straight from the memory-mapped table (no image
    bytes copied); a plain ``dataset[name]`` walks the rows one Python call each (seconds at 50 000 images)."""
    return dataset.with_format("arrow")[name]


@dataclass
class DataSource:
    """An evaluation set in the common shape, sorted by image id."""

    dataset: datasets.Dataset
    layout: str
    location: str
    class_names: list[str]
    notes: list[str] = field(default_factory=list)
    limit: int | None = None  # the --limit in effect: None where it selected every image
    whole: datasets.Dataset | None = field(default=None, repr=False)  # every image, before --per-class and --limit

    def __len__(self) -> int:
        return len(self.dataset)

    def image_ids(self) -> list[str]:
        return read_column(self.dataset, "image_id").to_pylist()

    def labels(self) -> np.ndarray:
        return read_column(self.dataset, "label").to_numpy()

    def place(self) -> str:
        """Where the data lies, whatever ``--data`` it was given as (``val``, ``./val``, a link to it): a hash of its
        real absolute path, or the hub location as given. Cells of one place measured before its images changed
        are left out of the views (a relative ``--data`` from two folders names two places). The host is not part of
        it: a CI job that restores the run folder runs on a new host each time, at the same path."""
        where = self.location if self.location.startswith("hf:") else os.path.realpath(os.path.expanduser(self.location))
        return hashlib.sha256(where.encode()).hexdigest()[:16]

    def fingerprint(self) -> str:
        """Hash of the (image id, label) pairs in order: equal sets evaluate equally."""
        digest = hashlib.sha256()
        digest.update("\n".join(self.image_ids()).encode())
        digest.update(self.labels().astype("<i8").tobytes())
        return digest.hexdigest()[:16]

    def state(self) -> str:
        """Hash of (path, size, mtime_ns) of every local file the rows are read from, as it is on disk now.

        The fingerprint is the set's identity across machines; the state tells whether the files behind it
        changed since (a repaired image, a rewritten shard), so that results of the old files are not
        reused. Files are only stat'ed: hashing 6 GB of ImageNet would take minutes, and a rewrite or a
        touch moves the mtime. Rows with inline bytes contribute their layout's data files instead. Paths
        count relative to the files' common folder: a set moved or copied with its mtimes (``rsync -a``,
        ``cp -p``; a node-local copy, a SLURM job's scratch folder) keeps its state, so its cells are reused.
        """
        return files_state(self._row_files(), self._data_files())

    def earlier_states(self) -> list[str]:
        """:meth:`state` as earlier versions computed it: run folders they wrote key their cells by it."""
        return [files_state_v0(self._row_files(), self._data_files())]

    def _data_files(self) -> list[str]:
        layout = get_layout(self.layout)
        return layout.data_files(self.location) if hasattr(layout, "data_files") else []  # older plug-ins

    def _row_files(self) -> list[str]:
        """The path of each selected row whose image is a file, read without touching any image bytes.

        The rows are picked from the whole table by id (ids are unique): the sorted and cut dataset is an
        index over that table, and gathering its image column through the index would copy every image.
        """
        table = self.dataset.data
        image = table.column("image")
        selected = read_column(self.dataset, "image_id")
        on_disk = pc.and_(pc.is_null(pc.struct_field(image, "bytes")),
                          pc.is_in(table.column("image_id"), value_set=selected.combine_chunks()))
        return [p for p in pc.struct_field(image, "path").filter(on_disk).to_pylist() if p]


def files_state(row_files: Sequence[str], data_files: Sequence[str]) -> str:
    """:meth:`DataSource.state` of these files: each named relative to the common folder of all of them."""
    absolute = [os.path.abspath(p) for p in (*row_files, *data_files)]
    if _plain_posix(absolute):
        # os.path.commonpath and relpath of 50 000 files took 0.4-0.5 s on a 2-core VM: the common folder is that
        # of the two paths whose components sort first and last (all commonpath compares), and a normalised path's
        # name below it the rest of the path
        parts = [p.split("/") for p in absolute]
        first, last = min(range(len(parts)), key=parts.__getitem__), max(range(len(parts)), key=parts.__getitem__)
        root = os.path.commonpath([absolute[first], absolute[last]])
        inside = root.rstrip("/") + "/"
        named = [(p[len(inside):] if p.startswith(inside) and p != root else os.path.relpath(p, root), p)
                 for p in absolute]
    else:
        root = os.path.commonpath(absolute) if absolute else ""
        named = [(os.path.relpath(p, root), p) for p in absolute]
    return _stats_hash(sorted(named[:len(row_files)]) + named[len(row_files):])


def _plain_posix(absolute: Sequence[str]) -> bool:
    """Normalised absolute POSIX paths with no empty or ``.`` component after the leading ``/`` (``//`` at the start
    survives normalisation), where commonpath and relpath reduce to comparing and cutting the split paths."""
    return bool(absolute) and os.sep == "/" and not os.altsep and not any(p.startswith("//") for p in absolute)


def files_state_v0(row_files: Sequence[str], data_files: Sequence[str]) -> str:
    """The state of hiera-bench 0.1.0: over the paths as given, so a moved or copied set had another."""
    return _stats_hash((p, p) for p in sorted(row_files) + list(data_files))


def _stats_hash(named: Iterable[tuple[str, str]]) -> str:
    """Hash of ``name<TAB>size<TAB>mtime_ns`` lines, each file stat'ed at its path."""
    return hashlib.sha256("".join(f"{name}\t{_stat_key(path)}\n" for name, path in named).encode()).hexdigest()[:16]


def _stat_key(path: str) -> str:
    """``size<TAB>mtime_ns`` of ``path``; of the link itself where it dangles or loops; ``missing`` if nothing is there."""
    for stat in (os.stat, os.lstat):
        try:
            found = stat(path)
        except OSError:
            continue
        return f"{found.st_size}\t{found.st_mtime_ns}"
    return "missing"


def standardise(dataset: datasets.Dataset) -> datasets.Dataset:
    """Keep the common columns, typed as :data:`FEATURES` (image bytes are re-typed, never rewritten)."""
    extra = [c for c in dataset.column_names if c not in FEATURES]
    if extra:
        dataset = dataset.remove_columns(extra)
    if isinstance(dataset.features["image"], datasets.Image):
        dataset = dataset.cast_column("image", FEATURES["image"])
    if dataset.features != FEATURES:
        dataset = dataset.cast(FEATURES)
    return dataset.select_columns(list(FEATURES))
