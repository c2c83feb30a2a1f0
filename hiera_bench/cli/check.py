"""``hiera-bench check``: the CI gate. Exit 0 when every cell holds, 1 when any regressed, 2 on usage errors."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import typer

from .app import app, out, print_json


def _num(v, spec: str) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def diff_table(result):
    from rich.table import Table

    verdict_style = {"hold": "green", "drop": "bold red", "below CI": "bold red", "not evaluated": "bold red"}
    limit = f"tolerance {result.tol:g}" + (" and baseline 95 % CI" if result.use_ci else "")
    table = Table(title=f"check {result.metric}: {len(result.cells)} cells vs baseline ({limit})", title_justify="left")
    crops = len({c.crop_pct for c in result.cells}) > 1  # a --crop-pct list: the same scheme and size per crop
    for name in ("model", "scheme", "size", *(("crop",) if crops else ()), "baseline", "run", "Δ"):
        table.add_column(name, justify="left" if name in ("model", "scheme") else "right")
    if result.use_ci:
        table.add_column("baseline CI", justify="right")
    table.add_column("verdict")
    for c in result.cells:
        style = verdict_style[c.verdict]
        delta = _num(c.delta, "+.3f")
        cells = [c.model, c.series, str(c.img_size), *((_num(c.crop_pct, "g"),) if crops else ()),
                 _num(c.baseline, ".3f"), _num(c.value, ".3f"), delta]
        if result.use_ci:
            cells.append(f"[{_num(c.ci_low, '.2f')}, {_num(c.ci_high, '.2f')}]")
        verdict = c.verdict + (f" ({c.note})" if c.note else "")
        table.add_row(*cells, f"[{style}]{verdict}[/{style}]")
    return table


def _new_name(cell: dict, crops: bool, models: bool) -> str:
    from ..check import series_text

    crop = f" crop {cell['crop_pct']:g}" if crops and cell.get("crop_pct") is not None else ""
    model = f"{cell['model']} " if models else ""
    return f"{model}{series_text(cell['scheme'], cell.get('global_size'))}@{cell['img_size']}{crop}"


@app.command()
def check(
    run: Path = typer.Argument(..., metavar="RUN", help="Run folder (the --out of a sweep) or its results.csv/.parquet."),
    baseline: Path = typer.Option(..., "--baseline", metavar="BASELINE", help="Baseline run folder or results .csv/.parquet."),
    tol: float = typer.Option(0.2, "--tol", metavar="POINTS", help="Largest allowed drop, in --metric's own units: percentage points of top1/top5, "
                             "nats of nll (mean per image), percentage points of ece."),
    metric: str = typer.Option("top1", "--metric", metavar="METRIC", help="top1, top5, nll or ece (lower is better for nll and ece)."),
    ci: bool = typer.Option(False, "--ci", help="Also fail a cell whose value falls below the baseline's 95 % CI (top1)."),
    allow_missing_provenance: bool = typer.Option(False, "--allow-missing-provenance", help="Compare tables that lack checkpoint/data/preprocessing columns (e.g. made by hand)."),
    as_json: bool = typer.Option(False, "--json", help="Print the verdicts as JSON on stdout."),
) -> None:
    """Compare every cell of RUN with --baseline: exit 0 if all hold, 1 if any regressed, 2 on usage errors."""
    from ..check import check_paths

    result = check_paths(run, baseline, metric, tol, ci, allow_missing_provenance)
    if as_json:
        print_json(result.as_dict(), indent=1)
    else:
        out.print(f"run: {result.run_source}   baseline: {result.baseline_source}", markup=False, soft_wrap=True)
        out.print(diff_table(result))
        failed = [c for c in result.cells if c.failed]
        for note in result.notes:
            out.print(f"note: {note}", markup=False, soft_wrap=True)
        if result.new:
            out.print(f"{len(result.new)} cell(s) not in the baseline, not checked: "
                      + ", ".join(_new_name(n, len({m.get("crop_pct") for m in result.new}) > 1,
                                            len({m["model"] for m in result.new} | {c.model for c in result.cells}) > 1)
                                  for n in result.new),
                      markup=False, soft_wrap=True)
        if failed:
            out.print(f"FAIL: {len(failed)} of {len(result.cells)} cells regressed in {metric}", markup=False)
        else:
            out.print(f"ok: all {len(result.cells)} cells hold in {metric}", markup=False)
    if not result.ok:
        sys.exit(1)
