"""Ctrl-C and resume: finished cells and committed images are kept, and the re-run computes only the rest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from hiera_bench.sweep import SweepConfig, run_sweep
from hiera_bench.sweep.store import RunDir
from hiera_bench.testing import make_class_folder

N_IMAGES = 3 * 40
FIRST, GRID = "64", "64,96,128"  # the first sweep finishes the native cells; the second adds two sizes
COMPARED = ["model", "scheme", "img_size", "n_images", "n_failed", "top1", "top5", "nll", "ece", "status",
            "top1_delta_vs_native", "top1_ci_low", "top1_ci_high", "delta_ci_low", "delta_ci_high", "delta_p",
            "mcnemar_b", "mcnemar_c", "mcnemar_p", "cell_key"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_class_folder(tmp_path_factory.mktemp("resume") / "val", per_class=N_IMAGES // 3)


def _args(ckpt: Path, data: Path, out: Path, res: str) -> list[str]:
    return ["sweep", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(out), "--res", res,
            "-b", "4", "--save-every", "8", "-j", "0", "-q"]


def _config(ckpt: Path, data: Path, out: Path, res: str) -> SweepConfig:
    return SweepConfig(checkpoint=str(ckpt), data=str(data), out=str(out), res=res, batch_size=4, save_every=8,
                       workers=0)


def _table(out: Path) -> pd.DataFrame:
    df = pd.read_parquet(out / "results.parquet")
    return df[COMPARED].sort_values(["scheme", "img_size"]).reset_index(drop=True)


def _cells(out: Path) -> dict[str, dict]:
    """Per cell: its size, whether it is finished, its parts with their mtimes, and its committed prefix."""
    run = RunDir(out)
    cells = {}
    for meta in sorted((out / "cells").glob("*/cell.json")):
        store = run.cell(meta.parent.name)
        cells[meta.parent.name] = {
            "size": int(pd.read_json(meta, typ="series")["img_size"]),
            "row_mtime": store.row_path.stat().st_mtime_ns if store.is_done() else None,
            "parts": {(s, e): p.stat().st_mtime_ns for s, e, p in store.parts()},
            "done_upto": store.done_upto(),
        }
    return cells


def _interrupt_after_first_new_part(cmd: list[str], out: Path, before: set[Path], timeout: float = 180) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not (set(out.glob("cells/*/part-*.parquet")) - before):
        time.sleep(0.01)
    assert proc.poll() is None, f"the sweep ended before it could be interrupted: {proc.communicate()[1]}"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def test_ctrl_c_keeps_finished_work_and_the_rerun_computes_only_the_rest(cli, tmp_path, full_ckpt, images):
    reference = tmp_path / "uninterrupted"
    run_sweep(_config(full_ckpt, images, reference, GRID))

    out = tmp_path / "run"
    assert cli(*_args(full_ckpt, images, out, FIRST)).code == 0
    finished = _cells(out)
    assert len(finished) == 2 and all(c["row_mtime"] for c in finished.values())

    before = set(out.glob("cells/*/part-*.parquet"))
    cmd = [sys.executable, "-m", "hiera_bench", *_args(full_ckpt, images, out, GRID)]
    stopped = _interrupt_after_first_new_part(cmd, out, before)
    assert stopped.returncode == -signal.SIGINT, stopped.stderr  # Ctrl-C ends it by SIGINT: the shell's 130
    assert "interrupted: finished cells and committed images are kept; re-run the same command to resume" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert not list(out.rglob("*.tmp"))

    interrupted = _cells(out)
    new = {k: c for k, c in interrupted.items() if k not in finished}
    assert {c["size"] for c in new.values()} == {96, 128} and len(new) == 4
    assert all(c["row_mtime"] is None for c in new.values()), "no new cell may finish: interrupt earlier"
    assert any(c["parts"] for c in new.values()), "nothing was committed before the interrupt"
    assert all(interrupted[k] == c for k, c in finished.items())  # finished cells untouched
    assert len(pd.read_csv(out / "results.csv")) == 2  # the merged views still show the first sweep
    # ... so check will not take them for this sweep's results (a CI step after a timed-out sweep passed on them)
    assert len(list(out.glob("runs/*.unfinished.json"))) == 1
    early = cli("check", out, "--baseline", out)
    assert early.code == 2 and "has not finished" in early.err, early.out + early.err

    rerun = cli(*_args(full_ckpt, images, out, GRID))
    assert rerun.code == 0, rerun.err
    # the interrupted sweep's mark stays (it did not finish); the resume's views are of a later sweep
    assert len(list(out.glob("runs/*.unfinished.json"))) == 1
    assert cli("check", out, "--baseline", out).code == 0
    after = _cells(out)
    for key, cell in finished.items():  # not recomputed, not rewritten
        assert after[key] == cell
    for key, cell in new.items():
        parts = after[key]["parts"]
        for span, mtime in cell["parts"].items():  # committed images were reused ...
            assert parts[span] == mtime
        fresh = sorted(span for span in parts if span not in cell["parts"])
        assert fresh and fresh[0][0] == cell["done_upto"]  # ... and the re-run started where they end
        spans = sorted(parts)
        assert spans[0][0] == 0 and spans[-1][1] == N_IMAGES
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])), f"recomputed images: {spans}"
        assert after[key]["row_mtime"] is not None

    pd.testing.assert_frame_equal(_table(out), _table(reference), check_exact=False, rtol=1e-6)
    assert len(pd.read_parquet(out / "predictions.parquet")) == 6 * N_IMAGES


def test_an_interrupted_force_sweep_says_to_resume_without_force(cli, tmp_path, full_ckpt, images):
    """--force clears what it committed: "re-run the same command" would throw away the hours already done."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "hiera_bench", *_args(full_ckpt, images, out, GRID), "--force"]
    stopped = _interrupt_after_first_new_part(cmd, out, set())
    assert stopped.returncode == -signal.SIGINT, stopped.stderr  # Ctrl-C ends it by SIGINT: the shell's 130
    assert "re-run the command without --force to resume (with --force it starts over)" in stopped.stderr
    assert "the same command" not in stopped.stderr
    committed = {k: c["parts"] for k, c in _cells(out).items()}
    assert any(committed.values())
    assert cli(*_args(full_ckpt, images, out, GRID)).code == 0  # as it says: every committed image is kept
    after = _cells(out)
    assert all(after[k]["parts"][span] == mtime for k, parts in committed.items() for span, mtime in parts.items())


