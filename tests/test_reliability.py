"""Bad input, untrusted checkpoints, crashes, interruption and concurrent runs: clear errors, nothing lost."""

from __future__ import annotations

import errno
import os
import shutil
import pickle
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from hypothesis import given, settings, strategies as st

from hiera_bench.sweep import SweepConfig, validate_config
from hiera_bench.errors import UserError
from hiera_bench.testing import make_class_folder

RESULT_FILES = ("results.csv", "results.parquet", "results.md", "run.json", "predictions.parquet")
METRICS = ["model", "scheme", "img_size", "n_images", "n_failed", "top1", "top5", "nll", "ece", "status"]


@pytest.fixture(scope="module")
def many_images(tmp_path_factory):
    return make_class_folder(tmp_path_factory.mktemp("many") / "val", per_class=16)


def _bad_cases(tmp: Path, ckpt: Path, data: Path):
    empty = tmp / "empty"
    empty.mkdir(exist_ok=True)
    flat = tmp / "flat"
    flat.mkdir(exist_ok=True)
    (flat / "holiday.jpg").write_bytes((next(data.glob("*/*.JPEG"))).read_bytes())
    a_file = tmp / "a_file"
    a_file.write_text("not a folder")
    evil = tmp / "evil.pth"
    with open(evil, "wb") as fh:
        pickle.dump({"x": _Evil(str(tmp / "pwned"))}, fh)
    own = tmp / "own-val"  # a copy: a failing case must not write into the shared fixture
    if not own.exists():
        shutil.copytree(data, own)
    empty_pth = tmp / "empty.pth"
    empty_pth.write_bytes(b"")
    run = ["sweep", "--checkpoint", ckpt, "--data", data, "--out", tmp / "out", "-q"]
    cases = {
        "res letters": (run + ["--res", "abc"], "not a positive whole number"),
        "res open range": (run + ["--res", "224:"], "start:stop:step"),
        "res reversed": (run + ["--res", "320:224:16"], "larger than stop"),
        "res zero step": (run + ["--res", "224:320:0"], "step must be positive"),
        "res negative": (run + ["--res=-224"], "--res"),
        "res zero": (run + ["--res", "0"], "must be positive"),
        "res huge": (run + ["--res", "100000"], "largest supported input"),
        "res not a multiple": (run + ["--res", "72"], "use 64 or 96"),
        "unknown model": (["sweep", "--model", "hiera_gigantic", "--data", data], "unknown Hiera model"),
        "unknown scheme": (run + ["--schemes", "interp,bogus"], "unknown scheme 'bogus'"),
        "empty schemes": (run + ["--schemes", ","], "--schemes is empty"),
        "limit zero": (run + ["--limit", "0"], "--limit must be at least 1"),
        "batch zero": (run + ["--batch-size", "0"], "--batch-size must be at least 1"),
        "missing data": (["sweep", "--checkpoint", ckpt, "--data", tmp / "nowhere"], "does not exist"),
        "empty dataset": (["sweep", "--checkpoint", ckpt, "--data", empty], "--data"),
        "no labels": (["sweep", "--checkpoint", ckpt, "--data", flat], "--data"),
        "out is a file": (["sweep", "--checkpoint", ckpt, "--data", data, "--out", a_file], "not a folder"),
        "fp16 on cpu": (run + ["--device", "cpu", "--amp", "fp16"], "conflicts"),
        "hub data with folder format": (run[:3] + ["--data", "hf:ILSVRC/imagenet-1k", "--data-format", "folder"], "drop one"),
        "missing checkpoint": (["sweep", "--checkpoint", tmp / "none.safetensors", "--data", data], "does not exist"),
        "pickled code": (["sweep", "--model", "hiera_tiny_224", "--checkpoint", evil, "--data", data], "never unpickles"),
        "wrong model for checkpoint": (["sweep", "--model", "hiera_base_224", "--checkpoint", ckpt / "model.safetensors",
                                        "--data", data], "does not fit model hiera_base_224"),
        "bad crop": (run + ["--crop-pct", "1.5"], "--crop-pct"),
        "unknown option": (run + ["--resolution", "224"], "No such option"),
        "bogus interpolation": (run + ["--interpolation", "bogus"], "is not one of timm's"),
        "meta device": (run + ["--device", "meta"], "cannot run on meta"),
        "res above the largest, model's stride": (run + ["--res", "2080"], "use 2048"),
        "a file as a class folder": (["sweep", "--checkpoint", ckpt, "--data", a_file, "--data-format", "folder"],
                                     "is not a folder"),
        "zero-byte pth": (["sweep", "--model", "hiera_tiny_224", "--checkpoint", empty_pth, "--data", data],
                          "is empty (0 bytes)"),
        "missing ReaL file": (run + ["--real-labels", tmp / "missing.json"], "or --real-labels timm"),
        "progress every -1 s": (run + ["--progress-every=-1"], "--progress-every must be a number of seconds"),
        "out inside the data": (["sweep", "--checkpoint", ckpt, "--data", own, "--out", own / "out"],
                                "inside the data folder"),
        "out is the data folder": (["sweep", "--checkpoint", ckpt, "--data", own, "--out", own], "inside the data folder"),
    }
    if not torch.cuda.is_available():
        cases["cuda without gpu"] = (run + ["--device", "cuda"], "no CUDA GPU")
    return cases


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_every_bad_input_is_one_line_exit_2(cli, tmp_path, full_ckpt, class_folder):
    cases = _bad_cases(tmp_path, full_ckpt, class_folder)
    assert len(cases) >= 30
    for name, (args, expected) in cases.items():
        result = cli(*args)
        assert result.code == 2, (name, result.code, result.err)
        lines = [line for line in result.err.strip().splitlines() if line.strip()]
        assert "Traceback" not in result.err, name
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.err)
        assert expected in result.err, (name, result.err)
    assert not (tmp_path / "pwned").exists()


