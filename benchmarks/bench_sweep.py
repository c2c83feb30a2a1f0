#!/usr/bin/env python
"""How fast is a hiera-bench sweep, next to the naive per-cell loop and the compute floor?

Everything is measured side by side in one process, on the same images and the same random-init,
real-size timm Hiera models (no weights needed):

1. preprocessing only: the multi-size pipeline (decode once, cut every size, normalise batched)
   vs timm's per-size eval transform (decode for every size); the tensors must be bit-identical;
2. the whole sweep (sizes x schemes): ``run_sweep`` wall vs a timm-validate-style loop that builds
   the model and a DataLoader per cell, and vs the compute floor (pure forwards of the sweep's
   distinct embeddings on tensors made beforehand); top-1 and nll must agree with the naive loop;
3. forward FLOP/s (torch's flop counter) vs a matmul peak measured in the same run;
4. bf16 vs fp32: speed and top-1 agreement.

Images: ``--images DIR`` (flat folder with INDEX.csv, or class folders), else
``../shared/data/imagenet-sample-1k`` or ``.bench_images`` beside the repo, else generated JPEGs.
Results go to ``benchmarks/results/<host-or-device>.json`` and ``.md`` (and to ``$OUT`` when set).

    python benchmarks/bench_sweep.py --quick            # < 3 min on 2 CPU cores
    python benchmarks/gpu_suite.py --images DIR         # GPU: the whole 50 000-image sweep, measured (gpu_suite.py)
"""

from __future__ import annotations

import argparse
import atexit
import csv
import math
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable from a plain checkout

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

IMAGE_DIRS = (REPO.parent / "shared" / "data" / "imagenet-sample-1k", REPO / ".bench_images")
RESULTS = REPO / "benchmarks" / "results"
SCHEMES = ("interp", "abswin")
FULL_IMAGES = 50_000
TARGETS = {"preprocess_speedup": 2.5, "naive_over_sweep": 1.1, "sweep_over_floor": 1.10, "flops_share": 0.55}
COMPILE_S_PER_FORWARD = 24.0  # measured: 7 forwards of hiera_small_224 compiled in 166 s on an H200 host
NAIVE_S_PER_CELL = 4.0  # a guess for 1000 images per cell on a 16-core GPU host (model load + decode)
AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------- small pure helpers


def speedup(slow_s: float, fast_s: float) -> float:
    """How many times faster ``fast_s`` is than ``slow_s`` (nan when either is not positive)."""
    return slow_s / fast_s if slow_s > 0 and fast_s > 0 else float("nan")


def grid_sizes(native: int, stride: int, rel: Sequence[float]) -> list[int]:
    """``native x rel`` rounded to multiples of ``stride`` (at least one stride), sorted, distinct."""
    return sorted({max(stride, int(round(native * r / stride)) * stride) for r in rel})


def assert_bit_identical(reference: dict[int, torch.Tensor], got: dict[int, torch.Tensor]) -> None:
    """Raise AssertionError naming the first size whose tensors differ in any bit."""
    if sorted(reference) != sorted(got):
        raise AssertionError(f"sizes differ: {sorted(reference)} vs {sorted(got)}")
    for size in sorted(reference):
        a, b = reference[size], got[size]
        if a.shape != b.shape or a.dtype != b.dtype or not torch.equal(a, b):
            diff = (a.float() - b.float()).abs().max().item() if a.shape == b.shape else float("nan")
            raise AssertionError(f"{size} px: multi-size tensors differ from timm's (max |diff| {diff})")


def top1_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of images whose top-1 class is the same in two sets of predictions (class ids or logits)."""
    a = a.argmax(1) if a.ndim == 2 else a
    b = b.argmax(1) if b.ndim == 2 else b
    return float((a == b).float().mean()) if a.numel() else float("nan")


def full_run_estimate(setup_s: float, loop_s: float, n_images: int, data_s: float = 0.0,
                      total: int = FULL_IMAGES) -> float:
    """Seconds for ``total`` images: the fixed setup plus the loop scaled linearly.

    The loop can be no faster than the data pipeline alone (``data_s``): workers prefetch during a
    long setup (compiling), so a short run's loop can look faster than a long one's would be.
    """
    return setup_s + max(loop_s, data_s if data_s == data_s else 0.0) * total / n_images


def read_index(folder: Path) -> list[tuple[Path, str]]:
    """(image, wnid) pairs of a flat folder with ``INDEX.csv`` (file,wnid,...) or of ``<wnid>/<image>`` folders."""
    index = folder / "INDEX.csv"
    if index.is_file():
        with index.open(newline="") as fh:
            return [(folder / row["file"], row["wnid"]) for row in csv.DictReader(fh)]
    return [(p, d.name) for d in sorted(folder.iterdir()) if d.is_dir() for p in sorted(d.iterdir()) if p.is_file()]


def stage_class_folder(pairs: Sequence[tuple[Path, str]], root: Path) -> Path:
    """``root/<wnid>/<file>`` links to ``pairs`` (copies where links are refused), for the folder layout."""
    for path, wnid in pairs:
        target = root / wnid / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            try:
                target.symlink_to(path.resolve())
            except OSError:
                target.write_bytes(path.read_bytes())
    return root


def generate_images(root: Path, n: int, seed: int = 0) -> list[tuple[Path, str]]:
    """``n`` JPEGs of ImageNet-like sizes (about 500x375) under real wnids, when no real sample is present."""
    from timm.data import ImageNetInfo

    from hiera_bench.testing import make_image

    wnids = list(ImageNetInfo().label_names())
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        size = (int(rng.integers(330, 500)), int(rng.integers(250, 500)))
        path = root / f"gen_{i:05d}.JPEG"
        make_image(rng, size, i).save(path, quality=90)
        pairs.append((path, wnids[(i * 37) % len(wnids)]))
    return pairs


def random_checkpoint(arch: str, folder: Path, seed: int = 0) -> Path:
    """A hub-style folder with a random-init timm ``arch`` at its real native size and eval config."""
    import timm

    from hiera_bench.testing import save_checkpoint_folder

    torch.manual_seed(seed)
    net = timm.create_model(arch, pretrained=False).eval()
    cfg = net.pretrained_cfg
    keep = {k: cfg[k] for k in ("crop_pct", "interpolation", "mean", "std") if k in cfg}
    return save_checkpoint_folder(net, folder, arch, {}, **keep)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, amp: str):
    return torch.autocast(device.type, dtype=AMP[amp]) if AMP[amp] else nullcontext()


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def result_stem(device: torch.device) -> str:
    """File name for results: the GPU's name on CUDA, the host name on CPU."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else socket.gethostname()
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-").lower() or "host"


