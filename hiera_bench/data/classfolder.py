"""Class folders ``val/<wnid>/*.JPEG``: one ``scandir`` per class folder, labels by folder name.

Labels map the folder *name* to the model's classes, so a missing class folder never shifts the
others (datasets' imagefolder numbers classes by position among the folders present). ImageNet-V2's
release names its folders by class *index* instead (``imagenetv2-*-format-val/<0..999>/<file>.jpeg``,
in timm's class order): the ``imagenetv2`` layout reads those.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Collection, Iterator

import datasets
from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

from ..errors import UserError
from .base import (VAL_ID, WNID, ClassIndex, arrow_dataset, image_id_from_path, imagenet_wnids,
                   labels_for_imagenet_index, labels_for_wnids, layout_one_level_down, register_layout)

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
#: what datasets' imagefolder loader counts as an image (this layout used it until it was the slow part)
IMAGEFOLDER_EXTENSIONS = frozenset(ImageFolder.EXTENSIONS)


#: Folders archivers and NAS systems add that hold no images of the set: macOS zips' resource forks, and
#: (names starting with ``@`` or ``#``) Synology's ``@eaDir`` thumbnails and ``#recycle`` bins.
NOT_CLASSES = {"__MACOSX"}


def _of_the_set(name: str) -> bool:
    """A folder named so may hold the set's images (not hidden, not an archiver's or a NAS's own)."""
    return not name.startswith((".", "@", "#")) and name not in NOT_CLASSES


def class_dirs(root: Path) -> list[Path]:
    """The folders of ``root`` that may hold the set's images, sorted."""
    return sorted(p for p in root.iterdir() if p.is_dir() and _of_the_set(p.name))


def _holds_images(folder: Path, suffixes: Collection[str]) -> bool:
    """``folder`` or a folder below it holds an image."""
    return any(True for _ in _walk_images(folder, suffixes))


def _nested_class_folders(root: Path) -> bool:
    """Every folder of ``root`` is named by a wnid and one holds its images a level or more down (a tar unpacked
    into its own folder: ``val/n01440764/n01440764/*.JPEG``)."""
    folders = class_dirs(root)
    return bool(folders) and all(WNID.fullmatch(d.name) for d in folders) and any(
        _holds_images(d, IMAGE_SUFFIXES) for d in folders)


@register_layout("folder", priority=40)
class ClassFolderLayout:
    description = "class folders: <root>/<class>/<image> (datasets imagefolder)"

    def detect(self, location: str) -> bool:
        root = Path(location)
        if not root.is_dir():
            return False
        # every folder until one holds images: a set may start with empty class folders
        return any(image_files(d, IMAGE_SUFFIXES) for d in class_dirs(root)) or _nested_class_folders(root)

    def load(self, location: str, classes: ClassIndex) -> datasets.Dataset:
        root = Path(location)
        if not root.is_dir():
            raise UserError(f"--data {root} is not a folder; the folder layout needs <root>/<class>/<image> "
                            "(drop --data-format to detect the layout)")
        names = [d.name for d in class_dirs(root)]
        if not names:
            raise UserError(f"--data {root}: no class folders inside; expected <root>/<class>/<image>")
        _refuse_other_folders(root, [n for n in names if n not in classes], classes)
        listed = [(name, path) for name in names for path in _images_in(root / name)]
        if not listed:
            raise UserError(f"--data {root}: no images found in the class folders")
        _refuse_classes_within_classes(root, listed, classes)
        # labels by folder name, never by position among the folders present
        labels = labels_for_wnids([name for name, _ in listed], classes, where=f"folder {root}")
        return arrow_dataset(_image_ids(listed, root), labels, [p for _, p in listed])

    def data_files(self, location: str) -> list[str]:
        return []  # every row is an image file of its own


def _index_folders(root: Path) -> list[Path] | None:
    """The class folders of an ImageNet-V2 style set (every folder named by an ImageNet index), else None."""
    folders = class_dirs(root)
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

    def yields_to(self, location: str, class_names: Collection[str]) -> str | None:
        """``folder`` where every folder is named as one of the model's classes (a fine-tune on digits whose
        label names are "0".."9"): the names are its classes, not ImageNet's indices."""
        folders = _index_folders(Path(location))
        return "folder" if folders and {d.name for d in folders} <= set(class_names) else None

    def load(self, location: str, classes: ClassIndex) -> datasets.Dataset:
        root = Path(location)
        folders = _index_folders(root) if root.is_dir() else None
        if not folders:
            raise UserError(f"--data {root}: not an ImageNet-V2 folder (<root>/<0..999>/<image>); drop --data-format "
                            "to detect the layout")
        listed = [(d.name, path) for d in sorted(folders, key=lambda d: int(d.name)) for path in _images_in(d)]
        if not listed:
            raise UserError(f"--data {root}: no images found in the class folders")
        wnid = imagenet_wnids()[int(listed[0][0])]
        if wnid not in classes:  # the error would name an ImageNet class the user never wrote
            raise UserError(f"--data {root}: its folders named by number read as ImageNet-V2's class indices (folder "
                            f"{listed[0][0]} = {wnid}), which is not one of the model's {len(classes)} classes; if "
                            "the folder names are the model's classes, give --data-format folder and a checkpoint "
                            "whose label_names are those names")
        labels = labels_for_imagenet_index([int(name) for name, _ in listed], classes, where=f"folder {root}")
        return arrow_dataset(_image_ids(listed, root), labels, [p for _, p in listed])

    def data_files(self, location: str) -> list[str]:
        return []