def test_a_sweep_without_data_reads_hiera_bench_data(cli, tmp_path, full_ckpt, class_folder, monkeypatch):
    """Without --data the sweep reads $HIERA_BENCH_DATA (else the hub's val): the check that --out is not inside the
    data folder was given the missing --data and ended every such sweep in a TypeError traceback (adv32)."""
    monkeypatch.setenv("HIERA_BENCH_DATA", str(class_folder))
    result = cli("sweep", "-c", full_ckpt, "--out", tmp_path / "run", "--res", "64", "--schemes", "interp",
                 "--device", "cpu", "-q", "--no-plots")
    assert result.code == 0, result.err
    assert pd.read_parquet(tmp_path / "run" / "results.parquet")["data"].iloc[0] == str(class_folder)
    inside = cli("sweep", "-c", full_ckpt, "--out", class_folder / "run", "--res", "64", "-q")
    assert inside.code == 2 and "inside the data folder" in inside.err, inside.err


def test_an_out_named_as_a_table_file_is_refused_before_any_folder_is_made(cli, tmp_path, full_ckpt, class_folder):
    """``-o results.csv`` made a folder results.csv/ holding results.csv without a word (adv26); so did the folder
    several checkpoints' run folders go in. A folder already so named is still a run folder."""
    for out, checkpoints in ((tmp_path / "results.csv", [full_ckpt]), (tmp_path / "runs.JSON", [full_ckpt, full_ckpt])):
        labels = [a for i in range(len(checkpoints)) for a in ("--label", f"run{i}")]
        result = cli("sweep", *[a for c in checkpoints for a in ("-c", c)], *labels, "--data", class_folder,
                     "--out", out, "--res", "64", "-q")
        assert result.code == 2 and result.err.count("\n") == 1, result.err
        assert f"--out {out} names a file" in result.err and f"-o {out.with_suffix('')})" in result.err
        assert "or --json to print the table" in result.err and not out.exists()
    (tmp_path / "old.csv").mkdir()
    result = cli("sweep", "-c", full_ckpt, "--data", class_folder, "--out", tmp_path / "old.csv", "--res", "64",
                 "--schemes", "interp", "--device", "cpu", "-q", "--no-plots")
    assert result.code == 0 and (tmp_path / "old.csv" / "results.csv").is_file(), result.err


