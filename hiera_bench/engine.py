"""The sweep: every (scheme, size) cell of one model over one data set, in a single pass over the data.

Each image is decoded once; every size is cut from that decode; every distinct position
embedding at a size runs once (schemes whose embedding is identical share the forward).
Per-image records are committed per chunk of images, so an interrupted sweep resumes where it
stopped and a finished cell is never recomputed unless ``force``.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import pyarrow as pa
import torch

from .data import DataSource, open_data
from .data.devicedecode import DeviceCrops, EncodedImages, collate_encoded
from .data.loader import Batch, MultiSizeImages, collate
from .errors import UserError
from .cache import use_persistent_compile_cache
from .grid import Grid, default_grid, parse_grid
from .metrics import cell_metrics, device_records, records_to_numpy
from .models import LoadedModel, build_at_size, load_model
from .posembed import PosEmbedSpec, Scheme, parse_schemes, spec_from_model
from .preprocess import EvalPreprocess, MultiSizeTransform, normalise
from .results import (PART_SCHEMA, CellStore, RunDir, atomic_write_json, atomic_write_parquet, cell_key, tidy_table,
                      write_tables)
from .stats import SETTINGS as STATS_SETTINGS, annotate, native_deltas

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class SweepConfig:
    """Everything a sweep needs; the CLI fills it from its options."""

    model: str | None = None
    checkpoint: str | None = None
    res: str | None = None
    schemes: str = "interp,abswin"
    data: str | None = None
    data_format: str | None = None
    out: str | None = None
    batch_size: int | str = "auto"  # "auto": the largest power of two that fits (see auto_batch_size)
    workers: int | None = None
    device: str = "auto"
    amp: str = "none"
    limit: int | None = None
    per_class: int | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    global_size: int | None = None
    save_every: int = 2048
    force: bool = False
    strict: bool = False
    channels_last: bool = False
    compile: bool = False
    real_labels: str | None = None
    decode: str = "pil"  # "pil" (timm's, bit-identical) or "device" (torchvision decode_jpeg + resize on the device)
    command: str = ""


class Progress(Protocol):
    def start(self, total: int, description: str) -> None: ...

    def advance(self, n: int) -> None: ...

    def log(self, message: str) -> None: ...


class _Quiet:
    def start(self, total: int, description: str) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def log(self, message: str) -> None:
        pass


@dataclass
class Forward:
    """One distinct embedding at one size, and the cells (schemes) it serves."""

    size: int
    embedding: torch.Tensor
    schemes: list[str]
    keys: dict[str, str] = field(default_factory=dict)
    start: int = 0


@dataclass
class SweepResult:
    table: Any  # pandas.DataFrame, this sweep's rows
    out: Path
    grid: Grid
    loaded: LoadedModel
    run: dict[str, Any]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is visible; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device mps: Apple MPS is not available here; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None


MAX_WORKERS = 16


def default_workers(n_images: int) -> int:
    """DataLoader worker processes: none for tiny sets (start-up costs more than it saves), else the
    cores but one (at most :data:`MAX_WORKERS`): on a GPU host decoding is the sweep's other bound."""
    if n_images < 256:
        return 0
    return max(1, min(MAX_WORKERS, (os.cpu_count() or 2) - 1))


def loading_plan(device: torch.device, n_images: int, workers: int | None) -> tuple[int, int]:
    """``(worker processes, decode threads per batch)`` for a sweep on ``device``.

    An accelerator computes while worker processes decode on the host's otherwise idle cores. On the
    CPU the forward already uses every core: workers decoding beside it stall its threads (measured
    +18 % forward time on 2 cores), so the main process decodes each batch on all cores between
    forwards instead. An explicit ``--workers`` is always honoured.
    """
    if workers is not None:
        return workers, 1
    if device.type == "cpu":
        return 0, max(1, torch.get_num_threads())
    return default_workers(n_images), 1


