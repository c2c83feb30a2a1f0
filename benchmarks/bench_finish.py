#!/usr/bin/env python
"""A sweep's fixed costs around its image loop at ImageNet val's size: load, rows, statistics and views.

Generates ``--n-images`` small JPEGs (3 classes) and hiera-bench's tiny test checkpoint, runs one sweep
(4 sizes x 2 schemes = 7 forwards, 8 cells) from process start to exit, then re-runs the same command
``--repeats`` times: every cell is finished, so a re-run is exactly the start, the rows, the statistics over
every image and the views. Reported: each run's wall and run.json ``timing`` (``load_s``, ``loop_s``,
``rows_s``, ``statistics_s``) and ``wall_s``.

    .venv/bin/python benchmarks/bench_finish.py                     # 50 000 images: ~13 min on 2 cores

Results: ``benchmarks/results/finish-<host>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
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


def timed_sweep(argv: list[str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hiera_bench", *argv], capture_output=True, text=True,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
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
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-finish-"))
    t0 = time.perf_counter()
    data = make_set(work / "val", args.n_images)
    ckpt = save_checkpoint_folder(tiny_hiera(img_size=64), work / "ckpt", "hiera_tiny_224",
                                  dict(TINY_ARGS, img_size=64), label_names=WNIDS, model_name="tiny")
    staged = round(time.perf_counter() - t0, 1)
    argv = ["sweep", "-c", str(ckpt), "-d", str(data), "--res", "64,96,128,160", "-b", "256", "-q",
            "--out", str(work / "run")]
    runs = [timed_sweep(argv)]
    runs += [timed_sweep(argv) for _ in range(args.repeats)]
    assert all(r["evaluated_images"] == 0 for r in runs[1:]), "a re-run evaluated images"
    report = {"host": socket.gethostname(), "cpus": os.cpu_count(), "n_images": args.n_images, "cells": 8,
              "forwards": 7, "staging_s": staged, "first_run": runs[0], "reruns": runs[1:],
              "command": "python benchmarks/bench_finish.py " + " ".join(sys.argv[1:])}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"finish-{'vm' if os.cpu_count() == 2 else socket.gethostname()}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=1))
    lines = [f"# Fixed costs around the loop, {args.n_images} images x 8 cells ({os.cpu_count()} cores)", "",
             "| run | process wall s | load s | loop s | rows s | statistics s | wall_s |", "|---|---|---|---|---|---|---|"]
    for name, r in [("first", runs[0])] + [(f"re-run {i + 1}", r) for i, r in enumerate(runs[1:])]:
        t = r["timing"]
        lines.append(f"| {name} | {r['process_wall_s']} | {t.get('load_s', '')} | {t.get('loop_s', '')} | "
                     f"{t['rows_s']} | {t['statistics_s']} | {r['wall_s']} |")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
