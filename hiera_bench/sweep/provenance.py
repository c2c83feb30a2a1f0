"""What a run records about itself in run.json: the command, versions, host, device and data."""

from __future__ import annotations

import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch


def versions() -> dict[str, str]:
    import PIL
    import datasets
    import timm

    return {
        "python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
        "pillow": PIL.__version__, "datasets": datasets.__version__, "numpy": np.__version__,
        "hiera_bench": _own_version(), "scipy": _dist_version("scipy"), "pandas": _dist_version("pandas"),
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
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def iso_time(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))