def test_memory_check_counts_what_one_forward_holds(full_ckpt):
    """A batch never holds more images than the data has, and a CPU forward runs in slices: the check
    measures that, so --batch-size 1000 on 8 images is no error, and a size that cannot fit still is."""
    from hiera_bench.models import load_model
    from hiera_bench.geometry import HieraGeometry
    from hiera_bench.sweep.runtime import activation_bytes, check_memory, forward_batch

    model = load_model(checkpoint=str(full_ckpt)).model
    gpu = torch.device("cuda")  # only the arithmetic: nothing is allocated
    eight = activation_bytes(model, 64, 8)
    check_memory(model, [64], 1000, gpu, n_images=8, free=2 * eight)
    with pytest.raises(UserError, match="64 px at 1000 image"):
        check_memory(model, [64], 1000, gpu, n_images=5000, free=2 * eight)
    cpu = torch.device("cpu")
    sliced = forward_batch(HieraGeometry.from_model(model), 512, 1000, cpu)
    assert sliced < 1000
    check_memory(model, [512], 1000, cpu, n_images=5000, free=2 * activation_bytes(model, 512, sliced))
    with pytest.raises(UserError, match=r"GiB.*choose smaller sizes") as info:
        check_memory(model, [2048], 8, torch.device("cpu"), n_images=8, free=1 << 20)
    assert "\n" not in str(info.value)


def test_images_above_pils_bomb_limit_are_decoded_and_counted_once(cli, tmp_path, full_ckpt, class_folder,
                                                                     monkeypatch):
    """A 12000 px PNG is above PIL's warning limit (89 Mpx): decoded as timm decodes it, said once in the summary.
    The limit is lowered here so that the generated images (70x70 to 120x90 px) stand for such files."""
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # 96x72 and 120x90 are above it, none above twice it
    with warnings.catch_warnings():  # the test's own look at the sizes (a sweep ignores the warning only while it runs)
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        large = sum(1 for p in class_folder.glob("*/*.JPEG") if 6000 < Image.open(p).width * Image.open(p).height)
    result = cli("sweep", "--checkpoint", full_ckpt, "--data", class_folder, "--out", tmp_path, "--res", "64", "-q")
    assert result.code == 0, result.err
    notes = [line for line in result.err.splitlines() if "decompression-bomb" in line]
    assert notes == [f"note: {large} images are larger than PIL's decompression-bomb limit (0.006 Mpx); decoded "
                     "anyway, as timm does"], result.err
    assert "DecompressionBombWarning" not in result.err
    table = pd.read_csv(tmp_path / "results.csv")
    assert (table["n_failed"] == 0).all() and (table["n_images"] == 12).all()


def test_debug_shows_the_traceback(cli, tmp_path, full_ckpt, class_folder):
    result = cli("--debug", "sweep", "--checkpoint", full_ckpt, "--data", class_folder, "--limit", "0")
    assert result.code == 2 and "Traceback" in result.err and "error: --limit" in result.err


@settings(max_examples=200, deadline=None)
@given(batch=st.integers(-5, 5), limit=st.one_of(st.none(), st.integers(-3, 3)),
       workers=st.one_of(st.none(), st.integers(-2, 2)), amp=st.sampled_from(["none", "bf16", "fp16", "int8"]),
       schemes=st.sampled_from(["interp", "abswin,interp", "", " , ", "interp,nope"]),
       crop=st.one_of(st.none(), st.floats(-1, 2, allow_nan=False)))
