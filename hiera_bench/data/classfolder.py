"""Class folders ``val/<wnid>/*.JPEG``, read with the ``datasets`` imagefolder builder.

imagefolder numbers classes by position among the folders present, so a missing class folder
shifts every later index; labels are re-mapped here by folder *name* to the model's classes.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from ..errors import UserError
from .base import ClassIndex, image_id_from_path, register_layout, standardise

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
            loaded = datasets.load_dataset("imagefolder", data_dir=str(root), drop_labels=False)
        except (FileNotFoundError, ValueError) as exc:
            raise UserError(f"--data {root}: no images found in the class folders ({exc})") from exc
        split = next(iter(loaded.values())) if len(loaded) == 1 else datasets.concatenate_datasets(list(loaded.values()))
        split = split.cast_column("image", datasets.Image(decode=False))
        folder_names = split.features["label"].names if "label" in split.features else None
        remap = [classes.index(n) for n in folder_names] if folder_names else None

        def to_common(batch):
            paths = [img["path"] for img in batch["image"]]
            labels = (
                [remap[i] for i in batch["label"]]
                if remap
                else [classes.index(Path(p).parent.name) for p in paths]
            )
            return {"image_id": [image_id_from_path(p) for p in paths], "label": labels}

        split = split.map(to_common, batched=True, batch_size=4096, desc="indexing class folders",
                          remove_columns=[c for c in split.column_names if c != "image"])
        return standardise(split)
