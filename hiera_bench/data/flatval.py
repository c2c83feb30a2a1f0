"""The raw flat val folder (``ILSVRC2012_val_00000001.JPEG`` ...) plus its ground truth.

Ground truth is either Kaggle's ``LOC_val_solution.csv`` (the first token of PredictionString is the
wnid) or the devkit's ``ILSVRC2012_validation_ground_truth.txt`` with ``meta.mat``. Devkit IDs are
NOT timm indices (ID 1 is n02119789 kit fox, timm index 278): IDs go to wnids through meta.mat, and
wnids to the model's classes by name. Label files are looked for next to the images and up to four
folders above them (Kaggle nests the images in ILSVRC/Data/CLS-LOC/val), also in devkit ``data/`` folders.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Callable

import datasets

from ..errors import UserError
from ..untrusted import REDOWNLOAD, read_text, reading, wrong
from .base import VAL_ID, ClassIndex, arrow_dataset, labels_for_wnids, register_layout
from .classfolder import IMAGE_SUFFIXES, class_dirs, image_files
from .wnidnames import named_images

KAGGLE_CSV = "LOC_val_solution.csv"
DEVKIT_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
DEVKIT_META = "meta.mat"
SEARCH_LEVELS = 4


def val_images(root: Path) -> list[Path]:
    """Image files directly in ``root`` whose name holds a val number, in val-number order.

    Listed as class folders list theirs (:func:`~.classfolder.image_files`): a dangling or looping link
    is a failed image, not a missing one.
    """
    if not root.is_dir():
        return []
    return [Path(p) for p in image_files(root, IMAGE_SUFFIXES) if VAL_ID.search(os.path.basename(p))]


def find_label_file(root: Path, name: str) -> Path | None:
    """``name`` next to ``root`` or up to :data:`SEARCH_LEVELS` folders above, also in ``*/data/`` (devkit)."""
    for folder in [root, *list(root.resolve().parents)[:SEARCH_LEVELS]]:
        for candidate in (folder / name, *sorted(folder.glob(f"*/data/{name}")), folder / "data" / name):
            if candidate.is_file():
                return candidate
    return None


def read_kaggle_solution(path: Path) -> dict[str, str]:
    """``LOC_val_solution.csv`` -> {val id: wnid} (the first token of each PredictionString).

    An image listed twice with different wnids is refused: the last row would silently relabel it.
    A repeated row with the same wnid (other boxes, or a plain copy) changes no label and is kept.
    """
    what = "ground truth"
    text = read_text(path, what, REDOWNLOAD)
    truth: dict[str, str] = {}
    with reading(path, what, REDOWNLOAD):  # csv.Error: a NUL byte, a quote left open
        rows = csv.DictReader(io.StringIO(text, newline=""))
        if not {"ImageId", "PredictionString"} <= set(rows.fieldnames or ()):
            raise wrong(path, what, "lacks the columns ImageId,PredictionString of Kaggle's LOC_val_solution.csv",
                        REDOWNLOAD)
        for row in rows:
            if row["PredictionString"] is None:  # csv's mark of a line with fewer fields than the header
                raise wrong(path, what, f"line {rows.line_num} has no PredictionString", REDOWNLOAD)
            if not row["PredictionString"].strip():
                continue
            image_id, wnid = row["ImageId"], row["PredictionString"].split()[0]
            if truth.setdefault(image_id, wnid) != wnid:
                raise UserError(f"{path}: {image_id} is listed twice, as {truth[image_id]} and as {wnid} (line "
                                f"{rows.line_num}); keep the right row and delete the other")
    return truth


def read_devkit_meta(path: Path) -> dict[int, str]:
    """The devkit's ``meta.mat`` -> {ILSVRC2012_ID: wnid} for the 1000 leaf synsets."""
    from scipy.io import loadmat

    what = "devkit meta"
    with reading(path, what, REDOWNLOAD):
        found = loadmat(str(path), squeeze_me=True)
    if "synsets" not in found:
        raise wrong(path, what, "has no 'synsets' table (not the devkit's meta.mat)", REDOWNLOAD)
    with reading(path, what, REDOWNLOAD):
        synsets = found["synsets"].reshape(-1)
        return {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}


