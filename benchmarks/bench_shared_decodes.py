#!/usr/bin/env python
"""Two checkpoints in one ``sweep`` command: decoded once (crops shared) vs decoded per checkpoint.

For each architecture, the same command (``sweep -c A -c B``, two random-init checkpoints of one
architecture, same preprocessing) runs with sharing on and with ``HIERA_BENCH_SHARE_DECODES=0``, in
alternating order, ``--repeats`` times each, on the same images. Reported per run: the command's wall, each
checkpoint's image-loop seconds (run.json ``timing.loop_s``) and how many images the second one read from
the first one's crops; asserted: both commands write the same per-image records.

    .venv/bin/python benchmarks/bench_shared_decodes.py                  # 200 images, 2 archs, ~5 min on 2 cores
    .venv/bin/python benchmarks/bench_shared_decodes.py --device cuda --n-images 5000 --amp bf16

Results: ``benchmarks/results/shared-decodes-<host-or-device>.json`` and ``.md`` (and ``$OUT`` when set).
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

from bench_sweep import RESULTS, random_checkpoint, resolve_images, stage_class_folder  # noqa: E402

#: A decode-bound model (hiera-bench's own tiny test config at 64 px native, the images still ImageNet
#: JPEGs) and a real-size one whose forward dominates on a CPU.
ARCHS = {"tiny-test-config": ("hiera_tiny_224", "64:128:32"), "hiera_tiny_224": ("hiera_tiny_224", "224:320:32")}


def tiny_checkpoint(folder: Path, seed: int) -> Path:
    from hiera_bench.testing import TINY_ARGS, save_checkpoint_folder, tiny_hiera

    net = tiny_hiera("hiera_tiny_224", img_size=64, num_classes=1000, seed=seed)
    return save_checkpoint_folder(net, folder, "hiera_tiny_224", TINY_ARGS)


def sweep(ckpts: Sequence[Path], data: Path, res: str, out: Path, share: bool, args) -> dict[str, Any]:
    env = dict(os.environ, HIERA_BENCH_SHARE_DECODES="1" if share else "0", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "hiera_bench", "sweep", "--data", str(data), "--res", res, "--device", args.device,
           "--amp", args.amp, "-q", "--no-plots", "-o", str(out), "-b", str(args.batch_size)]
    for i, ckpt in enumerate(ckpts):
        cmd += ["-c", str(ckpt), "--label", f"ckpt{i}"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    runs = [json.loads((out / f"ckpt{i}" / "run.json").read_text()) for i in range(len(ckpts))]
    return {"share": share, "wall_s": round(wall, 2), "loop_s": [r["timing"]["loop_s"] for r in runs],
            "shared_crops": [r.get("decode", {}).get("shared_crops", 0) for r in runs]}


def same_records(a: Path, b: Path, n: int) -> bool:
    import pandas as pd

    for i in range(n):
        pa = pd.read_parquet(a / f"ckpt{i}" / "predictions.parquet").sort_values(["cell_key", "image_id"])
        pb = pd.read_parquet(b / f"ckpt{i}" / "predictions.parquet").sort_values(["cell_key", "image_id"])
        cols = [c for c in ("cell_key", "image_id", "pred", "top1", "top5", "nll") if c in pa.columns]
        if not pa[cols].reset_index(drop=True).equals(pb[cols].reset_index(drop=True)):
            return False
    return True


def bench(name: str, arch: str, res: str, data: Path, work: Path, args) -> dict[str, Any]:
    folder = work / name
    if name == "tiny-test-config":
        ckpts = [tiny_checkpoint(folder / f"ckpt{i}", seed=i) for i in range(2)]
    else:
        ckpts = [random_checkpoint(arch, folder / f"ckpt{i}", seed=i) for i in range(2)]
    runs = []
    for r in range(args.repeats):
        for share in ((True, False) if r % 2 == 0 else (False, True)):
            runs.append(sweep(ckpts, data, res, folder / f"run{r}-{'on' if share else 'off'}", share, args))
    on = [x for x in runs if x["share"]]
    off = [x for x in runs if not x["share"]]
    second_on = statistics.median(x["loop_s"][1] for x in on)
    second_off = statistics.median(x["loop_s"][1] for x in off)
    return {"name": name, "arch": arch, "res": res, "runs": runs,
            "wall_on_s": statistics.median(x["wall_s"] for x in on),
            "wall_off_s": statistics.median(x["wall_s"] for x in off),
            "second_loop_on_s": second_on, "second_loop_off_s": second_off,
            "second_loop_speedup": round(second_off / second_on, 3),
            "records_equal": same_records(folder / "run0-on", folder / "run0-off", len(ckpts))}


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Shared decodes: two checkpoints in one command ({report['device']}, {report['n_images']} images "
             f"from {report['images']}, {report['repeats']} repeats, load before: {report['load']})", "",
             "| model | sizes | wall, shared | wall, decoded per checkpoint | 2nd checkpoint loop, shared | "
             "… per checkpoint | 2nd loop speed-up | records equal |", "|---|---|---|---|---|---|---|---|"]
    for m in report["models"]:
        lines.append(f"| {m['name']} | {m['res']} | {m['wall_on_s']:.1f} s | {m['wall_off_s']:.1f} s | "
                     f"{m['second_loop_on_s']:.1f} s | {m['second_loop_off_s']:.1f} s | "
                     f"{m['second_loop_speedup']:.2f}× | {'yes' if m['records_equal'] else 'NO'} |")
    lines += ["", "Medians over the repeats; the second checkpoint's loop reads every crop the first kept "
              "(`shared_crops` = all images) when shared."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images")
    p.add_argument("--n-images", type=int, default=200)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="none")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--models", default=",".join(ARCHS))
    p.add_argument("--tag", default="vm")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-shared-") as tmp:
        work = Path(tmp)
        pairs, source = resolve_images(args.images, args.n_images, work)
        data = stage_class_folder(pairs, work / "val")
        report = {"device": args.device, "n_images": len(pairs), "images": source, "repeats": args.repeats,
                  "load": os.getloadavg()[0], "models": []}
        for name in args.models.split(","):
            arch, res = ARCHS[name]
            report["models"].append(bench(name, arch, res, data, work, args))
            print(json.dumps(report["models"][-1], indent=1), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"shared-decodes-{args.tag}"
    for folder in [RESULTS] + ([Path(os.environ["OUT"])] if os.environ.get("OUT") else []):
        (folder / f"{stem}.json").write_text(json.dumps(report, indent=1))
        (folder / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))
    return 0 if all(m["records_equal"] for m in report["models"]) else 1


if __name__ == "__main__":
    sys.exit(main())