def gflops_per_image(net: torch.nn.Module, size: int, device: torch.device) -> float:
    """Forward FLOPs of one image at ``size`` from torch's flop counter, in GFLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, size, size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops() / 1e9


def plan_forwards(spec: PosEmbedSpec, schemes: list[Scheme], sizes: list[int], model: torch.nn.Module) -> list[Forward]:
    """One :class:`Forward` per distinct embedding at each size (identical ones are merged)."""
    patch = model.patch_stride[0]
    window = model.mask_unit_size
    forwards = []
    for size in sizes:
        tokens = (size // patch, size // patch)
        mask_grid = (tokens[0] // window[0], tokens[1] // window[1])
        here: list[Forward] = []
        for scheme in schemes:
            with torch.no_grad():
                embedding = scheme(spec, tokens, mask_grid).float().contiguous()
            same = next((f for f in here if torch.equal(f.embedding, embedding)), None)
            if same is None:
                here.append(Forward(size, embedding, [scheme.name]))
            else:
                same.schemes.append(scheme.name)
        forwards.extend(here)
    return forwards


def _versions() -> dict[str, str]:
    import PIL
    import datasets
    import timm

    return {
        "python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
        "pillow": PIL.__version__, "datasets": datasets.__version__, "numpy": np.__version__,
        "hiera_bench": _own_version(), "scipy": _dist_version("scipy"), "pandas": _dist_version("pandas"),
        "cuda": torch.version.cuda or "none",
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "none",
        "platform": platform.platform(),
    }


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "none"


def _own_version() -> str:
    from . import __version__

    return __version__


def _git_sha() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _records_table(batch: Batch, rec: dict[str, np.ndarray] | None, lo: int) -> pa.Table:
    """Part records for batch items ``lo:`` (failed images keep a row with ``failed=True``)."""
    n = len(batch)
    ok = batch.ok.numpy().astype(bool)
    null = ~ok if rec is not None else np.ones(n, dtype=bool)

    def spread(values: np.ndarray | None, dtype) -> pa.Array:
        # arrow arrays built from whole columns: a per-item Python loop costs more than the records are worth
        full = np.zeros(n, dtype=dtype)
        if values is not None:
            full[ok] = values
        return pa.array(full, mask=null)

    k = rec["topk"].shape[1] if rec is not None else 0
    topk_flat = np.zeros((n, k), dtype=np.int32)
    if rec is not None:
        topk_flat[ok] = rec["topk"]
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * k, type=pa.int32())
    topk = pa.ListArray.from_arrays(offsets, pa.array(topk_flat.reshape(-1), type=pa.int32()),
                                    mask=pa.array(null))
    get = (lambda key: rec[key]) if rec is not None else (lambda key: None)
    table = pa.table({
        "position": batch.positions.numpy().astype(np.int64), "image_id": batch.image_ids,
        "target": batch.labels.numpy().astype(np.int32), "topk": topk,
        "correct1": spread(get("correct1"), bool), "correct5": spread(get("correct5"), bool),
        "nll": spread(get("nll"), np.float32), "confidence": spread(get("confidence"), np.float32),
        "failed": ~ok, "error": batch.errors,
    }, schema=PART_SCHEMA)
    return table.slice(lo)


class CompiledNet:
    """``torch.compile`` of one size's net, static shapes, falling back to eager (with a message) on failure.

    Short batches are padded to the first batch's size: a new batch shape would trigger a recompile,
    and the eval forward is per-image independent, so padded rows change nothing but are dropped.
    """

    def __init__(self, net: torch.nn.Module, log: Callable[[str], None], backend: str = "inductor") -> None:
        self.eager, self.log = net, log
        self.batch: int | None = None
        try:
            # static: with automatic dynamic shapes the second size would recompile into one symbolic-size graph
            self.compiled: Callable | None = torch.compile(net, dynamic=False, backend=backend)
        except Exception as exc:  # torch.compile raises many types (no compiler, unsupported platform)
            self._fall_back(exc)

    def _fall_back(self, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:200]
        self.log(f"--compile: torch.compile failed ({reason}); running this forward eagerly")
        self.compiled = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is None:
            return self.eager(x)
        n = x.shape[0]
        self.batch = self.batch or n
        if n < self.batch:
            x = torch.cat([x, x.new_zeros((self.batch - n, *x.shape[1:]))])
        try:
            return self.compiled(x)[:n]
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # a compile error surfaces at the first call
            self._fall_back(exc)
            return self.eager(x[:n])


class PendingRecords:
    """A forward's per-image records on their way to the host, and its device time.

    On CUDA the records are copied to pinned host memory without waiting and the forward is timed
    with events, so the host can queue the next batch before this one is done; :meth:`result` waits.
    """

    def __init__(self, records: dict[str, torch.Tensor], started: Any, device: torch.device) -> None:
        # into pinned memory without waiting on CUDA only: elsewhere a non-blocking copy may be read before it lands
        self.host = {k: v.to("cpu", non_blocking=device.type == "cuda") for k, v in records.items()}
        self.started = started
        if device.type == "cuda":
            self.ended: Any = torch.cuda.Event(enable_timing=True)
            self.ended.record()
        else:
            self.ended = time.perf_counter()

    def result(self) -> tuple[dict[str, np.ndarray], float]:
        if isinstance(self.ended, float):
            seconds = self.ended - self.started
        else:
            self.ended.synchronize()
            seconds = self.started.elapsed_time(self.ended) / 1e3
        return records_to_numpy(self.host), seconds


def _clock_start(device: torch.device) -> Any:
    if device.type == "cuda":
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event
    return time.perf_counter()


@dataclass
class SizeRunner:
    """The one net of a size: every scheme's forward at that size runs through it, its embedding
    copied into the net's ``pos_embed`` first, so a compiled net compiles once per size, not per scheme
    (the parameter is an input of the graph; its values change, its identity and shape do not)."""

    size: int
    net: torch.nn.Module
    run: Callable[[torch.Tensor], torch.Tensor] | None = None
    chunk: list[int] = field(default_factory=lambda: [1])
    loaded_embedding: torch.Tensor | None = None

    def use(self, embedding: torch.Tensor) -> None:
        if self.loaded_embedding is not embedding:
            with torch.no_grad():
                self.net.pos_embed.copy_(embedding)
            self.loaded_embedding = embedding

    def __call__(self, x: torch.Tensor, log: Callable[[str], None]) -> torch.Tensor:
        return forward_with_backoff(self.run or self.net, x, self.chunk, log)

    def records(self, fwd: Forward, x: torch.Tensor, targets: torch.Tensor, amp: torch.dtype | None,
                log: Callable[[str], None]) -> PendingRecords:
        """Queue ``fwd``'s forward on ``x`` and its per-image records."""
        started = _clock_start(x.device)
        self.use(fwd.embedding)
        with torch.no_grad(), (torch.autocast(x.device.type, dtype=amp) if amp else nullcontext()):
            logits = self(x, log)
        return PendingRecords(device_records(logits, targets), started, x.device)


