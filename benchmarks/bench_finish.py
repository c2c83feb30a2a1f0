#!/usr/bin/env python
"""A sweep's fixed costs around its image loop at ImageNet val's size: load, rows, statistics and views.

Generates ``--n-images`` small JPEGs (3 classes) and hiera-bench's tiny test checkpoint, runs one sweep
(4 sizes x 2 schemes = 7 forwards, 8 cells) from process start to exit, then re-runs the same command
``--repeats`` times: every cell is finished, so a re-run is exactly the start, the rows, the statistics over
every image and the views. Reported: each run's wall and run.json ``timing`` (``load_s``, ``loop_s``,
``rows_s``, ``statistics_s``) and ``wall_s``.

    .venv/bin/python benchmarks/bench_finish.py                     # 50 000 images: ~13 min on 2 cores
    .venv/bin/python benchmarks/bench_finish.py --against d2feedb     # + that commit's re-runs, alternating

With ``--against REV`` each re-run of the current code is followed by one of commit REV's (a git worktree put
first on ``PYTHONPATH``) on the same finished run folder, so the two are measured side by side.

Results: ``benchmarks/results/finish-<host>[-<tag>].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hiera_bench.testing import TINY_ARGS, WNIDS, make_image, save_checkpoint_folder, tiny_hiera  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def make_set(root: Path, n: int) -> Path:
    """``root/<wnid>/ILSVRC2012_val_*.JPEG``: ``n`` files over 50 distinct 40x48 images (decode cost per file)."""
    import numpy as np

    rng = np.random.default_rng(0)
    sources = [make_image(rng, (40, 48), c % 3) for c in range(50)]
    for wnid in WNIDS:
        (root / wnid).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sources[i % 50].save(root / WNIDS[i % 3] / f"ILSVRC2012_val_{i + 1:08d}.JPEG", quality=85)
    return root


def timed_sweep(argv: list[str], source: Path | None = None) -> dict[str, Any]:
    """One sweep from process start to exit; ``source``: a checkout whose hiera_bench runs instead."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    t0 = time.perf_counter()
    # python -m puts the working folder first on sys.path: run from the checkout whose code is measured
    done = subprocess.run([sys.executable, "-m", "hiera_bench", *argv], capture_output=True, text=True, env=env,
                          cwd=source or REPO)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"sweep failed ({done.returncode}): {done.stderr[-2000:]}")
    out = Path(argv[argv.index("--out") + 1])
    run = json.loads((out / "run.json").read_text())
    return {"process_wall_s": round(wall, 2), "wall_s": run["wall_s"], "timing": run["timing"],
            "evaluated_images": sum(r["evaluated_images"] for r in run["ranks"])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-images", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", default=None)
    ap.add_argument("--against", metavar="REV", help="also re-run this commit's code, alternating with the current")
    ap.add_argument("--tag", default="", help="suffix of the results files")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-finish-")).resolve()
    if not args.work:  # 50 000 images and a finished run; pass --work to keep them for re-runs
        atexit.register(shutil.rmtree, work, True)
    data, ckpt = work / "val", work / "ckpt"
    argv = ["sweep", "-c", str(ckpt), "-d", str(data), "--res", "64,96,128,160", "-b", "256", "-q",
            "--out", str(work / "run")]
    finished = (work / "run" / "run.json").is_file()  # a --work folder measured before: re-runs only
    t0 = time.perf_counter()
    if not finished:
        make_set(data, args.n_images)
        save_checkpoint_folder(tiny_hiera(img_size=64), ckpt, "hiera_tiny_224", dict(TINY_ARGS, img_size=64),
                               label_names=WNIDS, model_name="tiny")
    staged = round(time.perf_counter() - t0, 1)
    old = None
    if args.against:
        old = work / "against"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), args.against], check=True,
                       capture_output=True)
    runs, against = [None if finished else timed_sweep(argv)], []
    try:
        for _ in range(args.repeats):
            runs.append(timed_sweep(argv))
            if old is not None:
                against.append(timed_sweep(argv, old))
    finally:
        if old is not None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], capture_output=True)
    assert all(r["evaluated_images"] == 0 for r in runs[1:] + against), "a re-run evaluated images"
    n_images = sum(1 for _ in data.glob("*/*.JPEG"))
    report = {"host": socket.gethostname(), "cpus": os.cpu_count(), "n_images": n_images, "cells": 8,
              "forwards": 7, "staging_s": staged, "first_run": runs[0], "reruns": runs[1:],
              "against": {"rev": args.against, "reruns": against} if args.against else None,
              "command": "python benchmarks/bench_finish.py " + " ".join(sys.argv[1:])}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"finish-{'vm' if os.cpu_count() == 2 else socket.gethostname()}" + (f"-{args.tag}" if args.tag else "")
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=1))
    lines = [f"# Fixed costs around the loop, {n_images} images x 8 cells ({os.cpu_count()} cores)", "",
             "| run | process wall s | load s | loop s | rows s | statistics s | wall_s |", "|---|---|---|---|---|---|---|"]
    named = ([("first", runs[0])] if runs[0] else []) + [(f"re-run {i + 1}", r) for i, r in enumerate(runs[1:])]
    named += [(f"re-run {i + 1}, {args.against}", r) for i, r in enumerate(against)]
    for name, r in named:
        t = r["timing"]
        lines.append(f"| {name} | {r['process_wall_s']} | {t.get('load_s', '')} | {t.get('loop_s', '')} | "
                     f"{t['rows_s']} | {t['statistics_s']} | {r['wall_s']} |")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