def test_stale_temp_files_are_removed_only_for_dead_writers_on_this_host(tmp_path):
    import subprocess
    import sys

    from hiera_bench.io import _host, remove_stale_temp_files, writer

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a pid that has exited
    mine = tmp_path / f".results.csv.{_host()}-{dead}.abc123.tmp"
    legacy = tmp_path / f".run.json.{dead}.abc123.tmp"
    other_node = tmp_path / f".results.csv.othernode-{dead}.abc123.tmp"
    alive = tmp_path / f".results.csv.{writer()}.abc123.tmp"
    for path in (mine, legacy, other_node, alive):
        path.write_text("x")
    assert remove_stale_temp_files(tmp_path) == 2
    assert not mine.exists() and not legacy.exists() and other_node.exists() and alive.exists()


def test_an_interrupted_force_command_names_the_sweeps_it_had_not_started(tmp_path, full_ckpt, abswin_ckpt, images):
    """Resuming without --force keeps the old cells of the checkpoints the command had not reached: say which."""
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "hiera_bench", "sweep", "-c", str(full_ckpt), "-c", str(abswin_ckpt), "--label", "first",
           "--label", "second", "--data", str(images), "--out", str(out), "--res", GRID, "-b", "4", "--save-every", "8",
           "-j", "0", "-q", "--force"]
    stopped = _interrupt_after_first_new_part(cmd, out / "first", set())
    assert stopped.returncode == -signal.SIGINT, stopped.stderr  # Ctrl-C ends it by SIGINT: the shell's 130
    assert ("re-run the command without --force to resume (with --force it starts over); second had not started: "
            "sweep it with --force after") in stopped.stderr


def _stamp_parts(store, versions) -> None:
    """Each committed part as another version wrote it: with ``versions`` recorded, or (None) none at all."""
    import json

    import pyarrow.parquet as pq

    from hiera_bench.sweep.store import MEASURED_WITH

    for _, _, path in store.parts():
        table = pq.read_table(path)
        meta = {k: v for k, v in (table.schema.metadata or {}).items() if k != MEASURED_WITH}
        if versions is not None:
            meta[MEASURED_WITH] = json.dumps(versions).encode()
        pq.write_table(table.replace_schema_metadata(meta), path)