def test_option_validation_accepts_exactly_the_valid_space(batch, limit, workers, amp, schemes, crop):
    cfg = SweepConfig(batch_size=batch, limit=limit, workers=workers, amp=amp, schemes=schemes, crop_pct=crop,
                      device="cpu")
    valid = (batch >= 1 and (limit is None or limit >= 1) and (workers is None or workers >= 0)
             and amp in ("none", "bf16") and schemes in ("interp", "abswin,interp")
             and (crop is None or 0 < crop <= 1))
    try:
        validate_config(cfg)
        assert valid
    except UserError as exc:
        assert not valid
        assert "\n" not in str(exc)


# --- crashes and interruption -------------------------------------------------------------------

def _sweep_cmd(ckpt, data, out, res="32:96:32", batch=4):
    return [sys.executable, "-m", "hiera_bench", "sweep", "--checkpoint", str(ckpt), "--data", str(data),
            "--out", str(out), "--res", res, "-b", str(batch), "--save-every", "8", "-j", "0", "-q"]


def _start_and_signal(cmd, out: Path, sig: int, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Start a sweep, wait until it has committed some records, then send ``sig``."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while time.time() < deadline and not list(out.glob("cells/*/part-*.parquet")):
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the sweep finished before it could be interrupted: use more images"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _table(out: Path) -> pd.DataFrame:
    df = pd.read_csv(out / "results.csv")
    return df[METRICS].sort_values(["scheme", "img_size"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, full_ckpt, many_images):
    out = tmp_path_factory.mktemp("clean")
    subprocess.run(_sweep_cmd(full_ckpt, many_images, out), check=True, capture_output=True, timeout=300)
    return _table(out)


def _assert_valid_files(out: Path, allow_tmp: bool = False) -> None:
    """Every results file parses; temp files (hidden, never read) only where a writer was killed."""
    for path in out.rglob("*"):
        if path.suffix == ".parquet":
            pd.read_parquet(path)  # raises on a truncated file
        elif path.suffix == ".json":
            import json

            json.loads(path.read_text())
        assert allow_tmp or not path.name.endswith(".tmp"), f"temp file left behind: {path}"


def test_sigkill_mid_run_leaves_valid_files_and_resumes_to_the_same_table(tmp_path, full_ckpt, many_images, uninterrupted):
    killed = _start_and_signal(_sweep_cmd(full_ckpt, many_images, tmp_path), tmp_path, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "results.csv").exists()
    parts_before = {p: p.stat().st_mtime_ns for p in tmp_path.glob("cells/*/part-*.parquet")}
    _assert_valid_files(tmp_path, allow_tmp=True)
    subprocess.run(_sweep_cmd(full_ckpt, many_images, tmp_path), check=True, capture_output=True, timeout=300)
    assert parts_before
    for path, stamp in parts_before.items():  # committed work was reused, not redone
        assert path.stat().st_mtime_ns == stamp, path
    pd.testing.assert_frame_equal(_table(tmp_path), uninterrupted)
    _assert_valid_files(tmp_path)


def test_sigterm_keeps_finished_work_and_says_how_to_resume(tmp_path, full_ckpt, many_images, uninterrupted):
    done = _start_and_signal(_sweep_cmd(full_ckpt, many_images, tmp_path), tmp_path, signal.SIGTERM)
    assert done.returncode == 143, done.stderr
    assert "re-run the same command to resume" in done.stderr and "Traceback" not in done.stderr
    _assert_valid_files(tmp_path)
    subprocess.run(_sweep_cmd(full_ckpt, many_images, tmp_path), check=True, capture_output=True, timeout=300)
    pd.testing.assert_frame_equal(_table(tmp_path), uninterrupted)


def test_disk_full_while_writing_is_one_line_and_keeps_earlier_files(cli, tmp_path, full_ckpt, class_folder, monkeypatch):
    args = ["sweep", "--checkpoint", full_ckpt, "--data", class_folder, "--out", tmp_path, "-q", "--res"]
    assert cli(*args, "64").code == 0
    before = {name: (tmp_path / name).read_bytes() for name in RESULT_FILES}
    import hiera_bench.io as results

    real_fsync = os.fsync

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results.os, "fsync", full_disk)
    result = cli(*args, "96")
    monkeypatch.setattr(results.os, "fsync", real_fsync)
    assert result.code == 2 and "Traceback" not in result.err
    assert result.err.strip().startswith("error: No space left on device") and len(result.err.strip().splitlines()) == 1
    for name, content in before.items():
        assert (tmp_path / name).read_bytes() == content, name
    _assert_valid_files(tmp_path)
    assert cli(*args, "96").code == 0  # and the same command then completes
    assert set(pd.read_csv(tmp_path / "results.csv").img_size) == {64, 96}


