"""Class folders ``val/<wnid>/*.JPEG``, read with the ``datasets`` imagefolder builder.

imagefolder numbers classes by position among the folders present, so a missing class folder
shifts every later index; labels are re-mapped here by folder *name* to the model's classes.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import pyarrow.compute as pc

from ..errors import UserError
from .base import ClassIndex, common_dataset, image_id_from_path, labels_for_wnids, register_layout

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


@register_layout("folder", priority=40)
class ClassFolderLayout:
    description = "class folders: <root>/<class>/<image> (datasets imagefolder)"

    def detect(self, location: str) -> bool:
        root = Path(location)
        if not root.is_dir():
            return False
        dirs = _class_dirs(root)
        return bool(dirs) and any(
            f.suffix.lower() in IMAGE_SUFFIXES for d in dirs[:5] for f in d.iterdir() if f.is_file()
        )

    def load(self, location: str, classes: ClassIndex) -> datasets.Dataset:
        root = Path(location)
        names = [d.name for d in _class_dirs(root)]
        if not names:
            raise UserError(f"--data {root}: no class folders inside; expected <root>/<class>/<image>")
        for name in names:
            classes.index(name, where=f"folder {root}")
        try:
            # an explicit glob, not data_dir: data_dir infers splits from names, so a file called
            # "..._bullet_train.JPEG" would become a one-image train split and the rest would vanish
            loaded = datasets.load_dataset("imagefolder", data_files={"validation": str(root / "*" / "*")},
                                           drop_labels=True)
        except (FileNotFoundError, ValueError) as exc:
            raise UserError(f"--data {root}: no images found in the class folders ({exc})") from exc
        split = next(iter(loaded.values())) if len(loaded) == 1 else datasets.concatenate_datasets(list(loaded.values()))
        split = split.cast_column("image", datasets.Image(decode=False))
        paths = pc.struct_field(split.with_format("arrow")["image"], "path").to_pylist()
        # labels by folder name: imagefolder's own indices shift when a class folder is missing
        labels = labels_for_wnids([Path(p).parent.name for p in paths], classes, where=f"folder {root}")
        return common_dataset(split, "image", [image_id_from_path(p) for p in paths], labels)
