"""``run_sweep``: validate → load → plan → evaluate → rows → write."""

from __future__ import annotations

import socket
import sys
import time
from contextlib import ExitStack, contextmanager
from functools import cache, cached_property, partial
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch

from ..cells import CellIdentity, on_several_devices, same_value
from ..data import DataSource, open_data, quiet_data, selected
from ..data.real import real_labels_digest
from ..data.shared import SharedDecodes
from ..errors import UserError
from ..interrupts import ends_at_once_on_signals
from ..grid import Grid, default_grid, parse_grid
from ..models import LoadedModel, headless_reason, load_model
from ..posembed import PosEmbedSpec, Scheme, spec_from_model
from ..preprocess import EvalPreprocess
from ..published import reference_checks
from ..state import ProcessSetting
from ..stats import SETTINGS as STATS_SETTINGS
from ..subsets import ClassSubset, detect, subset
from ..untrusted import first_line
from .config import Logged, Progress, SweepConfig, validate_config
from .distributed import Cluster, job_rank
from .evaluate import Evaluation, EvaluationReport
from .plan import (Forward, fitted_global_size, forward_cells, identify, missing_records, plan_forwards,
                   scheme_digest)
from .provenance import device_kind, device_name, git_sha, iso_time, other_versions, versions
from .rows import SweepColumns, cell_row, real_columns, skipped_row, tidy_table
from .runtime import check_memory, counted_net
from .shards import Assignment, assign
from .store import DataFiles, RunDir, mark_begun, rewrite_mark
from .views import this_sweeps_rows, this_sweeps_series, write_views


@dataclass
class SweepResult:
    table: pd.DataFrame  # this sweep's rows, with the statistics of the merged run folder
    out: Path
    grid: Grid
    loaded: LoadedModel
    run: dict[str, Any]
    problems: list[str] = field(default_factory=list)  # why these numbers must not be trusted as they are
    primary: bool = True  # rank 0 of a torchrun job (or the one process): the rank that shows the result
    series: pd.Series | None = None  # each row's series, named as the run folder's views name it (beside its earlier cells)

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
    crops: tuple[float, ...] = ()  # the crop_pcts of --crop-pct 0.875,0.95 (default: the checkpoint's own)
    data_fingerprint: str = ""  # the set's identity (ids and labels)
    data_state: str = ""  # the files behind it as they are now (sizes, mtimes): changed files are recomputed
    data_place: str = ""  # where they lie (DataSource.place)

    def __post_init__(self) -> None:
        self.data_fingerprint = self.data.fingerprint()
        self.data_state = self.data.state()
        self.data_place = self.data.place()
        self.crops = self.crops or (self.preprocess.crop_pct,)

    @property
    def label(self) -> str:
        return self.cfg.label or self.loaded.name

    @cached_property
    def real_labels(self):
        """The ImageNet-ReaL labels of ``--real-labels`` (None without it), checked against the data's ids."""
        return _real_labels(self.cfg.real_labels, self.data)

    @cached_property
    def earlier_states(self) -> list[str]:
        """The data's state as earlier versions computed it (stat'ed once, and only where a cell needs it)."""
        return self.data.earlier_states()


def run_sweep(cfg: SweepConfig, progress: Progress | None = None, shared: SharedDecodes | None = None) -> SweepResult:
    """Run (or resume) a sweep and write its files; returns this sweep's tidy table. ``shared``: the decoded
    crops of the checkpoints a command sweeps one after the other (see :mod:`hiera_bench.data.shared`).

    Under torchrun every rank calls it (``torchrun ... -m hiera_bench sweep``): each evaluates its share of
    the images and commits their records, rank 0 alone builds the rows and views, and every rank returns
    rank 0's result (see :mod:`.distributed`)."""
    early = None
    if job_rank() == 0:  # a job's primary marks its folder before joining, which may fail or be stopped
        early = EarlyMark(time.time())
        early.at_named(cfg)
    with ends_at_once_on_signals():  # joining blocks in torch's C++, where Python's handlers cannot run
        cluster = Cluster.join(cfg.device)
    try:
        with state_of_a_sweep():
            result = _sweep(cfg, cluster, cluster.progress(progress or Logged()), shared, early)
    except BaseException as exc:
        instead = cluster.explain(exc)
        if instead is None:
            raise
        raise instead from exc
    return result


