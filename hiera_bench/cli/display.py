"""Rich renderings of the tidy table."""

from __future__ import annotations

import math

from rich.table import Table

from ..stats import significance_mark


def _num(v, spec: str) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def pivot_table(df, model: str) -> Table:
    part = df[df["model"] == model]
    native = int(part["native_size"].iloc[0])
    schemes = list(dict.fromkeys(part["scheme"]))
    table = Table(title=f"{model} — top-1 % (Δ vs native {native} px)", title_justify="left")
    table.add_column("size", justify="right")
    table.add_column("rel", justify="right")
    for scheme in schemes:
        table.add_column(scheme, justify="right")
    table.add_column("GFLOPs", justify="right")
    table.add_column("img/s", justify="right")
    for size, at in part.groupby("img_size", sort=True):
        cells, gflops, speed = [], "–", "–"
        for scheme in schemes:
            row = at[at["scheme"] == scheme]
            if row.empty:
                cells.append("")
                continue
            r = row.iloc[0]
            if r["status"] != "ok":
                cells.append("[dim]skipped[/dim]")
                continue
            text = _num(r["top1"], ".3f")
            low, high = r.get("top1_ci_low"), r.get("top1_ci_high")
            if _num(low, "") != "–" and _num(high, "") != "–":
                text += f" [dim]± {(high - low) / 2:.2f}[/dim]"
            delta = r["top1_delta_vs_native"]
            if int(size) != native and not (isinstance(delta, float) and math.isnan(delta)):
                colour = "green" if delta > 0 else "red" if delta < 0 else "white"
                text += f" [{colour}]({delta:+.3f}{significance_mark(r.get('delta_p'))})[/{colour}]"
            if isinstance(r["shared_with"], str) and r["shared_with"]:
                text += " ≡"
            cells.append(text)
            gflops, speed = _num(r["gflops"], ".2f"), _num(r["imgs_per_s"], ".1f")
        label = f"[bold]{int(size)}*[/bold]" if int(size) == native else str(int(size))
        table.add_row(label, f"{int(size) / native:.2f}", *cells, gflops, speed)
    table.caption = ("* native size   ± half the 95 % bootstrap CI   */**/*** Δ significant at p<0.05/0.01/0.001 "
                     "(exact McNemar)   ≡ identical embedding to another scheme: evaluated once")
    return table
