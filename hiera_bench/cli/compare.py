"""``hiera-bench compare``: two checkpoints on the same images, paired (exact McNemar, Bonett–Price CI)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import app, out, print_json


def pair_table(result):
    from rich.markup import escape
    from rich.table import Table

    a, b = escape(result.label_a), escape(result.label_b)
    table = Table(title=f"{b} − {a}: top-1 % on the same images", title_justify="left")
    crops = any(p.crop_pct is not None for p in result.pairs)
    for name in ("scheme", "size") + (("crop",) if crops else ()) + ("n", a, b, "Δ (B − A)", "95 % CI", "b / c", "p"):
        table.add_column(name, justify="left" if name == "scheme" else "right")
    for p in result.pairs:
        colour = "green" if p.significant and p.delta > 0 else "red" if p.significant else "white"
        crop = (f"{p.crop_pct:g}",) if crops else ()
        table.add_row(p.scheme, str(p.img_size), *crop, f"{p.n_images:,}", f"{p.top1_a:.3f}", f"{p.top1_b:.3f}",
                      f"[{colour}]{p.delta:+.3f}[/{colour}]", f"[{p.delta_ci_low:+.2f}, {p.delta_ci_high:+.2f}]",
                      f"{p.b_only} / {p.a_only}", f"{p.p:.2g}")
    table.caption = "b / c: images only B / only A gets right; p: exact McNemar; CI: paired difference, Bonett–Price"
    return table


@app.command()
def compare(
    run_a: Path = typer.Argument(..., metavar="RUN_A", help="Run folder of checkpoint A (the --out of a sweep)."),
    run_b: Path = typer.Argument(..., metavar="RUN_B", help="Run folder of checkpoint B, on the same images."),
    at: Optional[int] = typer.Option(None, "--at", metavar="PX", help="Only this input size (default: every size both runs have)."),
    scheme: Optional[str] = typer.Option(None, "--scheme", "-s", metavar="SCHEME", help="Only this scheme (default: every scheme both have)."),
    label_a: Optional[str] = typer.Option(None, "--label-a", metavar="NAME", help="Name of A (default: its label)."),
    label_b: Optional[str] = typer.Option(None, "--label-b", metavar="NAME", help="Name of B (default: its label)."),
    as_json: bool = typer.Option(False, "--json", help="Print the pairs as JSON."),
    markdown: bool = typer.Option(False, "--markdown", help="Print a markdown table instead of the terminal one."),
) -> None:
    """B − A in top-1 at each shared size and scheme, paired over the same images; exit 2 when they differ."""
    from ..compare import compare_runs

    result = compare_runs(run_a, run_b, at, scheme, (label_a, label_b))
    if as_json:
        print_json({"label_a": result.label_a, "label_b": result.label_b, "notes": result.notes,
                    "pairs": result.table().to_dict("records")}, indent=1)
        return
    if markdown:
        out.print(result.markdown(), markup=False)
        return
    out.print(pair_table(result))
    for note in result.notes:
        out.print(f"note: {note}", markup=False)