def compile_counters() -> dict[str, int]:
    """torch.compile's running totals in this process: graphs compiled and inductor FX-cache hits/misses."""
    from torch._dynamo.utils import counters

    return {"graphs": int(counters["stats"]["unique_graphs"]),
            "fx_cache_hits": int(counters["inductor"]["fxgraph_cache_hit"]),
            "fx_cache_misses": int(counters["inductor"]["fxgraph_cache_miss"])}


def compile_runners(runners: dict[int, SizeRunner], batch: int, device: torch.device, amp: torch.dtype | None,
                    memory_format: torch.memory_format, log: Callable[[str], None],
                    backend: str = "inductor") -> dict[str, Any]:
    """Compile each size's net now, outside the timed forwards (so images/s stays a steady-state figure);
    returns seconds per size, graphs compiled and cache hits, for run.json."""
    import torch._dynamo

    cache_dir = use_persistent_compile_cache()
    # one cache entry per size on the one Hiera.forward code object; past the limit dynamo would run eagerly
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 2 * len(runners) + 8))
    before = compile_counters()
    seconds = {}
    for size, runner in runners.items():
        t0 = time.perf_counter()
        runner.run = CompiledNet(runner.net, log, backend)
        with torch.no_grad(), (torch.autocast(device.type, dtype=amp) if amp else nullcontext()):
            zeros = torch.zeros(batch, 3, size, size, device=device).contiguous(memory_format=memory_format)
            runner(zeros, log)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds[str(size)] = round(time.perf_counter() - t0, 3)
    after = compile_counters()
    return {"seconds": seconds, "cache_dir": cache_dir, **{k: after[k] - before[k] for k in after}}


