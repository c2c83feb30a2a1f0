"""``hiera-bench report``: merge run folders into paper-ready tables, plots and one headline per model."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .app import app, err, out


@app.command()
def report(
    runs: List[Path] = typer.Argument(..., metavar="RUN_DIR", help="Run folders (the --out of sweeps) to merge."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", metavar="DIR", help="Report folder. Default: RUN_DIR/report for one run, ./report for several."),
    labels: Optional[List[str]] = typer.Option(None, "--label", "-l", metavar="NAME", help="Name of each run in the table and figures, one per run in order (default: the label its sweep gave, else the model's name)."),
) -> None:
    """Merge RUN_DIRs into one table (a column group per label, abswin − interp per size) and overlaid figures;
    write report.md/.csv/.parquet/.tex and plots/top1-vs-size, top1-vs-gflops (PNG, SVG)."""
    from ..pivot import pivot, terminal
    from ..report import STORED_NOTE, build, report_folder, write_report

    # one run's report goes into its folder (beside a results file given instead of the folder)
    target = out_dir or ((runs[0] if runs[0].is_dir() else runs[0].parent) / "report" if len(runs) == 1 else Path("report"))
    report_folder().refuse_foreign(target)  # before the runs are read: a folder of the user's is refused at once
    table = build(runs, labels)
    stored = table.attrs.get("stored_statistics")
    if stored:
        err.print(STORED_NOTE.format(labels=", ".join(stored)), markup=False, soft_wrap=True)
    for note in table.attrs.get("unfinished", []):
        err.print(f"note: {note}", markup=False, soft_wrap=True)
    paths = write_report(table, runs, target)
    results = pivot(table)
    out.print(terminal(results))
    for group in results.groups:
        out.print(f"{group.label}: {group.headline}", markup=False, soft_wrap=True)
    out.print(f"wrote {len(paths)} files to {target}: " + ", ".join(p.relative_to(target).as_posix() for p in paths),
              markup=False, soft_wrap=True)