def test_cells_measured_with_other_package_versions_are_reused_and_said(cli, tmp_path, full_ckpt, images):
    """A folder kept between CI jobs, then timm or torch upgraded: the re-run reuses the finished cells (their keys
    do not name versions), so its table and a check after it would show the old versions' numbers as today's. The
    sweep now says which cells and versions, and run.json lists them; --force measures them again."""
    import json

    from hiera_bench.sweep.provenance import measuring_versions

    out = tmp_path / "run"
    args = _args(full_ckpt, images, out, "64,96")
    first = cli(*args)
    assert first.code == 0 and "measured, in whole or in part" not in first.err
    assert "measured_with_other_versions" not in json.loads((out / "run.json").read_text())
    stores = [RunDir(out).cell(p.parent.name) for p in sorted(out.glob("cells/*/row.json"))]
    # one native cell (64 px, which the later sweep of 128 px shares) and one of 96 px: cell keys hash the files'
    # mtimes, so their order in cells/ is the draw of each run
    stores.sort(key=lambda s: (s.read_row()["img_size"] != 64, s.read_row()["scheme"]))
    stores[1:3] = stores[2:0:-1]
    assert [s.read_row()["img_size"] for s in stores[:2]] == [64, 96]
    assert len(stores) == 4 and stores[0].measured_with() == [measuring_versions()]
    _stamp_parts(stores[0], {**measuring_versions(), "timm": "0.9.0"})
    _stamp_parts(stores[1], None)
    again = cli(*args)
    assert again.code == 0, again.err
    assert "2 of 4 cell(s) were measured, in whole or in part, with timm 0.9.0 (this environment has timm " in again.err
    assert "or by a hiera-bench too old to record its versions" in again.err and "--force" in again.err
    other = json.loads((out / "run.json").read_text())["measured_with_other_versions"]
    assert sorted(other["cells"]) == sorted(s.root.name for s in stores[:2])
    assert {**measuring_versions(), "timm": "0.9.0"} in other["versions"] and None in other["versions"]
    checked = cli("check", out, "--baseline", out)
    assert checked.code == 0 and "note: in the run, 2 of 4 cell(s) were measured, in whole or in part, with timm 0.9.0 (the " \
        "sweep ran with timm " in checked.out and "note: in the baseline, 2 of 4" in checked.out, checked.out
    # a later sweep of other sizes: check gates the earlier ones too, and its note counts them (it counted only the
    # sweep's own cells: "0 of 2" where 2 of the 6 gated were of other versions; adv24)
    later = cli(*_args(full_ckpt, images, out, "128"))
    assert later.code == 0 and "of 4 cell(s) were measured" in later.err, later.err  # its own: 128 px and native
    checked = cli("check", out, "--baseline", out)
    assert checked.code == 0 and "note: in the run, 2 of 6 cell(s) were measured, in whole or in part" in checked.out, \
        checked.out
    fresh = cli(*args, "--force")
    assert fresh.code == 0 and "measured, in whole or in part" not in fresh.err
    assert "measured_with_other_versions" not in json.loads((out / "run.json").read_text())


def _stamp_device(path: Path, device: str) -> None:
    """A committed part as a run on ``device`` wrote it."""
    import pyarrow.parquet as pq

    from hiera_bench.sweep.store import MEASURED_ON

    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), MEASURED_ON: device.encode()}), path)


