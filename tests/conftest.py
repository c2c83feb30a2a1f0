"""Shared fixtures: tiny real timm Hiera checkpoints and generated ImageNet-style folders.

The HF caches, hiera-bench's own cache (demo data, compile caches) and the fuzz tests' folders point
into a per-process temp folder that is removed when the session ends, and the hub is offline: no test
can reach the network, read or fill a developer's cache, or leave files behind (each run once left
~400 MB in /tmp, and hundreds of runs filled a CI disk).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

_CACHE = Path(tempfile.mkdtemp(prefix="hiera-bench-tests-"))
# set, not defaulted: a developer's own HF_HOME or hub cache must never receive the tests' random-weight snapshots
os.environ["HF_HOME"] = str(_CACHE / "hf")
for _var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_ASSETS_CACHE", "HF_XET_CACHE"):
    os.environ.pop(_var, None)  # each would win over HF_HOME
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_DATASETS_CACHE"] = str(_CACHE / "datasets")
os.environ["HIERA_BENCH_CACHE"] = str(_CACHE / "hiera-bench")
#: Where tests that cannot use ``tmp_path`` (hypothesis strategies) make their folders.
os.environ["HIERA_BENCH_TESTS_TMP"] = str(_CACHE / "tmp")
(_CACHE / "tmp").mkdir()


def _remove_session_folder() -> None:
    shutil.rmtree(_CACHE, ignore_errors=True)


atexit.register(_remove_session_folder)  # also where pytest_sessionfinish never runs (a worker killed by xdist)


def pytest_sessionfinish(session, exitstatus) -> None:
    _remove_session_folder()
# `pytest -n N`: N workers share the cores. Torch's default, a thread per core in every worker (and in every
# process a test starts), oversubscribes them and the OpenMP teams spin against each other: on 2 cores the
# suite ran in 555 s with that default and in 318 s with one thread per worker. Set before torch is imported.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

import pytest  # noqa: E402

from hiera_bench.testing import TINY_ARGS, WNIDS, make_class_folder, save_checkpoint_folder, tiny_hiera  # noqa: E402

SHARED_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample-1k"


@pytest.fixture(scope="session")
def full_ckpt(tmp_path_factory) -> Path:
    """A hub-style folder with a tiny full-grid (MAE-style) Hiera, native 64 px, 3 classes."""
    net = tiny_hiera("hiera_tiny_224", img_size=64, num_classes=3)
    return save_checkpoint_folder(net, tmp_path_factory.mktemp("full") / "ckpt", "hiera_tiny_224", TINY_ARGS,
                                  label_names=sorted(WNIDS))


@pytest.fixture(scope="session")
def abswin_ckpt(tmp_path_factory) -> Path:
    """A hub-style folder with a tiny abs-win Hiera, native 64 px, 3 classes."""
    args = dict(TINY_ARGS, global_pos_size=(4, 4))
    net = tiny_hiera("hiera_small_abswin_256", img_size=64, num_classes=3, model_args=args)
    return save_checkpoint_folder(net, tmp_path_factory.mktemp("abswin") / "ckpt", "hiera_small_abswin_256", args,
                                  label_names=sorted(WNIDS), crop_pct=0.95)


@pytest.fixture(scope="session")
def class_folder(tmp_path_factory) -> Path:
    """``val/<wnid>/ILSVRC2012_val_*.JPEG``, 3 classes x 4 generated images of varied size."""
    return make_class_folder(tmp_path_factory.mktemp("data") / "val")


@pytest.fixture
def shared_sample() -> Path:
    if not (SHARED_SAMPLE / "INDEX.csv").is_file():
        pytest.skip("../shared/data/imagenet-sample-1k is not present")
    return SHARED_SAMPLE


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def cli(capsys):
    """Run ``hiera-bench ARGS`` in-process through the real entry point; returns code, stdout, stderr."""
    from hiera_bench.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