# ---------------------------------------------------------------- 1. preprocessing


def multi_size_batch(paths: Sequence[Path], preprocess, transform) -> dict[int, torch.Tensor]:
    """The engine's pipeline on ``paths``: one decode each, every size cut, uint8 batched, normalised."""
    from hiera_bench.data.loader import decode
    from hiera_bench.preprocess import normalise

    crops = [transform(decode({"path": str(p), "bytes": None})) for p in paths]
    return {view[0]: normalise(torch.stack([c[view] for c in crops]), preprocess.mean, preprocess.std)
            for view in transform.views}


def naive_batch(paths: Sequence[Path], transforms: dict[int, Callable]) -> dict[int, torch.Tensor]:
    """timm's eval transform per size, decoding every image again for every size."""
    out = {}
    for size, tf in transforms.items():
        images = []
        for p in paths:
            with Image.open(p) as img:
                images.append(tf(img.convert("RGB")))
        out[size] = torch.stack(images)
    return out


def bench_preprocess(paths: Sequence[Path], preprocess, sizes: Sequence[int], batch: int = 32) -> dict[str, Any]:
    """Both pipelines over the same images in one process, batch by batch; asserts bit-identity."""
    from hiera_bench.preprocess import MultiSizeTransform

    transform = MultiSizeTransform(preprocess, sizes)
    timm_tf = {size: preprocess.timm_transform(size) for size in sizes}
    # one untimed pass of each: the first call imports the data layer (datasets) and warms PIL's codecs
    assert_bit_identical(naive_batch(paths[:1], timm_tf), multi_size_batch(paths[:1], preprocess, transform))
    naive_s = multi_s = 0.0
    for lo in range(0, len(paths), batch):
        part = paths[lo:lo + batch]
        t0 = time.perf_counter()
        ref = naive_batch(part, timm_tf)
        t1 = time.perf_counter()
        got = multi_size_batch(part, preprocess, transform)
        t2 = time.perf_counter()
        assert_bit_identical(ref, got)
        naive_s += t1 - t0
        multi_s += t2 - t1
    decode_s, resize_s = exact_pil_floor(paths, transform)
    return {"n_images": len(paths), "sizes": list(sizes), "naive_s": round(naive_s, 3), "multi_s": round(multi_s, 3),
            "speedup": round(speedup(naive_s, multi_s), 3), "bit_identical": True,
            "naive_ms_per_image": round(1e3 * naive_s / len(paths), 2),
            "multi_ms_per_image": round(1e3 * multi_s / len(paths), 2),
            "decode_ms_per_image": round(1e3 * decode_s / len(paths), 2),
            "resize_crop_ms_per_image": round(1e3 * resize_s / len(paths), 2),
            "exact_bound": round(speedup(naive_s, decode_s + resize_s), 3),
            "share_of_bound": round((decode_s + resize_s) / multi_s, 3)}


def exact_pil_floor(paths: Sequence[Path], transform) -> tuple[float, float]:
    """Seconds of the work no bit-identical pipeline can skip: one decode per image, then timm's own
    PIL resize + center crop per size (``transform.steps``), nothing else. ``naive / (decode + resize)``
    is the highest preprocessing speed-up that stays bit-identical to timm on these images and sizes."""
    from hiera_bench.data.loader import decode

    decode_s = resize_s = 0.0
    for p in paths:
        t0 = time.perf_counter()
        image = decode({"path": str(p), "bytes": None})
        t1 = time.perf_counter()
        for step in transform.steps.values():
            step(image)
        decode_s += t1 - t0
        resize_s += time.perf_counter() - t1
    return decode_s, resize_s