def _image_ids(listed: list[tuple[str, str]], root: Path) -> list[str]:
    """Each image's id: its val number or file stem, or ``<class folder>/<stem>`` where stems repeat.

    The statistics pair images by id, so the same file name in two class folders (common in
    ImageNet-Sketch-like sets) would pair the wrong outcomes. Then every image of the set is named
    ``<class folder>/<stem>``, one scheme for the whole set; a set whose names are unique, as ImageNet
    val's are, keeps its ids, and so its baselines and ReaL labels. A val number is one image: a second
    file of it (``ILSVRC2012_val_00000001 (1).JPEG``, a copy) is refused, not counted twice.
    """
    ids = [image_id_from_path(path) for _, path in listed]
    if len(set(ids)) == len(ids):
        return ids
    first: dict[str, str] = {}
    for image_id, (_, path) in zip(ids, listed):
        if image_id in first and VAL_ID.fullmatch(image_id):
            shown = [os.path.relpath(p, root) for p in (first[image_id], path)]
            raise UserError(f"--data {root}: {image_id} is there twice ({shown[0]} and {shown[1]}); "
                            "delete the copy (one file per val image)")
        first.setdefault(image_id, path)
    return [f"{name}/{os.path.splitext(os.path.basename(path))[0]}" for name, path in listed]


def _refuse_other_folders(root: Path, unknown: list[str], classes: ClassIndex) -> None:
    """Folders of ``root`` that are not classes: a one-line error naming the set inside, if one is
    (``CLS-LOC/{train,val,test}`` given for ``CLS-LOC/val``), else the first such folder."""
    if not unknown:
        return
    inside = layout_one_level_down(str(root))
    if inside is not None:
        folder, layout = inside
        raise UserError(f"--data {root}: its folders {', '.join(unknown[:3])} are not classes of the model, but "
                        f"{folder} is a data set ({layout.name}); give --data {folder}")
    classes.index(unknown[0], where=f"folder {root}")


def _refuse_classes_within_classes(root: Path, listed: list[tuple[str, str]], classes: ClassIndex) -> None:
    """An image below its class folder in a folder named as another class: which class it is cannot be told."""
    for name, path in listed:
        parent = os.path.basename(os.path.dirname(path))
        if parent != name and parent in classes:
            raise UserError(f"--data {root}: {os.path.relpath(path, root)} lies in class folder {name} but in a "
                            f"folder named {parent}, another class; move it into the folder of its class")


def _images_in(folder: Path) -> list[str]:
    """Image files in ``folder`` and the folders below it (the extensions datasets' imagefolder takes),
    sorted by path: the class is the top folder's, as torchvision's ImageFolder has it (timm reads the
    images below a class folder too), so ``val/n01440764/n01440764/*.JPEG`` is read, not dropped.

    One ``scandir`` per folder: datasets' imagefolder builder resolves its glob file by file in Python,
    which took 26 of the 38 s of opening a 50 000-image val folder (then 22 s again with its cache).
    """
    return sorted(_walk_images(folder, IMAGEFOLDER_EXTENSIONS))


def _walk_images(folder: Path, suffixes: Collection[str]) -> Iterator[str]:
    """The images of :func:`image_files` in ``folder`` and, depth first, in its non-hidden folders (links to
    folders are not followed: a link to the data's own root would list it again)."""
    with os.scandir(folder) as entries:
        found = list(entries)
    yield from sorted(e.path for e in found if _is_image(e, suffixes))
    for path in sorted(e.path for e in found if e.is_dir(follow_symlinks=False) and _of_the_set(e.name)):
        yield from _walk_images(Path(path), suffixes)


def image_files(folder: Path, suffixes: Collection[str]) -> list[str]:
    """Entries directly in ``folder`` named like images (a suffix in ``suffixes``), sorted by name.

    Hidden names are skipped, as datasets' imagefolder skips them (macOS ``._x.JPEG`` files are not images).
    A symlink is listed even when it dangles or loops (``x.JPEG -> x.JPEG``, which ``is_file()`` cannot
    follow): it then fails to open and counts in ``n_failed`` instead of silently leaving the set.
    """
    with os.scandir(folder) as entries:
        return sorted(e.path for e in entries if _is_image(e, suffixes))


def _is_image(entry: os.DirEntry, suffixes: Collection[str]) -> bool:
    return (not entry.name.startswith(".") and os.path.splitext(entry.name)[1].lower() in suffixes
            and (entry.is_symlink() or entry.is_file()))
