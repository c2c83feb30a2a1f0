"""A sweep across torchrun ranks (real gloo process groups on the CPU): the same numbers as one process,
every image evaluated once, a killed rank costs nothing committed, and any world size resumes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import hiera_bench
from hiera_bench.sweep import SweepConfig, run_sweep
from hiera_bench.errors import UserError
from hiera_bench.sweep.shards import assign, batches, complement, merge, segments, units
from hiera_bench.sweep.store import RunDir
from hiera_bench.testing import make_class_folder

N_IMAGES = 3 * 16
GRID = "64,96,128,160"  # 4 sizes x 2 schemes: 7 forwards (the native size is shared)
TABLE = ["model", "scheme", "img_size", "n_images", "n_failed", "n_correct1", "n_correct5", "top1", "top5", "nll",
         "ece", "status", "top1_delta_vs_native", "top1_ci_low", "top1_ci_high", "mcnemar_p", "cell_key"]
PREDICTIONS = ["cell_key", "position", "image_id", "target", "correct1", "correct5", "failed"]


# -- the shares: pure functions ------------------------------------------------------------------------

def test_spans_merge_and_complement():
    assert merge([(5, 9), (0, 5), (20, 30), (25, 26), (7, 7)]) == [(0, 9), (20, 30)]
    assert complement([(0, 8), (60, 72)], 120) == [(8, 60), (72, 120)]
    assert complement([], 5) == [(0, 5)] and complement([(0, 5)], 5) == []


def test_a_fresh_job_splits_the_data_evenly_into_contiguous_shares_without_padding():
    for n, world in [(120, 2), (7, 2), (50_000, 8), (5, 8)]:
        work = assign({"a": [(0, n)], "b": [(0, n)]}, [frozenset({"a", "b"})], n, world)
        sizes = work.images_per_rank()
        assert sum(sizes) == n and max(sizes) - min(sizes) <= 1
        assert work.shares[0][0] == 0 and all(a[1] == b[0] for a, b in zip(work.shares, work.shares[1:]))
        covered = [p for r in range(world) for s in work.segments_of(r) for p in range(s.start, s.end)]
        assert covered == list(range(n))  # every image exactly once


def test_a_resume_spreads_only_the_missing_work_and_batches_never_cross_a_segment():
    # a 2-rank run killed mid-way: each cell has the start of each half; a third cell is new
    half = [(8, 60), (72, 120)]
    forwards = [frozenset({"a", "b"}), frozenset({"c"})]
    work = assign({"a": half, "b": half, "c": [(0, 120)], "done": []}, forwards, 120, 3)
    assert sum(work.images_per_rank()) == 120
    per_rank = [units(work.segments_of(r), forwards) for r in range(3)]
    assert sum(per_rank) == work.total == 100 + 120  # forward (a, b) on the 100 images they lack, c on all
    assert max(per_rank) - min(per_rank) <= 2
    for r in range(3):
        segs = work.segments_of(r)
        for batch in batches(segs, 16):
            seg = next(s for s in segs if s.start <= batch[0] < s.end)
            assert batch[-1] < seg.end and batch == list(range(batch[0], batch[-1] + 1))
    assert segments({"a": half}, 0, 120)[0].keys == frozenset({"a"})
    nothing = assign({"a": []}, [frozenset({"a"})], 10, 4)
    assert nothing.total == 0 and nothing.images_per_rank() == [2, 3, 2, 3]


# -- real torchrun jobs over gloo ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Generated images, one undecodable in each rank's half (positions 5 and 39): failures must add up."""
    root = make_class_folder(tmp_path_factory.mktemp("dist") / "val", per_class=N_IMAGES // 3)
    for n in (6, 40):
        next(root.glob(f"*/ILSVRC2012_val_{n:08d}.JPEG")).write_bytes(b"")
    return root


def _args(ckpt: Path, data: Path, out: Path) -> list[str]:
    return ["sweep", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(out), "--res", GRID,
            "-b", "4", "--save-every", "4", "-j", "0", "--max-failed", "10", "-q"]


def _torchrun(nproc: int, args: list[str], log_dir: Path) -> subprocess.Popen:
    """``torchrun --standalone --nproc-per-node N -m hiera_bench ARGS``: a free port, each rank's output in a file."""
    root = str(Path(hiera_bench.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    env.pop("OMP_NUM_THREADS", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "--log-dir", str(log_dir), "--redirects", "3", "-m", "hiera_bench", *args]
    # a session of its own: a test that gives up on a job can stop torchrun and its ranks together
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its ranks: they would hang on after the test
        proc.communicate()
        raise
    return proc.returncode, err


def _rank_output(log_dir: Path, local_rank: int) -> str:
    files = sorted(log_dir.glob(f"*/attempt_0/{local_rank}/stderr.log"))
    assert files, f"no log of rank {local_rank} in {log_dir}"
    return files[-1].read_text()


def _worker(parent: int, rank: int) -> int | None:
    """The pid of rank ``rank`` among ``parent``'s children (torchrun starts its ranks itself)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


def _table(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "results.parquet")[TABLE].sort_values(["scheme", "img_size"]).reset_index(drop=True)


def _predictions(out: Path) -> pd.DataFrame:
    df = pd.read_parquet(out / "predictions.parquet")
    return df.sort_values(["cell_key", "position"]).reset_index(drop=True)


def _assert_same_numbers(out: Path, reference: Path) -> None:
    pd.testing.assert_frame_equal(_table(out), _table(reference), check_exact=False, rtol=0, atol=1e-6)
    mine, ref = _predictions(out), _predictions(reference)
    pd.testing.assert_frame_equal(mine[PREDICTIONS], ref[PREDICTIONS])
    assert [None if t is None else list(t) for t in mine["topk"]] == [None if t is None else list(t) for t in ref["topk"]]
    # float32 nll: another batch composition or thread count may move the last bits (one ulp at 20 is 2e-6)
    ok = ~ref["failed"]  # failed images have no nll (the failed column matched above)
    assert ((mine["nll"] - ref["nll"])[ok].abs() <= 1e-6 * ref["nll"][ok].abs().clip(lower=1.0)).all()


def _parts(out: Path) -> dict[tuple[str, int, int], int]:
    """Every committed part: (cell, start, end) -> mtime."""
    run = RunDir(out, primary=False)  # read only: the job is still writing
    return {(meta.parent.name, s, e): p.stat().st_mtime_ns for meta in (out / "cells").glob("*/cell.json")
            for s, e, p in run.cell(meta.parent.name).parts()}


@pytest.fixture(scope="module")
def reference(full_ckpt, images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "one-process"
    run_sweep(SweepConfig(checkpoint=str(full_ckpt), data=str(images), out=str(out), res=GRID, batch_size=4,
                          save_every=4, workers=0, max_failed=0.1))
    return out


def test_two_gloo_ranks_give_the_one_process_table_and_predictions(cli, full_ckpt, images, reference, tmp_path):
    out = tmp_path / "two-ranks"
    code, err = _finish(_torchrun(2, _args(full_ckpt, images, out), tmp_path / "logs"))
    assert code == 0, err + _rank_output(tmp_path / "logs", 0) + _rank_output(tmp_path / "logs", 1)
    _assert_same_numbers(out, reference)

    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2 and run["backend"] == "gloo"
    assert run["images_per_rank"] == [N_IMAGES // 2, N_IMAGES // 2]
    assert [r["device"] for r in run["ranks"]] == run["devices"] and len(run["devices"]) == 2
    assert all(d.startswith("cpu") for d in run["devices"])
    assert [r["share"] for r in run["ranks"]] == [[0, N_IMAGES // 2], [N_IMAGES // 2, N_IMAGES]]
    one = json.loads((reference / "run.json").read_text())
    assert run["cells"] == one["cells"]  # cell keys do not depend on the world size
    assert run["failed_images"] == one["failed_images"] and len(one["failed_images"]) == 2  # one of each rank
    assert one["world_size"] == 1 and one["images_per_rank"] == [N_IMAGES]
    # each rank committed its own half of every cell
    spans = {(s, e) for _, s, e in _parts(out)}
    assert all(e <= N_IMAGES // 2 or s >= N_IMAGES // 2 for s, e in spans)
    assert _rank_output(tmp_path / "logs", 1).strip() == ""  # messages on rank 0 only

    # another world size (one process) reuses everything: nothing evaluated, nothing rewritten
    parts, rows = _parts(out), {p: p.stat().st_mtime_ns for p in out.glob("cells/*/row.json")}
    assert cli(*_args(full_ckpt, images, out)).code == 0
    assert _parts(out) == parts
    assert {p: p.stat().st_mtime_ns for p in out.glob("cells/*/row.json")} == rows
    _assert_same_numbers(out, reference)


def test_a_killed_rank_fails_the_job_in_one_line_and_a_rerun_evaluates_only_what_is_missing(cli, full_ckpt, images,
                                                                                         reference, tmp_path):
    out, logs = tmp_path / "run", tmp_path / "logs"
    job = _torchrun(2, _args(full_ckpt, images, out), logs)
    deadline, victim = time.time() + 180, None
    while time.time() < deadline and job.poll() is None:
        victim = victim or _worker(job.pid, 1)
        if victim and any(s >= N_IMAGES // 2 for _, s, _ in _parts(out)):  # rank 1 committed its first part
            os.kill(victim, signal.SIGKILL)
            break
        time.sleep(0.005)
    code, err = _finish(job)
    assert victim is not None and code != 0, f"the job ended before rank 1 could be killed: {err}"
    rank0 = [line for line in _rank_output(logs, 0).splitlines() if line.strip()]
    assert len(rank0) == 1 and rank0[0].startswith("error: "), rank0
    assert "re-run the same command to resume" in rank0[0]
    committed = _parts(out)
    assert committed and not (out / "results.csv").exists()
    cells = [meta.parent.name for meta in out.glob("cells/*/cell.json")]
    lacking = {p for key in cells for a, b in RunDir(out).cell(key).missing(N_IMAGES) for p in range(a, b)}

    # the same command in one process (any world size resumes): only the missing ranges, every committed
    # part kept as it was, the same numbers
    result = cli(*_args(full_ckpt, images, out))
    assert result.code == 0, result.err
    after = _parts(out)
    assert all(after.get(part) == mtime for part, mtime in committed.items())
    for key in {k for k, _, _ in after}:
        spans = sorted((s, e) for k, s, e in after if k == key)
        assert spans[0][0] == 0 and spans[-1][1] == N_IMAGES
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])), f"an image evaluated twice: {spans}"
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 1 and run["images_per_rank"] == [N_IMAGES]
    assert run["ranks"][0]["evaluated_images"] == len(lacking)  # images some cell lacked, each decoded once
    _assert_same_numbers(out, reference)


def test_one_job_sweeps_several_checkpoints_and_data_sets_in_one_process_group(cli, full_ckpt, abswin_ckpt,
                                                                                 tmp_path):
    """Each sweep of a ``-c A -c B -d a=... -d b=...`` command once made the process group again under the
    job's store, where the ranks could read the last group's addresses: a hang or a gloo traceback."""
    small = make_class_folder(tmp_path / "a", per_class=2)
    other = make_class_folder(tmp_path / "b", per_class=2, seed=1)  # 6 images: the ranks hold the batches of one
    args = ["sweep", "-c", str(full_ckpt), "-c", str(abswin_ckpt), "--label", "full", "--label", "abswin",
            "-d", f"a={small}", "-d", f"b={other}",
            "--res", "64", "-b", "2", "-j", "0", "--no-plots", "-q"]
    job = _torchrun(3, [*args, "--out", str(tmp_path / "job")], tmp_path / "logs")
    try:
        code, err = _finish(job, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("the job hung joining the process group of a later sweep")
    assert code == 0, err + "".join(_rank_output(tmp_path / "logs", r) for r in range(3))
    assert cli(*args, "--out", str(tmp_path / "one")).code == 0
    folders = sorted(p.parent.relative_to(tmp_path / "one") for p in (tmp_path / "one").glob("*/*/results.csv"))
    assert len(folders) == 4  # two checkpoints x two data sets
    for folder in folders:
        _assert_same_numbers(tmp_path / "job" / folder, tmp_path / "one" / folder)
        assert json.loads((tmp_path / "job" / folder / "run.json").read_text())["world_size"] == 3


def test_a_result_that_cannot_be_trusted_fails_the_job_from_rank_0_after_it_wrote_everything(full_ckpt, images,
                                                                                             tmp_path):
    """Too many undecodable images (2 of 48 over --max-failed 1 %): exit 1, said by rank 0 once its views and
    plots are written; the other ranks leave quietly (one exiting 1 had torchrun stop rank 0 mid-way)."""
    out, logs = tmp_path / "run", tmp_path / "logs"
    args = [a if a != "10" else "1" for a in _args(full_ckpt, images, out)]  # --max-failed 1 (percent)
    code, err = _finish(_torchrun(2, args, logs))
    assert code == 1, err
    rank0 = _rank_output(logs, 0)
    assert "error: 2 of 48 images (4.17 %) could not be decoded" in rank0, rank0
    assert (out / "plots" / "top1-vs-size.png").is_file() and (out / "results.csv").is_file()
    assert "SIGTERM" not in err and "local_rank: 1" not in err, err  # rank 1 did not fail, rank 0 was not stopped


@pytest.mark.parametrize("rank, shown", [("0", True), ("1", False)])
def test_a_job_stopped_as_a_whole_says_interrupted_once_on_rank_0(monkeypatch, capsys, rank, shown):
    import importlib
    import signal as signals

    app = importlib.import_module("hiera_bench.cli.app")  # the module; the package exports its Typer app

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    handlers = {s: signals.getsignal(s) for s in (signals.SIGINT, signals.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as stop:
            app._interrupted(signals.SIGINT)
    finally:
        for sig, handler in handlers.items():
            signals.signal(sig, handler)
    assert stop.value.code == 130
    assert ("interrupted: finished cells" in capsys.readouterr().err) == shown


@pytest.mark.parametrize("rank, shown", [("0", True), ("1", False)])
def test_a_usage_error_of_a_job_is_said_once_on_rank_0(cli, monkeypatch, rank, shown):
    """Every rank parses the same command line: an unknown option was printed once per rank, 8 copies on an 8-GPU
    node (adv32)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    result = cli("sweep", "--bogus")
    assert result.code == 2 and ("No such option: --bogus" in result.err) == shown, result.err


def test_a_job_that_cannot_be_joined_is_one_line(monkeypatch):
    from hiera_bench.errors import UserError
    from hiera_bench.sweep.distributed import Cluster

    for var, value in {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "port"}.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(UserError, match="rank 0 could not join the torchrun job .*127.0.0.1:port") as stop:
        Cluster.join("cpu")
    assert "\n" not in str(stop.value)


@pytest.mark.parametrize("env, said", [
    ({"WORLD_SIZE": "abc", "RANK": "0"}, "WORLD_SIZE='abc' is not a whole number"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2, LOCAL_RANK=2, WORLD_SIZE=2, LOCAL_WORLD_SIZE=2: a rank must be 0 to"),
    ({"WORLD_SIZE": "0", "RANK": "0"}, "a rank must be 0 to the world size - 1"),
])
def test_a_job_environment_that_names_no_rank_of_it_is_one_line(monkeypatch, env, said):
    """WORLD_SIZE=abc was a ValueError traceback, RANK at or above WORLD_SIZE waited half an hour for ranks that
    could never come (adv32)."""
    from hiera_bench.errors import UserError
    from hiera_bench.sweep.distributed import Cluster

    for var, value in {**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29653"}.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(UserError, match=re.escape(said)):
        Cluster.join("cpu")


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_rank_waiting_for_the_job_ends_at_once_on_a_signal(full_ckpt, images, tmp_path, sig, code):
    """A rank started without the others waits in torch's C++ join for up to half an hour, where Python's handlers
    cannot run: Ctrl-C and SIGTERM did nothing until it timed out (adv32). Nothing has run by then: it ends at once.
    A folder it would have swept into is marked, so its earlier results cannot pass for this sweep's."""
    out = tmp_path / "run"
    run_sweep(SweepConfig(checkpoint=str(full_ckpt), data=str(images), out=str(out), res="64", batch_size=4,
                          workers=0, limit=8, schemes="interp"))
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port()), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "hiera_bench", "sweep", "-c", str(full_ckpt), "--data", str(images),
                             "--out", str(out), "--res", "64", "--limit", "8", "-q"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not _listening(int(env["MASTER_PORT"])) and time.monotonic() < deadline:
            time.sleep(0.2)  # rank 0 serves the job's store once it is joining
        time.sleep(1.0)
        proc.send_signal(sig)
        proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode in (code, -sig), proc.returncode
    checked = subprocess.run([sys.executable, "-m", "hiera_bench", "check", str(out), "--baseline", str(out)],
                             capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert checked.returncode == 2 and "has not finished" in checked.stderr, checked.stderr


def test_a_job_with_options_that_cannot_run_leaves_the_folder_as_it_was(cli, full_ckpt, images, tmp_path, monkeypatch):
    """Rank 0 marks its folder before it joins; options refused once checked began nothing, so the mark goes: with it,
    a typo in a torchrun command made check refuse the folder's good results (adv35). RANK without WORLD_SIZE is no
    job at all."""
    out = tmp_path / "run"
    run_sweep(SweepConfig(checkpoint=str(full_ckpt), data=str(images), out=str(out), res="64", batch_size=4,
                          workers=0, limit=8, schemes="interp"))
    for var, value in {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(var, value)
    refused = cli("sweep", "-c", full_ckpt, "--data", images, "--out", out, "--res", "64,abc", "--device", "cpu", "-q")
    assert refused.code == 2 and "--res '64,abc'" in refused.err, refused.err
    assert cli("check", out, "--baseline", out).code == 0
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("RANK", "node-3")  # a scheduler's own variable
    alone = cli("sweep", "-c", full_ckpt, "--data", images, "--out", out, "--res", "64", "--limit", "8", "--schemes",
                "interp", "--device", "cpu", "-q", "--no-plots", "--max-failed", "50")
    assert alone.code == 0, alone.err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("error, said", [
    (OSError(28, "No space left on device", "/run/cells/x/part.parquet"),
     "No space left on device: /run/cells/x/part.parquet (free space, then re-run the same command"),
    (UserError("image 7 cannot be decoded and --strict stops at the first; remove it or drop --strict"),
     "image 7 cannot be decoded and --strict stops at the first; remove it or drop --strict"),
])
def test_a_rank_that_fails_on_something_the_user_can_fix_is_one_line_from_rank_0_with_the_fix(monkeypatch, error,
                                                                                                said):
    """Rank 1's own error reaches rank 0 through the job's store: rank 0 prints it with what helps, rank 1 prints
    nothing (it printed its own line too, and a full disk lost its advice on the way)."""
    import torch.distributed as dist

    from hiera_bench.sweep import distributed

    monkeypatch.setitem(distributed._stopped, "error", False)
    store = dist.HashStore()
    one = distributed.Cluster(rank=1, world_size=2, backend="gloo", store=store, host="node1")
    zero = distributed.Cluster(rank=0, world_size=2, backend="gloo", store=store, host="node0")
    assert isinstance(one.explain(error), distributed.ReportedByRankZero)
    line = str(zero.explain(distributed.LostContact("Connection closed by peer")))
    assert line.startswith(f"rank 1 on node1: {said}"), line
    if isinstance(error, UserError):  # the fix is the rank's own: re-running the same command would fail again
        assert "re-run" not in line