# ---------------------------------------------------------------- 2. sweep, naive loop, floor


class LoopTimer:
    """A sweep ``Progress`` that records when the image loop starts and when work last advanced."""

    def __init__(self, echo: bool = False) -> None:
        self.t_start = self.t_last = None
        self.messages: list[str] = []
        self.echo = echo

    def start(self, total: int, description: str) -> None:
        self.t_start = self.t_last = time.perf_counter()

    def advance(self, n: int) -> None:
        self.t_last = time.perf_counter()

    def log(self, message: str) -> None:
        self.messages.append(message)
        if self.echo:
            print(f"  [sweep] {message}", flush=True)

    @property
    def loop_s(self) -> float:
        return (self.t_last - self.t_start) if self.t_start is not None else float("nan")


@dataclass
class Setup:
    """One model's side of the benchmark: its checkpoint, sizes and the staged images."""

    arch: str
    checkpoint: Path
    data: Path
    sizes: list[int]
    device: torch.device
    batch_size: int
    workers: int | None
    data_s: float = float("nan")  # the multi-size pipeline alone over every image (decode, crops, normalise, copy)


def bench_sweep(setup: Setup, out: Path, amp: str = "none", compile_: bool = False) -> dict[str, Any]:
    """``run_sweep`` over every size x scheme, timed whole; returns wall, loop time and per-cell metrics."""
    from hiera_bench.sweep import SweepConfig, run_sweep

    cfg = SweepConfig(checkpoint=str(setup.checkpoint), res=",".join(map(str, setup.sizes)), schemes=",".join(SCHEMES),
                      data=str(setup.data), out=str(out), batch_size=setup.batch_size, workers=setup.workers,
                      device=str(setup.device), amp=amp, force=True, compile=compile_, command="bench_sweep",
                      plots=False)  # figures are not part of what the floor and the naive loop are held against
    timer = LoopTimer(echo=True)
    sync(setup.device)
    t0 = time.perf_counter()
    result = run_sweep(cfg, timer)
    sync(setup.device)
    wall = time.perf_counter() - t0
    table = result.table[result.table["status"] == "ok"]
    cells = {f"{r.scheme}@{r.img_size}": {"top1": float(r.top1), "nll": float(r.nll), "imgs_per_s": float(r.imgs_per_s),
                                          "gflops": float(r.gflops), "shared_with": r.shared_with or ""}
             for r in table.itertuples()}
    n = int(table["n_images"].iloc[0])
    loop = timer.loop_s
    forward_s = forward_groups(table).values()
    return {"wall_s": round(wall, 3), "loop_s": round(loop, 3), "setup_s": round(wall - loop, 3), "n_images": n,
            "forward_s": round(sum(forward_s), 3),
            "n_forwards": count_forwards(table),
            "cells": cells, "messages": timer.messages, "amp": amp, "compile": compile_}


def forward_groups(table) -> dict[tuple[int, frozenset], float]:
    """Forward seconds of each distinct forward behind a sweep's rows (schemes that shared one count once)."""
    return {(int(r.img_size), frozenset([r.scheme, *filter(None, str(r.shared_with or "").split(","))])): float(r.forward_s)
            for r in table.itertuples()}


def count_forwards(table) -> int:
    return len(forward_groups(table))


class TimmValImages(torch.utils.data.Dataset):
    """timm validate's dataset shape: a path list, ``Image.open().convert('RGB')`` and the eval transform."""

    def __init__(self, items: Sequence[tuple[str, int]], transform) -> None:
        self.items, self.transform = list(items), transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, label = self.items[i]
        with Image.open(path) as img:
            return self.transform(img.convert("RGB")), label


def data_items(setup: Setup) -> list[tuple[str, int]]:
    """(path, label) in the sweep's own order (sorted by image id), read through hiera-bench's loader."""
    from hiera_bench.data import open_data
    from hiera_bench.models import load_model

    names = load_model(checkpoint=str(setup.checkpoint)).label_names
    rows = open_data(str(setup.data), names).dataset.with_format(None)
    return [(r["image"]["path"], int(r["label"])) for r in rows]


def bench_naive(setup: Setup, items: Sequence[tuple[str, int]], amp: str = "none") -> dict[str, Any]:
    """One timm-validate-style pass per cell: load the checkpoint, build the net, a DataLoader, forward."""
    from hiera_bench.sweep.plan import plan_forwards
    from hiera_bench.sweep.runtime import default_workers
    from hiera_bench.metrics import image_records
    from hiera_bench.models import build_at_size, load_model
    from hiera_bench.posembed import parse_schemes, spec_from_model
    from hiera_bench.preprocess import EvalPreprocess

    device = setup.device
    workers = setup.workers if setup.workers is not None else default_workers(len(items))
    cells = {}
    sync(device)
    t0 = time.perf_counter()
    for scheme in parse_schemes(",".join(SCHEMES)):
        for size in setup.sizes:
            loaded = load_model(checkpoint=str(setup.checkpoint))
            spec = spec_from_model(loaded.model, loaded.native_size)
            fwd = plan_forwards(spec, [scheme], [size], loaded.geometry)[0]
            net = build_at_size(loaded, size, fwd.embedding).to(device)
            tf = EvalPreprocess.from_config(loaded.data_config()).timm_transform(size)
            loader = torch.utils.data.DataLoader(TimmValImages(items, tf), batch_size=setup.batch_size,
                                                 num_workers=workers, pin_memory=device.type == "cuda")
            c1, nll = [], []
            with torch.no_grad(), autocast(device, amp):
                for x, y in loader:
                    rec = image_records(net(x.to(device, non_blocking=True)), y.to(device, non_blocking=True))
                    c1.append(rec["correct1"])
                    nll.append(rec["nll"])
            cells[f"{scheme.name}@{size}"] = {"top1": round(100.0 * float(np.mean(np.concatenate(c1))), 3),
                                              "nll": float(np.mean(np.concatenate(nll).astype(np.float64)))}
    sync(device)
    return {"wall_s": round(time.perf_counter() - t0, 3), "cells": cells, "workers": workers}


