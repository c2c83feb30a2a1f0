"""Where hiera-bench keeps what it can rebuild: generated demo data and torch.compile's caches."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def cache_root() -> Path:
    """$HIERA_BENCH_CACHE, else $XDG_CACHE_HOME/hiera-bench, else ~/.cache/hiera-bench."""
    if os.environ.get("HIERA_BENCH_CACHE"):
        return Path(os.environ["HIERA_BENCH_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "hiera-bench"


@contextmanager
def persistent_compile_cache() -> Iterator[str]:
    """Inductor's on-disk caches (FX graphs, AOT autograd, Triton kernels) in the hiera-bench cache while a
    sweep compiles; the environment as it was afterwards (the caller's own compiles keep their folder).

    torch's default is ``/tmp/torchinductor_<user>``, which a reboot or a fresh CI container empties;
    a second sweep of the same model then compiles from scratch. ``TORCHINDUCTOR_CACHE_DIR`` set by the
    user wins. Yields the folder in use.
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    # inductor also sets TRITON_CACHE_DIR (inside its own folder) where it is unset: restored alike
    before = {var: os.environ.get(var) for var in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
    current = before["TORCHINDUCTOR_CACHE_DIR"]
    # importing timm already makes inductor write its default into the environment: that one is not the user's
    if not current or os.path.abspath(current) == os.path.abspath(default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_root() / "torchinductor")
    try:
        yield os.environ["TORCHINDUCTOR_CACHE_DIR"]
    finally:
        for var, value in before.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