def test_a_cell_resumed_on_another_device_says_so(cli, tmp_path, full_ckpt, images):
    """A sweep stopped on a GPU host and resumed on a CPU one (or a job whose ranks ran on GPUs of two models): a cell's
    records mix the devices' kernels (CUDA and CPU autocast cover other ops), though its key is the same. The row named
    only the device that finished the cell; now it names every device its records were measured on, and the sweep,
    check and compare say so."""
    import json

    from hiera_bench.sweep.provenance import device_kind
    import torch

    out = tmp_path / "run"
    args = _args(full_ckpt, images, out, "64,96")
    assert cli(*args).code == 0
    stores = {(r["scheme"], r["img_size"]): RunDir(out).cell(p.parent.name)
              for p in out.glob("cells/*/row.json") for r in [json.loads(p.read_text())]}
    here = device_kind(torch.device("cpu"))
    assert stores[("interp", 96)].measured_on() == [here]
    mixed, elsewhere = stores[("interp", 96)], stores[("abswin", 96)]
    _stamp_device(mixed.parts()[0][2], "NVIDIA H200")  # started on the GPU, the rest measured here
    for _, _, part in elsewhere.parts():  # all measured on the GPU; only the rows are built here
        _stamp_device(part, "NVIDIA H200")
    mixed.row_path.unlink()
    elsewhere.row_path.unlink()
    again = cli(*args)
    assert again.code == 0, again.err
    table = pd.read_parquet(out / "results.parquet").set_index(["scheme", "img_size"])
    assert table.loc[("interp", 96), "device"] == f"NVIDIA H200 + {here}"
    assert table.loc[("abswin", 96), "device"] == "NVIDIA H200"
    assert table.loc[("interp", 64), "device"].startswith("cpu")
    said = f"note: 1 of 4 cell(s) have records measured on several devices (NVIDIA H200 + {here})"
    assert said in again.err, again.err
    assert json.loads((out / "run.json").read_text())["cells_on_several_devices"] == [mixed.root.name]
    checked = cli("check", out, "--baseline", out)
    assert checked.code == 0 and "note: in the run, " + said[len("note: "):] in checked.out, checked.out
    other = tmp_path / "other"
    assert cli(*_args(full_ckpt, images, other, "64,96")).code == 0
    compared = cli("compare", other, out, "--json")
    assert compared.code == 0, compared.err
    assert any("measured on several devices (NVIDIA H200 + " in n for n in json.loads(compared.out)["notes"])


def test_a_run_stopped_after_its_records_but_before_its_rows_resumes_with_every_figure(tmp_path, full_ckpt, images):
    """Killed while the rows were being built: the cells' records are complete but no row was written. The
    resume evaluates nothing and must still give the whole row, GFLOPs included (they were taken only from
    the sizes evaluated in the run, so such cells kept none, for good)."""
    out = tmp_path / "run"
    run_sweep(_config(full_ckpt, images, out, GRID))
    whole = pd.read_parquet(out / "results.parquet")
    for row in out.glob("cells/*/row.json"):
        row.unlink()  # the state a kill between the last commit and the rows leaves
    again = run_sweep(_config(full_ckpt, images, out, GRID))
    assert again.run["ranks"][0]["evaluated_images"] == 0
    resumed = pd.read_parquet(out / "results.parquet")
    assert resumed["gflops"].notna().all()
    columns = COMPARED + ["gflops"]
    pd.testing.assert_frame_equal(resumed[columns].sort_values(["scheme", "img_size"]).reset_index(drop=True),
                                  whole[columns].sort_values(["scheme", "img_size"]).reset_index(drop=True))


def test_a_run_folder_copied_through_its_links_takes_new_sweeps(cli, full_ckpt, class_folder, tmp_path):
    """A copy that followed the links (cp -rL, zip, a CI artifact) made .views/current a folder: every later sweep
    into it failed with "Is a directory" and left a mark that refused check for good (adv24)."""
    import shutil

    import pandas as pd

    run = tmp_path / "run"
    args = ("--checkpoint", full_ckpt, "--data", class_folder, "-b", "6", "-j", "0", "-q", "--no-plots")
    assert cli("sweep", *args, "--out", run, "--res", "64").code == 0
    copied = Path(shutil.copytree(run, tmp_path / "copied", symlinks=False))
    assert (copied / ".views" / "current").is_dir() and not (copied / ".views" / "current").is_symlink()
    again = cli("sweep", *args, "--out", copied, "--res", "64,96")
    assert again.code == 0, again.err
    assert sorted(pd.read_csv(copied / "results.csv")["img_size"].unique()) == [64, 96]
    assert (copied / ".views" / "current").is_symlink() and not list(copied.glob("runs/*.unfinished.json"))
    assert sorted(p.name for p in (copied / ".views").iterdir() if p.name != "current") == [
        os.readlink(copied / ".views" / "current")]
    assert cli("check", copied, "--baseline", run).code == 0
