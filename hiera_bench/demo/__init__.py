"""The offline demo: a procedural image set, two tiny Hiera checkpoints trained on it, and their sweep."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..cache import cache_root
from .shapes import GENERATOR_VERSION, class_names, write_class_folders

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
#: The held-out split the demo evaluates (the training split uses seed 1, see benchmarks/demo_train.py).
VAL_SEED = 2
VAL_IMAGES = 600
#: Sizes around the native 128 px: -50 %, -25 %, native, +25 %, +50 %, +75 %, +100 %.
DEMO_RES = "64:256:32"
#: The size the demo draws the abs-win checkpoint's embedding at (+25 %: interp's stretched window pattern).
DEMO_INSPECT = 160


def checkpoint_dirs() -> dict[str, Path]:
    """The shipped demo checkpoints, by name (folders holding config.json + model.safetensors)."""
    return {p.name: p for p in sorted(CHECKPOINTS.iterdir()) if (p / "config.json").is_file()}


def val_folder(root: Path | None = None, n_images: int = VAL_IMAGES) -> Path:
    """The held-out demo set as class folders, generated once (a few seconds) and then reused."""
    name = f"demo-val-v{GENERATOR_VERSION}-s{VAL_SEED}-n{n_images}"
    base = root if root is not None else cache_root()
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError:
        base = Path(tempfile.gettempdir()) / "hiera-bench"
    return write_class_folders(base / name, VAL_SEED, n_images)


__all__ = ["CHECKPOINTS", "DEMO_INSPECT", "DEMO_RES", "VAL_IMAGES", "VAL_SEED", "cache_root", "checkpoint_dirs", "class_names",
           "val_folder"]
