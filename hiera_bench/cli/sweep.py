"""``hiera-bench sweep``: evaluate checkpoints over a grid of sizes under each position-embedding scheme."""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time
from datetime import timedelta
from types import SimpleNamespace
from pathlib import Path
from typing import List, Optional

import typer

from .app import MODEL_HELP, app, err, out, print_json


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=max(0, int(seconds))))


class RichProgress:
    """Progress on stderr: a spinner while the model loads, then a bar with the rate and an ETA from the
    measured rate; when stderr is not a terminal (SLURM logs, CI), one plain line every ``every`` seconds.
    Under torchrun it is rank 0's, counting every rank's work; the other ranks show nothing."""

    def __init__(self, enabled: bool = True, every: float = 30.0) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn,
                                   TextColumn, TimeElapsedColumn)
        from rich.text import Text

        owner = self

        class Eta(ProgressColumn):
            """Time left at the rate measured since the loop started (rich's own estimate needs two updates
            within 30 s, which large CPU batches never give: it showed -:--:-- all run long)."""

            def render(self, task) -> Text:
                rate = owner.rate()
                if task.total is None or not rate:
                    return Text("eta -:--:--", style="progress.remaining")
                return Text(f"eta {_clock((task.total - task.completed) / rate)}", style="progress.remaining")

        class Rate(ProgressColumn):
            def render(self, task) -> Text:
                rate = owner.rate()
                return Text(f"{rate:,.0f}/s" if rate else "", style="progress.data.speed")

        enabled = enabled and os.environ.get("RANK", "0") == "0"
        self.lines = enabled and not err.is_terminal
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(),
            TimeElapsedColumn(), Eta(), console=err, transient=False, disable=not enabled or self.lines,
        )
        self.every = every
        self.task = None
        self.total = 0
        self.done = 0
        self.description = ""
        self._end: float | None = None  # when the last was: the rate stops there
        self._last_line = self._started = 0.0

    def loading(self, description: str) -> None:
        """A spinner (no total yet) while the checkpoint and data load and the forwards are prepared."""
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task(description, total=None)

    def start(self, total: int, description: str) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task(description, total=total)
        else:
            self.progress.reset(self.task, total=total, completed=0, description=description)
        self.total, self.done, self.description, self._end = total, 0, description, None
        self._started = self._last_line = time.monotonic()
        if self.lines:
            err.print(f"{description}: started", markup=False)

    def advance(self, n: int) -> None:
        now = time.monotonic()
        self.done += n
        if self.done >= self.total:
            self._end = now
        if self.task is not None:
            self.progress.advance(self.task, n)
        # n == 0: a torchrun rank 0 ticking while it waits for the others (the last line is out already)
        if self.lines and n and (now - self._last_line >= self.every or self.done >= self.total):
            self._last_line = now
            rate = self.rate()
            eta = _clock((self.total - self.done) / rate) if rate else "-:--:--"
            share = 100.0 * self.done / self.total if self.total else 100.0
            err.print(f"{self.description}: {self.done:,}/{self.total:,} ({share:.1f} %), "
                      f"{rate or 0:,.0f}/s, eta {eta}", markup=False)

    def rate(self) -> float | None:
        """Images × forwards per second since the loop started (the set-up and compiles before it excluded).

        Not since the first batch was counted: a batch is counted once the next one is queued (on a CPU,
        computed), so the last batch's count came right after the one before it, for no time."""
        if not self.done:
            return None
        elapsed = (self._end or time.monotonic()) - self._started
        return self.done / elapsed if elapsed > 0 else None

    def log(self, message: str) -> None:
        err.print(f"[yellow]warning:[/yellow] {message}")

    def stop(self) -> None:
        if self.task is not None:
            if self.progress.tasks[0].total is None:  # still loading: an error stays one line, no spinner left
                self.progress.update(self.task, visible=False)
            self.progress.stop()
            self.task = None