def stage1_shape(model: torch.nn.Module, size: int) -> tuple[int, int]:
    """(tokens, channels) per image in a Hiera's first stage at ``size`` px, its widest activations."""
    return (size // model.patch_stride[0]) ** 2, model.patch_embed.proj.out_channels


# glibc serves blocks above its largest mmap threshold (32 MiB) with a fresh mmap, so on the CPU every
# op that writes such a tensor page-faults and zeroes it again: hiera_tiny at 224 px runs 1.5x faster
# per image in slices of 6 than in batches of 32, at 320 px 1.4x in slices of 3 (2-core VM, measured)
CPU_WIDEST_TENSOR_BYTES = 32 << 20


def forward_batch(model: torch.nn.Module, size: int, batch_size: int, device: torch.device) -> int:
    """Images per forward call: the batch on an accelerator; on the CPU, slices whose widest
    activation (stage 1's MLP hidden layer, fp32) stays under :data:`CPU_WIDEST_TENSOR_BYTES`."""
    if device.type != "cpu":
        return batch_size
    tokens, dim = stage1_shape(model, size)
    widest = tokens * dim * 4 * 4
    return max(1, min(batch_size, CPU_WIDEST_TENSOR_BYTES // widest))


def forward_with_backoff(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: list[int],
                         log: Callable[[str], None]) -> torch.Tensor:
    """``net(x)`` in slices of ``chunk[0]`` images; on CUDA OOM halve ``chunk[0]`` for good and retry.

    Like timm validate's ``--retry``, but the failed batch is redone in smaller slices instead of
    restarting, and the smaller size sticks for the rest of the data.
    """
    while True:
        try:
            parts = x.split(chunk[0])
            return net(x) if len(parts) == 1 else torch.cat([net(part) for part in parts])
        except torch.cuda.OutOfMemoryError:
            if chunk[0] <= 1:
                raise
            chunk[0] = max(1, min(chunk[0], x.shape[0]) // 2)
            if isinstance(net, CompiledNet):  # its padding must not grow slices back to the size that failed
                net.batch = chunk[0]
            torch.cuda.empty_cache()
            log(f"out of memory at {tuple(x.shape[-2:])} px: retrying with batches of {chunk[0]}")


class _CellBuffer:
    """Records of one cell not yet committed."""

    def __init__(self, store: CellStore, start: int) -> None:
        self.store, self.start, self.end = store, start, start
        self.tables: list[pa.Table] = []
        self.seconds = 0.0

    def add(self, table: pa.Table, end: int, seconds: float) -> None:
        """Records of positions up to ``end``; those this cell committed already are dropped."""
        if end <= self.end:
            return
        first = table.column("position")[0].as_py() if table.num_rows else end
        self.tables.append(table.slice(max(0, self.end - first)))
        self.end, self.seconds = end, self.seconds + seconds

    def flush(self) -> None:
        if self.end > self.start:
            self.store.write_part(self.start, self.end, pa.concat_tables(self.tables), self.seconds)
        self.start, self.tables, self.seconds = self.end, [], 0.0


def validate_config(cfg: SweepConfig) -> tuple[list[Scheme], torch.device]:
    """Check every option that needs no model or data, so mistakes fail in milliseconds."""
    cfg.batch_size = parse_batch_size(cfg.batch_size)
    if cfg.limit is not None and cfg.limit < 1:
        raise UserError(f"--limit must be at least 1, got {cfg.limit}; leave it out to use every image")
    if cfg.per_class is not None and cfg.per_class < 1:
        raise UserError(f"--per-class must be at least 1, got {cfg.per_class}")
    if cfg.workers is not None and cfg.workers < 0:
        raise UserError(f"--workers must be 0 or more, got {cfg.workers}")
    if cfg.save_every < 1:
        raise UserError(f"--save-every must be at least 1, got {cfg.save_every}")
    if cfg.global_size is not None and cfg.global_size < 1:
        raise UserError(f"--global-size must be at least 1, got {cfg.global_size}")
    if cfg.crop_pct is not None and not 0.0 < cfg.crop_pct <= 1.0:
        raise UserError(f"--crop-pct must be in (0, 1], got {cfg.crop_pct}")
    if cfg.amp not in AMP_DTYPES:
        raise UserError(f"--amp {cfg.amp!r}: choose none, bf16 or fp16")
    if cfg.res is not None:
        parse_grid(cfg.res, stride=1)  # syntax and bounds now; the model's stride once it is loaded
    if cfg.data_format and cfg.data and cfg.data.startswith("hf:") and cfg.data_format != "hub":
        raise UserError(f"--data {cfg.data} is a hub dataset but --data-format is {cfg.data_format!r}; drop one")
    schemes = parse_schemes(cfg.schemes)
    device = resolve_device(cfg.device)
    if cfg.decode not in ("pil", "device"):
        raise UserError(f"--decode {cfg.decode!r}: choose pil (timm's, bit-identical) or device (nvJPEG on a GPU)")
    if cfg.amp == "fp16" and device.type == "cpu":
        raise UserError("--amp fp16 conflicts with a CPU device; use --amp bf16 or none, or --device cuda")
    return schemes, device


def parse_batch_size(value: int | str) -> int | str:
    """``--batch-size``: a positive integer or ``auto``."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UserError(f"--batch-size must be a positive integer or auto, got {value!r}") from None
    if number < 1:
        raise UserError(f"--batch-size must be at least 1, got {number}; or use auto")
    return number


#: ``--batch-size auto`` never goes above this: on an H200, hiera_small runs no faster per image beyond it
#: and every batch in flight (workers x prefetch) holds all sizes' uint8 crops in shared memory
AUTO_BATCH_MAX = 256
#: the CPU slices every forward under CPU_WIDEST_TENSOR_BYTES anyway: the batch only sets decode granularity
AUTO_BATCH_CPU = 32


def auto_batch_size(net: torch.nn.Module, size: int, device: torch.device, amp: torch.dtype | None,
                    memory_format: torch.memory_format = torch.contiguous_format,
                    most: int = AUTO_BATCH_MAX, headroom: float = 0.6) -> int:
    """The largest power of two up to ``most`` whose trial forward at ``size`` (the widest of the sweep)
    peaks under ``headroom`` of the device's free memory; the rest stays for compiled graphs, the
    other forwards' embeddings and prefetched batches. Off CUDA: :data:`AUTO_BATCH_CPU`."""
    if device.type != "cuda":
        return AUTO_BATCH_CPU
    free = torch.cuda.mem_get_info(device)[0]
    batch = most
    while batch >= 1:
        try:
            torch.cuda.synchronize(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            with torch.no_grad(), (torch.autocast(device.type, dtype=amp) if amp else nullcontext()):
                net(torch.zeros(batch, 3, size, size, device=device).contiguous(memory_format=memory_format))
            torch.cuda.synchronize(device)
            if torch.cuda.max_memory_allocated(device) - base < headroom * free:
                return batch
        except torch.cuda.OutOfMemoryError:
            pass
        torch.cuda.empty_cache()
        batch //= 2
    raise UserError(f"{size} px does not fit on {device} even one image at a time; choose smaller sizes")


#: Host memory that decoded batches waiting for the forward may hold, at most (they are pinned on a GPU host).
PREFETCH_MAX_BYTES = 16 << 30


def prefetch_budget() -> int:
    """Bytes of decoded crops the workers may keep ready: :data:`PREFETCH_MAX_BYTES`, or a quarter of the
    host's available memory or of the free shared memory (where worker batches live), whichever is least."""
    budget = PREFETCH_MAX_BYTES
    free = available_bytes(torch.device("cpu"))
    if free:
        budget = min(budget, free // 4)
    try:
        budget = min(budget, shutil.disk_usage("/dev/shm").free // 4)
    except OSError:
        pass
    return budget


def prefetch_factor(workers: int, batch_size: int, sizes: list[int], budget: int | None = None) -> int:
    """Batches each DataLoader worker keeps ready, 1 to 8: as many as ``budget`` bytes of crops allow.

    Deep prefetch matters on a GPU host whose decode is the bound: the workers keep decoding while the
    main process compiles (20 s for four sizes from a warm cache on an H200 host), and the loop then
    starts on batches already made.
    """
    budget = prefetch_budget() if budget is None else budget
    batch_bytes = batch_size * sum(3 * s * s for s in sizes)
    return max(1, min(8, budget // max(1, workers * batch_bytes)))


def activation_bytes(model: torch.nn.Module, size: int, batch_size: int) -> int:
    """A rough upper bound of one forward's peak activation memory at ``size`` (fp32, eager attention)."""
    tokens, dim = stage1_shape(model, size)
    # stage 1 keeps ~a dozen token-sized tensors alive (MLP 4x, residual, norms)
    stage1 = tokens * dim * 4 * 12
    # without a fused kernel the first global-attention stage materialises heads x T^2 scores
    attn = model.blocks[-1].attn
    pooled = tokens // (math.prod(model.q_stride) ** 2)
    scores = 0 if getattr(attn, "fused_attn", False) else attn.heads * pooled * pooled * 4 * 2
    return batch_size * max(stage1, scores)


def available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(model: torch.nn.Module, sizes: list[int], batch_size: int, device: torch.device) -> None:
    """Refuse sizes whose activations cannot fit, before allocating anything."""
    free = available_bytes(device)
    if free is None:
        return
    for size in sorted(sizes, reverse=True):
        need = activation_bytes(model, size, batch_size)
        if need > 0.9 * free:
            fits = max((b for b in (1, 2, 4, 8, 16, 32, 64) if activation_bytes(model, size, b) < 0.9 * free), default=0)
            hint = f"use --batch-size {fits}" if fits else "choose smaller sizes"
            raise UserError(
                f"{size} px at batch size {batch_size} needs about {need / 2**30:.1f} GiB of activations but "
                f"{device.type} has {free / 2**30:.1f} GiB free; {hint}"
            )


def run_sweep(cfg: SweepConfig, progress: Progress | None = None) -> SweepResult:
    """Run (or resume) a sweep and write its files; returns this sweep's tidy table."""
    progress = progress or _Quiet()
    schemes, device = validate_config(cfg)
    t_start = time.time()

    loaded = load_model(cfg.model, cfg.checkpoint)
    native = loaded.native_size
    grid = parse_grid(cfg.res or default_grid(native, loaded.stride), loaded.stride)
    for size, reason in grid.skipped:
        progress.log(f"skipping {size} px: {reason}")
    sizes = sorted(set(grid.sizes) | {native})
    global_size = (cfg.global_size, cfg.global_size) if cfg.global_size else None
    if global_size and loaded.pos_embed_kind == "abswin":
        progress.log("--global-size only applies to full-grid checkpoints; this one learned its own split")
        global_size = None
    spec = spec_from_model(loaded.model, native, global_size)
    if cfg.batch_size != "auto":
        check_memory(loaded.model, sizes, cfg.batch_size, device)
    decode = f"device:{device.type}" if cfg.decode == "device" else "pil"
    preprocess = EvalPreprocess.from_config(loaded.data_config(), cfg.crop_pct, cfg.interpolation, decode)
    if loaded.label_names is None:
        raise UserError(f"{loaded.name} has {loaded.num_classes} classes but no class names; "
                        "give a checkpoint folder whose config.json lists label_names")
    data = open_data(cfg.data, loaded.label_names, cfg.data_format, cfg.limit, cfg.per_class)
    n_total = len(data)
    fingerprint = data.fingerprint()
    real = _real_labels(cfg.real_labels, data)
    dtype_name = "float32" if cfg.amp == "none" else cfg.amp

    out = Path(cfg.out) if cfg.out else Path("results") / loaded.name
    run_dir = RunDir(out)
    forwards = plan_forwards(spec, schemes, sizes, loaded.model)
    base_fields = {
        "model": loaded.name, "checkpoint_sha256": loaded.sha256, "preprocess": preprocess.as_dict(),
        "data_fingerprint": fingerprint, "limit": cfg.limit, "per_class": cfg.per_class, "dtype": dtype_name,
        "global_size": list(spec.global_size) if loaded.pos_embed_kind == "full" else None,
    }
    for fwd in forwards:
        for scheme in fwd.schemes:
            fields = dict(base_fields, scheme=scheme, img_size=fwd.size)
            fwd.keys[scheme] = cell_key(fields)
            run_dir.cell(fwd.keys[scheme]).write_meta(fields)
    run_info = {
        "command": cfg.command or " ".join(sys.argv), "config": asdict(cfg), "started": _iso(t_start),
        "model": loaded.name, "checkpoint": loaded.checkpoint, "checkpoint_sha256": loaded.sha256,
        "license": loaded.license, "native_size": native, "pos_embed_kind": loaded.pos_embed_kind,
        "explained_energy": spec.explained, "energy_shares": spec.energy_shares(),
        "sizes": sizes, "skipped": [{"img_size": s, "reason": r} for s, r in grid.skipped],
        "schemes": [s.name for s in schemes], "preprocess": preprocess.as_dict(),
        "data": {"location": data.location, "layout": data.layout, "n_images": n_total,
                 "fingerprint": fingerprint, "limit": cfg.limit, "per_class": cfg.per_class},
        "device": _device_name(device), "dtype": dtype_name, "host": socket.gethostname(),
        "versions": _versions(), "git_sha": _git_sha(), "statistics": STATS_SETTINGS,
    }

    gflops: dict[int, float] = {}
    failed: dict[str, str] = {}
    rows = []
    with ExitStack() as locks:
        for key in sorted(k for fwd in forwards for k in fwd.keys.values()):
            locks.enter_context(run_dir.cell(key).lock(
                on_wait=lambda key=key: progress.log(f"cell {key} is being computed by another run; waiting for it")))
        pending = _pending(forwards, run_dir, cfg.force)
        if pending:
            run_info["timing"] = {"load_s": round(time.time() - t_start, 3)}
            _evaluate(cfg, run_dir, loaded, data, preprocess, pending, device, progress, gflops, failed, run_info)
        for fwd in forwards:
            for scheme in fwd.schemes:
                store = run_dir.cell(fwd.keys[scheme])
                if not store.is_done():
                    store.write_row(_cell_row(store, fwd, scheme, loaded, spec, preprocess, data, cfg, run_info,
                                              gflops, failed, n_total))
                row = store.read_row()
                if real is not None:
                    row.update(_real_columns(real, store, loaded.label_names, n_total))
                rows.append(row)
    for size, reason in grid.skipped:
        for scheme in schemes:
            rows.append({"model": loaded.name, "arch": loaded.arch, "pretrained_tag": loaded.tag or "",
                         "checkpoint": loaded.checkpoint, "checkpoint_sha256": loaded.sha256,
                         "pos_embed_kind": loaded.pos_embed_kind, "scheme": scheme.name, "img_size": size,
                         "native_size": native, "rel_size": round(size / native, 4),
                         "crop_pct": preprocess.crop_pct, "interpolation": preprocess.interpolation,
                         "status": "skipped", "reason": reason, "data": data.location,
                         "data_layout": data.layout, "data_fingerprint": fingerprint, "limit": cfg.limit,
                         "device": run_info["device"], "dtype": dtype_name})
    table = tidy_table(rows)
    run_info.update(finished=_iso(time.time()), wall_s=round(time.time() - t_start, 3),
                    failed_images=[{"image_id": k, "error": v} for k, v in sorted(failed.items())],
                    cells=[r["cell_key"] for r in rows if r.get("cell_key")])
    merged = _write_outputs(run_dir, table, run_info)
    # this sweep's rows, now with the statistics that need the merged per-image evidence
    mine = merged["cell_key"].isin(set(table["cell_key"].dropna())) | merged["cell_key"].isna()
    table = merged[mine].reset_index(drop=True)
    return SweepResult(table=table, out=run_dir.root, grid=grid, loaded=loaded, run=run_info)


def _real_labels(source: str | None, data: DataSource):
    """ImageNet-ReaL labels for ``--real-labels timm|PATH``; an error when the data has no val numbers."""
    if source is None:
        return None
    from .data.real import load_real_labels, real_targets

    real = load_real_labels(None if source == "timm" else source)
    real_targets(real, data.dataset["image_id"], data.layout)
    return real


def _real_columns(real, store: CellStore, class_names: list[str] | None, n_total: int) -> dict[str, Any]:
    """real_top1 / real_top5 / n_real of a cell from its committed records."""
    from .data.real import real_accuracy

    records, _ = store.read_records(upto=n_total)
    ok = records[~records["failed"].astype(bool)]
    topk = np.stack(ok["topk"].to_numpy()) if len(ok) else np.zeros((0, 5), dtype=np.int64)
    return real_accuracy(real, list(ok["image_id"]), topk, class_names)


def _pending(forwards: list[Forward], run_dir: RunDir, force: bool) -> list[Forward]:
    """Forwards with at least one unfinished cell, each starting at its least advanced cell."""
    pending = []
    for fwd in forwards:
        starts = []
        for scheme in fwd.schemes:
            store = run_dir.cell(fwd.keys[scheme])
            if force:
                for _, _, part in store.parts():
                    part.unlink(missing_ok=True)
                store.row_path.unlink(missing_ok=True)
            if not store.is_done():
                starts.append(store.done_upto())
        if starts:
            fwd.start = min(starts)
            pending.append(fwd)
    return pending


def _cell_row(store: CellStore, fwd: Forward, scheme: str, loaded: LoadedModel, spec: PosEmbedSpec,
              preprocess: EvalPreprocess, data: DataSource, cfg: SweepConfig, run_info: dict[str, Any],
              gflops: dict[int, float], failed: dict[str, str], n_total: int) -> dict[str, Any]:
    """The tidy row of a cell whose records are all committed."""
    records, seconds = store.read_records(upto=n_total)
    if len(records) < n_total:
        raise RuntimeError(f"cell {scheme}@{fwd.size} has {len(records)} of {n_total} records")
    bad = records["failed"].astype(bool)
    ok = records[~bad]
    for image_id, error in zip(records.loc[bad, "image_id"], records.loc[bad, "error"]):
        failed.setdefault(image_id, error)
    return {
        "model": loaded.name, "arch": loaded.arch, "pretrained_tag": loaded.tag or "",
        "checkpoint": loaded.checkpoint, "checkpoint_sha256": loaded.sha256,
        "pos_embed_kind": loaded.pos_embed_kind, "scheme": scheme, "img_size": fwd.size,
        "native_size": loaded.native_size, "rel_size": round(fwd.size / loaded.native_size, 4),
        "crop_pct": preprocess.crop_pct, "interpolation": preprocess.interpolation,
        **cell_metrics(ok["correct1"].astype(bool).to_numpy(), ok["correct5"].astype(bool).to_numpy(),
                       ok["nll"].to_numpy(), ok["confidence"].to_numpy()),
        "n_failed": int(bad.sum()),
        "imgs_per_s": round(len(ok) / seconds, 2) if seconds > 0 else float("nan"),
        "gflops": round(gflops.get(fwd.size, float("nan")), 4), "forward_s": round(seconds, 3),
        "device": run_info["device"], "dtype": run_info["dtype"], "status": "ok", "reason": "",
        "shared_with": ",".join(s for s in fwd.schemes if s != scheme),
        "explained_energy": round(spec.explained, 6) if scheme == "abswin" else float("nan"),
        "data": data.location, "data_layout": data.layout, "data_fingerprint": run_info["data"]["fingerprint"],
        "limit": cfg.limit, "cell_key": fwd.keys[scheme],
    }


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def _write_outputs(run_dir: RunDir, table, run_info: dict[str, Any]):
    """Merged views of every finished cell in the run dir (other sweeps' cells included); returns the table."""
    with run_dir.merge_lock():
        return _merge(run_dir, table, run_info)


def _merge(run_dir: RunDir, table, run_info: dict[str, Any]):
    all_rows = run_dir.finished_rows()
    this = set(table["cell_key"].dropna())
    merged = [r for r in all_rows if r["cell_key"] not in this] + table.to_dict("records")
    merged_table = tidy_table(merged)
    merged_table["top1_delta_vs_native"] = native_deltas(merged_table)
    predictions = run_dir.predictions(merged_table["cell_key"].dropna())
    if predictions is not None:
        atomic_write_parquet(run_dir.root / "predictions.parquet", predictions)
        merged_table = annotate(merged_table, predictions)
    write_tables(run_dir.root, merged_table)
    atomic_write_json(run_dir.root / "run.json", run_info)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime())
    atomic_write_json(run_dir.root / "runs" / f"{stamp}-{os.getpid()}.json", run_info)
    return merged_table


def _evaluate(cfg, run_dir: RunDir, loaded, data: DataSource, preprocess, pending: list[Forward], device, progress, gflops, failed, run_info) -> None:
    t_prepare = time.time()
    sizes = sorted({f.size for f in pending})
    start = min(f.start for f in pending)
    transform = MultiSizeTransform(preprocess, sizes)
    loaded.model.to(device)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    amp = AMP_DTYPES[cfg.amp]
    runners = {}
    for size in sizes:
        first = next(f for f in pending if f.size == size)
        net = build_at_size(loaded, size, first.embedding).to(device, memory_format=memory_format)
        gflops[size] = gflops_per_image(net, size, device)
        runners[size] = SizeRunner(size, net)
    for fwd in pending:
        fwd.embedding = fwd.embedding.to(device)
    batch_size = cfg.batch_size
    if batch_size == "auto":
        batch_size = auto_batch_size(runners[sizes[-1]].net, sizes[-1], device, amp, memory_format)
    run_info["batch_size"] = batch_size
    workers, threads = loading_plan(device, len(data) - start, cfg.workers)
    device_crops = DeviceCrops(transform, device) if preprocess.decode != "pil" else None
    if device_crops is None:
        images, collate_fn = MultiSizeImages(data.dataset, transform, start, threads), collate
    else:  # workers only read the files; the device decodes
        images, collate_fn = EncodedImages(data.dataset, start), collate_encoded
    loader = torch.utils.data.DataLoader(
        images, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate_fn,
        pin_memory=device.type == "cuda" and device_crops is None, persistent_workers=False,
        prefetch_factor=prefetch_factor(workers, batch_size, sizes) if workers else None,
    )
    run_info["workers"] = workers
    batches = iter(loader)  # workers start decoding now, while the forwards compile
    for runner in runners.values():
        runner.chunk = [forward_batch(loaded.model, runner.size, batch_size, device)]
    if cfg.compile:  # after the flop count, which needs the eager module
        run_info["compile"] = compile_runners(runners, min(batch_size, len(data) - start), device, amp,
                                              memory_format, progress.log)
    # each cell resumes from its own committed records: cells sharing a forward may have been
    # interrupted between their flushes, and a finished cell is never written again
    stores = {fwd.keys[s]: run_dir.cell(fwd.keys[s]) for fwd in pending for s in fwd.schemes}
    buffers = {key: _CellBuffer(store, store.done_upto()) for key, store in stores.items() if not store.is_done()}
    progress.start(sum(len(data) - f.start for f in pending), f"{loaded.name}: {len(pending)} forwards x {len(data)} images")

    def launch(batch: Batch) -> list[tuple[Forward, int, Any]]:
        """Queue every pending forward of ``batch`` on the device; nothing here waits for it."""
        first, last = int(batch.positions[0]), int(batch.positions[-1]) + 1
        if device_crops is None:
            on_device = {size: crops.to(device, non_blocking=True) for size, crops in batch.crops.items()}
        else:
            on_device = device_crops(batch)  # marks the images no decoder could read as failed
        targets = batch.labels[batch.ok].to(device, non_blocking=True)
        queued = []
        for size in sizes:
            crops = on_device.get(size)
            x = None
            if crops is not None:
                x = normalise(crops, preprocess.mean, preprocess.std).contiguous(memory_format=memory_format)
            for fwd in (f for f in pending if f.size == size):
                if last <= fwd.start:
                    continue
                lo = max(0, fwd.start - first)
                queued.append((fwd, lo, runners[size].records(fwd, x, targets, amp, progress.log) if x is not None else None))
        return queued

    def finish(batch: Batch, queued: list[tuple[Forward, int, Any]]) -> None:
        """Wait for ``batch``'s forwards, then turn their records into each cell's buffer."""
        first, last = int(batch.positions[0]), int(batch.positions[-1]) + 1
        for fwd, lo, pending_records in queued:
            rec, seconds = pending_records.result() if pending_records is not None else (None, 0.0)
            table = _records_table(batch, rec, lo)
            for scheme in fwd.schemes:
                if fwd.keys[scheme] in buffers:
                    buffers[fwd.keys[scheme]].add(table, last, seconds)
            progress.advance(last - max(first, fwd.start))

    # one batch stays in flight: the device runs batch i+1's forwards while the host files batch i's records
    in_flight: tuple[Batch, list] | None = None
    since_flush = 0
    t_loop = time.time()
    for batch in batches:
        if cfg.strict and not bool(batch.ok.all()):
            bad = int((~batch.ok).nonzero()[0])
            raise UserError(f"--strict: image {batch.image_ids[bad]} cannot be decoded ({batch.errors[bad]})")
        queued = launch(batch)
        if in_flight is not None:
            finish(*in_flight)
            since_flush += len(in_flight[0])
        in_flight = (batch, queued)
        if since_flush >= cfg.save_every:
            for buf in buffers.values():
                buf.flush()
            since_flush = 0
    if in_flight is not None:
        finish(*in_flight)
    for buf in buffers.values():
        buf.flush()
    run_info["timing"].update(prepare_s=round(t_loop - t_prepare, 3), loop_s=round(time.time() - t_loop, 3))
    if device_crops is not None:
        run_info["decode"] = {"decoder": preprocess.decode, "pil_fallbacks": device_crops.fallbacks}