def test_a_folder_without_file_locks_is_one_line_naming_the_fix(cli, tmp_path, full_ckpt, class_folder, monkeypatch):
    """Lustre mounted without -o flock answers flock() with ENOSYS; the sweep must say so, not 'check the path'."""
    import fcntl

    import hiera_bench.io as io

    real_flock = fcntl.flock

    def no_locks(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(io.fcntl, "flock", no_locks)
    args = ["sweep", "--checkpoint", full_ckpt, "--data", class_folder, "--out", tmp_path / "run", "-q", "--res", "64"]
    result = cli(*args)
    monkeypatch.setattr(io.fcntl, "flock", real_flock)
    line = result.err.strip()
    assert result.code == 2 and "Traceback" not in result.err and len(line.splitlines()) == 1
    assert "without file locks" in line and "-o flock" in line and str(tmp_path / "run") in line
    assert cli(*args).code == 0  # on a filesystem with locks the same command runs


def test_two_sweeps_into_one_out_lose_nothing(tmp_path, full_ckpt, many_images):
    cmds = [
        _sweep_cmd(full_ckpt, many_images, tmp_path, res="96", batch=8),
        _sweep_cmd(full_ckpt, many_images, tmp_path, res="128", batch=8),
        _sweep_cmd(full_ckpt, many_images, tmp_path, res="96", batch=8),  # the same cells as the first
    ]
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1] for o in outs]
    df = pd.read_csv(tmp_path / "results.csv")
    keys = df[["scheme", "img_size"]].apply(tuple, axis=1).tolist()
    assert sorted(keys) == sorted({(s, r) for s in ("interp", "abswin") for r in (64, 96, 128)})
    assert len(keys) == len(set(keys))
    _assert_valid_files(tmp_path)
    preds = pd.read_parquet(tmp_path / "predictions.parquet")
    assert len(preds) == 6 * 48 and not preds.duplicated(["scheme", "img_size", "image_id"]).any()


def test_cells_sharing_a_forward_resume_each_from_their_own_records(cli, tmp_path, full_ckpt, class_folder):
    """A kill between the flushes of two cells that share one forward (native size): nothing committed is redone."""
    args = ["sweep", "--checkpoint", full_ckpt, "--data", class_folder, "--out", tmp_path, "--res", "64",
            "--save-every", "4", "-b", "4", "-q"]
    assert cli(*args).code == 0
    before = _table(tmp_path)
    cells = sorted(tmp_path.glob("cells/*/row.json"))
    assert len(cells) == 2  # interp and abswin at the native size: one forward
    behind, ahead = cells[0].parent, cells[1].parent
    for path in [behind / "row.json", *sorted(behind.glob("part-*.parquet"))[1:]]:
        path.unlink()
    (ahead / "row.json").unlink()
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("cells/*/part-*.parquet")}
    assert cli(*args).code == 0
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert len(list(behind.glob("part-*.parquet"))) == len(list(ahead.glob("part-*.parquet")))
    pd.testing.assert_frame_equal(_table(tmp_path), before)