@app.command()
def sweep(
    ctx: typer.Context,
    model: Optional[List[str]] = typer.Option(None, "--model", "-m", metavar="MODEL", help=MODEL_HELP + " Repeat it (or give a comma list) to sweep several, one after the other."),
    res: Optional[str] = typer.Option(None, "--res", "-r", metavar="SIZES", help="Sizes: start:stop:step (inclusive), a,b,c or one size. Default: 0.75x to 1.5x native in stride steps."),
    img_size: Optional[int] = typer.Option(None, "--img-size", metavar="PX", help="One size (timm's name for it): the same as --res PX."),
    schemes: str = typer.Option("interp,abswin", "--schemes", "-s", metavar="A,B", help="Comma-separated position-embedding schemes."),
    checkpoint: Optional[List[Path]] = typer.Option(None, "--checkpoint", "-c", metavar="PATH", help="Local weights: .safetensors, .pth/.pt/.bin, or a hub-style folder. Repeat it for several checkpoints (one --model for all, or one per checkpoint in order)."),
    data: Optional[List[str]] = typer.Option(None, "--data", "-d", metavar="[NAME=]DATA", help="ImageNet val: a path, a glob or hf:REPO. Default: $HIERA_BENCH_DATA or hf:ILSVRC/imagenet-1k. Repeat it for several data sets (val=/data/val v2=/data/imagenetv2): each gets a run folder <label>/<name>/ and a column group."),
    data_format: Optional[str] = typer.Option(None, "--data-format", metavar="LAYOUT", help="Force a data layout instead of detecting it."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", metavar="DIR", help="Run folder. Default: results/<label>/. With several checkpoints: the folder their run folders <label>/ go in."),
    label: Optional[List[str]] = typer.Option(None, "--label", "-l", metavar="NAME", help="Name of a checkpoint in tables and reports (a column group, the run folder); one per checkpoint, in order. Default: the model's name (several checkpoints: each one's file or folder name)."),
    batch_size: str = typer.Option("auto", "--batch-size", "-b", metavar="N|auto", help="Images per forward, or auto: on a GPU the largest power of two up to 256 that fits the widest size (a trial forward decides); 32 on the CPU."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", metavar="N", help="DataLoader worker processes (default: on a GPU the cores but one; on the CPU none, each batch decoded on every core between forwards)."),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps."),
    amp: str = typer.Option("none", "--amp", metavar="DTYPE", help="Autocast: none, bf16 or fp16; a bare --amp is auto: bf16 on a CUDA GPU, none elsewhere."),
    amp_dtype: Optional[str] = typer.Option(None, "--amp-dtype", metavar="DTYPE", help="timm's spelling: bfloat16/bf16 or float16/fp16 (implies --amp)."),
    channels_last: bool = typer.Option(False, "--channels-last", help="Run convolutions in channels-last memory format."),
    compile_: bool = typer.Option(False, "--compile", "--torchcompile", help="torch.compile every forward (falls back to eager if compiling fails)."),
    limit: Optional[int] = typer.Option(None, "--limit", metavar="N", help="Evaluate only the first N images (by image id)."),
    per_class: Optional[int] = typer.Option(None, "--per-class", metavar="K", help="Evaluate only the first K images of every class."),
    crop_pct: Optional[str] = typer.Option(None, "--crop-pct", metavar="FRACTION[,...]", help="crop_pct instead of the checkpoint's; a comma list (0.875,0.95,1.0) makes crop a second grid axis: every size under every scheme at every crop, from one decode per image."),
    interpolation: Optional[str] = typer.Option(None, "--interpolation", metavar="MODE", help="Override the resize interpolation (bicubic, bilinear, ...)."),
    global_size: Optional[int] = typer.Option(None, "--global-size", metavar="SIDE", help="Global grid side for the abswin fit of full-grid checkpoints (default: the native mask-unit grid)."),
    max_failed: float = typer.Option(1.0, "--max-failed", metavar="PERCENT", help="Percent of images that may fail to decode; above it the sweep exits 1 after writing its results."),
    save_every: int = typer.Option(2048, "--save-every", metavar="N", help="Commit per-image records every N images (resume granularity)."),
    force: bool = typer.Option(False, "--force", help="Recompute cells that are already finished."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first image that cannot be decoded."),
    decode: str = typer.Option("pil", "--decode", metavar="pil|device", help="pil: timm's decode and resize, bit-identical (default). device: torchvision's decode_jpeg and resize on the device (nvJPEG on a GPU; for hosts whose CPUs are the bound; cells of their own)."),
    class_subset: Optional[str] = typer.Option(None, "--class-subset", metavar="imagenet-r|imagenet-a|FILE", help="Score over these classes only (logits of the others left out), as ImageNet-R and -A are scored; detected when the data's classes are exactly one of them."),
    real_labels: Optional[str] = typer.Option(None, "--real-labels", metavar="timm|PATH", help="Add ImageNet-ReaL real_top1/real_top5: 'timm' (the labels timm ships) or a path to real.json."),
    as_json: bool = typer.Option(False, "--json", help="Print the tidy table as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    progress_every: float = typer.Option(30.0, "--progress-every", metavar="SECONDS", help="When stderr is not a terminal (SLURM, CI logs): one progress line every SECONDS."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write plots/top1-vs-size.png and top1-vs-gflops.png into each run folder (report writes SVG too)."),
    config: Optional[Path] = typer.Option(None, "--config", metavar="TOML", help="Take any of these options from a TOML file (keys are the option names: res = \"224:320:32\", model = [\"hiera_small\", \"hiera_tiny\"], crop-pct = [0.875, 1.0], data = {val = \"/data/val\"}); options given on the command line win. run.json records the file and the resolved options."),
) -> None:
    """Evaluate each checkpoint at every size of --res under every scheme; write results.csv/.parquet/.md and
    run.json per checkpoint, then print one table of them all."""
    from ..errors import UserError
    from rich.markup import escape

    from ..interrupts import ends_at_once_on_signals, starting_over

    # torch's extensions call Python from C++ while they load: a Ctrl-C raised there aborts the process (SIGABRT,
    # a C++ terminate) instead of ending it; nothing has run yet, so it ends at once
    with ends_at_once_on_signals():
        from ..data.shared import SharedDecodes
        from ..sweep import SweepConfig, run_sweep, several

    o = SimpleNamespace(**with_config_file(ctx, config))  # the command line wins over the file
    if o.img_size is not None:
        if o.res is not None:
            raise UserError("--img-size and --res both give sizes; keep one (--img-size N is --res N)")
        o.res = str(o.img_size)
    if o.amp_dtype is not None:
        dtypes = {"bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "fp16": "fp16", "half": "fp16"}
        if o.amp_dtype not in dtypes:
            raise UserError(f"--amp-dtype {o.amp_dtype!r}: choose bfloat16 or float16")
        o.amp = dtypes[o.amp_dtype]
    if not (math.isfinite(o.progress_every) and o.progress_every >= 0):
        raise UserError(f"--progress-every must be a number of seconds, 0 or more (0: every batch), got "
                        f"{o.progress_every:g}")
    base = SweepConfig(
        res=o.res, schemes=o.schemes, data_format=o.data_format, out=str(o.out_dir) if o.out_dir else None,
        batch_size=o.batch_size, workers=o.workers, device=o.device, amp=o.amp, limit=o.limit, per_class=o.per_class,
        crop_pct=o.crop_pct, interpolation=o.interpolation, global_size=o.global_size, save_every=o.save_every, force=o.force,
        strict=o.strict, channels_last=o.channels_last, compile=o.compile_, real_labels=o.real_labels, decode=o.decode,
        class_subset=o.class_subset, max_failed=o.max_failed / 100.0, config_file=str(config.resolve()) if config else None,
        plots=o.plots,
        command="hiera-bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    )
    configs = several(base, list(o.model or []), [str(c) for c in o.checkpoint or []], list(o.label or []), list(o.data or []))
    results = []
    with SharedDecodes(len(configs), log=lambda m: err.print(f"[yellow]warning:[/yellow] {escape(m)}")) as shared:
        for i, cfg in enumerate(configs):
            starting_over(cfg.force, [_named(c) for c in configs[i + 1:]])
            progress = RichProgress(enabled=not o.quiet and not o.as_json, every=o.progress_every)
            progress.loading(f"loading {_checkpoint_name(cfg)}")
            try:
                results.append(run_sweep(cfg, progress, shared))
            finally:
                progress.stop()
    show_results(results, o.as_json)


def _checkpoint_name(cfg) -> str:
    return cfg.label or cfg.model or Path(cfg.checkpoint or "").name


def _named(cfg) -> str:
    """A sweep of the command as the user tells it apart: its label, and its data where several are given."""
    name = _checkpoint_name(cfg)
    return f"{name} [data {cfg.data_name}]" if cfg.data_name else name


def with_config_file(ctx: typer.Context, path: Path | None) -> dict:
    """The command's options, with a ``--config`` TOML file's values for those the command line did not give.

    Keys are the long option names (``crop-pct`` or ``crop_pct``, ``plots = false``); a list stands for a
    repeated option or a comma list, a table ``data = {val = "/data/val"}`` for ``--data NAME=PATH``. Each
    value goes through the option's own parser, so it is checked as the command line's would be."""
    from ..errors import UserError
    from ..untrusted import read_toml

    params = dict(ctx.params)
    if path is None:
        return params
    table = read_toml(path, "the sweep config", "write it as TOML with sweep's option names as keys")
    by_key, negative = {}, set()
    for param in ctx.command.params:
        for opt in (*param.opts, *getattr(param, "secondary_opts", ())):
            if opt.startswith("--"):
                by_key[opt[2:].replace("-", "_")] = param
        negative.update(o[2:].replace("-", "_") for o in getattr(param, "secondary_opts", ()) if o.startswith("--"))
    for key, value in table.items():
        param = by_key.get(key.replace("-", "_"))
        if key.replace("-", "_") in negative and isinstance(value, bool):
            value = not value  # no-plots = true is plots = false
        if param is None or param.name == "config":
            keys = ", ".join(sorted({p.opts[0][2:] for p in ctx.command.params if p.opts and p.name != "config"}))
            raise UserError(f"{path}: unknown key {key!r}; sweep's keys are the option names: {keys}")
        if ctx.get_parameter_source(param.name).name != "DEFAULT":  # typer's own click: compare by name
            continue  # given on the command line
        try:
            params[param.name] = param.process_value(ctx, _option_value(param, value))
        except (typer.BadParameter, TypeError, ValueError) as exc:
            raise UserError(f"{path}: {key} = {json.dumps(value, default=str)} is not a valid --{param.opts[0][2:]} "
                            f"({getattr(exc, 'message', exc)})") from None
    return params


def _option_value(param, value):
    """A TOML value as the command line would give the option: lists for a repeated option, a comma list
    for one that takes several values in one, ``NAME=PATH`` pairs for a table."""
    if isinstance(value, dict):
        if not value:  # nothing given: it must not become the option's default
            raise ValueError("an empty table")
        value = [f"{k}={v}" for k, v in value.items()]
    if isinstance(value, list) and not value:
        raise ValueError("an empty list")
    if param.multiple:
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool) and not getattr(param, "is_flag", False):
        raise ValueError("true/false where a value belongs")
    return value


#: run.json's counts of earlier sweeps' cells a sweep left out of the views (or showed in part), and why, as its notes say.
EARLIER_CELLS_NOTES = {
    "cells_of_changed_files": "were measured on files that have changed since: left out of the views (kept in "
                              "cells/); sweep their sizes again to measure them",
    "cells_of_other_model_args": "were measured under other config.json model_args of the checkpoint folder (or "
                                 "before hiera-bench recorded them): left out of the views (kept in cells/); sweep "
                                 "their sizes again to measure them",
    "cells_of_other_scheme_code": "were measured with another version of a scheme registered outside hiera-bench (its "
                                  "code gives another embedding now): left out of the views (kept in cells/); sweep "
                                  "their sizes again to measure them",
    "cells_of_other_real_labels": "of other checkpoints or images were scored with other ReaL labels: shown without "
                                  "ReaL figures (kept in cells/); sweep them with these --real-labels to score them",
}


def show_results(results, as_json: bool) -> None:
    """One pivot of every checkpoint's cells and a headline each, then what is wrong with the numbers, if
    anything: a sweep whose numbers cannot be trusted as they are exits 1 after writing them."""
    import pandas as pd

    from ..pivot import pivot, terminal

    if not all(r.primary for r in results):
        # another rank of a torchrun job: rank 0 shows the result and gives the job its exit status (a rank
        # exiting 1 here had torchrun stop rank 0 while it was still writing its plots)
        return
    table = pd.concat([r.table for r in results], ignore_index=True)
    if as_json:
        # not DataFrame.to_json: it keeps 10 decimals, so a McNemar p of 1e-12 came out as 0.0
        rows = table.astype(object).where(table.notna(), None).to_dict("records")
        print_json(rows, indent=1)
    else:
        # named as results.md names them beside the folder's earlier cells (a second global grid: "abswin (global 2x2)")
        named = [r.series for r in results if r.series is not None]
        merged = pivot(table, pd.concat(named, ignore_index=True) if len(named) == len(results) else None)
        out.print(terminal(merged))
        for group in merged.groups:
            out.print((f"{group.label}: " if merged.several else "") + group.headline, markup=False)
        for r in results:
            drawn = ", plots/" if (r.out / "plots").is_dir() else ""
            out.print(f"wrote {r.out}/results.csv, results.parquet, results.md, predictions.parquet, run.json{drawn}",
                      markup=False)
    from ..cells import several_devices_note
    from ..sweep.run import too_many_failed

    failing = False
    for r in results:
        failed = len(r.run.get("failed_images", []))
        name = f"{r.out}: " if len(results) > 1 else ""
        total = r.run["data"]["n_images"]
        if failed and not too_many_failed(failed, total, r.run["config"]["max_failed"]):  # else an error line
            err.print(f"note: {name}{failed} of {total} images could not be decoded and are left "
                      "out of every cell (run.json lists them)", markup=False)
        for key, why in EARLIER_CELLS_NOTES.items():
            if r.run.get(key, 0):
                err.print(f"note: {name}{r.run[key]} cell(s) of earlier sweeps {why}", markup=False)
        other = r.run.get("measured_with_other_versions")
        if other:
            from ..sweep.provenance import other_versions_note

            err.print(f"note: {name}" + other_versions_note(len(other["cells"]), len(r.run.get("cells", [])),
                                                             other["versions"]), markup=False)
        several = several_devices_note(r.table)
        if several:
            err.print(f"note: {name}{several}", markup=False)
        large = r.run.get("large_images", 0)
        if large:
            from PIL import Image

            err.print(f"note: {name}{large} image{'s are' if large > 1 else ' is'} larger than PIL's decompression-bomb "
                      f"limit ({Image.MAX_IMAGE_PIXELS / 1e6:g} Mpx); decoded anyway, as timm does", markup=False)
        for problem in r.problems:
            err.print(f"error: {name}{problem}", markup=False)
        failing |= not r.ok
    if failing:
        raise typer.Exit(1)


def show_result(result, as_json: bool) -> None:
    show_results([result], as_json)
