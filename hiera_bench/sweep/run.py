"""``run_sweep``: validate → load → plan → evaluate → rows → write."""

from __future__ import annotations

import socket
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..cells import CellIdentity
from ..data import DataSource, open_data
from ..errors import UserError
from ..grid import Grid, default_grid, parse_grid
from ..models import LoadedModel, load_model
from ..posembed import PosEmbedSpec, Scheme, spec_from_model
from ..preprocess import EvalPreprocess
from ..stats import SETTINGS as STATS_SETTINGS
from ..subsets import ClassSubset, detect, subset
from .config import Progress, Quiet, SweepConfig, validate_config
from .evaluate import Evaluation
from .plan import Forward, identify, pending, plan_forwards
from .provenance import device_name, git_sha, iso_time, versions
from .rows import SweepColumns, cell_row, real_columns, skipped_row, tidy_table
from .runtime import check_memory
from .store import RunDir
from .views import this_sweeps_rows, write_views


@dataclass
class SweepResult:
    table: pd.DataFrame  # this sweep's rows, with the statistics of the merged run folder
    out: Path
    grid: Grid
    loaded: LoadedModel
    run: dict[str, Any]
    problems: list[str] = field(default_factory=list)  # why these numbers must not be trusted as they are

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Sweep:
    """What the steps of one sweep share once the model and data are loaded."""

    cfg: SweepConfig
    schemes: list[Scheme]
    loaded: LoadedModel
    grid: Grid
    sizes: list[int]
    spec: PosEmbedSpec
    preprocess: EvalPreprocess
    data: DataSource
    run_dir: RunDir
    progress: Progress
    subset: ClassSubset | None = None  # scored over these classes only (--class-subset, or detected)
    data_fingerprint: str = ""  # the set's identity (ids and labels)
    data_state: str = ""  # the files behind it as they are now (sizes, mtimes): changed files are recomputed

    def __post_init__(self) -> None:
        self.data_fingerprint = self.data.fingerprint()
        self.data_state = self.data.state()

    @property
    def label(self) -> str:
        return self.cfg.label or self.loaded.name


def run_sweep(cfg: SweepConfig, progress: Progress | None = None) -> SweepResult:
    """Run (or resume) a sweep and write its files; returns this sweep's tidy table."""
    progress = progress or Quiet()
    schemes, device = validate_config(cfg)
    t_start = time.time()
    sweep = load(cfg, schemes, device, progress)
    forwards = plan(sweep)
    run_info = provenance(sweep, device, t_start)
    with ExitStack() as locks:
        for key in sorted(k for fwd in forwards for k in fwd.keys.values()):
            locks.enter_context(sweep.run_dir.cell(key).lock(
                on_wait=lambda key=key: progress.log(f"cell {key} is being computed by another run; waiting for it")))
        todo = pending(forwards, sweep.run_dir, cfg.force)
        gflops: dict[int, float] = {}
        if todo:
            run_info["timing"] = {"load_s": round(time.time() - t_start, 3)}
            valid = sweep.subset.mask(sweep.loaded.label_names) if sweep.subset else None
            report = Evaluation(cfg, sweep.loaded, sweep.data, sweep.preprocess, sweep.run_dir, device, progress,
                                valid).run(todo)
            gflops = report.gflops
            run_info["timing"].update(report.timing)
            run_info.update(batch_size=report.batch_size, workers=report.workers, compile=report.compile)
            if report.decode:
                run_info["decode"] = report.decode
            if report.large_images:
                run_info["large_images"] = report.large_images
        rows, failed = cell_rows(sweep, forwards, gflops, run_info["device"])
    rows += [skipped_row(columns(sweep, run_info["device"]), cell(sweep, scheme=s.name, img_size=size), reason)
             for size, reason in sweep.grid.skipped for s in schemes]
    table = tidy_table(rows)
    run_info.update(finished=iso_time(time.time()), wall_s=round(time.time() - t_start, 3),
                    failed_images=[{"image_id": k, "error": v} for k, v in sorted(failed.items())],
                    cells=[r["cell_key"] for r in rows if r.get("cell_key")])
    merged = write_views(sweep.run_dir, table, run_info)
    mine = this_sweeps_rows(merged, table)
    return SweepResult(mine, sweep.run_dir.root, sweep.grid, sweep.loaded, run_info,
                       problems(mine, len(failed), len(sweep.data), cfg.max_failed))


