"""ImageNet-ReaL labels (Beyer et al. 2020): the re-assessed, possibly multiple, correct classes per val image.

The labels file is a JSON list of 50 000 lists of ImageNet-1k indices (timm order), entry i being
``ILSVRC2012_val_{i+1:08d}``; timm ships it as ``timm/data/_info/imagenet_real_labels.json``. An
image with an empty list has no valid label and is left out of the ReaL metrics only. ReaL is keyed
by val number, so it needs layouts that keep it (hub, parquet, flat val, webdataset, or files named
``ILSVRC2012_val_*``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import UserError
from ..untrusted import read_json, reading
from .base import VAL_ID, imagenet_wnids

RealLabels = Mapping[str, Sequence[int]]


def timm_real_labels_path() -> Path:
    """The ``imagenet_real_labels.json`` that timm ships."""
    from importlib.resources import files

    return Path(str(files("timm.data._info") / "imagenet_real_labels.json"))


def load_real_labels(path: str | Path | None = None) -> dict[str, list[int]]:
    """{val id ``ILSVRC2012_val_%08d``: ImageNet-1k indices}; ``path`` None reads timm's copy.

    Accepts the original list form or a dict keyed by val id or file name.
    """
    path = Path(path) if path else timm_real_labels_path()
    what, fix = "--real-labels", "give the path of ReaL's real.json, or --real-labels timm for the copy timm ships"
    raw = read_json(path, what, fix, expect=(list, dict))
    # entries are lists of class indices; anything else (a string, a float, a nested dict) is not ReaL
    with reading(path, what, fix):
        if isinstance(raw, list):
            return {f"ILSVRC2012_val_{i + 1:08d}": _indices(labels) for i, labels in enumerate(raw)}
        return {(found.group(1) if (found := VAL_ID.search(key)) else key): _indices(labels)
                for key, labels in raw.items()}


def real_labels_digest(real: RealLabels) -> str:
    """A short hash of the labels themselves (not the file's path): which ReaL labels a cell was scored with."""
    import hashlib

    text = "\n".join(f"{key}:{','.join(map(str, real[key]))}" for key in sorted(real))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _indices(labels) -> list[int]:
    if not isinstance(labels, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in labels):
        raise ValueError(f"an entry is {str(labels)[:40]!r}, not a list of class indices")
    return list(labels)


def real_targets(real: RealLabels, image_ids: Sequence[str], layout: str = "") -> list[list[int] | None]:
    """ReaL labels of each image (None where the set has no entry); an error when no image has one."""
    targets = [list(real[i]) if i in real else None for i in image_ids]
    if image_ids and all(t is None for t in targets):
        raise UserError(
            f"--real-labels: none of the {len(image_ids)} image ids{f' of the {layout} layout' if layout else ''} "
            f"(e.g. {image_ids[0]!r}) is an ImageNet val number; ReaL needs ids like ILSVRC2012_val_00000001 "
            "(hub, parquet, flat val, webdataset, or files named so)")
    return targets


def to_imagenet_index(topk: np.ndarray, class_names: Sequence[str] | None) -> np.ndarray:
    """Model class ids -> ImageNet-1k indices (identity for a 1000-class model in timm order)."""
    if class_names is None:
        return np.asarray(topk)
    position = {w: i for i, w in enumerate(imagenet_wnids())}
    table = np.array([position.get(n, -1) for n in class_names], dtype=np.int64)
    return table[np.asarray(topk)]


def real_accuracy(real: RealLabels, image_ids: Sequence[str], topk: np.ndarray,
                  class_names: Sequence[str] | None = None) -> dict[str, float | int]:
    """ReaL top-1/top-5 in percent over images with a non-empty ReaL list, as timm's ``RealLabelsImagenet``.

    ``topk`` is (n, k) predicted class ids, best first; ``class_names`` maps them to ImageNet indices
    when the model's classes are not timm's 1000 in order. ``n_real`` is how many images counted.
    """
    predictions = to_imagenet_index(np.asarray(topk).reshape(len(image_ids), -1), class_names)
    n, hits1, hits5 = 0, 0, 0
    for labels, pred in zip(real_targets(real, image_ids), predictions):
        if not labels:
            continue
        n += 1
        hits1 += int(pred[0]) in labels
        hits5 += any(int(p) in labels for p in pred[:5])
    if not n:
        return {"real_top1": float("nan"), "real_top5": float("nan"), "n_real": 0}
    # from the counts, unrounded (as top1/top5): only the views round
    return {"real_top1": 100.0 * hits1 / n, "real_top5": 100.0 * hits5 / n, "n_real": n}
