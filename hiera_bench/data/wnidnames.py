"""A flat folder of images whose names carry their class: ``<wnid>_<name>.<ext>`` or ``<name>_<wnid>.<ext>``.

ImageNet's own train files are named so (``n01440764_10026.JPEG``), and so is the widely used
1000-image ``imagenet-sample-images`` set (``n01440764_tench.JPEG``, one per class); the hub's
``ILSVRC/imagenet-1k`` val archive names its files ``ILSVRC2012_val_00000001_n01751748.JPEG``. The label
is the name's wnid, mapped to the model's classes by name like a class folder's.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import datasets

from ..errors import UserError
from .base import ClassIndex, arrow_dataset, image_id_from_path, labels_for_wnids, register_layout
from .classfolder import IMAGE_SUFFIXES, image_files

#: ``<wnid>_<name>`` or ``<name>_<wnid>`` (the file name without its extension)
WNID_IN_NAME = re.compile(r"^(n\d{8})_|_(n\d{8})$")


def wnid_in_name(path: str) -> str | None:
    """The wnid a file's name starts or ends with, if it does."""
    found = WNID_IN_NAME.search(os.path.splitext(os.path.basename(path))[0])
    return (found.group(1) or found.group(2)) if found else None


def named_images(root: Path) -> list[str]:
    """The images directly in ``root`` when every one of them is named ``<wnid>_...``, else none."""
    files = _images(root)
    return files if files and not _unnamed(files) else []


def _images(root: Path) -> list[str]:
    return image_files(root, IMAGE_SUFFIXES) if root.is_dir() else []


def _unnamed(files: list[str]) -> list[str]:
    return [os.path.basename(f) for f in files if not wnid_in_name(f)]


@register_layout("wnidnames", priority=50)
class WnidNamesLayout:
    description = ("a flat folder of images named <wnid>_<name>.<ext> or <name>_<wnid>.<ext> (ImageNet train names, "
                   "imagenet-sample-images, the hub's val archive)")

    def detect(self, location: str) -> bool:
        return bool(named_images(Path(location)))

    def load(self, location: str, classes: ClassIndex) -> datasets.Dataset:
        root = Path(location)
        files = named_images(root)
        if not files:
            raise UserError(f"--data {root}: the wnidnames layout needs every image directly in the folder named "
                            "<wnid>_<name> (n01440764_tench.JPEG) or <name>_<wnid>; drop --data-format to detect the layout")
        wnids = [wnid_in_name(f) for f in files]
        labels = labels_for_wnids(wnids, classes, where=f"folder {root}")
        return arrow_dataset([image_id_from_path(f) for f in files], labels, files)

    def data_files(self, location: str) -> list[str]:
        return []  # every row is an image file of its own

    def near_miss(self, location: str) -> str | None:
        """Why a folder of mostly ``<wnid>_...`` images was not read as one (a stray preview or readme image)."""
        root = Path(location)
        files = _images(root)
        odd = _unnamed(files)
        if not files or len(odd) * 10 > len(files):  # mostly other names: not this layout's folder at all
            return None
        strays = f"{', '.join(odd[:3])}{' ...' if len(odd) > 3 else ''} {'is' if len(odd) == 1 else 'are'} not"
        return (f"--data {root}: {len(files) - len(odd)} of its {len(files)} images are named <wnid>_<name> (the wnidnames "
                f"layout) but {strays}; move {'it' if len(odd) == 1 else 'them'} out of the folder or rename "
                f"{'it' if len(odd) == 1 else 'them'} <wnid>_<name>")