def premade_batches(setup: Setup, items: Sequence[tuple[str, int]]) -> tuple[dict[int, list[torch.Tensor]], torch.Tensor]:
    """Normalised input batches per size on the device, made beforehand (with the engine's own pipeline)."""
    from hiera_bench.data.loader import collate
    from hiera_bench.sweep.runtime import default_workers
    from hiera_bench.models import load_model
    from hiera_bench.preprocess import EvalPreprocess, MultiSizeTransform, normalise

    loaded = load_model(checkpoint=str(setup.checkpoint))
    pre = EvalPreprocess.from_config(loaded.data_config())
    transform = MultiSizeTransform(pre, setup.sizes)

    def load(i: int):
        path, label = items[i]
        from hiera_bench.data.loader import decode

        return i, path, label, transform(decode({"path": path, "bytes": None})), ""

    class _Rows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(items)

        def __getitem__(self, i: int):
            return load(i)

    workers = setup.workers if setup.workers is not None else default_workers(len(items))
    loader = torch.utils.data.DataLoader(_Rows(), batch_size=setup.batch_size, num_workers=workers, collate_fn=collate)
    batches: dict[int, list[torch.Tensor]] = {s: [] for s in setup.sizes}
    labels = []
    t0 = time.perf_counter()
    for b in loader:
        labels.append(b.labels)
        for s in setup.sizes:
            batches[s].append(normalise(b.crops[s, pre.crop_pct].to(setup.device), pre.mean, pre.std))
    sync(setup.device)
    setup.data_s = time.perf_counter() - t0
    return batches, torch.cat(labels)


def bench_floor(setup: Setup, batches: dict[int, list[torch.Tensor]], labels: torch.Tensor, amp: str = "none",
                compile_: bool = False) -> dict[str, Any]:
    """Pure forwards of the sweep's distinct embeddings over pre-made tensors, in the sweep's order
    (batch by batch, every forward on each batch) and with its slicing, so only the data differs."""
    from hiera_bench.sweep.plan import plan_forwards
    from hiera_bench.sweep.runtime import forward_batch, forward_with_backoff, gflops_per_image
    from hiera_bench.models import build_at_size, load_model
    from hiera_bench.posembed import parse_schemes, spec_from_model

    device = setup.device
    loaded = load_model(checkpoint=str(setup.checkpoint))
    spec = spec_from_model(loaded.model, loaded.native_size)  # on the CPU, as the engine does
    forwards = plan_forwards(spec, parse_schemes(",".join(SCHEMES)), setup.sizes, loaded.geometry)
    loaded.model.to(device)
    n = int(labels.numel())
    nets = []
    with torch.no_grad(), autocast(device, amp):
        for fwd in forwards:
            net = build_at_size(loaded, fwd.size, fwd.embedding).to(device)
            gf = gflops_per_image(net, fwd.size, device)
            run = torch.compile(net) if compile_ else net
            xs = batches[fwd.size]
            # CPU: slices clear of glibc's per-op mmap; GPU: whole batches (sweep.runtime.forward_batch)
            chunk = [forward_batch(loaded.geometry, fwd.size, xs[0].shape[0], device)]
            if compile_:  # the compile is set-up, not forward
                forward_with_backoff(run, xs[0], chunk, print)
            nets.append((fwd, run, chunk, gf))
    seconds = [0.0] * len(nets)
    outs: list[list[torch.Tensor]] = [[] for _ in nets]
    with torch.no_grad(), autocast(device, amp):
        for i in range(len(batches[setup.sizes[0]])):
            for k, (fwd, run, chunk, _) in enumerate(nets):
                x = batches[fwd.size][i]
                sync(device)
                t0 = time.perf_counter()
                outs[k].append(forward_with_backoff(run, x, chunk, print).float().argmax(1))
                sync(device)
                seconds[k] += time.perf_counter() - t0
    per_size: dict[int, dict[str, float]] = {}
    preds: dict[str, torch.Tensor] = {}
    for (fwd, _, _, gf), sec, out in zip(nets, seconds, outs):
        entry = per_size.setdefault(fwd.size, {"seconds": 0.0, "gflops_per_image": gf, "forwards": 0})
        entry["seconds"] += sec
        entry["forwards"] += 1
        pred = torch.cat(out).cpu()
        for scheme in fwd.schemes:
            preds[f"{scheme}@{fwd.size}"] = pred
    total = sum(seconds)
    for size, entry in per_size.items():
        entry["tflops_per_s"] = round(entry["gflops_per_image"] * n * entry["forwards"] / entry["seconds"] / 1e3, 4)
        entry["seconds"] = round(entry["seconds"], 3)
    flops = sum(e["gflops_per_image"] * n * e["forwards"] for e in per_size.values()) * 1e9
    top1 = {k: round(100.0 * float((p == labels).float().mean()), 3) for k, p in preds.items()}
    return {"seconds": round(total, 3), "n_forwards": len(forwards), "n_images": n, "per_size": per_size,
            "tflops_per_s": round(flops / total / 1e12, 4), "top1": top1, "preds": preds, "amp": amp}


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, reps: int = 5) -> float:
    """Best-of-``reps`` FLOP/s of an ``n x n`` matmul in ``dtype`` on ``device``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    sync(device)
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def update_peaks(peaks: dict[str, float], device: torch.device) -> None:
    """Raise ``peaks`` (TFLOP/s by dtype) to this reading where it is higher."""
    n = 8192 if device.type == "cuda" else 2048
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        reps = 10 if dtype == torch.float32 else 3  # bf16 matmul is slow on CPUs without AMX
        peaks[name] = max(peaks.get(name, 0.0), round(matmul_peak(device, dtype, n, reps) / 1e12, 3))


# ---------------------------------------------------------------- the run


def compare_cells(ours: dict[str, dict], naive: dict[str, dict]) -> dict[str, Any]:
    """Largest top-1 / nll differences between two runs' cells (they must be the same cells)."""
    if sorted(ours) != sorted(naive):
        raise AssertionError(f"cells differ: {sorted(ours)} vs {sorted(naive)}")
    d1 = max(abs(ours[k]["top1"] - naive[k]["top1"]) for k in ours)
    dn = max(abs(ours[k]["nll"] - naive[k]["nll"]) for k in ours)
    return {"max_abs_top1_diff": round(d1, 6), "max_abs_nll_diff": float(dn), "same": d1 == 0 and dn < 1e-4}


