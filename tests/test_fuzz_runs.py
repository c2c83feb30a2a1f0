"""Every file hiera-bench reads back from a run folder or a results table (a resumed run's records and rows,
``report``'s and ``check``'s inputs, baselines), broken every way, through the real CLI: exit 0 with correct
output, or one ``error:`` line naming the file and the fix, exit 2, no traceback; and the fix it names works."""

from __future__ import annotations

import shutil

import pytest

from fuzzing import (Reader, assert_promise, build_workspace, cases, corrupt, fresh_workspace, json_bytes, only,
                     parquet_bytes, run_argv, sweep_table)

#: A table with the six columns ``report`` and ``check`` require and nothing else (made by hand).
SIX_COLUMNS = b"model,scheme,img_size,native_size,status,top1\nm,interp,64,64,ok,50.0\nm,abswin,64,64,ok,50.0\n"
COMPARED = ["scheme", "img_size", "n_images", "n_failed", "top1"]


def _report(ws):
    return ["report", ws / "run", "-o", ws / "rep"]


def _check(ws):
    return ["check", ws / "run", "--baseline", ws / "baseline.csv"]


READERS = (
    Reader("cell records part", lambda ws: only(ws, "run/cells/*/part-*.parquet"), run_argv,
           lambda: parquet_bytes({"a": [1]}), fix="--force"),
    Reader("finished cell row.json", lambda ws: only(ws, "run/cells/*/row.json"), run_argv,
           lambda: json_bytes({"status": "ok"}), text=True, fix="--force"),
    Reader("run folder results.parquet", lambda ws: ws / "run" / "results.parquet", _report,
           lambda: parquet_bytes({"a": [1]}), fix="re-run the sweep"),
    Reader("run folder predictions.parquet", lambda ws: ws / "run" / "predictions.parquet", _report,
           lambda: parquet_bytes({"a": [1]}), fix="re-run the sweep"),
    Reader("results table given to report", lambda ws: ws / "results.csv",
           lambda ws: ["report", ws / "results.csv", "-o", ws / "rep"], lambda: SIX_COLUMNS, text=True),
    Reader("baseline table", lambda ws: ws / "baseline.csv", _check, lambda: SIX_COLUMNS, text=True),
    Reader("run folder results.csv", lambda ws: ws / "run" / "results.csv", _check, lambda: SIX_COLUMNS, text=True),
    Reader("run folder run.json given to check", lambda ws: ws / "run" / "run.json", _check,
           lambda: json_bytes({"cells": 5}), text=True, fix="re-run the sweep"),
)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, full_ckpt):
    return build_workspace(tmp_path_factory.mktemp("fuzz-runs") / "ws", full_ckpt)


def _succeeded(ws, reader, result) -> None:
    """What exit 0 must mean for each command: the same table, a written report, every cell holding."""
    command = reader.argv(ws)[0]
    if command == "sweep":
        assert sweep_table(ws / "run")[COMPARED].equals(sweep_table(ws.parent / "expected")[COMPARED])
    elif command == "report":
        assert (ws / "rep" / "report.md").is_file() and "wrote" in result.out
    else:
        assert "ok: all" in result.out, result.out


@pytest.mark.parametrize("reader,corruption", cases(READERS), ids=lambda v: v.name.replace(" ", "-"))
def test_a_broken_run_file_is_one_line_or_changes_nothing(cli, pristine, tmp_path, reader, corruption):
    ws = fresh_workspace(pristine, tmp_path)
    (tmp_path / "expected").symlink_to(pristine / "run")
    path = corrupt(ws, reader, corruption)
    result = cli(*reader.argv(ws))
    assert_promise(result, f"{reader.name}, {corruption.name}")
    if result.code == 0:
        _succeeded(ws, reader, result)
        return
    assert path.name in result.err and reader.fix in result.err, result.err
    if reader.fix == "--force":  # the advice works: without the damaged cell the same command completes
        shutil.rmtree(path.parent)
        again = cli(*reader.argv(ws))
        assert again.code == 0, again.err
        _succeeded(ws, reader, again)
