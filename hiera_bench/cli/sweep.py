"""``hiera-bench sweep``: evaluate a checkpoint over a grid of sizes under each position-embedding scheme."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.progress import ProgressColumn
from rich.text import Text

from .app import app, err, out


class RichProgress:
    """Progress bar with rate and ETA over all (image x forward) work, on stderr (under torchrun: rank 0's,
    counting every rank's work)."""

    def __init__(self, enabled: bool = True) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _RateColumn(), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), console=err, transient=False, disable=not enabled,
        )
        self.task = None

    def start(self, total: int, description: str) -> None:
        self.progress.start()
        self.task = self.progress.add_task(description, total=total)

    def advance(self, n: int) -> None:
        if self.task is not None:
            self.progress.advance(self.task, n)

    def log(self, message: str) -> None:
        err.print(f"[yellow]warning:[/yellow] {message}")

    def stop(self) -> None:
        self.progress.stop()


class _RateColumn(ProgressColumn):
    """(image x forward) pairs per second, over the whole job."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:,.0f}/s" if task.speed else "-/s")


@app.command()
def sweep(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="timm Hiera name (with or without .tag) or alias, e.g. hiera_small."),
    res: Optional[str] = typer.Option(None, "--res", "-r", help="Sizes: start:stop:step (inclusive), a,b,c or one size. Default: 0.75x to 1.5x native in stride steps."),
    schemes: str = typer.Option("interp,abswin", "--schemes", "-s", help="Comma-separated position-embedding schemes."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Local weights: .safetensors, .pth/.pt/.bin, or a hub-style folder."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="ImageNet val: a path, a glob or hf:REPO. Default: $HIERA_BENCH_DATA or hf:ILSVRC/imagenet-1k."),
    data_format: Optional[str] = typer.Option(None, "--data-format", help="Force a data layout instead of detecting it."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder. Default: results/<model>/."),
    batch_size: str = typer.Option("auto", "--batch-size", "-b", help="Images per forward, or auto: on a GPU the largest power of two up to 256 that fits the widest size (a trial forward decides); 32 on the CPU."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="DataLoader worker processes (default: on a GPU the cores but one; on the CPU none, each batch decoded on every core between forwards)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    amp: str = typer.Option("none", "--amp", help="Autocast: none, bf16 or fp16."),
    channels_last: bool = typer.Option(False, "--channels-last", help="Run convolutions in channels-last memory format."),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile every forward (falls back to eager if compiling fails)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate only the first N images (by image id)."),
    per_class: Optional[int] = typer.Option(None, "--per-class", help="Evaluate only the first K images of every class."),
    crop_pct: Optional[float] = typer.Option(None, "--crop-pct", help="Override the checkpoint's crop_pct."),
    interpolation: Optional[str] = typer.Option(None, "--interpolation", help="Override the resize interpolation (bicubic, bilinear, ...)."),
    global_size: Optional[int] = typer.Option(None, "--global-size", help="Global grid side for the abswin fit of full-grid checkpoints (default: the native mask-unit grid)."),
    max_failed: float = typer.Option(1.0, "--max-failed", help="Percent of images that may fail to decode; above it the sweep exits 1 after writing its results."),
    save_every: int = typer.Option(2048, "--save-every", help="Commit per-image records every N images (resume granularity)."),
    force: bool = typer.Option(False, "--force", help="Recompute cells that are already finished."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first image that cannot be decoded."),
    decode: str = typer.Option("pil", "--decode", help="pil: timm's decode and resize, bit-identical (default). device: torchvision's decode_jpeg and resize on the device (nvJPEG on a GPU; for hosts whose CPUs are the bound; cells of their own)."),
    real_labels: Optional[str] = typer.Option(None, "--real-labels", help="Add ImageNet-ReaL real_top1/real_top5: 'timm' (the labels timm ships) or a path to real.json."),
    as_json: bool = typer.Option(False, "--json", help="Print the tidy table as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Evaluate MODEL at every size of --res under every scheme; write results.csv/.parquet/.md and run.json."""
    from ..sweep import SweepConfig, run_sweep
    from ..errors import UserError

    if save_every < 1:
        raise UserError(f"--save-every must be at least 1, got {save_every}")
    if limit is not None and per_class is not None and limit < 1:
        raise UserError("--limit must be at least 1")
    cfg = SweepConfig(
        model=model, checkpoint=str(checkpoint) if checkpoint else None, res=res, schemes=schemes, data=data,
        data_format=data_format, out=str(out_dir) if out_dir else None, batch_size=batch_size, workers=workers,
        device=device, amp=amp, limit=limit, per_class=per_class, crop_pct=crop_pct, interpolation=interpolation,
        global_size=global_size, save_every=save_every, force=force, strict=strict, channels_last=channels_last,
        compile=compile_, real_labels=real_labels, decode=decode, max_failed=max_failed / 100.0,
        command="hiera-bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    )
    progress = RichProgress(enabled=not quiet and not as_json)
    try:
        result = run_sweep(cfg, progress)
    finally:
        progress.stop()
    show_result(result, as_json)


def show_result(result, as_json: bool) -> None:
    """The pivot and headline of each section, then what is wrong with the numbers, if anything:
    a sweep whose numbers cannot be trusted as they are exits 1 after writing them."""
    from ..pivot import pivot, terminal

    table = result.table
    if not result.primary:  # another rank of a torchrun job: rank 0 shows the result
        if not result.ok:
            raise typer.Exit(1)
        return
    if as_json:
        out.print(json.dumps(json.loads(table.to_json(orient="records")), indent=1), markup=False)
    else:
        for section in pivot(table):
            out.print(terminal(section))
            out.print(section.headline, markup=False)
        out.print(f"wrote {result.out}/results.csv, results.parquet, results.md, predictions.parquet, run.json",
                  markup=False)
    failed = sum(1 for _ in result.run.get("failed_images", []))
    if failed and result.ok:
        err.print(f"note: {failed} of {result.run['data']['n_images']} images could not be decoded and are left out "
                  "of every cell (run.json lists them)", markup=False)
    for problem in result.problems:
        err.print(f"error: {problem}", markup=False)
    if not result.ok:
        raise typer.Exit(1)
