"""Ctrl-C and SIGTERM at every stage of a sweep (loading, forwards, committing records, publishing the views,
and three Ctrl-C within 30 ms): a Ctrl-C ends the process by SIGINT (a shell shows 130), SIGTERM exits 143 (either
0 if it had finished), with at most one line and no traceback, and the same command then completes the folder to the table an uninterrupted run gives.

Real processes, real signals: each point starts a sweep, waits for its stage to show on disk, waits a random
few milliseconds more and signals it. The points run side by side; the re-runs share one interpreter.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest

from hiera_bench.testing import make_class_folder, run_cli_batch

METRICS = ["model", "scheme", "img_size", "n_images", "n_failed", "top1", "top5", "nll", "status"]
SEED = int(os.environ.get("HIERA_BENCH_FUZZ_SEED", "0"))


@dataclass(frozen=True)
class Point:
    """A stage of a run, recognised by what it leaves on disk, then a random wait in ``jitter`` seconds."""

    name: str
    reached: Callable[[Path], bool]
    signals: tuple[int, ...]  # sent in order, 10 ms apart
    jitter: tuple[float, float] = (0.0, 0.05)


def _any(pattern: str) -> Callable[[Path], bool]:
    return lambda out: any(out.glob(pattern))


POINTS = (
    # nothing on disk shows the imports and the model load: a random moment after the interpreter is up
    Point("load", lambda out: True, (signal.SIGINT,), jitter=(0.3, 2.0)),
    Point("forward", _any("cells/*/cell.json"), (signal.SIGTERM,)),
    Point("write", _any("cells/*/part-*.parquet"), (signal.SIGINT,)),
    Point("views", _any(".views/*"), (signal.SIGTERM,)),
    Point("three Ctrl-C in 30 ms", _any("cells/*/part-*.parquet"), (signal.SIGINT,) * 3),
)


def _command(ckpt: Path, data: Path, out: Path) -> list[str]:
    return ["sweep", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(out), "--res", "32:64:32", "-b", "2",
            "--save-every", "4", "-j", "0", "-q"]


def _interrupt(argv: list[str], out: Path, point: Point, delay: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "hiera_bench", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while proc.poll() is None and not point.reached(out) and time.time() < deadline:
        time.sleep(0.002)
    time.sleep(delay)
    for sig in point.signals:
        if proc.poll() is None:
            proc.send_signal(sig)
        time.sleep(0.01)
    return proc


def _table(out: Path) -> pd.DataFrame:
    df = pd.read_csv(out / "results.csv")
    return df[METRICS].sort_values(["scheme", "img_size"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_class_folder(tmp_path_factory.mktemp("signals") / "val", per_class=6)


def test_a_signal_at_any_stage_leaves_a_folder_the_same_command_completes(tmp_path, full_ckpt, images):
    rng = random.Random(SEED)
    outs = {p.name: tmp_path / p.name.replace(" ", "-") for p in POINTS}
    procs = {p.name: _interrupt(_command(full_ckpt, images, outs[p.name]), outs[p.name], p, rng.uniform(*p.jitter))
             for p in POINTS}
    for point in POINTS:
        proc = procs[point.name]
        _, stderr = proc.communicate(timeout=240)
        # a Ctrl-C ends the process by SIGINT once it has cleaned up (a shell shows 130), every time: it once
        # exited 130 or, when the interrupt had passed through exec()/eval()'d code, by SIGINT (CPython's flag)
        expected = {0, 143} if signal.SIGTERM in point.signals else {0, -signal.SIGINT}
        assert proc.returncode in expected, (point.name, proc.returncode, stderr)
        assert "Traceback" not in stderr, (point.name, stderr)
        assert len([line for line in stderr.splitlines() if line.strip()]) <= 1, (point.name, stderr)
    clean = tmp_path / "uninterrupted"
    reruns = run_cli_batch([_command(full_ckpt, images, clean)] + [_command(full_ckpt, images, outs[p.name])
                                                                    for p in POINTS])
    assert [r["code"] for r in reruns] == [0] * (len(POINTS) + 1), reruns
    for point in POINTS:
        pd.testing.assert_frame_equal(_table(outs[point.name]), _table(clean), obj=point.name)


def test_ctrl_c_in_a_shell_loop_stops_the_loop(tmp_path, full_ckpt, images):
    """A terminal's Ctrl-C signals the whole foreground group; bash goes on with its loop unless its child died of
    SIGINT. hiera-bench ends by SIGINT after keeping its work, so ``for m in ...; do hiera-bench sweep ...; done``
    stops at the first Ctrl-C instead of starting the next model (it went on when hiera-bench exited 130)."""
    out = tmp_path / "run"
    sweep = " ".join(map(str, [sys.executable, "-m", "hiera_bench", *_command(full_ckpt, images, out)]))
    script = f"for attempt in 1 2; do {sweep}; echo next-command; done"
    proc = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 240
    while proc.poll() is None and not any(out.glob("cells/*/cell.json")) and time.time() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, "the sweep finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    stdout, stderr = proc.communicate(timeout=240)
    assert "next-command" not in stdout, stderr
    assert proc.returncode == -signal.SIGINT, (proc.returncode, stderr)
    assert [line for line in stderr.splitlines() if line.strip()] == [
        "interrupted: finished cells and committed images are kept; re-run the same command to resume"]


def test_a_program_that_imports_the_cli_keeps_its_own_ctrl_c():
    """hiera-bench's quiet start (a Ctrl-C while it loads ends it by SIGINT with one line) is for its own process:
    a notebook or a test runner that imports ``hiera_bench.cli`` keeps its SIGINT handler (its Ctrl-C would
    otherwise end the whole kernel)."""
    probe = ("import signal; before = signal.getsignal(signal.SIGINT); import hiera_bench.cli; "
             "print(signal.getsignal(signal.SIGINT) is before)\n"
             "try:\n    hiera_bench.cli.main(['sweep', '--help'])\nexcept SystemExit:\n    pass\n"
             "print(signal.getsignal(signal.SIGINT) is before, signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "True" and lines[-1] == "True True", done.stdout + done.stderr  # after the import, after main
