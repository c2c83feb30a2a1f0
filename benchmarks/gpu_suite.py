#!/usr/bin/env python
"""The GPU suite: a whole 50 000-image hiera_small sweep on one GPU, measured end to end, not estimated.

One run on one GPU, in this order; the report is rewritten after every part, so a run cut short keeps
what it measured:

1. stage ``--n-full`` distinct JPEG files in ``<wnid>/`` folders: hard links that cycle over the real
   sample images (decode cost is per image; the page cache serves the bytes, as on a host whose val
   set is cached or on local NVMe);
2. cold compile: ``hiera-bench sweep --compile`` in a new process with an empty inductor cache, on the
   first ``--n-cold`` images: what the first compiled run of a model costs;
3. **the full sweep**, compiled, warm cache: the same command in a new process over every image (a CI
   gate's second run), wall clock from process start to exit;
4. the data pipeline alone: the sweep's own loader (same workers, batch, sizes, prefetch), with the
   copy to the device and the normalisation, no forward;
5. the forward floor: each distinct embedding's compiled forward on tensors already on the device,
   timed over several batches, scaled to the full set (a steady per-batch rate);
6. the eager sweep (new process) on ``--n-eager`` images;
7. the naive per-cell loop, timm-validate style (per cell: load, build, DataLoader with timm's own
   transform, forward), eager, same batch, workers and dtype, on ``--n-naive`` images, each cell's
   loop scaled linearly to the full set (its set-up counted once per cell);
8. the eager forward's rate against the batch size at the widest size.

Models are random-init timm Hieras at their real configs (top-1 is chance; speed does not depend on it).

    python benchmarks/gpu_suite.py --images .bench_images            # see benchmarks/README.md
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

from bench_sweep import (RESULTS, autocast, device_label, matmul_peak, random_checkpoint, read_index,  # noqa: E402
                         result_stem, speedup, sync)

TARGETS = {"full_sweep_s": 150.0, "naive_over_sweep": 2.0, "sweep_over_bound": 1.2}
PARTS = ("cold", "warm", "warm_device", "data", "data_device", "pixels", "floor", "eager", "naive", "scaling")
DEFAULT_PARTS = ("cold", "warm", "data", "floor", "eager", "naive", "scaling")


def replicate(pairs: Sequence[tuple[Path, str]], root: Path, n: int) -> Path:
    """``root/<wnid>/<stem>_r<k><suffix>``: ``n`` distinct files cycling over ``pairs`` (hard links,
    copies where links are refused); ids stay unique because every name carries its replica number. A val
    number in a source's name is spelled so that it is not one (a val image's copies are refused, as they should be
    in real data: here each replica is an image of its own)."""
    for i in range(n):
        path, wnid = pairs[i % len(pairs)]
        stem = path.stem.replace("ILSVRC2012_val_", "val-")
        target = root / wnid / f"{stem}_r{i // len(pairs):04d}{path.suffix}"
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path.resolve(), target)
        except OSError:
            shutil.copyfile(path, target)
    return root


def sweep_command(ckpt: Path, data: Path, out: Path, res: str, amp: str, batch: str, compile_: bool,
                  limit: int | None, device: torch.device) -> list[str]:
    cmd = [sys.executable, "-m", "hiera_bench", "sweep", "--checkpoint", str(ckpt), "--data", str(data),
           "--res", res, "--amp", amp, "--batch-size", batch, "--out", str(out), "--force", "-q",
           "--device", device.type]
    return cmd + (["--compile"] if compile_ else []) + (["--limit", str(limit)] if limit else [])


def timed_process(cmd: list[str], env: dict[str, str], timeout: float, log: Path) -> dict[str, Any]:
    """Run ``cmd`` to the end; wall seconds from start to exit, its output in ``log``."""
    t0, launched = time.perf_counter(), time.time()
    with log.open("w") as fh:
        try:
            rc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.perf_counter() - t0
    tail = log.read_text(errors="replace").strip().splitlines()[-12:]
    return {"wall_s": round(wall, 2), "rc": rc, "tail": tail, "launched_unix": round(launched, 3)}


def sweep_part(out: Path, result: dict[str, Any]) -> dict[str, Any]:
    """What a sweep process wrote about itself: timings, compile stats, batch, workers, cells."""
    run_json = out / "run.json"
    if not run_json.is_file():
        return result
    run = json.loads(run_json.read_text())
    import pandas as pd

    table = pd.read_parquet(out / "results.parquet")
    ok = table[table["status"] == "ok"]
    result.update(
        n_images=int(run["data"]["n_images"]), batch_size=run.get("batch_size"), workers=run.get("workers"),
        run_wall_s=run.get("wall_s"), decode=run.get("decode"), **process_split(result, run),
        timing=run.get("timing"), compile=run.get("compile"), device=run.get("device"),
        n_cells=int(len(ok)), top1={f"{r.scheme}@{r.img_size}": float(r.top1) for r in ok.itertuples()},
        imgs_per_s={f"{r.scheme}@{r.img_size}": float(r.imgs_per_s) for r in ok.itertuples()},
    )
    return result


def process_split(result: dict[str, Any], run: dict[str, Any]) -> dict[str, float]:
    """The process's wall outside run_sweep: interpreter start, imports and option parsing before it
    (``startup_s``); views, plots and exit after its statistics (``after_s``)."""
    started, launched, span = run.get("started_unix"), result.get("launched_unix"), run.get("wall_s")
    if started is None or launched is None or span is None or not isinstance(result.get("wall_s"), float):
        return {}
    startup = started - launched
    return {"startup_s": round(startup, 3), "after_s": round(result["wall_s"] - startup - span, 3)}


def data_pipeline(ckpt: Path, data: Path, sizes: list[int], batch: int, n: int, device: torch.device,
                  decode: str = "pil") -> dict[str, Any]:
    """The sweep's loader alone over ``n`` images, as the sweep builds it: every size cropped, copied (or
    decoded on the device with ``decode="device"``), normalised; no forward."""
    from hiera_bench.data import open_data
    from hiera_bench.data.devicedecode import DeviceCrops, EncodedImages, collate_encoded
    from hiera_bench.data.loader import MultiSizeImages, collate
    from hiera_bench.sweep.runtime import default_workers, prefetch_factor
    from hiera_bench.models import load_model
    from hiera_bench.preprocess import EvalPreprocess, MultiSizeTransform, normalise

    loaded = load_model(checkpoint=str(ckpt))
    pre = EvalPreprocess.from_config(loaded.data_config())
    source = open_data(str(data), loaded.label_names, None, n, None)
    workers = default_workers(len(source))
    transform = MultiSizeTransform(pre, sizes)
    on_device = DeviceCrops(transform, device) if decode == "device" else None
    images, collate_fn = ((EncodedImages(source.dataset), collate_encoded) if on_device else
                          (MultiSizeImages(source.dataset, transform), collate))
    loader = torch.utils.data.DataLoader(
        images, batch_size=batch, num_workers=workers, collate_fn=collate_fn,
        pin_memory=device.type == "cuda" and on_device is None,
        prefetch_factor=prefetch_factor(workers, batch, sizes) if workers else None)
    t0 = time.perf_counter()
    seen, t_first, n_first = 0, None, 0
    for b in loader:
        crops = on_device(b) if on_device else {s: c.to(device, non_blocking=True) for s, c in b.crops.items()}
        for view in transform.views:
            normalise(crops[view], pre.mean, pre.std)
        seen += len(b)
        if t_first is None:
            sync(device)
            t_first, n_first = time.perf_counter(), seen
    sync(device)
    wall = time.perf_counter() - t0
    steady = (seen - n_first) / (time.perf_counter() - t_first) if t_first and seen > n_first else float("nan")
    return {"decode": decode, "n_images": seen, "workers": workers, "batch": batch, "cpu_count": os.cpu_count(),
            "wall_s": round(wall, 2), "imgs_per_s": round(seen / wall, 1), "steady_imgs_per_s": round(steady, 1),
            "first_batch_s": round(t_first - t0, 2) if t_first else None,
            "pil_fallbacks": on_device.fallbacks if on_device else None}


def pixel_agreement(pairs: Sequence[tuple[Path, str]], ckpt: Path, sizes: list[int], device: torch.device) -> dict[str, Any]:
    """``--decode device`` crops against timm's PIL crops of the same real JPEGs, per size: uint8 levels."""
    from hiera_bench.data.devicedecode import DeviceCrops, collate_encoded, read_bytes
    from hiera_bench.data.loader import decode
    from hiera_bench.models import load_model
    from hiera_bench.preprocess import EvalPreprocess, MultiSizeTransform

    pre = EvalPreprocess.from_config(load_model(checkpoint=str(ckpt)).data_config())
    transform = MultiSizeTransform(pre, sizes)
    paths = [str(p) for p, _ in pairs]
    batch = collate_encoded([(i, p, 0, read_bytes({"bytes": None, "path": p}), "") for i, p in enumerate(paths)])
    crops = DeviceCrops(transform, device)
    got = crops(batch)
    ok = batch.ok.numpy()
    ref = [transform(decode({"bytes": None, "path": p})) for p, good in zip(paths, ok) if good]
    out: dict[str, Any] = {"n_images": int(ok.sum()), "failed": int((~ok).sum()), "pil_fallbacks": crops.fallbacks,
                           "per_size": {}}
    for size in sizes:
        view = (size, pre.crop_pct)
        diff = (got[view].cpu().int() - torch.stack([r[view] for r in ref]).int()).abs()
        per_image = diff.flatten(1).float().mean(1)
        out["per_size"][str(size)] = {
            "mean_abs_levels": round(float(diff.float().mean()), 4), "share_equal": round(float((diff == 0).float().mean()), 4),
            "share_within_1": round(float((diff <= 1).float().mean()), 5), "max_abs": int(diff.max()),
            "worst_image_mean_abs": round(float(per_image.max()), 3)}
    return out