def load(cfg: SweepConfig, schemes: list[Scheme], device, progress: Progress) -> Sweep:
    """The checkpoint, its grid of sizes and embedding spec, the preprocessing, the data and the run folder."""
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
    if device.type == "cuda" and cfg.amp == "none":
        progress.log("fp32 on a CUDA GPU: --amp (bf16 autocast) is the usual choice and much faster; its cells are "
                     "cells of their own (the dtype is part of a cell)")
    decode = f"device:{device.type}" if cfg.decode == "device" else "pil"
    preprocess = EvalPreprocess.from_config(loaded.data_config(), cfg.crop_pct, cfg.interpolation, decode)
    if loaded.label_names is None:
        raise UserError(f"{loaded.name} has {loaded.num_classes} classes but no class names; "
                        "give a checkpoint folder whose config.json lists label_names")
    data = open_data(cfg.data, loaded.label_names, cfg.data_format, cfg.limit, cfg.per_class)
    if cfg.batch_size != "auto":
        check_memory(loaded.model, sizes, cfg.batch_size, device, len(data))
    run_dir = RunDir(Path(cfg.out) if cfg.out else Path(cfg.root) / (cfg.label or loaded.name))
    return Sweep(cfg, schemes, loaded, grid, sizes, spec, preprocess, data, run_dir, progress,
                 scoring(cfg, loaded, data, progress))


def scoring(cfg: SweepConfig, loaded: LoadedModel, data: DataSource, progress: Progress) -> ClassSubset | None:
    """The classes images are scored over: ``--class-subset``, or ImageNet-R/-A when the data's classes are
    exactly one of them; otherwise all, with a note when the data holds far fewer classes than the model."""
    present = {loaded.label_names[int(i)] for i in set(data.dataset["label"])}
    chosen = subset(cfg.class_subset) if cfg.class_subset else detect(present)
    if chosen is not None:
        chosen.mask(loaded.label_names)  # its classes must be the model's
        if not cfg.class_subset:
            progress.log(f"the data's {len(present)} classes are exactly {chosen.name}'s: scored over those classes, "
                         f"as {chosen.name} is (logits of the others left out)")
    elif len(present) < loaded.num_classes / 2:
        progress.log(f"the data holds {len(present)} of the model's {loaded.num_classes} classes and is scored over all "
                     f"{loaded.num_classes}; --class-subset imagenet-r|imagenet-a|FILE restricts the logits")
    return chosen


def cell(sweep: Sweep, **fields: Any) -> CellIdentity:
    """The identity of one of this sweep's cells (``scheme``, ``img_size``, ``global_size`` given)."""
    cfg = sweep.cfg
    return CellIdentity(model=sweep.loaded.name, checkpoint_sha256=sweep.loaded.sha256,
                        preprocess=sweep.preprocess.as_dict(), data_fingerprint=sweep.data_fingerprint,
                        limit=cfg.limit, per_class=cfg.per_class, dtype=cfg.dtype_name,
                        data_state=sweep.data_state, class_subset=sweep.subset.name if sweep.subset else None,
                        **fields)


def plan(sweep: Sweep) -> list[Forward]:
    """One forward per distinct embedding per size; every cell identified, its identity on disk."""
    forwards = plan_forwards(sweep.spec, sweep.schemes, sweep.sizes, sweep.loaded.geometry)
    identify(forwards, sweep.schemes, sweep.spec, lambda **fields: cell(sweep, **fields))
    for fwd in forwards:
        for identity in fwd.cells.values():
            sweep.run_dir.cell(identity.key).write_meta(identity.fields())
    return forwards


