#!/usr/bin/env python
"""Scale-out: one sweep as one process vs torchrun ranks: the same cells, the same numbers, how much faster.

CPU (default): a random-init ``hiera_tiny_224`` (real size) over ``--n-images`` JPEGs at 4 sizes x 2 schemes,
run as one process using every core, then as ``torchrun --nproc-per-node N`` (each rank takes cores / N
threads), alternating ``--repeats`` times. Timed from process start to exit (what a user waits for), with the
image loop from run.json; every cell's top-1 / top-5 / nll must agree to 1e-6 with the one-process run. The
host's load average is recorded beside each run: on a shared machine the figures mean little without it.

``--nccl``: the same on the GPU, one process vs ``torchrun --nproc-per-node 1`` (or ``--nproc N``): proves
the NCCL path (run.json's backend must say nccl) and that it gives the same numbers.

Results: ``benchmarks/results/dist-<host or GPU>.json`` and ``.md`` (and ``$OUT`` when set).

    python benchmarks/bench_dist.py                     # CPU, 2 ranks vs 1 process
    python benchmarks/bench_dist.py --nccl              # on a GPU host
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sweep import REPO, RESULTS, random_checkpoint, resolve_images, result_stem, stage_class_folder  # noqa: E402

import pandas as pd  # noqa: E402
import torch  # noqa: E402

CELL = ["scheme", "img_size", "n_images", "n_failed", "top1", "top5", "nll"]


def sweep_args(ckpt: Path, data: Path, out: Path, res: str, device: str, batch: int) -> list[str]:
    return ["sweep", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(out), "--res", res,
            "--device", device, "-b", str(batch), "-q"]


def command(ranks: int | None, args: Sequence[str]) -> list[str]:
    """``python -m hiera_bench ARGS`` (``ranks`` None) or the same under ``torchrun --nproc-per-node ranks``."""
    if ranks is None:
        return [sys.executable, "-m", "hiera_bench", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
            "-m", "hiera_bench", *args]


def timed(cmd: list[str]) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.pop("OMP_NUM_THREADS", None)  # torchrun would set 1; hiera-bench gives each rank cores / ranks
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd[:6])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return {"wall_s": round(wall, 3), "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}


def run_info(out: Path) -> dict[str, Any]:
    run = json.loads((out / "run.json").read_text())
    ranks = run.get("ranks", [])
    return {"world_size": run.get("world_size"), "backend": run.get("backend"), "devices": run.get("devices"),
            "images_per_rank": run.get("images_per_rank"),
            "loop_s": max((r["timing"].get("loop_s", 0.0) for r in ranks if r.get("timing")), default=None),
            "sweep_wall_s": run.get("wall_s")}


def cells(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "results.parquet")[CELL].sort_values(["scheme", "img_size"]).reset_index(drop=True)


def measure(configs: dict[str, int | None], args_for, repeats: int, work: Path) -> dict[str, Any]:
    """Each config ``repeats`` times, alternating (so drifting load hits all alike); a fresh run folder each time."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    tables: dict[str, pd.DataFrame] = {}
    for i in range(repeats):
        for name, ranks in configs.items():
            out = work / f"{name}-{i}"
            entry = timed(command(ranks, args_for(out)))
            entry.update(run_info(out))
            runs[name].append(entry)
            tables.setdefault(name, cells(out))
            print(f"{name} #{i}: {entry['wall_s']:.1f} s (loop {entry['loop_s']} s), load {entry['load_before']}",
                  flush=True)
    first = next(iter(tables))
    diffs = {name: float((t[["top1", "top5", "nll"]] - tables[first][["top1", "top5", "nll"]]).abs().max().max())
             for name, t in tables.items()}
    base = statistics.median(r["wall_s"] for r in runs[first])
    base_loop = statistics.median(r["loop_s"] for r in runs[first])
    summary = {}
    for name, entries in runs.items():
        wall = statistics.median(r["wall_s"] for r in entries)
        loop = statistics.median(r["loop_s"] for r in entries)
        summary[name] = {"ranks": configs[name] or 1, "median_wall_s": wall, "median_loop_s": loop,
                         "speedup_wall": round(base / wall, 3), "speedup_loop": round(base_loop / loop, 3),
                         "max_abs_diff_vs_one_process": diffs[name], "same_numbers": diffs[name] <= 1e-6,
                         "backend": entries[0]["backend"], "devices": entries[0]["devices"],
                         "images_per_rank": entries[0]["images_per_rank"]}
    return {"summary": summary, "runs": runs}


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Scale-out: {report['device']}", "",
             f"{report['model']} (random init), {report['n_images']} images ({report['images']}), sizes "
             f"{report['res']} x interp/abswin, batch {report['batch_size']}, {report['repeats']} alternating runs "
             f"each; {report['cores']} cores; load average {report['load_range']} during the runs.", "",
             "| run | ranks | backend | wall s (median) | image loop s | speed-up (wall / loop) | same numbers |",
             "|---|---:|---|---:|---:|---:|---|"]
    for name, s in report["summary"].items():
        lines.append(f"| {name} | {s['ranks']} | {s['backend'] or '-'} | {s['median_wall_s']:.1f} | "
                     f"{s['median_loop_s']:.2f} | {s['speedup_wall']:.2f}x / {s['speedup_loop']:.2f}x | "
                     f"{'yes' if s['same_numbers'] else 'NO'} (max diff {s['max_abs_diff_vs_one_process']:.1e}) |")
    lines += ["", "Every run, in the order they ran (load average: 1-minute, before / after the run):", "",
              "| run | wall s | image loop s | load |", "|---|---:|---:|---|"]
    order = [(i, name) for i in range(report["repeats"]) for name in report["runs"]]
    for i, name in order:
        r = report["runs"][name][i]
        lines.append(f"| {name} #{i + 1} | {r['wall_s']:.1f} | {r['loop_s']:.2f} | {r['load_before']} / {r['load_after']} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nccl", action="store_true", help="on the GPU: one process vs torchrun ranks over NCCL")
    ap.add_argument("--nproc", type=int, default=None, help="ranks (default: 2 on the CPU, 1 with --nccl)")
    ap.add_argument("--model", default="hiera_tiny_224")
    ap.add_argument("--res", default="160,192,224,256")
    ap.add_argument("--n-images", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=None, help="default: 16 on the CPU, 128 on a GPU")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--images", default=None, help="image folder (INDEX.csv flat folder or <wnid>/ folders)")
    ap.add_argument("--tag", default=None, help="results file stem (default: dist-<host or GPU>)")
    ap.add_argument("--markdown", default=None, help="only rewrite the .md of this results .json")
    args = ap.parse_args(argv)
    if args.markdown:
        path = Path(args.markdown)
        path.with_suffix(".md").write_text(markdown(json.loads(path.read_text())))
        return 0
    device = "cuda" if args.nccl else "cpu"
    if args.nccl and not torch.cuda.is_available():
        raise SystemExit("error: --nccl needs a CUDA GPU")
    ranks = args.nproc or (1 if args.nccl else 2)
    batch = args.batch_size or (128 if args.nccl else 16)
    with tempfile.TemporaryDirectory(prefix="hiera-bench-dist-") as tmp:
        work = Path(tmp)
        pairs, source = resolve_images(args.images, args.n_images, work)
        data = stage_class_folder(pairs, work / "val")
        ckpt = random_checkpoint(args.model, work / "ckpt")
        configs = {"one process": None, f"torchrun x{ranks}": ranks}
        measured = measure(configs, lambda out: sweep_args(ckpt, data, out, args.res, device, batch), args.repeats,
                           work)
    loads = [r[k] for rs in measured["runs"].values() for r in rs for k in ("load_before", "load_after")]
    dev = torch.device(device)
    report = {"device": torch.cuda.get_device_name(0) if args.nccl else f"CPU ({os.cpu_count()} cores)",
              "model": args.model, "res": args.res, "n_images": len(pairs), "images": source, "batch_size": batch,
              "repeats": args.repeats, "cores": os.cpu_count(), "load_range": f"{min(loads):.2f}-{max(loads):.2f}",
              "torch": torch.__version__, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **measured}
    stem = args.tag or f"dist-{result_stem(dev)}"
    for folder in [RESULTS] + ([Path(os.environ["OUT"])] if os.environ.get("OUT") else []):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
        (folder / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))
    ok = all(s["same_numbers"] for s in report["summary"].values())
    if args.nccl:
        ok = ok and report["summary"][f"torchrun x{ranks}"]["backend"] == "nccl"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