def forward_floor(ckpt: Path, sizes: list[int], batch: int, amp: str, compile_: bool, device: torch.device,
                  reps: int = 10) -> dict[str, Any]:
    """Each distinct embedding's forward on device tensors made beforehand, ``reps`` timed batches each."""
    from hiera_bench.sweep import AMP_DTYPES
    from hiera_bench.sweep.plan import plan_forwards
    from hiera_bench.sweep.runtime import SizeRunner, compile_runners, forward_batch, gflops_per_image
    from hiera_bench.models import build_at_size, load_model
    from hiera_bench.posembed import parse_schemes, spec_from_model

    loaded = load_model(checkpoint=str(ckpt))
    spec = spec_from_model(loaded.model, loaded.native_size)
    forwards = plan_forwards(spec, parse_schemes("interp,abswin"), sizes, loaded.geometry)
    loaded.model.to(device)
    dtype = AMP_DTYPES[amp]
    runners = {}
    for size in sizes:
        net = build_at_size(loaded, size, next(f for f in forwards if f.size == size).embedding).to(device)
        runners[size] = SizeRunner(size, net, chunk=[forward_batch(loaded.geometry, size, batch, device)])
    gflops = {size: gflops_per_image(r.net, size, device) for size, r in runners.items()}
    compile_info = compile_runners(runners, batch, device, dtype, torch.contiguous_format, print) if compile_ else None
    per_forward = []
    for fwd in forwards:
        runner = runners[fwd.size]
        runner.use(fwd.embedding.to(device))
        x = torch.randn(batch, 3, fwd.size, fwd.size, device=device)
        with torch.no_grad(), (torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()):
            for _ in range(2):
                runner(x, print)
            sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                runner(x, print)
            sync(device)
        seconds = time.perf_counter() - t0
        rate = reps * batch / seconds
        per_forward.append({"size": fwd.size, "schemes": fwd.schemes, "imgs_per_s": round(rate, 1),
                            "tflops_per_s": round(gflops[fwd.size] * rate / 1e3, 2)})
    return {"batch": batch, "amp": amp, "compiled": compile_, "per_forward": per_forward, "compile": compile_info,
            "s_per_image_all_forwards": sum(1.0 / f["imgs_per_s"] for f in per_forward)}


