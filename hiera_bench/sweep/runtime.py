"""A sweep's work on its device: loading plan, batch size, one net per size (compiled once), forwards
that back off on OOM, and per-image records that reach the host without stalling the device."""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..cache import persistent_compile_cache
from ..errors import UserError
from ..geometry import HieraGeometry
from ..metrics import device_records, records_to_numpy
from ..models import LoadedModel, build_at_size
from .plan import Forward


MAX_WORKERS = 16


def default_workers(n_images: int, cores: int | None = None) -> int:
    """DataLoader worker processes: none for tiny sets (start-up costs more than it saves), else the
    cores but one (at most :data:`MAX_WORKERS`): on a GPU host decoding is the sweep's other bound.
    ``cores``: this process's share of the host (under torchrun, the node's cores / ranks on the node)."""
    if n_images < 256:
        return 0
    return max(1, min(MAX_WORKERS, (cores or os.cpu_count() or 2) - 1))


def loading_plan(device: torch.device, n_images: int, workers: int | None,
                 cores: int | None = None) -> tuple[int, int]:
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
    return default_workers(n_images, cores), 1


def gflops_per_image(net: torch.nn.Module, size: int, device: torch.device) -> float:
    """Forward FLOPs of one image at ``size`` from torch's flop counter, in GFLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, size, size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops() / 1e9


def counted_net(loaded: LoadedModel, size: int, embedding: torch.Tensor, device: torch.device,
                memory_format: torch.memory_format = torch.contiguous_format) -> tuple[torch.nn.Module, float]:
    """The net at ``size`` on ``device`` (``embedding`` copied in) and its forward GFLOPs per image."""
    loaded.model.to(device)
    net = build_at_size(loaded, size, embedding).to(device, memory_format=memory_format)
    return net, gflops_per_image(net, size, device)


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
    valid: torch.Tensor | None = None  # the classes scored (--class-subset), on the device

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
        return PendingRecords(device_records(logits, targets, valid=self.valid), started, x.device)


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
    return {"seconds": seconds, "cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
            **{k: after[k] - before[k] for k in after}}


@contextmanager
def compile_settings(n_sizes: int) -> Iterator[None]:
    """While a sweep's compiled nets run (compiled, and recompiled after an out-of-memory back-off): inductor's
    caches in hiera-bench's folder, and room in dynamo's recompile limit for every size, twice; the caller's
    settings after."""
    import torch._dynamo

    # one cache entry per size on the one Hiera.forward code object; past the limit dynamo would run eagerly
    limits = {name: max(getattr(torch._dynamo.config, name), 2 * n_sizes + 8)
              for name in ("recompile_limit", "cache_size_limit") if hasattr(torch._dynamo.config, name)}
    with persistent_compile_cache(), torch._dynamo.config.patch(limits):
        yield


# glibc serves blocks above its largest mmap threshold (32 MiB) with a fresh mmap, so on the CPU every
# op that writes such a tensor page-faults and zeroes it again: hiera_tiny at 224 px runs 1.5x faster
# per image in slices of 6 than in batches of 32, at 320 px 1.4x in slices of 3 (2-core VM, measured)
CPU_WIDEST_TENSOR_BYTES = 32 << 20


def forward_batch(geometry: HieraGeometry, size: int, batch_size: int, device: torch.device) -> int:
    """Images per forward call: the batch on an accelerator; on the CPU, slices whose widest
    activation (stage 1's MLP hidden layer, fp32) stays under :data:`CPU_WIDEST_TENSOR_BYTES`."""
    if device.type != "cpu":
        return batch_size
    tokens, dim = geometry.stage1_shape(size)
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
    geometry = HieraGeometry.from_model(model)
    tokens, dim = geometry.stage1_shape(size)
    # stage 1 keeps ~a dozen token-sized tensors alive (MLP 4x, residual, norms)
    stage1 = tokens * dim * 4 * 12
    # without a fused kernel the first global-attention stage materialises heads x T^2 scores
    attn = model.blocks[-1].attn
    pooled = geometry.global_stage_tokens(size)
    scores = 0 if getattr(attn, "fused_attn", False) else attn.heads * pooled * pooled * 4 * 2
    return batch_size * max(stage1, scores)


def available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(model: torch.nn.Module, sizes: list[int], batch_size: int, device: torch.device, n_images: int,
                 free: int | None = None) -> None:
    """Refuse sizes whose activations cannot fit, before allocating anything.

    What one forward holds is what is measured: a batch never holds more images than the data has, and on
    the CPU every forward runs in slices (:func:`forward_batch`), whatever ``--batch-size`` says.
    """
    free = available_bytes(device) if free is None else free
    if free is None:
        return
    geometry = HieraGeometry.from_model(model)
    batch = max(1, min(batch_size, n_images))
    for size in sorted(sizes, reverse=True):
        per_forward = forward_batch(geometry, size, batch, device)
        need = activation_bytes(model, size, per_forward)
        if need > 0.9 * free:
            fits = max((b for b in (1, 2, 4, 8, 16, 32, 64) if activation_bytes(model, size, b) < 0.9 * free), default=0)
            hint = f"use --batch-size {fits}" if fits else "choose smaller sizes"
            raise UserError(
                f"{size} px at {per_forward} image(s) per forward needs about {need / 2**30:.1f} GiB of activations "
                f"but {device.type} has {free / 2**30:.1f} GiB free; {hint}"
            )
