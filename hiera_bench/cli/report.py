"""``hiera-bench report``: merge run folders into paper-ready tables, plots and one headline per model."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .app import app, out


@app.command()
def report(
    runs: List[Path] = typer.Argument(..., help="Run folders (the --out of sweeps) to merge."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Report folder. Default: RUN_DIR/report for one run, ./report for several."),
) -> None:
    """Merge RUN_DIRs; write report.md/.csv/.parquet/.tex and top-1 vs size / vs GFLOPs plots (PNG, SVG)."""
    from ..report import build, headlines, write_report
    from .display import pivot_table

    target = out_dir or (runs[0] / "report" if len(runs) == 1 else Path("report"))
    table = build(runs)
    paths = write_report(table, runs, target)
    display = table.assign(model=table["label"])
    for label, line in headlines(table).items():
        out.print(pivot_table(display, label))
        out.print(line, markup=False, soft_wrap=True)
    out.print(f"wrote {len(paths)} files to {target}: " + ", ".join(p.relative_to(target).as_posix() for p in paths),
              markup=False, soft_wrap=True)