def batch_scaling(ckpt: Path, size: int, amp: str, device: torch.device, batches=(64, 128, 256, 512)) -> dict[str, float]:
    """Eager forward images/s at ``size`` for each batch (an OOM is recorded, not fatal)."""
    from hiera_bench.models import build_at_size, load_model
    from hiera_bench.posembed import get_scheme, spec_from_model

    loaded = load_model(checkpoint=str(ckpt))
    spec = spec_from_model(loaded.model, loaded.native_size)
    tokens = size // loaded.model.patch_stride[0]
    window = loaded.model.mask_unit_size[0]
    emb = get_scheme("interp")(spec, (tokens, tokens), (tokens // window, tokens // window)).float()
    loaded.model.to(device)
    net = build_at_size(loaded, size, emb).to(device)
    out = {}
    for b in batches:
        try:
            x = torch.randn(b, 3, size, size, device=device)
            with torch.no_grad(), autocast(device, amp):
                net(x)
                sync(device)
                t0 = time.perf_counter()
                for _ in range(5):
                    net(x)
                sync(device)
            out[str(b)] = round(5 * b / (time.perf_counter() - t0), 1)
        except torch.cuda.OutOfMemoryError:
            out[str(b)] = "oom"
        torch.cuda.empty_cache()
    return out


def naive_loop(ckpt: Path, data: Path, sizes: list[int], batch: int, amp: str, n: int, n_full: int,
               device: torch.device) -> dict[str, Any]:
    """timm-validate style, one pass per cell over the first ``n`` images, each cell timed in two parts."""
    from hiera_bench.data import open_data
    from hiera_bench.sweep.plan import plan_forwards
    from hiera_bench.sweep.runtime import default_workers
    from hiera_bench.metrics import image_records
    from hiera_bench.models import build_at_size, load_model
    from hiera_bench.posembed import parse_schemes, spec_from_model
    from hiera_bench.preprocess import EvalPreprocess

    from bench_sweep import TimmValImages

    names = load_model(checkpoint=str(ckpt)).label_names
    rows = open_data(str(data), names, None, n, None).dataset.with_format(None)
    items = [(r["image"]["path"], int(r["label"])) for r in rows]
    workers = default_workers(len(items))
    cells = []
    for scheme in parse_schemes("interp,abswin"):
        for size in sizes:
            sync(device)
            t0 = time.perf_counter()
            loaded = load_model(checkpoint=str(ckpt))
            spec = spec_from_model(loaded.model, loaded.native_size)
            fwd = plan_forwards(spec, [scheme], [size], loaded.geometry)[0]
            net = build_at_size(loaded, size, fwd.embedding).to(device)
            tf = EvalPreprocess.from_config(loaded.data_config()).timm_transform(size)
            loader = torch.utils.data.DataLoader(TimmValImages(items, tf), batch_size=batch, num_workers=workers,
                                                 pin_memory=True)
            t1 = time.perf_counter()
            correct = 0
            with torch.no_grad(), autocast(device, amp):
                for x, y in loader:
                    rec = image_records(net(x.to(device, non_blocking=True)), y.to(device, non_blocking=True))
                    correct += int(rec["correct1"].sum())
            sync(device)
            t2 = time.perf_counter()
            cells.append({"cell": f"{scheme.name}@{size}", "setup_s": round(t1 - t0, 2), "loop_s": round(t2 - t1, 2),
                          "top1": round(100.0 * correct / len(items), 3)})
    measured = sum(c["setup_s"] + c["loop_s"] for c in cells)
    scaled = sum(c["setup_s"] + c["loop_s"] * n_full / len(items) for c in cells)
    return {"n_images": len(items), "workers": workers, "batch": batch, "amp": amp, "cells": cells,
            "wall_s": round(measured, 2), "scaled_to_full_s": round(scaled, 1), "scaled_from": len(items),
            "note": "each cell's image loop scaled linearly to the full set; its set-up counted once"}


def checks(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, each with its measured value, for the PIL sweep and the ``--decode device``
    one (absent parts are not judged; a wall not measured on 50 000 images never passes)."""
    out: dict[str, Any] = {}
    for suffix, label in (("", ""), ("_device", ", --decode device")):
        full = report.get(f"sweep_compiled_warm{suffix}", {})
        if full.get("rc") != 0:
            continue
        whole = full.get("n_images", 0) >= 50_000 if suffix else report.get("measured_full_val", False)
        out[f"full sweep wall, compiled, warm cache{label} (s)"] = {
            "value": full["wall_s"], "target": f"<= {TARGETS['full_sweep_s']:.0f}",
            "met": full["wall_s"] <= TARGETS["full_sweep_s"] and whole}
        naive = report.get("naive", {})
        if "scaled_to_full_s" in naive:
            v = round(speedup(naive["scaled_to_full_s"], full["wall_s"]), 3)
            out[f"naive loop / sweep{label}"] = {"value": v, "target": f">= {TARGETS['naive_over_sweep']}",
                                                 "met": v >= TARGETS["naive_over_sweep"]}
        bound = report.get(f"bound_full_s{suffix}")
        if bound:
            v = round(full["wall_s"] / bound, 3)
            out[f"sweep / max(data alone, floor){label}"] = {"value": v, "target": f"<= {TARGETS['sweep_over_bound']}",
                                                             "met": v <= TARGETS["sweep_over_bound"]}
    return out


def write(report: dict[str, Any], folders: Sequence[Path], stem: str) -> None:
    report["checks"] = checks(report)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{stem}.json.tmp"
        tmp.write_text(json.dumps(report, indent=1, default=str))
        tmp.replace(folder / f"{stem}.json")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", default=None, help="real JPEGs: a flat folder with INDEX.csv, or <wnid>/ folders")
    ap.add_argument("--arch", default="hiera_small_224")
    ap.add_argument("--res", default="224:320:32")
    ap.add_argument("--amp", default="bf16", choices=["bf16", "fp16", "none"])
    ap.add_argument("--batch-size", default="auto")
    ap.add_argument("--n-full", type=int, default=50_000)
    ap.add_argument("--n-cold", type=int, default=1024)
    ap.add_argument("--n-data", type=int, default=10_000)
    ap.add_argument("--n-eager", type=int, default=5000)
    ap.add_argument("--n-naive", type=int, default=5000)
    ap.add_argument("--budget-s", type=float, default=520.0, help="parts that cannot finish inside it are skipped")
    ap.add_argument("--work", default=None, help="scratch folder (default: a new temp folder)")
    ap.add_argument("--tag", default=None, help="report file stem (default: gpu-<device name>)")
    ap.add_argument("--parts", default=",".join(DEFAULT_PARTS),
                    help=f"comma list, run in this order, from: {', '.join(PARTS)}")
    ap.add_argument("--device", default="cuda", help="cpu only to smoke-test the suite's flow on small numbers")
    return ap.parse_args(argv)


def run(args: argparse.Namespace, on_part: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    t_begin = time.perf_counter()
    device = torch.device(args.device)
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-suite-"))
    if not args.work:  # 50 000 staged links, checkpoints, run folders; a --work folder is the user's to keep
        atexit.register(shutil.rmtree, work, True)
    work.mkdir(parents=True, exist_ok=True)
    left = lambda: args.budget_s - (time.perf_counter() - t_begin)  # noqa: E731
    from hiera_bench.grid import parse_grid

    sizes = parse_grid(args.res, 32).sizes
    report: dict[str, Any] = {
        "suite": "gpu", "device": device_label(device), "host_cpus": os.cpu_count(),
        "torch": torch.__version__, "python": platform.python_version(), "arch": args.arch, "res": args.res,
        "sizes": sizes, "amp": args.amp, "n_full": args.n_full, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "measured_full_val": False, "skipped": [], "targets": TARGETS,
    }
    import timm

    report["timm"] = timm.__version__
    report["shm"] = shutil.disk_usage("/dev/shm")._asdict() if Path("/dev/shm").is_dir() else None
    peak = {"bf16": matmul_peak(device, torch.bfloat16, 8192 if device.type == "cuda" else 512, 5) / 1e12}
    report["matmul_peak_tflops"] = {k: round(v, 1) for k, v in peak.items()}

    t0 = time.perf_counter()
    folder = Path(args.images) if args.images else REPO / ".bench_images"
    pairs = read_index(folder)
    if not pairs:
        raise SystemExit(f"error: no images in {folder}; stage them as benchmarks/README.md says")
    data = replicate(pairs, work / "val", args.n_full)
    ckpt = random_checkpoint(args.arch, work / "ckpt")
    from hiera_bench.models import load_model

    sizes = sorted(set(sizes) | {load_model(checkpoint=str(ckpt)).native_size})  # the sweep always runs the native size
    report["sizes"] = sizes
    report["staging"] = {"source": str(folder), "distinct_sources": len(pairs), "n_files": args.n_full,
                         "seconds": round(time.perf_counter() - t0, 2)}
    print(f"staged {args.n_full} files from {len(pairs)} real JPEGs in {report['staging']['seconds']} s", flush=True)
    on_part(report)

    # this process's own compiles (the floor) share the sweeps' cache; set before inductor picks its default
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(work / "inductor")
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(work / "inductor"), HF_DATASETS_CACHE=str(work / "hf-datasets"),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"error: unknown --parts {unknown}; choose from {', '.join(PARTS)}")
    if "cold" in parts:
        shutil.rmtree(work / "inductor", ignore_errors=True)

    def sweep(key: str, compile_: bool, limit: int | None, need_s: float, decode: str = "pil") -> None:
        if left() < need_s:
            report["skipped"].append(f"{key}: needs ~{need_s:.0f} s, {left():.0f} s left")
            return
        out = work / "runs" / key
        cmd = sweep_command(ckpt, data, out, args.res, args.amp, args.batch_size, compile_, limit, device) + \
            (["--decode", decode] if decode != "pil" else [])
        print(f"{key}: {' '.join(cmd[1:])}", flush=True)
        res = timed_process(cmd, env, max(30.0, left()), work / f"{key}.log")
        report[key] = sweep_part(out, dict(res, command=" ".join(cmd[1:]), limit=limit))
        print(f"{key}: {json.dumps({k: v for k, v in report[key].items() if k not in ('top1', 'tail')})}", flush=True)
        on_part(report)

    def batch_size() -> int:
        for key in ("sweep_compiled_warm", "sweep_compiled_cold", "sweep_compiled_warm_device"):
            if report.get(key, {}).get("batch_size"):
                return int(report[key]["batch_size"])
        return int(args.batch_size) if args.batch_size.isdigit() else 128

    def measure(key: str, need_s: float, fn: Callable[[], Any]) -> None:
        if left() < need_s:
            report["skipped"].append(f"{key}: needs ~{need_s:.0f} s, {left():.0f} s left")
            return
        try:
            report[key] = fn()
        except Exception as exc:  # one broken part must not cost the parts after it
            report[key] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
        print(f"{key}: {report[key]}", flush=True)
        on_part(report)

    def device_decode_usable() -> bool:
        """False when the pixel check found nvJPEG unusable here (every image fell back to PIL or failed):
        a full sweep would then decode 50 000 images with PIL in the main process."""
        pixels = report.get("pixels_device_vs_pil")
        if pixels is None:
            return True
        ok = "error" not in pixels and pixels["pil_fallbacks"] < 0.5 * max(1, pixels["n_images"])
        if not ok:
            report["skipped"].append("device decode parts: the pixel check found --decode device unusable here")
        return ok

    # each part's need_s: its wall on an H200 (benchmarks/results/gpu-nvidia-h200*.json) and a margin; a part
    # started with less time left is killed half way and measures nothing (the PIL warm sweep once got 115 s of 118)
    for part in parts:
        if part == "cold":  # an empty compile cache, few images: what the first compiled run of a model costs
            sweep("sweep_compiled_cold", True, args.n_cold, 100)
        elif part == "warm":  # the full set with the warm cache (a CI gate's second run)
            sweep("sweep_compiled_warm", True, None, 125)
        elif part == "warm_device" and device_decode_usable():
            sweep("sweep_compiled_warm_device", True, None, 90, decode="device")
        elif part == "data":
            measure("data_alone", 40, lambda: data_pipeline(ckpt, data, sizes, batch_size(), args.n_data, device))
        elif part == "data_device" and device_decode_usable():
            measure("data_alone_device", 20, lambda: data_pipeline(ckpt, data, sizes, batch_size(), args.n_data,
                                                                   device, decode="device"))
        elif part == "pixels":
            measure("pixels_device_vs_pil", 15, lambda: pixel_agreement(pairs, ckpt, sizes, device))
        elif part == "floor":
            measure("floor_compiled", 45, lambda: forward_floor(ckpt, sizes, batch_size(), args.amp, True, device))
        elif part == "eager":
            sweep("sweep_eager", False, args.n_eager, 45)
        elif part == "naive":
            measure("naive", 60, lambda: naive_loop(ckpt, data, sizes, batch_size(), args.amp, args.n_naive,
                                                    args.n_full, device))
        elif part == "scaling":
            measure("eager_floor", 20, lambda: forward_floor(ckpt, sizes, batch_size(), args.amp, False, device, reps=5))
            measure("batch_scaling_eager", 10, lambda: {"size": sizes[-1], "imgs_per_s": batch_scaling(
                ckpt, sizes[-1], args.amp, device)})
    full = report.get("sweep_compiled_warm", {})
    report["measured_full_val"] = bool(full.get("rc") == 0 and full.get("n_images") == args.n_full >= 50_000)
    floor_s = report.get("floor_compiled", {}).get("s_per_image_all_forwards")
    for suffix in ("", "_device"):
        data_rate = report.get(f"data_alone{suffix}", {}).get("steady_imgs_per_s")
        if data_rate:
            report[f"data_full_s{suffix}"] = round(args.n_full / data_rate, 1)
        if data_rate and floor_s:
            report[f"bound_full_s{suffix}"] = round(max(args.n_full / data_rate, floor_s * args.n_full), 1)
    if floor_s:
        report["floor_full_s"] = round(floor_s * args.n_full, 1)
    report["total_s"] = round(time.perf_counter() - t_begin, 1)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: the GPU suite needs a CUDA GPU")
    stem = args.tag or "gpu-" + result_stem(torch.device(args.device))
    folders = [RESULTS] + ([Path(os.environ["OUT"])] if os.environ.get("OUT") else [])
    report = run(args, lambda partial: write(partial, folders, stem))
    write(report, folders, stem)
    print(json.dumps(report["checks"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
