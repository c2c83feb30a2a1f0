"""Class folders ``val/<wnid>/*.JPEG``: one ``scandir`` per class folder, labels by folder name.

Labels map the folder *name* to the model's classes, so a missing class folder never shifts the
others (datasets' imagefolder numbers classes by position among the folders present). ImageNet-V2's
release names its folders by class *index* instead (``imagenetv2-*-format-val/<0..999>/<file>.jpeg``,
in timm's class order): the ``imagenetv2`` layout reads those.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Collection

import datasets
from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

from ..errors import UserError
from .base import (ClassIndex, arrow_dataset, image_id_from_path, imagenet_wnids, labels_for_imagenet_index,
                   labels_for_wnids, register_layout)

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
#: what datasets' imagefolder loader counts as an image (this layout used it until it was the slow part)
IMAGEFOLDER_EXTENSIONS = frozenset(ImageFolder.EXTENSIONS)


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


@register_layout("folder", priority=40)
class ClassFolderLayout:
    description = "class folders: <root>/<class>/<image> (datasets imagefolder)"

    def detect(self, location: str) -> bool:
        root = Path(location)
        if not root.is_dir():
            return False
        # every folder until one holds images: a set may start with empty class folders
        return any(image_files(d, IMAGE_SUFFIXES) for d in _class_dirs(root))

    def load(self, location: str, classes: ClassIndex) -> datasets.Dataset:
        root = Path(location)
        if not root.is_dir():
            raise UserError(f"--data {root} is not a folder; the folder layout needs <root>/<class>/<image> "
                            "(drop --data-format to detect the layout)")
        names = [d.name for d in _class_dirs(root)]
        if not names:
            raise UserError(f"--data {root}: no class folders inside; expected <root>/<class>/<image>")
        for name in names:
            classes.index(name, where=f"folder {root}")
        listed = [(name, path) for name in names for path in _images_in(root / name)]
        if not listed:
            raise UserError(f"--data {root}: no images found in the class folders")
        # labels by folder name, never by position among the folders present
        labels = labels_for_wnids([name for name, _ in listed], classes, where=f"folder {root}")
        return arrow_dataset(_image_ids(listed), labels, [p for _, p in listed])

    def data_files(self, location: str) -> list[str]:
        return []  # every row is an image file of its own


def _index_folders(root: Path) -> list[Path] | None:
    """The class folders of an ImageNet-V2 style set (every folder named by an ImageNet index), else None."""
    folders = _class_dirs(root)
    if not folders or not all(d.name.isdigit() and int(d.name) < len(imagenet_wnids()) for d in folders):
        return None
    return folders


@register_layout("imagenetv2", priority=45)
class IndexFolderLayout:
    description = "ImageNet-V2: <root>/<class index 0..999 in timm's order>/<image>"

    def detect(self, location: str) -> bool:
        root = Path(location)
        folders = _index_folders(root) if root.is_dir() else None
        return bool(folders) and any(image_files(d, IMAGE_SUFFIXES) for d in folders)

    def load(self, location: str, classes: ClassIndex) -> datasets.Dataset:
        root = Path(location)
        folders = _index_folders(root) if root.is_dir() else None
        if not folders:
            raise UserError(f"--data {root}: not an ImageNet-V2 folder (<root>/<0..999>/<image>); drop --data-format "
                            "to detect the layout")
        listed = [(d.name, path) for d in sorted(folders, key=lambda d: int(d.name)) for path in _images_in(d)]
        if not listed:
            raise UserError(f"--data {root}: no images found in the class folders")
        labels = labels_for_imagenet_index([int(name) for name, _ in listed], classes, where=f"folder {root}")
        return arrow_dataset(_image_ids(listed), labels, [p for _, p in listed])

    def data_files(self, location: str) -> list[str]:
        return []


def _image_ids(listed: list[tuple[str, str]]) -> list[str]:
    """Each image's id: its val number or file stem, or ``<class folder>/<stem>`` where those repeat.

    The statistics pair images by id, so the same file name in two class folders (common in
    ImageNet-Sketch-like sets) would pair the wrong outcomes. Then every image of the set is named
    ``<class folder>/<stem>``, one scheme for the whole set; a set whose names are unique, as ImageNet
    val's are, keeps its ids, and so its baselines and ReaL labels.
    """
    ids = [image_id_from_path(path) for _, path in listed]
    if len(set(ids)) == len(ids):
        return ids
    return [f"{name}/{os.path.splitext(os.path.basename(path))[0]}" for name, path in listed]


def _images_in(folder: Path) -> list[str]:
    """Image files directly in ``folder`` (the extensions datasets' imagefolder takes), sorted by name.

    One ``scandir`` per class: datasets' imagefolder builder resolves its glob file by file in Python,
    which took 26 of the 38 s of opening a 50 000-image val folder (then 22 s again with its cache).
    """
    return image_files(folder, IMAGEFOLDER_EXTENSIONS)


def image_files(folder: Path, suffixes: Collection[str]) -> list[str]:
    """Entries directly in ``folder`` named like images (a suffix in ``suffixes``), sorted by name.

    Hidden names are skipped, as datasets' imagefolder skips them (macOS ``._x.JPEG`` files are not images).
    A symlink is listed even when it dangles or loops (``x.JPEG -> x.JPEG``, which ``is_file()`` cannot
    follow): it then fails to open and counts in ``n_failed`` instead of silently leaving the set.
    """
    with os.scandir(folder) as entries:
        return sorted(e.path for e in entries if not e.name.startswith(".")
                      and os.path.splitext(e.name)[1].lower() in suffixes and (e.is_symlink() or e.is_file()))
