"""What the fuzz suites share: the corruptions every file reader gets, the promise every outcome must keep,
and one workspace of real files (checkpoints, data in every local layout, label files, a finished run folder).

The promise (README, Reliability): a mistake a user can fix is one line on stderr, ``error: ...``, exit 2, no
traceback; anything else must succeed with correct output.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

#: How many random examples the hypothesis parts draw; CI keeps the default, ``HIERA_BENCH_FUZZ_EXAMPLES`` raises it.
EXAMPLES = int(os.environ.get("HIERA_BENCH_FUZZ_EXAMPLES", "8"))
#: The data every fuzzed sweep reads: 3 classes x 3 images.
N_IMAGES = 9
RES = "64"  # the tiny checkpoints' native size: one forward serves both schemes


def assert_promise(result, case: str = "") -> None:
    """Exit 0, or exit 2 with exactly one ``error:`` line on stderr and no traceback."""
    assert "Traceback" not in result.err, (case, result.err[-3000:])
    assert result.code in (0, 2), (case, result.code, result.err[-3000:])
    if result.code == 2:
        lines = [line for line in result.err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (case, result.err)


# --- corruptions ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Corruption:
    name: str
    make: Callable[[bytes, "Reader"], bytes | None]  # None: does not apply to this reader
    #: an outcome may be exit 0 only when the file still holds what it held (a cut that removes nothing read)
    may_pass: bool = False


def _cut(fraction: float) -> Callable[[bytes, "Reader"], bytes]:
    return lambda data, reader: data[: int(len(data) * fraction)]


CORRUPTIONS = (
    Corruption("zero bytes", lambda data, reader: b""),
    Corruption("cut at 1/3", _cut(1 / 3)),
    Corruption("cut at 2/3", _cut(2 / 3)),
    Corruption("last byte cut", lambda data, reader: data[:-1], may_pass=True),
    Corruption("random bytes", lambda data, reader: np.random.default_rng(len(data)).bytes(len(data))),
    Corruption("wrong schema", lambda data, reader: reader.wrong_schema()),
    Corruption("wrong encoding", lambda data, reader: data.decode().encode("utf-16") if reader.text else None),
)


# --- readers ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reader:
    """A file hiera-bench reads, found in the workspace, and the command that reads it."""

    name: str
    target: Callable[[Path], Path]  # the file in a workspace
    argv: Callable[[Path], list]  # the command, in that workspace
    wrong_schema: Callable[[], bytes]  # a well-formed file of the format with the wrong content
    text: bool = False
    fix: str = ""  # what an error for this file must advise (besides naming it)


def parquet_bytes(columns: dict) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue().to_pybytes()


def json_bytes(obj) -> bytes:
    return json.dumps(obj).encode()


def sweep_argv(ws: Path, data: Path | str, *extra) -> list:
    return ["sweep", "--checkpoint", ws / "ckpt", "--data", data, "--out", ws / "out", "--res", RES, "-b", "16",
            "-j", "0", "-q", *extra]


def run_argv(ws: Path, *extra) -> list:
    """The command that made the workspace's run folder: re-running it resumes (every cell is done)."""
    return ["sweep", "--checkpoint", ws / "ckpt", "--data", ws / "val", "--out", ws / "run", "--res", RES, "-b", "16",
            "-j", "0", "-q", *extra]


def only(ws: Path, pattern: str) -> Path:
    found = sorted(ws.glob(pattern))
    assert found, pattern
    return found[0]


def cases(readers: Sequence[Reader]) -> list[tuple[Reader, Corruption]]:
    """Every (reader, corruption) pair that applies (text encodings only to text files)."""
    return [(r, c) for r in readers for c in CORRUPTIONS if c.name != "wrong encoding" or r.text]


def corrupt(ws: Path, reader: Reader, corruption: Corruption) -> Path:
    path = reader.target(ws)
    payload = corruption.make(path.read_bytes(), reader)
    assert payload is not None
    real = path.resolve()  # run-folder views are links into .views/current: the file behind is what is read
    real.unlink()
    real.write_bytes(payload)
    return path


def fresh_workspace(pristine: Path, tmp: Path) -> Path:
    ws = tmp / "ws"
    shutil.copytree(pristine, ws, symlinks=True)
    return ws


def sweep_table(out: Path) -> pd.DataFrame:
    df = pd.read_csv(out / "results.csv")
    return df.sort_values(["scheme", "img_size"]).reset_index(drop=True)


# --- the workspace ----------------------------------------------------------------------------------------

def run_cli(*args) -> int:
    """``hiera-bench ARGS`` in-process, for fixtures (tests use conftest's ``cli``)."""
    from hiera_bench.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return 0


def build_workspace(root: Path, ckpt: Path) -> Path:
    """Real files of every kind hiera-bench reads, all describing the same 9 images and the same tiny model."""
    import torch
    from safetensors.torch import load_file

    from hiera_bench.testing import make_class_folder
    from test_data_layouts import (TIMM_CLASSES, build_flatval_devkit, build_flatval_kaggle, build_parquet,
                                   build_saved_common, build_webdataset, records)

    root.mkdir(parents=True)
    shutil.copytree(ckpt, root / "ckpt")
    (root / "ckpt-pth").mkdir()
    shutil.copy(ckpt / "config.json", root / "ckpt-pth" / "config.json")
    torch.save(load_file(str(ckpt / "model.safetensors")), root / "ckpt-pth" / "model.pth")
    recs = records(make_class_folder(root / "val", per_class=3))
    build_parquet(recs, root / "parquet")
    build_webdataset(recs, root / "wds")
    build_flatval_kaggle(recs, root / "kaggle")
    build_flatval_devkit(recs, root / "devkit")
    build_saved_common(recs, root / "saved")
    (root / "real.json").write_text(json.dumps([[TIMM_CLASSES.index(wnid)] for _, wnid, _ in recs]) + "\n")
    assert run_cli(*run_argv(root)) == 0
    shutil.copy(root / "run" / "results.csv", root / "results.csv")
    shutil.copy(root / "run" / "results.csv", root / "baseline.csv")
    return root