def columns(sweep: Sweep, device: str) -> SweepColumns:
    loaded = sweep.loaded
    return SweepColumns(label=sweep.label, model=loaded.name, arch=loaded.arch, pretrained_tag=loaded.tag or "",
                        num_classes=loaded.num_classes, checkpoint=loaded.checkpoint,
                        pos_embed_kind=loaded.pos_embed_kind, native_size=loaded.native_size, explained_energy=sweep.spec.explained,
                        data=sweep.data.location, data_layout=sweep.data.layout, device=device,
                        data_name=sweep.cfg.data_name)


def cell_rows(sweep: Sweep, forwards: list[Forward], gflops: dict[int, float],
              device: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every cell's row (built once, when its records are complete; read back after) and the failed images."""
    shared = columns(sweep, device)
    real = _real_labels(sweep.cfg.real_labels, sweep.data)
    uses_fit = {s.name: s.uses_fit for s in sweep.schemes}
    n_total = len(sweep.data)
    rows, failed = [], {}
    for fwd in forwards:
        for scheme, identity in fwd.cells.items():
            store = sweep.run_dir.cell(identity.key)
            if not store.is_done():
                row, bad = cell_row(shared, identity, store, n_total, [s for s in fwd.schemes if s != scheme],
                                    gflops.get(fwd.size), uses_fit[scheme])
                store.write_row(row)
            else:
                row, bad = store.read_row(), store.failed_images(n_total)
                row.update(label=shared.label, num_classes=shared.num_classes,  # names, not part of the cell
                           data_name=shared.data_name)
            failed.update(bad)
            if real is not None:
                row.update(real_columns(real, store, sweep.loaded.label_names, n_total))
            rows.append(row)
    return rows, failed


def provenance(sweep: Sweep, device, t_start: float) -> dict[str, Any]:
    """run.json: what ran, on what, with which data and statistics."""
    cfg, loaded, data, spec = sweep.cfg, sweep.loaded, sweep.data, sweep.spec
    return {
        "command": cfg.command or " ".join(sys.argv), "config": asdict(cfg), "started": iso_time(t_start),
        "label": sweep.label, "model": loaded.name, "checkpoint": loaded.checkpoint,
        "checkpoint_sha256": loaded.sha256,
        "license": loaded.license, "native_size": loaded.native_size, "pos_embed_kind": loaded.pos_embed_kind,
        "explained_energy": spec.explained, "energy_shares": spec.energy_shares(),
        "sizes": sweep.sizes, "skipped": [{"img_size": s, "reason": r} for s, r in sweep.grid.skipped],
        "schemes": [s.name for s in sweep.schemes], "preprocess": sweep.preprocess.as_dict(),
        "class_subset": sweep.subset.name if sweep.subset else None,
        "data": {"name": cfg.data_name, "location": data.location, "layout": data.layout, "n_images": len(data),
                 "fingerprint": sweep.data_fingerprint, "state": sweep.data_state, "limit": cfg.limit,
                 "per_class": cfg.per_class},
        "device": device_name(device), "dtype": cfg.dtype_name, "host": socket.gethostname(),
        "versions": versions(), "git_sha": git_sha(), "statistics": STATS_SETTINGS,
    }


def problems(table: pd.DataFrame, n_failed: int, n_images: int, max_failed: float) -> list[str]:
    """Why this sweep's numbers must not be taken as they are (empty: they can)."""
    out = []
    empty = table[table["status"].eq("failed")]
    if len(empty):
        out.append(f"{len(empty)} cell(s) evaluated no image: " + ", ".join(
            f"{r.scheme}@{int(r.img_size)}" for r in empty.itertuples()))
    if n_images and n_failed / n_images > max_failed:
        out.append(f"{n_failed} of {n_images} images ({100 * n_failed / n_images:.1f} %) could not be decoded, more "
                   f"than --max-failed {100 * max_failed:g} %; run.json lists them")
    return out


def _real_labels(source: str | None, data: DataSource):
    """ImageNet-ReaL labels for ``--real-labels timm|PATH``; an error when the data has no val numbers."""
    if source is None:
        return None
    from ..data.real import load_real_labels, real_targets

    real = load_real_labels(None if source == "timm" else source)
    real_targets(real, data.dataset["image_id"], data.layout)
    return real
