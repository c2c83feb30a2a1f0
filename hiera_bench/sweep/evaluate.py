"""The image loop: every pending forward over this rank's segments of the data, decoded once, records
committed per cell.

Each batch is decoded once and cut to every size; every pending forward at a size runs on it where one
of its cells lacks those images; the per-image records go to each such cell. One batch stays in flight,
so the device runs batch i+1 while the host files batch i's records, and records are committed every
``save_every`` images: an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..data import DataSource
from ..data.devicedecode import DeviceCrops, EncodedImages, collate_encoded
from ..data.loader import Batch, MultiSizeImages, collate, ignore_large_image_warnings
from ..data.shared import DecodedCrops
from ..errors import UserError
from ..models import LoadedModel
from ..preprocess import EvalPreprocess, MultiSizeTransform, View, normalise
from .config import AMP_DTYPES, Progress, SweepConfig
from .plan import Forward
from .provenance import device_kind
from .records import CellBuffer, records_table
from .shards import Segment, batches, length
from .runtime import (PendingRecords, SizeRunner, auto_batch_size, compile_runners, compile_settings, forward_batch,
                      counted_net, loading_plan, prefetch_budget, prefetch_factor)
from .store import RunDir


@dataclass
class EvaluationReport:
    """What the loop measured, for the rows and run.json."""

    gflops: dict[int, float] = field(default_factory=dict)
    batch_size: int | None = None
    workers: int | None = None
    compile: dict[str, Any] | None = None
    decode: dict[str, Any] | None = None
    timing: dict[str, float] = field(default_factory=dict)
    large_images: int = 0  # decoded above PIL's decompression-bomb limit
    images: int = 0  # images this process evaluated
    evaluated: int = 0  # (image, forward) pairs it evaluated


@dataclass
class Evaluation:
    """Everything the loop reads; :meth:`run` evaluates ``pending`` and commits their records."""

    cfg: SweepConfig
    loaded: LoadedModel
    data: DataSource
    preprocess: EvalPreprocess
    run_dir: RunDir
    device: torch.device
    progress: Progress
    valid: torch.Tensor | None = None  # the classes scored (--class-subset); None: every class
    cores: int | None = None  # host cores this process may use (a share of the node's under torchrun)
    host_share: float = 1.0  # the share of the host's memory its prefetched batches may take (1 / ranks on it)
    #: the crops an earlier checkpoint of the command kept (and where to keep ours), for the loop's views
    shared: Callable[[tuple[View, ...]], DecodedCrops | None] | None = None

    def run(self, pending: list[Forward], segs: list[Segment], total: int) -> EvaluationReport:
        """Evaluate ``pending`` over ``segs`` (this rank's); ``total``: the (image, forward) pairs of every
        rank, for the progress bar."""
        with compile_settings(len({f.size for f in pending})) if self.cfg.compile else nullcontext():
            return self._run(pending, segs, total)

    def _run(self, pending: list[Forward], segs: list[Segment], total: int) -> EvaluationReport:
        report = EvaluationReport(images=length((s.start, s.end) for s in segs))
        t_prepare = time.time()
        cfg, device = self.cfg, self.device
        sizes = sorted({f.size for f in pending})
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        amp = AMP_DTYPES[cfg.amp]
        runners = self._runners(pending, sizes, memory_format, report)
        batch_size = cfg.batch_size
        if batch_size == "auto":
            batch_size = auto_batch_size(runners[sizes[-1]].net, sizes[-1], device, amp, memory_format)
        report.batch_size = batch_size
        transform = MultiSizeTransform(self.preprocess, sizes, sorted({f.crop_pct for f in pending}))
        device_crops = DeviceCrops(transform, device) if self.preprocess.decode != "pil" else None
        loader, report.workers = self._loader(transform, device_crops, segs, batch_size)
        batches = iter(loader)  # workers start decoding now, while the forwards compile
        geometry = self.loaded.geometry
        for runner in runners.values():
            runner.chunk = [forward_batch(geometry, runner.size, batch_size, device)]
        if cfg.compile:  # after the flop count, which needs the eager module
            report.compile = compile_runners(runners, min(batch_size, report.images), device, amp,
                                             memory_format, self.progress.log)
        # each cell gets exactly the records it lacks: cells sharing a forward may have been interrupted
        # between their flushes, and a finished cell is never written again
        buffers = {key: CellBuffer(self.run_dir.cell(key), device_kind(device)) for seg in segs for key in seg.keys}
        self.progress.start(total, describe_work(self.loaded.name, pending, len(self.data)))
        t_loop = time.time()
        report.evaluated, report.large_images, shared = self._loop(batches, pending, segs, runners, buffers,
                                                                   device_crops, transform.views, memory_format, amp)
        report.timing = {"prepare_s": round(t_loop - t_prepare, 3), "loop_s": round(time.time() - t_loop, 3)}
        if device_crops is not None:
            report.decode = {"decoder": self.preprocess.decode, "pil_fallbacks": device_crops.fallbacks}
        elif loader.dataset.shared is not None:
            report.decode = {"decoder": "pil", "shared_crops": shared, "decoded": report.images - shared}
        return report

    def _runners(self, pending: list[Forward], sizes: list[int], memory_format: torch.memory_format,
                 report: EvaluationReport) -> dict[int, SizeRunner]:
        """One net per size (each scheme's embedding is copied in before its forward), its FLOPs counted."""
        runners = {}
        for size in sizes:
            first = next(f for f in pending if f.size == size)
            net, report.gflops[size] = counted_net(self.loaded, size, first.embedding, self.device, memory_format)
            runners[size] = SizeRunner(size, net, valid=None if self.valid is None else self.valid.to(self.device))
        for fwd in pending:
            fwd.embedding = fwd.embedding.to(self.device)
        return runners

    def _loader(self, transform: MultiSizeTransform, device_crops: DeviceCrops | None, segs: list[Segment],
                batch_size: int) -> tuple[torch.utils.data.DataLoader, int]:
        workers, threads = loading_plan(self.device, length((s.start, s.end) for s in segs), self.cfg.workers,
                                        self.cores)
        if device_crops is None:
            kept = self.shared(transform.views) if self.shared is not None else None
            images, collate_fn = MultiSizeImages(self.data.dataset, transform, 0, threads, kept), collate
        else:  # workers only read the files; the device decodes
            images, collate_fn = EncodedImages(self.data.dataset, 0), collate_encoded
        loader = torch.utils.data.DataLoader(  # batches never cross a segment: see shards
            images, batch_sampler=batches(segs, batch_size), num_workers=workers, collate_fn=collate_fn,
            pin_memory=self.device.type == "cuda" and device_crops is None, persistent_workers=False,
            worker_init_fn=ignore_large_image_warnings if workers else None,
            prefetch_factor=prefetch_factor(workers, batch_size, [size for size, _ in transform.views],
                                            int(prefetch_budget() * self.host_share))
            if workers else None,
        )
        return loader, workers

    def _loop(self, batches, pending: list[Forward], segs: list[Segment], runners: dict[int, SizeRunner],
              buffers: dict[str, CellBuffer], device_crops: DeviceCrops | None, views: tuple[View, ...],
              memory_format: torch.memory_format, amp: torch.dtype | None) -> tuple[int, int, int]:
        """Returns the (image, forward) pairs evaluated, how many images were above PIL's
        decompression-bomb limit and how many were read from crops an earlier checkpoint kept."""
        device, log = self.device, self.progress.log
        starts = [s.start for s in segs]
        evaluated = 0
        large = shared = 0

        def lacking(batch: Batch) -> frozenset[str]:
            """The cells that lack ``batch``'s images (all of them: a batch lies in one segment)."""
            return segs[bisect_right(starts, int(batch.positions[0])) - 1].keys

        def launch(batch: Batch) -> list[tuple[Forward, PendingRecords | None]]:
            """Queue every forward ``batch`` needs on the device; nothing here waits for it."""
            need = lacking(batch)
            if device_crops is None:
                on_device = {view: crops.to(device, non_blocking=True) for view, crops in batch.crops.items()}
            else:
                on_device = device_crops(batch)  # marks the images no decoder could read as failed
            targets = batch.labels[batch.ok].to(device, non_blocking=True)
            queued = []
            for view in views:
                crops = on_device.get(view)
                x = None if crops is None else normalise(crops, self.preprocess.mean, self.preprocess.std).contiguous(
                    memory_format=memory_format)
                for fwd in (f for f in pending if f.view == view and need & set(f.keys.values())):
                    records = runners[fwd.size].records(fwd, x, targets, amp, log) if x is not None else None
                    queued.append((fwd, records))
            return queued

        def finish(batch: Batch, queued: list[tuple[Forward, PendingRecords | None]]) -> None:
            """Wait for ``batch``'s forwards, then turn their records into the buffers of the cells lacking them."""
            nonlocal evaluated
            first, last = int(batch.positions[0]), int(batch.positions[-1]) + 1
            need = lacking(batch)
            for fwd, records in queued:
                rec, seconds = records.result() if records is not None else (None, 0.0)
                table = records_table(batch, rec)
                for key in need.intersection(fwd.keys.values()):
                    buffers[key].add(table, first, last, seconds)
            # one step per batch: the rate counts whole batches between steps (per forward, a batch's steps came
            # in one burst and the rate read the burst as work done in no time)
            pairs = (last - first) * len(queued)
            self.progress.advance(pairs)
            evaluated += pairs

        in_flight: tuple[Batch, list] | None = None
        since_flush = 0
        for batch in batches:
            if self.cfg.strict and not bool(batch.ok.all()):
                bad = int((~batch.ok).nonzero()[0])
                raise UserError(f"--strict: image {batch.image_ids[bad]} cannot be decoded ({batch.errors[bad]})")
            large += batch.large
            shared += batch.shared
            queued = launch(batch)
            if in_flight is not None:
                finish(*in_flight)
                since_flush += len(in_flight[0])
            in_flight = (batch, queued)
            if since_flush >= self.cfg.save_every:
                for buf in buffers.values():
                    buf.flush()
                since_flush = 0
        if in_flight is not None:
            finish(*in_flight)
        for buf in buffers.values():
            buf.flush()
        return evaluated, large, shared


def describe_work(name: str, pending: list[Forward], n_images: int) -> str:
    """What the progress bar counts: every pending forward runs on every batch (the loop is image-major), so
    it names the sizes and schemes in flight rather than one "current" cell."""
    sizes = sorted({f.size for f in pending})
    schemes = sorted({s for f in pending for s in f.schemes})
    crops = sorted({f.crop_pct for f in pending})
    span = f"{sizes[0]} px" if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]} px ({len(sizes)} sizes)"
    if len(crops) > 1:
        span += f" × crop {','.join(f'{c:g}' for c in crops)}"
    return f"{name}: {span} × {', '.join(schemes)} = {len(pending)} forwards × {n_images:,} images"