def resolve_images(arg: str | None, n: int, work: Path) -> tuple[list[tuple[Path, str]], str]:
    """The image list to use: ``--images``, a sample folder beside the repo, else generated."""
    candidates = [Path(arg)] if arg else list(IMAGE_DIRS)
    for folder in candidates:
        if folder.is_dir():
            pairs = read_index(folder)
            if pairs:
                return pairs[:n], str(folder)
        elif arg:
            raise SystemExit(f"error: --images {arg} is not a folder")
    (work / "generated").mkdir(parents=True, exist_ok=True)
    return generate_images(work / "generated", n), "generated"


@dataclass
class Plan:
    models: list[str]
    n_images: int
    n_preprocess: int
    rel_sizes: tuple[float, ...]
    batch_size: int
    naive_models: int  # how many models get the (slow) naive loop
    compile_modes: tuple[bool, ...]
    compile_models: int  # how many models (first ones) get the compiled sweep
    amp: str
    n_bf16: int  # images in the bf16 vs fp32 comparison (bf16 is slow on CPUs without AMX)


def make_plan(args) -> Plan:
    """The run's shape from the mode flags (explicit options win)."""
    if args.quick:
        plan = Plan(["hiera_tiny_224"], 48, 24, (0.43, 0.57, 0.71, 1.0), 16, 1, (False,), 0, "none", 16)
    else:
        plan = Plan(["hiera_tiny_224", "hiera_small_abswin_256"], 256, 128, (0.75, 1.0, 1.25, 1.5), 32, 1,
                    (False,), 0, "none", 64)
    if args.model:
        plan.models = args.model
    if args.n_images:
        plan.n_images = args.n_images
        plan.n_preprocess = min(plan.n_preprocess, args.n_images)
    if args.batch_size:
        plan.batch_size = args.batch_size
    if args.amp:
        plan.amp = args.amp
    if args.compile:
        plan.compile_modes = (False, True)
        plan.compile_models = max(plan.compile_models, 1)
    return plan


