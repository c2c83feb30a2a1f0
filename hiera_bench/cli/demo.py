"""``hiera-bench demo``: the whole product offline, on two tiny Hiera checkpoints trained by the project."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app, err, out


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("results/demo"), "--out", "-o", metavar="DIR", help="Where to write the results."),
    device: str = typer.Option("cpu", "--device", metavar="DEVICE", help="cpu (matches the committed baseline), auto, cuda, mps."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Sweep two tiny shipped Hiera checkpoints (native 128 px) over 64-256 px on generated images, offline;
    print one table of both, the headlines and the abs-win checkpoint's embedding structure."""
    from ..demo.run import contrast_lines, inspect_lines, run_demo
    from ..pivot import pivot, terminal
    from .sweep import RichProgress

    result = run_demo(out_dir, device=device, progress_factory=lambda: RichProgress(enabled=not quiet),
                      log=lambda m: err.print(m, markup=False))
    if result.report is not None:
        table = pivot(result.report)
        out.print(terminal(table))
        for group in table.groups:
            out.print(f"{group.label}: {group.headline}", markup=False, soft_wrap=True)
        for line in contrast_lines(result.report):
            out.print(line, markup=False, soft_wrap=True)
    else:
        for name, part in result.table.groupby("demo_checkpoint", sort=False):
            out.print(f"\n{name}", markup=False)
            table = pivot(part.drop(columns=["demo_checkpoint"]))
            out.print(terminal(table))
            for group in table.groups:
                out.print(group.headline, markup=False)
    if result.inspection is not None:
        out.print(f"\nposition embedding of {result.inspection.model} (hiera-bench inspect):", markup=False)
        for line in inspect_lines(result.inspection):
            out.print(line, markup=False, soft_wrap=True)
    written = [f"{p}/" for p in result.runs.values()] + [str(result.out / "results.csv"), str(result.out / "summary.md")]
    written += [str(p) for p in result.plots]
    out.print("wrote " + ", ".join(written), markup=False, soft_wrap=True)