def read_devkit_truth(truth: Path, meta: Path) -> dict[str, str]:
    """Devkit ground truth (line i = devkit ID of val image i) -> {val id: wnid} through ``meta.mat``."""
    id_to_wnid = read_devkit_meta(meta)
    text = read_text(truth, "ground truth", REDOWNLOAD)
    if text and not text.endswith("\n"):  # the devkit's file ends its last line: a cut one would relabel an image
        raise wrong(truth, "ground truth", "does not end with a newline (truncated?)", REDOWNLOAD)
    out = {}
    for number, line in enumerate(text.split(), start=1):
        if not line.isdigit():
            raise wrong(truth, "ground truth", f"line {number} is {line[:20]!r}, not a devkit class ID", REDOWNLOAD)
        devkit_id = int(line)
        if devkit_id not in id_to_wnid:
            raise UserError(f"{truth}: line {number} has devkit ID {devkit_id}, which {meta} does not list")
        out[f"ILSVRC2012_val_{number:08d}"] = id_to_wnid[devkit_id]
    return out


def _kaggle(root: Path) -> tuple[dict[str, str], Path] | None:
    path = find_label_file(root, KAGGLE_CSV)
    return (read_kaggle_solution(path), path) if path else None


def _devkit(root: Path) -> tuple[dict[str, str], Path] | None:
    truth = find_label_file(root, DEVKIT_TRUTH)
    if truth is None:
        return None
    meta = truth.parent / DEVKIT_META if (truth.parent / DEVKIT_META).is_file() else find_label_file(root, DEVKIT_META)
    if meta is None:
        raise UserError(f"found {truth} but no {DEVKIT_META} beside it; the devkit IDs need meta.mat to become wnids")
    return read_devkit_truth(truth, meta), truth


def _refuse_half_sorted(root: Path, images: list[Path]) -> None:
    """Flat val images beside class folders that hold images (a valprep script stopped half-way, or a stray
    image in a class-folder set): either reading would leave the other images out without a word."""
    sorted_into = [d for d in class_dirs(root) if image_files(d, IMAGE_SUFFIXES)]
    if sorted_into:
        shown = ", ".join(f"{d.name}/" for d in sorted_into[:2]) + (" ..." if len(sorted_into) > 2 else "")
        raise UserError(f"--data {root}: {len(images)} val images lie directly in it and {len(sorted_into)} class "
                        f"folder(s) hold more ({shown}); sort every image into its class folder (or move the flat "
                        "ones out) so that the set is one layout")


#: Ground-truth readers, tried in order; each returns ({val id: wnid}, the file read) or None when its files
#: are absent.
GROUND_TRUTH: tuple[Callable[[Path], tuple[dict[str, str], Path] | None], ...] = (_kaggle, _devkit)


@register_layout("flatval", priority=60)
class FlatValLayout:
    description = "flat val folder ILSVRC2012_val_*.JPEG + LOC_val_solution.csv or devkit ground truth + meta.mat"

    def detect(self, location: str) -> bool:
        # names that start with their wnid carry their label: the wnidnames layout reads them without label files
        return bool(val_images(Path(location))) and not named_images(Path(location))

    def load(self, location: str, classes: ClassIndex) -> datasets.Dataset:
        root = Path(location)
        images = val_images(root)
        if not images:
            raise UserError(f"--data {root}: no ILSVRC2012_val_*.JPEG images directly in this folder")
        _refuse_half_sorted(root, images)
        found = next((t for reader in GROUND_TRUTH if (t := reader(root)) is not None), None)
        if found is None:
            raise UserError(f"--data {root}: {len(images)} val images but no labels; put {KAGGLE_CSV} or the devkit's "
                            f"{DEVKIT_TRUTH} + {DEVKIT_META} next to them (or up to {SEARCH_LEVELS} folders above)")
        truth, source = found
        ids = [VAL_ID.search(p.name).group(1) for p in images]
        missing = [i for i in ids if i not in truth]
        if missing:
            raise UserError(f"--data {root}: {len(missing)} images have no ground truth in {source} (e.g. "
                            f"{missing[0]}); is it complete and from the same ImageNet val set? re-download it")
        labels = labels_for_wnids([truth[i] for i in ids], classes, where=f"flat val {root}")
        return arrow_dataset(ids, labels, [str(p) for p in images])

    def data_files(self, location: str) -> list[str]:
        return []  # every row is an image file of its own; the labels are in the fingerprint