def _float32_default() -> Callable[[], None]:
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    return lambda: torch.set_default_dtype(dtype)


_FLOAT32 = ProcessSetting(_float32_default)


@contextmanager
def state_of_a_sweep() -> Iterator[None]:
    """The process state a sweep relies on, while any sweep of the process runs: float32 as torch's default dtype
    (the nets are built in it), the data libraries quiet; and the caller's random state kept (building a net
    draws its init)."""
    with _FLOAT32.held(), quiet_data(), torch.random.fork_rng(devices=[]):
        yield


@dataclass
class EarlyMark:
    """A sweep's mark in its run folder, made as soon as the folder is known (:func:`~.store.mark_begun`): from the
    options where ``--out`` or ``--label`` names it, else once the checkpoint has loaded and named it."""

    started: float
    path: Path | None = None

    def at(self, out: Path | None, model: str | None = None) -> None:
        if self.path is None:
            self.path = mark_begun(out, self.started, model) if out is not None else None
        elif model is not None:
            rewrite_mark(self.path, self.started, model)

    def withdraw(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None

    def at_named(self, cfg: SweepConfig) -> None:
        """:meth:`at` the run folder options not checked yet name, if they name one."""
        try:
            self.at(out_folder(cfg))
        except (OSError, TypeError, ValueError):  # checking the options says what is wrong with them
            pass


def _sweep(given: SweepConfig, cluster: Cluster, progress: Progress, shared: SharedDecodes | None,
           early: EarlyMark | None = None) -> SweepResult:
    """The sweep on this rank (``early``: the mark the job's primary made before it joined)."""
    if cluster.primary and early is None:
        early = EarlyMark(time.time())
    t_start = early.started if early is not None else time.time()

    def prepare() -> tuple[SweepConfig, Sweep, list[Forward], torch.device]:
        cfg = replace(given)  # validate_config fills in a copy: the caller's config stays as it was
        try:
            schemes, device = validate_config(cfg)
        except UserError:
            if early is not None:  # options that cannot run began nothing: a mark made before joining goes
                early.withdraw()
            raise
        if early is not None:
            early.at(out_folder(cfg))
        device = cluster.place(device)
        sweep = load(cfg, schemes, device, progress, cluster.primary, early)
        return cfg, sweep, plan(sweep, cluster.primary), device

    cfg, sweep, forwards, device = cluster.agree(prepare)
    cluster.check_same({"checkpoint (sha256)": sweep.loaded.sha256, "data (ids and labels)": sweep.data_fingerprint,
                        "data files (sizes and mtimes)": sweep.data_state,
                        "cells": ",".join(k for fwd in forwards for k in fwd.keys.values())})
    cluster.check_shared(sweep.run_dir.root)
    run_info = provenance(sweep, device, t_start)
    n_images = len(sweep.data)
    begun = (sweep.run_dir.begin_sweep(t_start, sweep.loaded.name, early.path if early else None)
             if cluster.primary else None)  # until published
    with ExitStack() as locks:
        if cluster.primary:  # against other runs into the folder; the job's own ranks share it by the plan
            for key in sorted(k for fwd in forwards for k in fwd.keys.values()):
                locks.enter_context(sweep.run_dir.cell(key).lock(
                    on_wait=lambda key=key: progress.log(f"cell {key} is being computed by another run; waiting")))
        work = cluster.broadcast(assign(missing_records(forwards, sweep.run_dir, cfg.force, n_images),
                                        forward_cells(forwards), n_images, cluster.world_size)
                                 if cluster.primary else None)
        report = evaluate(sweep, forwards, work, cluster, device, progress, time.time() - t_start, shared)
        cluster.wait_for_ranks()
        evaluated = cluster.sum_on_devices(report.evaluated)
        reports = cluster.gather(rank_report(cluster, device, work, report))
        if cluster.primary:
            if evaluated != work.total:
                raise RuntimeError(f"the ranks evaluated {evaluated} (image, forward) pairs of the {work.total} planned")
            run_info.update(job_info(cluster, work, reports))
            await_records(sweep.run_dir, work, n_images, cluster.distributed)
            gflops = {size: g for r in reports for size, g in r["gflops"].items()}
            gflops.update(uncounted_gflops(sweep, forwards, gflops, device))
            t_rows = time.time()
            rows, failed = cell_rows(sweep, forwards, gflops, run_info["device"], device_kind(device))
            run_info.update(records_versions(sweep, forwards))
            several = [row["cell_key"] for row in rows if on_several_devices(row.get("device"))]
            if several:
                run_info["cells_on_several_devices"] = several
            run_info.setdefault("timing", {})["rows_s"] = round(time.time() - t_rows, 3)
    outcome = write_results(sweep, rows, failed, run_info, t_start) if cluster.primary else None
    if begun is not None:
        sweep.run_dir.end_sweep(begun)
    table, series, run_info, problems_found = cluster.broadcast(outcome)
    return SweepResult(table, sweep.run_dir.root, sweep.grid, sweep.loaded, run_info, problems_found, cluster.primary,
                       series)


def evaluate(sweep: Sweep, forwards: list[Forward], work: Assignment, cluster: Cluster, device: torch.device,
             progress: Progress, load_s: float, shared: SharedDecodes | None = None) -> EvaluationReport:
    """This rank's share of ``work``: the forwards its segments need, over those segments (decoded once per
    command where ``shared``; a torchrun job's ranks decode their own)."""
    segs = work.segments_of(cluster.rank)
    if not segs:
        if cluster.distributed and work.total:  # nothing planned (a resume that only builds rows): no one to wait for
            progress.start(work.total, f"{sweep.loaded.name}: waiting for the other ranks")
        return EvaluationReport()
    pending = [fwd for fwd, keys in zip(forwards, forward_cells(forwards)) if any(keys & s.keys for s in segs)]
    valid = sweep.subset.mask(sweep.loaded.label_names) if sweep.subset else None
    kept = None
    if shared is not None and not cluster.distributed:  # the loop asks for its views' crops (PIL decoding only)
        kept = partial(shared.crops, sweep.preprocess.as_dict(), sweep.data_fingerprint, sweep.data_state,
                       len(sweep.data))
    report = Evaluation(sweep.cfg, sweep.loaded, sweep.data, sweep.preprocess, sweep.run_dir, device, progress,
                        valid=valid, cores=cluster.cores if cluster.distributed else None,
                        host_share=1 / cluster.local_world_size, shared=kept).run(pending, segs, work.total)
    report.timing = {"load_s": round(load_s, 3), **report.timing}
    return report


def rank_report(cluster: Cluster, device: torch.device, work: Assignment, report: EvaluationReport) -> dict[str, Any]:
    """What one rank tells rank 0 for run.json."""
    share = work.shares[cluster.rank]
    return {"rank": cluster.rank, "host": cluster.host, "device": device_name(device), "share": list(share),
            "images": share[1] - share[0], "evaluated_images": report.images, "gflops": report.gflops,
            "batch_size": report.batch_size, "workers": report.workers, "compile": report.compile,
            "decode": report.decode, "timing": report.timing, "large_images": report.large_images}


def job_info(cluster: Cluster, work: Assignment, reports: list[dict[str, Any]]) -> dict[str, Any]:
    """run.json's account of who did what: world size, backend, per-rank devices and shares (one process: one
    rank); the loop's settings and timing from the first rank that evaluated anything (each rank's in ``ranks``)."""
    info: dict[str, Any] = {"world_size": cluster.world_size, "backend": cluster.backend,
                            "devices": [r["device"] for r in reports], "images_per_rank": work.images_per_rank()}
    worked = next((r for r in reports if r["evaluated_images"]), None)
    if worked is not None:
        info.update(batch_size=worked["batch_size"], workers=worked["workers"], compile=worked["compile"],
                    timing=dict(worked["timing"]))  # a copy: the sweep adds its own rows and statistics times
        if worked["decode"]:
            info["decode"] = worked["decode"]
    large = sum(r["large_images"] for r in reports)
    if large:
        info["large_images"] = large
    info["ranks"] = [{k: v for k, v in r.items() if k != "gflops"} for r in reports]
    return info


#: How long rank 0 waits for the other ranks' committed parts to show in --out (a network filesystem's cache).
RECORDS_GRACE_S = 60.0


def await_records(run_dir: RunDir, work: Assignment, n_images: int, distributed: bool) -> None:
    """Rank 0 builds rows only from complete cells; parts another node wrote may take a moment to show."""
    if not distributed:
        return
    deadline = time.monotonic() + RECORDS_GRACE_S
    while True:
        short = [key for key in work.missing if not run_dir.cell(key).is_done() and run_dir.cell(key).missing(n_images)]
        if not short:
            return
        if time.monotonic() > deadline:
            raise UserError(f"every rank finished, but after {RECORDS_GRACE_S:.0f} s rank 0 still misses records of "
                            f"{len(short)} cell(s) in {run_dir.root}; is --out one folder on a filesystem every "
                            "node shares?")
        time.sleep(1.0)


def draw_plots(sweep: Sweep, merged: pd.DataFrame) -> None:
    """``plots/`` of the folder's views (the cells results.csv shows). A figure that fails is said, not raised:
    the numbers are written by then."""
    if not merged["status"].eq("ok").any():
        return
    from ..plots import write_plots

    try:
        write_plots(merged, sweep.run_dir.root / "plots", formats=("png",))
    except Exception as exc:  # noqa: BLE001  (matplotlib's errors, a full disk: the results stand)
        sweep.progress.log(f"plots/ not drawn ({type(exc).__name__}: {first_line(exc)}); the results are written, "
                           f"and 'hiera-bench report {sweep.run_dir.root}' draws the figures")


def write_results(sweep: Sweep, rows: list[dict[str, Any]], failed: dict[str, str], run_info: dict[str, Any],
                  t_start: float) -> tuple[pd.DataFrame, pd.Series, dict[str, Any], list[str]]:
    """The tidy table with the skipped sizes, merged into the run folder's views; this sweep's rows, their series
    names, run.json and what is wrong with the numbers."""
    rows = rows + [skipped_row(columns(sweep, run_info["device"]),
                               cell(sweep, scheme=s.name, img_size=size, crop_pct=crop,
                                    global_size=fitted_global_size(s, sweep.spec)), reason)
                   for size, reason in sweep.grid.skipped for crop in sweep.crops for s in sweep.schemes]
    table = tidy_table(rows)
    run_info.update(failed_images=[{"image_id": k, "error": v} for k, v in sorted(failed.items())],
                    cells=[r["cell_key"] for r in rows if r.get("cell_key")])
    files = DataFiles(sweep.data_fingerprint, sweep.cfg.data_name, sweep.data_state, lambda: sweep.earlier_states,
                      sweep.data_place, {"limit": sweep.data.limit, "per_class": sweep.cfg.per_class,
                                           "class_subset": sweep.subset.name if sweep.subset else None},
                      cache(partial(Reselected, sweep.data)))
    merged = write_views(sweep.run_dir, table, run_info, t_start, files,
                         draw=partial(draw_plots, sweep) if sweep.cfg.plots else None,
                         refresh=earlier_rows_now(sweep, run_info))
    mine = this_sweeps_rows(merged, table)
    return (mine, this_sweeps_series(merged, table), run_info,
            problems(mine, len(failed), len(sweep.data), sweep.cfg.max_failed))


def earlier_rows_now(sweep: Sweep, run_info: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """An earlier sweep's row as the views show it beside this sweep's: left out where it is of this checkpoint and a
    scheme registered outside hiera-bench whose code gives another embedding now (:func:`other_scheme_code`), else
    scored with this sweep's ReaL labels (:func:`real_labels_refresh`)."""
    outdated, real = other_scheme_code(sweep, run_info), real_labels_refresh(sweep, run_info)

    def now(row: dict[str, Any]) -> dict[str, Any] | None:
        if outdated(row):
            return None
        return real(row) if real is not None else row

    return now


def _of_this_checkpoint(sweep: Sweep, row: dict[str, Any]) -> bool:
    """Whether an earlier sweep's row measured the checkpoint this sweep loaded."""
    return (row.get("model"), row.get("checkpoint_sha256")) == (sweep.loaded.name, sweep.loaded.sha256)


def other_scheme_code(sweep: Sweep, run_info: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    """Whether an earlier row of this checkpoint was measured with an embedding that a scheme registered outside
    hiera-bench (its code may change under one name) no longer gives at its size: a cell of the old code, which would
    stand in one series with the new one's (counted in run.json's ``cells_of_other_scheme_code``)."""
    unversioned = {s.name: s for s in sweep.schemes if not s.versioned}
    digests: dict[tuple[str, int], str] = {}

    def outdated(row: dict[str, Any]) -> bool:
        scheme = unversioned.get(str(row.get("scheme")))
        if scheme is None or not _of_this_checkpoint(sweep, row) \
                or not same_value(row.get("global_size"), fitted_global_size(scheme, sweep.spec)):
            return False
        used = sweep.run_dir.cell(str(row["cell_key"])).embedding()
        at = (scheme.name, int(row["img_size"]))
        if used is None:
            return False
        if at not in digests:
            try:
                digests[at] = scheme_digest(scheme, sweep.spec, sweep.loaded.geometry, at[1])
            except Exception:  # noqa: BLE001  (the user's code, whatever it raises there: not what measured them)
                digests[at] = ""
        if used == digests[at]:
            return False
        run_info["cells_of_other_scheme_code"] = run_info.get("cells_of_other_scheme_code", 0) + 1
        return True

    return outdated


def real_labels_refresh(sweep: Sweep, run_info: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
    """For a sweep with ``--real-labels``: an earlier sweep's row scored with other ReaL labels, as the views show it
    beside this sweep's, so that they show the figures of one labels file: scored again with this sweep's where it is
    of this checkpoint and these images (and kept so), else without ReaL figures (counted in run.json's
    ``cells_of_other_real_labels``)."""
    real = sweep.real_labels
    if real is None:
        return None
    digest = real_labels_digest(real)

    def refresh(row: dict[str, Any]) -> dict[str, Any]:
        found = row.get("real_labels")
        if not isinstance(found, str) or found == digest:
            return row
        if not _of_this_checkpoint(sweep, row) or str(row.get("data_fingerprint")) != sweep.data_fingerprint:
            # the labels are known to cover this sweep's images only
            run_info["cells_of_other_real_labels"] = run_info.get("cells_of_other_real_labels", 0) + 1
            return {**row, **dict.fromkeys(("real_top1", "real_top5", "n_real", "real_labels"))}
        store = sweep.run_dir.cell(str(row["cell_key"]))
        stored, finished = store.read_stamped_row()
        n_total = int(stored["n_images"]) + int(stored.get("n_failed") or 0)
        figures = {**real_columns(real, store, sweep.loaded.label_names, n_total), "real_labels": digest}
        store.write_row({**stored, **figures}, finished)
        return {**row, **figures}

    return refresh


class Reselected:
    """``data`` where it lies now as another ``limit`` and ``per_class`` select it (an earlier sweep's cells of
    another selection: measured on the files as they are now?): its fingerprint, state and earlier states, each
    made once and only when asked for (a state stats every file it selects)."""

    def __init__(self, data: DataSource, limit: int | None, per_class: int | None) -> None:
        self.source = selected(data, limit, per_class)

    @cached_property
    def fingerprint(self) -> str:
        return self.source.fingerprint()

    @cached_property
    def state(self) -> str:
        return self.source.state()

    @cached_property
    def earlier_states(self) -> list[str]:
        return self.source.earlier_states()


def out_folder(cfg: SweepConfig, model_name: str | None = None) -> Path | None:
    """The sweep's run folder: ``--out``, else ``<root>/<--label, or the model's name>`` (None: it is named after
    the model, whose name is not known yet)."""
    if cfg.out:
        return Path(cfg.out)
    name = cfg.label or model_name
    return Path(cfg.root) / name if name else None


def load(cfg: SweepConfig, schemes: list[Scheme], device, progress: Progress, primary: bool = True,
         early: EarlyMark | None = None) -> Sweep:
    """The checkpoint, its grid of sizes and embedding spec, the preprocessing, the data and the run folder
    (``primary``: this process prepares the run folder; the other ranks of a job only write into it; ``early``:
    marks the sweep as begun in it as soon as it is known)."""
    loaded = load_model(cfg.model, cfg.checkpoint)
    if loaded.num_classes == 0:  # inspect and export take it: they only rewrite its embedding
        raise UserError(headless_reason(loaded))
    for note in loaded.notes:
        progress.log(note)
    out = out_folder(cfg, loaded.name)
    if early is not None:
        early.at(out, loaded.name)
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
    crops = cfg.crop_pct or ()
    preprocess = EvalPreprocess.from_config(loaded.data_config(), crops[0] if crops else None, cfg.interpolation, decode)
    if loaded.label_names is None:
        raise UserError(f"{loaded.name} has {loaded.num_classes} classes but no class names; "
                        "give a checkpoint folder whose config.json lists label_names")
    data = open_data(cfg.data, loaded.label_names, cfg.data_format, cfg.limit, cfg.per_class)
    if cfg.batch_size != "auto":
        check_memory(loaded.model, sizes, cfg.batch_size, device, len(data))
    refuse_out_inside_data(out, data.location)
    run_dir = RunDir(out, primary)
    sweep = Sweep(cfg, schemes, loaded, grid, sizes, spec, preprocess, data, run_dir, progress,
                  scoring(cfg, loaded, data, progress), tuple(crops))
    sweep.real_labels  # noqa: B018  (a --real-labels the data cannot use fails now, not after the image loop)
    return sweep


def refuse_out_inside_data(out: Path, data: str) -> None:
    """A run folder inside a data folder would become part of the data set (a class folder named ``out``, a
    results.parquet among its shards): every later sweep of that data would fail or read other images."""
    root = Path(data).expanduser()
    if not root.is_dir():
        return  # a file, a glob or a hub data set: nothing of the run is read as data
    root, where = root.resolve(), out.expanduser().resolve()
    if where == root or root in where.parents:
        raise UserError(f"--out {out} is inside the data folder {data}: the run's files would become part of the data "
                        "set; choose an --out outside it")


def scoring(cfg: SweepConfig, loaded: LoadedModel, data: DataSource, progress: Progress) -> ClassSubset | None:
    """The classes images are scored over: ``--class-subset``, or ImageNet-R/-A when the data's classes are
    exactly one of them; otherwise all, with a note when the data holds far fewer classes than the model."""
    present = {loaded.label_names[int(i)] for i in np.unique(data.labels())}
    chosen = subset(cfg.class_subset) if cfg.class_subset else detect(present)
    if chosen is not None:
        chosen.mask(loaded.label_names)  # its classes must be the model's
        chosen.require_covers(present)
        if not cfg.class_subset:
            progress.log(f"the data's {len(present)} classes are exactly {chosen.name}'s: scored over those classes, "
                         f"as {chosen.name} is (logits of the others left out)")
    elif len(present) < loaded.num_classes / 2:
        held = "the data holds" if data.limit is None and cfg.per_class is None else \
            "the images --limit/--per-class select hold"
        progress.log(f"{held} {len(present)} of the model's {loaded.num_classes} classes, scored over all "
                     f"{loaded.num_classes}; --class-subset imagenet-r|imagenet-a|FILE restricts the logits")
    return chosen


def cell(sweep: Sweep, crop_pct: float, **fields: Any) -> CellIdentity:
    """The identity of one of this sweep's cells (``scheme``, ``img_size``, ``global_size`` given) on the crops
    of ``crop_pct``."""
    cfg = sweep.cfg
    identity = CellIdentity(model=sweep.loaded.name, checkpoint_sha256=sweep.loaded.sha256,
                            preprocess=replace(sweep.preprocess, crop_pct=crop_pct).as_dict(),
                            data_fingerprint=sweep.data_fingerprint,
                            limit=sweep.data.limit, per_class=cfg.per_class, dtype=cfg.dtype_name,
                            data_state=sweep.data_state, class_subset=sweep.subset.name if sweep.subset else None,
                            model_args=sweep.loaded.model_args, native_size=native_in_identity(sweep.loaded),
                            **fields)
    return sweep.run_dir.known_identity(identity, lambda: sweep.earlier_states)


def native_in_identity(loaded: LoadedModel) -> int | None:
    """The native size as part of a cell's identity where the weights do not fix it (abs-win checkpoints: a
    config.json that says another size makes other cells, interp's resampled from another grid)."""
    return loaded.native_size if loaded.pos_embed_kind == "abswin" else None


def plan(sweep: Sweep, primary: bool = True) -> list[Forward]:
    """One forward per distinct embedding per size; every cell identified, its identity on disk (written
    by the primary process: the other ranks of a job plan the same cells)."""
    forwards = plan_forwards(sweep.spec, sweep.schemes, sweep.sizes, sweep.loaded.geometry, sweep.crops)
    identify(forwards, sweep.schemes, sweep.spec, lambda **fields: cell(sweep, **fields))
    for fwd in forwards if primary else ():
        for identity in fwd.cells.values():
            sweep.run_dir.cell(identity.key).write_meta(identity.fields())
    return forwards


def columns(sweep: Sweep, device: str, kind: str | None = None) -> SweepColumns:
    loaded = sweep.loaded
    return SweepColumns(label=sweep.label, model=loaded.name, arch=loaded.arch, pretrained_tag=loaded.tag or "",
                        num_classes=loaded.num_classes, checkpoint=loaded.checkpoint,
                        pos_embed_kind=loaded.pos_embed_kind, native_size=loaded.native_size, explained_energy=sweep.spec.explained,
                        data=sweep.data.location, data_layout=sweep.data.layout, device=device,
                        data_name=sweep.cfg.data_name, data_place=sweep.data_place, device_kind=kind)


def uncounted_gflops(sweep: Sweep, forwards: list[Forward], gflops: dict[int, float],
                     device: torch.device) -> dict[int, float]:
    """FLOPs per image of the sizes whose cells need a row though no rank evaluated them now: their records were
    complete when an earlier run stopped before building the rows (counted as the loop counts them)."""
    sizes = sorted({fwd.size for fwd in forwards if fwd.size not in gflops
                    and any(not sweep.run_dir.cell(key).is_done() for key in fwd.keys.values())})
    if not sizes:
        return {}
    return {size: counted_net(sweep.loaded, size, next(f for f in forwards if f.size == size).embedding, device)[1]
            for size in sizes}


def cell_rows(sweep: Sweep, forwards: list[Forward], gflops: dict[int, float], device: str,
              kind: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every cell's row (built once, when its records are complete; read back after) and the failed images
    (``device``: this run's, in full; ``kind``: its :func:`.provenance.device_kind`)."""
    shared = columns(sweep, device, kind)
    real = sweep.real_labels
    labels_used = {"real_labels": real_labels_digest(real)} if real is not None else {}
    uses_fit = {s.name: s.uses_fit for s in sweep.schemes}
    n_total = len(sweep.data)
    rows, failed = [], {}
    for fwd in forwards:
        for scheme, identity in fwd.cells.items():
            store = sweep.run_dir.cell(identity.key)
            if not store.is_done():
                row, bad = cell_row(shared, identity, store, n_total, [s for s in fwd.schemes if s != scheme],
                                    gflops.get(fwd.size), uses_fit[scheme])
                if real is not None:
                    row.update(real_columns(real, store, sweep.loaded.label_names, n_total), **labels_used)
                store.write_row(row)
            else:
                row, finished = store.read_stamped_row()
                # its row counts the images it could not decode: where none, the records need not be read
                bad = {} if same_value(row.get("n_failed"), 0) else store.failed_images(n_total)
                if real is not None:  # kept with the row, so later views show it without --real-labels too
                    figures = {**real_columns(real, store, sweep.loaded.label_names, n_total), **labels_used}
                    if not all(same_value(row.get(k), v) for k, v in figures.items()):
                        store.write_row({**row, **figures}, finished)
                    row.update(figures)
                row.update(label=shared.label, num_classes=shared.num_classes,  # names, not part of the cell
                           data_name=shared.data_name, data=shared.data, data_place=shared.data_place)
            failed.update(bad)
            rows.append(row)
    return rows, failed


def records_versions(sweep: Sweep, forwards: list[Forward]) -> dict[str, Any]:
    """run.json's ``measured_with_other_versions``: the sweep's cells whose records were measured (in part) with
    other package versions than this run's (reused from an earlier sweep, or resumed across an upgrade), and those
    versions (null: unrecorded); nothing when every record is this environment's."""
    keys = sorted({key for fwd in forwards for key in fwd.keys.values()})
    measured = {key: sweep.run_dir.cell(key).measured_with() for key in keys}
    versions = other_versions(list(measured.values()))
    if not versions:
        return {}
    cells = [key for key, found in measured.items() if other_versions([found])]
    return {"measured_with_other_versions": {"cells": cells, "versions": versions}}


def provenance(sweep: Sweep, device, t_start: float) -> dict[str, Any]:
    """run.json: what ran, on what, with which data and statistics."""
    cfg, loaded, data, spec = sweep.cfg, sweep.loaded, sweep.data, sweep.spec
    return {
        "command": cfg.command or " ".join(sys.argv), "config": asdict(cfg), "started": iso_time(t_start),
        "started_unix": round(t_start, 3),  # with wall_s: where a process's time went before and after the sweep
        "label": sweep.label, "model": loaded.name, "checkpoint": loaded.checkpoint,
        "checkpoint_sha256": loaded.sha256, "checkpoint_notes": loaded.notes,
        "license": loaded.license, "native_size": loaded.native_size, "pos_embed_kind": loaded.pos_embed_kind,
        "explained_energy": spec.explained, "energy_shares": spec.energy_shares(),
        "sizes": sweep.sizes, "skipped": [{"img_size": s, "reason": r} for s, r in sweep.grid.skipped],
        "schemes": [s.name for s in sweep.schemes], "preprocess": sweep.preprocess.as_dict(),
        "crop_pcts": list(sweep.crops),
        "class_subset": sweep.subset.name if sweep.subset else None,
        "data": {"name": cfg.data_name, "location": data.location, "layout": data.layout, "n_images": len(data),
                 "fingerprint": sweep.data_fingerprint, "state": sweep.data_state, "limit": cfg.limit,
                 "per_class": cfg.per_class},
        "device": device_name(device), "dtype": cfg.dtype_name, "host": socket.gethostname(),
        "versions": versions(), "git_sha": git_sha(), "statistics": STATS_SETTINGS,
    }


def too_many_failed(n_failed: int, n_images: int, max_failed: float) -> bool:
    """More of the images failed to decode than the share ``max_failed`` allows: the sweep is not ok."""
    return bool(n_images) and n_failed / n_images > max_failed


def problems(table: pd.DataFrame, n_failed: int, n_images: int, max_failed: float) -> list[str]:
    """Why this sweep's numbers must not be taken as they are (empty: they can)."""
    out = []
    failed = table[table["status"].eq("failed")]
    if len(failed):
        cells_by_reason: dict[str, list[str]] = {}
        for r in failed.itertuples():
            cells_by_reason.setdefault(str(r.reason), []).append(f"{r.scheme}@{int(r.img_size)}")
        out.append(f"{len(failed)} cell(s) gave no result: " + "; ".join(
            f"{', '.join(cells)}: {reason}" for reason, cells in cells_by_reason.items()))
    if too_many_failed(n_failed, n_images, max_failed):
        out.append(f"{n_failed} of {n_images} images ({100 * n_failed / n_images:.2f} %) could not be decoded, more "
                   f"than --max-failed {100 * max_failed:g} %; run.json lists them")
    out += [check.problem() for check in reference_checks(table) if not check.ok]
    return out


def _real_labels(source: str | None, data: DataSource):
    """ImageNet-ReaL labels for ``--real-labels timm|PATH``; an error when the data has no val numbers."""
    if source is None:
        return None
    from ..data.real import load_real_labels, real_targets

    real = load_real_labels(None if source == "timm" else source)
    real_targets(real, data.image_ids(), data.layout)
    return real
