"""timm's published top-1 of each Hiera checkpoint at its native size and crop, and a sweep's native cell
held against it.

The figures ship with the package (``reference/timm-results.csv``; where they come from:
``reference/SOURCE.md``). A native cell is compared when it is the setting timm published: the same
checkpoint name with the weights timm's hub path loaded, every image of the reference set (at most
:data:`MAX_FAILED_SHARE` of them undecodable here; a named set only under one of its names) (ImageNet-1k val, its ReaL labels, ImageNet-Sketch,
ImageNet-A scored over its 200 classes), the native size, the published crop_pct and interpolation. A
difference beyond :data:`TOLERANCE` points means a different preprocessing or a different copy of the
data more often than anything else, and the numbers of the whole sweep are then suspect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import PurePosixPath

import pandas as pd

from .cells import missing, same_value

SOURCE = "timm results/*.csv, huggingface/pytorch-image-models@7479d451 (2024)"
#: Points of top-1 a native cell may differ from the published figure before the sweep is not ok.
TOLERANCE = 0.3
#: The share of a reference set's images that may fail to decode here for the set to still be timm's.
MAX_FAILED_SHARE = 0.001
#: How a table's ``checkpoint`` names weights timm's hub path loaded: the only ones timm published figures of
#: (a local file under a published name may be anyone's fine-tune of it).
HUB_WEIGHTS = "hf-hub:"


#: The ``--data NAME=PATH`` names that say a set is ImageNet-1k val itself. Its copies under other names
#: (ImageNet-C, face-blurred or stylised val) have the same 50 000 file names and labels but not its figures.
VAL_NAMES = ("imagenet", "imagenet-1k", "imagenet1k", "in1k", "in-1k", "val", "imagenet-val", "in1k-val",
             "ilsvrc2012", "ilsvrc2012-val", "imagenet-real", "real")


@dataclass(frozen=True)
class ReferenceSet:
    """A data set timm publishes results on, as a sweep's rows show it: its image count, class subset, and the
    names a named set (``--data NAME=PATH``) must have to be it (an unnamed set of that count is taken as it)."""

    n_images: int
    names: tuple[str, ...]
    class_subset: str | None = None
    column: str = "top1"  # the tidy column holding the comparable figure (ReaL: real_top1)

    def named_as(self, data_name: object) -> bool:
        """Whether a set of this name (None: unnamed) may be this one."""
        return missing(data_name) or str(data_name).strip().lower().replace("_", "-").replace(" ", "-") in self.names


REFERENCE_SETS = {
    "imagenet": ReferenceSet(50_000, VAL_NAMES),
    "imagenet-real": ReferenceSet(50_000, VAL_NAMES, column="real_top1"),
    "sketch": ReferenceSet(50_889, ("sketch", "imagenet-sketch")),
    "imagenet-a": ReferenceSet(7_500, ("imagenet-a", "in-a", "a"), "imagenet-a"),
}


@lru_cache(maxsize=1)
def published_table() -> pd.DataFrame:
    """Every published row: model, dataset, img_size, top1, top5, crop_pct, interpolation."""
    with resources.files("hiera_bench").joinpath("reference/timm-results.csv").open("r") as fh:
        return pd.read_csv(fh)


def published(model: str, dataset: str = "imagenet") -> pd.Series | None:
    """timm's row for ``model`` (``arch.tag``) on ``dataset``, or None."""
    table = published_table()
    rows = table[table["model"].eq(model) & table["dataset"].eq(dataset)]
    return rows.iloc[0] if len(rows) else None


@dataclass(frozen=True)
class ReferenceCheck:
    """One native cell against timm's published figure; points of top-1."""

    label: str
    model: str
    dataset: str
    img_size: int
    crop_pct: float
    published: float
    measured: float
    low: float | None  # the measured figure's 95 % CI (exact binomial), where the table has it
    high: float | None

    @property
    def difference(self) -> float:
        return self.measured - self.published

    @property
    def ok(self) -> bool:
        return abs(self.difference) <= TOLERANCE

    def text(self) -> str:
        ci = "" if self.low is None else f" (95 % CI [{self.low - self.published:+.2f}, {self.high - self.published:+.2f}])"
        verdict = "" if self.ok else f" — more than {TOLERANCE:g} points off: check the preprocessing and the data copy"
        return (f"vs timm's published {self.published:.3f} ({self.dataset} @{self.img_size} crop {self.crop_pct:g}): "
                f"{self.difference:+.3f}{ci}{verdict}")

    def problem(self) -> str:
        return (f"{self.label}: top-1 {self.measured:.3f} at native {self.img_size} px on {self.dataset} is "
                f"{self.difference:+.3f} points from timm's published {self.published:.3f} (more than {TOLERANCE:g}); "
                "a different preprocessing (--crop-pct, --interpolation, --decode) or a different or damaged copy of "
                f"the data is the usual cause; a set that only shares {self.dataset}'s images and labels (ImageNet-C, a "
                "blurred or stylised copy) is not held to it once named: --data NAME=PATH")


def given_name(row: pd.Series | dict) -> str | None:
    """The ``--data NAME=PATH`` name of a row's data, where it says more than its path: several unnamed sets are named
    after their paths' last parts (``/data/ILSVRC2012/validation``: ``validation``), which say nothing of what they
    are, so such a set is taken as unnamed."""
    name, data = row.get("data_name"), row.get("data")
    if missing(name):
        return None
    last = PurePosixPath(str(data).rstrip("/")) if not missing(data) else None
    return None if last is not None and str(name) in (last.name, last.stem) else str(name)


def reference_checks(table: pd.DataFrame) -> list[ReferenceCheck]:
    """Every native cell of ``table`` that is a setting timm published, held against it (one per evaluation:
    the schemes' native cells are one)."""
    out, seen = [], set()
    if table.empty or "native_size" not in table:
        return out
    native = table[table["status"].eq("ok") & table["img_size"].eq(table["native_size"])]
    for _, row in native.iterrows():
        if not missing(row.get("limit")) or not missing(row.get("per_class")) or missing(row.get("n_images")):
            continue
        if not str(row.get("checkpoint", "")).startswith(HUB_WEIGHTS):
            continue
        failed = int(0 if missing(row.get("n_failed")) else row["n_failed"])
        total = int(row["n_images"]) + failed
        if failed > MAX_FAILED_SHARE * total:
            continue
        for dataset, spec in REFERENCE_SETS.items():
            if total != spec.n_images or not same_value(row.get("class_subset"), spec.class_subset) \
                    or not spec.named_as(given_name(row)):
                continue
            pub = published(str(row["model"]), dataset)
            measured = row.get(spec.column)
            if pub is None or missing(measured) or int(row["img_size"]) != int(pub["img_size"]):
                continue
            if not (math.isclose(float(row["crop_pct"]), float(pub["crop_pct"]))
                    and str(row["interpolation"]) == str(pub["interpolation"])):
                continue
            key = (row.get("label"), row.get("checkpoint_sha256"), row.get("dtype"), row.get("decode"), dataset)
            if key in seen:
                continue
            seen.add(key)
            ci = spec.column == "top1" and not missing(row.get("top1_ci_low"))
            out.append(ReferenceCheck(str(row.get("label", row["model"])), str(row["model"]), dataset,
                                      int(row["img_size"]), float(row["crop_pct"]), float(pub["top1"]),
                                      float(measured), float(row["top1_ci_low"]) if ci else None,
                                      float(row["top1_ci_high"]) if ci else None))
    return out
