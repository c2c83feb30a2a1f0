"""A flat folder of images whose names start with their class: ``<wnid>_<name>.<ext>``.

ImageNet's own train files are named so (``n01440764_10026.JPEG``), and so is the widely used
1000-image ``imagenet-sample-images`` set (``n01440764_tench.JPEG``, one per class). The label is the
name's wnid, mapped to the model's classes by name like a class folder's.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import datasets

from ..errors import UserError
from .base import ClassIndex, arrow_dataset, image_id_from_path, labels_for_wnids, register_layout
from .classfolder import IMAGE_SUFFIXES, image_files

WNID_PREFIX = re.compile(r"^(n\d{8})_")


def named_images(root: Path) -> list[str]:
    """The images directly in ``root`` when every one of them is named ``<wnid>_...``, else none."""
    if not root.is_dir():
        return []
    files = image_files(root, IMAGE_SUFFIXES)
    return files if files and all(WNID_PREFIX.match(os.path.basename(f)) for f in files) else []


@register_layout("wnidnames", priority=50)
class WnidNamesLayout:
    description = "a flat folder of images named <wnid>_<name>.<ext> (ImageNet train names, imagenet-sample-images)"

    def detect(self, location: str) -> bool:
        return bool(named_images(Path(location)))

    def load(self, location: str, classes: ClassIndex) -> datasets.Dataset:
        root = Path(location)
        files = named_images(root)
        if not files:
            raise UserError(f"--data {root}: the wnidnames layout needs every image directly in the folder named "
                            "<wnid>_<name> (n01440764_tench.JPEG); drop --data-format to detect the layout")
        wnids = [WNID_PREFIX.match(os.path.basename(f)).group(1) for f in files]
        labels = labels_for_wnids(wnids, classes, where=f"folder {root}")
        return arrow_dataset([image_id_from_path(f) for f in files], labels, files)

    def data_files(self, location: str) -> list[str]:
        return []  # every row is an image file of its own
