"""What a run records about itself in run.json: the command, versions, host, device and data."""

from __future__ import annotations

import platform
import subprocess
import time
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


#: The packages whose version can move a cell's numbers (model code, kernels, decoding and resizing).
MEASURING_PACKAGES = ("hiera_bench", "torch", "torchvision", "timm", "pillow")


@cache
def measuring_versions() -> dict[str, str]:
    """The versions of :data:`MEASURING_PACKAGES` here: each committed part of a cell's records carries them."""
    import PIL
    import timm
    import torch
    import torchvision

    found = {"hiera_bench": _own_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
             "timm": timm.__version__, "pillow": PIL.__version__}
    return {name: found[name] for name in MEASURING_PACKAGES}


def versions() -> dict[str, str]:
    import datasets
    import torch

    return {
        **measuring_versions(), "python": platform.python_version(), "datasets": datasets.__version__,
        "numpy": np.__version__, "scipy": _dist_version("scipy"), "pandas": _dist_version("pandas"),
        "cuda": torch.version.cuda or "none",
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "none",
        "platform": platform.platform(),
    }


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "none"


def _own_version() -> str:
    from .. import __version__

    return __version__


def git_sha() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def device_kind(device: torch.device) -> str:
    """What a cell's records were measured on, as far as it moves their numbers: the GPU's model, or the CPU's
    architecture (not the thread count, which a job's ranks split)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()})"


def iso_time(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def other_versions(measured: list[list[dict[str, str] | None]],
                   current: dict[str, str] | None = None) -> list[dict[str, str] | None]:
    """Of each cell's versions (:meth:`CellStore.measured_with`), the distinct ones other than ``current`` (a
    :func:`measuring_versions`; by default this environment's)."""
    current, found = current or measuring_versions(), []
    for versions in (v for cell in measured for v in cell if v != current):
        if versions not in found:
            found.append(versions)
    return found


def other_versions_note(n_other: int, n_cells: int, versions: list[dict[str, str] | None],
                        current: dict[str, str] | None = None) -> str:
    """What a sweep tells when cells it shows were measured with other package versions than the ones installed
    (``current``: the sweep's, where another process reads its run.json)."""
    whose = "the sweep ran with" if current else "this environment has"
    current = {name: str(v) for name, v in (current or measuring_versions()).items() if name in measuring_versions()}
    theirs = sorted({f"{name} {v.get(name, 'unrecorded')}" for v in versions if isinstance(v, dict)
                     for name in current if v.get(name) != current.get(name)})
    ours = sorted({name for v in versions if isinstance(v, dict) for name in current if v.get(name) != current.get(name)})
    said = []
    if theirs:
        said.append(f"with {', '.join(theirs)} ({whose} {', '.join(f'{n} {current[n]}' for n in ours)})")
    if None in versions or not said:
        said.append("by a hiera-bench too old to record its versions")
    return (f"{n_other} of {n_cells} cell(s) were measured, in whole or in part, {' or '.join(said)}: their numbers are "
            "shown as measured; sweep with --force to measure them again")