def run(args, on_model_done: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    t_begin = time.perf_counter()
    plan = make_plan(args)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    budget = args.budget_s
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    atexit.register(shutil.rmtree, work, True)  # staged images, checkpoints, run folders: hundreds of MB
    os.environ.setdefault("HF_DATASETS_CACHE", str(work / "hf-datasets"))
    pairs, source = resolve_images(args.images, plan.n_images, work)
    data = stage_class_folder(pairs, work / "val")
    report: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "device": device_label(device), "host": socket.gethostname(), "images": source, "n_images": len(pairs),
        "torch": torch.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(), "batch_size": plan.batch_size, "amp": plan.amp,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "targets": TARGETS, "models": {}, "skipped": [],
    }
    import timm

    report["timm"] = timm.__version__
    compile_later: list[tuple[str, Setup]] = []
    naive_later: list[tuple[str, Setup, Any]] = []
    print(f"bench_sweep: {report['mode']} on {report['device']}, {len(pairs)} images from {source}", flush=True)

    # 3. matmul peak (same process, before anything else heats up)
    report["matmul_peak_tflops"] = {}
    update_peaks(report["matmul_peak_tflops"], device)
    print(f"matmul peak: {report['matmul_peak_tflops']} TFLOP/s", flush=True)

    for m_i, arch in enumerate(plan.models):
        elapsed = time.perf_counter() - t_begin
        if budget and elapsed > budget:
            report["skipped"].append(f"{arch}: time budget ({budget:.0f}s) spent")
            continue
        entry: dict[str, Any] = {}
        report["models"][arch] = entry
        ckpt = random_checkpoint(arch, work / "ckpt" / arch)
        from hiera_bench.models import load_model
        from hiera_bench.preprocess import EvalPreprocess

        loaded = load_model(checkpoint=str(ckpt))
        sizes = grid_sizes(loaded.native_size, loaded.stride, plan.rel_sizes)
        setup = Setup(arch, ckpt, data, sizes, device, plan.batch_size, args.workers)
        entry.update(native_size=loaded.native_size, sizes=sizes)
        print(f"\n== {arch}: sizes {sizes}, schemes {SCHEMES}", flush=True)

        # 1. preprocessing (first model only: it depends on the sizes and crop_pct alone)
        if m_i == 0:
            pre = EvalPreprocess.from_config(loaded.data_config())
            paths = [p for p, _ in pairs[:plan.n_preprocess]]
            report["preprocess"] = bench_preprocess(paths, pre, sizes)
            report["preprocess"]["model"] = arch
            print(f"preprocess: {report['preprocess']}", flush=True)

        items = data_items(setup)
        # 2. the sweep (eager first; it also warms the datasets cache for the timed runs after it)
        entry["sweep"] = {}
        entry["sweep"][plan.amp] = timed_sweep(setup, work, plan.amp, False)
        batches, labels = premade_batches(setup, items)
        entry["data_s"] = round(setup.data_s, 3)
        entry["sweep"][plan.amp]["estimate_full_s"] = round(full_run_estimate(
            entry["sweep"][plan.amp]["setup_s"], entry["sweep"][plan.amp]["loop_s"], len(items), setup.data_s), 1)
        if m_i < plan.compile_models and True in plan.compile_modes:
            compile_later.append((arch, setup))
        floor = bench_floor(setup, batches, labels, plan.amp)
        entry["floor"] = {k: v for k, v in floor.items() if k != "preds"}
        print(f"floor {plan.amp}: {floor['seconds']}s, {floor['tflops_per_s']} TFLOP/s", flush=True)
        eager = entry["sweep"][plan.amp]
        entry["sweep_over_floor"] = round(eager["wall_s"] / floor["seconds"], 3)
        entry["loop_over_floor"] = round(eager["loop_s"] / floor["seconds"], 3)
        scale = 50_000 / floor["n_images"]  # set-up is paid once per sweep, loop and floor grow with the data
        entry["sweep_over_floor_50k"] = round((eager["setup_s"] + eager["loop_s"] * scale) / (floor["seconds"] * scale), 3)

        if m_i < plan.naive_models:
            naive_later.append((arch, setup, items))

        # 3. FLOP/s share of the matmul peak (fp32 on CPU, the run's dtype on GPU); the peak is measured
        # again right after the floor and the highest reading kept, so a noisy host cannot inflate the share
        update_peaks(report["matmul_peak_tflops"], device)
        peak_key = "fp32" if plan.amp == "none" else plan.amp
        entry["flops_share_of_peak"] = round(floor["tflops_per_s"] / report["matmul_peak_tflops"][peak_key], 3)

        # 4. bf16 vs fp32 on the same pre-made tensors
        other = "bf16" if plan.amp == "none" else "none"
        if not (budget and time.perf_counter() - t_begin > budget * 0.85):
            k = max(1, plan.n_bf16 // plan.batch_size)
            sub = {s: b[:k] for s, b in batches.items()}
            sub_labels = labels[:sum(len(b) for b in sub[sizes[0]])]
            try:
                floor2 = bench_floor(setup, sub, sub_labels, other)
                base = floor if len(sub_labels) == len(labels) else bench_floor(setup, sub, sub_labels, plan.amp)
            except RuntimeError as exc:  # bf16 kernels missing on some CPUs
                entry["bf16_vs_fp32"] = {"error": str(exc).splitlines()[0][:200]}
            else:
                fp32, bf16 = (base, floor2) if plan.amp == "none" else (floor2, base)
                agree = [top1_agreement(fp32["preds"][k], bf16["preds"][k]) for k in fp32["preds"]]
                entry["bf16_vs_fp32"] = {
                    "fp32_s": fp32["seconds"], "bf16_s": bf16["seconds"],
                    "bf16_speedup": round(speedup(fp32["seconds"], bf16["seconds"]), 3), "n_images": len(sub_labels),
                    "top1_agreement_min": round(min(agree), 4), "top1_agreement_mean": round(float(np.mean(agree)), 4),
                    "max_abs_top1_diff": round(max(abs(fp32["top1"][k] - bf16["top1"][k]) for k in fp32["top1"]), 3),
                }
                print(f"bf16 vs fp32: {entry['bf16_vs_fp32']}", flush=True)
        del batches
        print(f"50k-image estimate, {arch} {plan.amp}: {entry['sweep'][plan.amp]['estimate_full_s']} s", flush=True)
        if on_model_done:
            report["total_s"] = round(time.perf_counter() - t_begin, 1)
            report["checks"] = checks(report)
            on_model_done(report)
    for arch, setup, items in naive_later if not budget else ():
        run_naive(report["models"][arch], setup, items, plan.amp)
    for arch, setup in compile_later:
        # compiling costs ~24 s per forward on an H100/H200 host (measured): only start it if it can finish
        need = COMPILE_S_PER_FORWARD * report["models"][arch]["sweep"][plan.amp]["n_forwards"]
        left = budget - (time.perf_counter() - t_begin) if budget else math.inf
        if need > left:
            report["skipped"].append(f"{arch}: compiled sweep needs ~{need:.0f} s, {left:.0f} s of --budget-s left")
            continue
        key = f"{plan.amp}+compile"
        res = timed_sweep(setup, work, plan.amp, True)
        res["estimate_full_s"] = round(full_run_estimate(res["setup_s"], res["loop_s"], res["n_images"], setup.data_s), 1)
        report["models"][arch]["sweep"][key] = res
        print(f"50k-image estimate, {arch} {key}: {res['estimate_full_s']} s", flush=True)
    for arch, setup, items in naive_later if budget else ():
        # the per-cell loop is the slowest part on a GPU host: last, and only if it can finish
        need = NAIVE_S_PER_CELL * len(setup.sizes) * len(SCHEMES)
        left = budget - (time.perf_counter() - t_begin)
        if need > left:
            report["skipped"].append(f"{arch}: naive per-cell loop needs ~{need:.0f} s, {left:.0f} s of --budget-s left")
            continue
        run_naive(report["models"][arch], setup, items, plan.amp)
    report["total_s"] = round(time.perf_counter() - t_begin, 1)
    report["checks"] = checks(report)
    return report


def run_naive(entry: dict[str, Any], setup: Setup, items, amp: str) -> None:
    eager = entry["sweep"][amp]
    naive = bench_naive(setup, items, amp)
    entry["naive"] = naive
    entry["naive_over_sweep"] = round(speedup(naive["wall_s"], eager["wall_s"]), 3)
    entry["agreement_with_naive"] = compare_cells(eager["cells"], naive["cells"])
    print(f"naive loop: {naive['wall_s']}s -> sweep is {entry['naive_over_sweep']}x faster; "
          f"{entry['agreement_with_naive']}", flush=True)


def timed_sweep(setup: Setup, work: Path, amp: str, compile_: bool) -> dict[str, Any]:
    key = f"{amp}{'+compile' if compile_ else ''}"
    res = bench_sweep(setup, work / "out" / setup.arch / key, amp, compile_)
    print(f"sweep {key}: wall {res['wall_s']}s (setup {res['setup_s']}s, loop {res['loop_s']}s, "
          f"forwards {res['forward_s']}s)", flush=True)
    return res


def checks(report: dict[str, Any]) -> dict[str, Any]:
    """Each target with its measured figure and whether it is met."""
    out: dict[str, Any] = {}
    if "preprocess" in report:
        p = report["preprocess"]
        v = p["speedup"]
        out["preprocess_speedup"] = {"value": v, "target": f">= {TARGETS['preprocess_speedup']}", "met": v >= TARGETS["preprocess_speedup"]}
        if "exact_bound" in p:
            out["preprocess: bit-identical bound naive/(decode + PIL resizes)"] = {
                "value": p["exact_bound"], "target": "(ceiling)", "met": p["exact_bound"] >= TARGETS["preprocess_speedup"]}
            out["preprocess: share of that bound reached"] = {"value": p["share_of_bound"], "target": ">= 0.9", "met": p["share_of_bound"] >= 0.9}
    for arch, e in report["models"].items():
        if "naive_over_sweep" in e:
            v = e["naive_over_sweep"]
            out[f"{arch}: naive/sweep"] = {"value": v, "target": f">= {TARGETS['naive_over_sweep']}", "met": v >= TARGETS["naive_over_sweep"]}
        if "sweep_over_floor" in e:
            v = e["sweep_over_floor"]
            out[f"{arch}: sweep/floor"] = {"value": v, "target": f"<= {TARGETS['sweep_over_floor']}", "met": v <= TARGETS["sweep_over_floor"]}
        if "sweep_over_floor_50k" in e:
            v = e["sweep_over_floor_50k"]
            out[f"{arch}: sweep/floor at 50k images (set-up amortised)"] = {
                "value": v, "target": f"<= {TARGETS['sweep_over_floor']}", "met": v <= TARGETS["sweep_over_floor"]}
        if "flops_share_of_peak" in e:
            v = e["flops_share_of_peak"]
            out[f"{arch}: FLOP/s share of matmul peak"] = {"value": v, "target": f">= {TARGETS['flops_share']}", "met": v >= TARGETS["flops_share"]}
    return out


def markdown(report: dict[str, Any]) -> str:
    """A short human summary of a report."""
    lines = [f"# bench_sweep: {report['mode']} on {report['device']}", "",
             f"{report['n_images']} images ({report['images']}), batch {report['batch_size']}, amp {report['amp']}, "
             f"torch {report['torch']}, timm {report['timm']}, {report['cpu_count']} CPUs, {report['started']}; "
             f"total {report['total_s']} s.", ""]
    if "preprocess" in report:
        p = report["preprocess"]
        lines += ["## 1. Preprocessing (one process)", "",
                  f"{p['n_images']} images x sizes {p['sizes']}: timm per size {p['naive_s']} s "
                  f"({p['naive_ms_per_image']} ms/img), multi-size {p['multi_s']} s ({p['multi_ms_per_image']} ms/img): "
                  f"**{p['speedup']}x**, bit-identical: {p['bit_identical']}.", ""]
        if "exact_bound" in p:
            lines += [f"Work no bit-identical pipeline can skip: decode {p['decode_ms_per_image']} ms/img + timm's PIL "
                      f"resize and crop at every size {p['resize_crop_ms_per_image']} ms/img, so the ceiling is "
                      f"**{p['exact_bound']}x**; the pipeline reaches {p['share_of_bound']} of it.", ""]
    lines += ["## 2-4. Per model", "",
              "| model | sizes | run | wall s | setup s | loop s | 50k est. s |", "|---|---|---|---|---|---|---|"]
    for arch, e in report["models"].items():
        for key, s in e.get("sweep", {}).items():
            lines.append(f"| {arch} | {','.join(map(str, e['sizes']))} | sweep {key} | {s['wall_s']} | {s['setup_s']} | "
                         f"{s['loop_s']} | {s.get('estimate_full_s', '')} |")
        if "naive" in e:
            lines.append(f"| {arch} | | naive per-cell loop | {e['naive']['wall_s']} | | | |")
        if "floor" in e:
            lines.append(f"| {arch} | | compute floor ({e['floor']['n_forwards']} forwards) | {e['floor']['seconds']} | | | |")
    lines += ["", "| model | naive/sweep | sweep/floor | loop/floor | forward TFLOP/s | share of matmul peak | "
              "bf16 speed-up | bf16 top-1 agreement (min) |", "|---|---|---|---|---|---|---|---|"]
    for arch, e in report["models"].items():
        b = e.get("bf16_vs_fp32", {})
        lines.append(f"| {arch} | {e.get('naive_over_sweep', '')} | {e.get('sweep_over_floor', '')} | "
                     f"{e.get('loop_over_floor', '')} | {e.get('floor', {}).get('tflops_per_s', '')} | "
                     f"{e.get('flops_share_of_peak', '')} | {b.get('bf16_speedup', b.get('error', ''))} | "
                     f"{b.get('top1_agreement_min', '')} |")
    lines += ["", f"matmul peak (TFLOP/s): {report['matmul_peak_tflops']}", "", "## Targets", "",
              "| check | value | target | met |", "|---|---|---|---|"]
    for name, c in report["checks"].items():
        lines.append(f"| {name} | {c['value']} | {c['target']} | {'yes' if c['met'] else 'no'} |")
    if report["skipped"]:
        lines += ["", "Skipped: " + "; ".join(report["skipped"])]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], folders: Sequence[Path], stem: str) -> list[Path]:
    """``<stem>.json`` and ``<stem>.md`` in every folder, each written atomically."""
    from hiera_bench.io import atomic_write_bytes, atomic_write_json

    written = []
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / f"{stem}.json", report)
        atomic_write_bytes(folder / f"{stem}.md", markdown(report).encode())
        written += [folder / f"{stem}.json", folder / f"{stem}.md"]
    return written


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="64 images, hiera_tiny_224 at 4 small sizes (< 3 min on 2 cores)")
    ap.add_argument("--gpu-suite", action="store_true", help="run benchmarks/gpu_suite.py (the full-val GPU suite) instead")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None)
    ap.add_argument("--model", action="append", help="timm Hiera architecture (repeatable), random init")
    ap.add_argument("--amp", choices=list(AMP), default=None)
    ap.add_argument("--compile", action="store_true", help="also time the sweep with --compile")
    ap.add_argument("--images", default=None, help="image folder (INDEX.csv flat folder or <wnid>/ folders)")
    ap.add_argument("--n-images", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--budget-s", type=float, default=None, help="skip remaining parts once this many seconds pass")
    ap.add_argument("--tag", default=None, help="results file stem (default: GPU name or host name)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.gpu_suite:
        from gpu_suite import main as gpu_suite

        return gpu_suite(["--images", args.images] if args.images else [])
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    stem = args.tag or (result_stem(device) + ("-quick" if args.quick else ""))
    folders = [RESULTS] + ([Path(os.environ["OUT"])] if os.environ.get("OUT") else [])
    # written after every model too, so a run cut short by a time limit still leaves its figures
    report = run(args, lambda partial: write_report(partial, folders, stem))
    for path in write_report(report, folders, stem):
        print(f"wrote {path}")
    print()
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
