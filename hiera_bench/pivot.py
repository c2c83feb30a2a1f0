"""The results pivot: one model of "rows = size, columns = series, cells = top-1 ± CI (Δ vs native)", and
thin renderers of it for the terminal, markdown and LaTeX.

:func:`pivot` turns the annotated tidy table into :class:`Section`\\ s (one per measurement of a model, as
:func:`hiera_bench.cells.section_labels` names them); every renderer reads only sections, so the three
outputs agree on what a cell says, which notes it needs and how a missing value reads (:func:`fmt`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from .cells import section_labels, series_names
from .stats import significance_mark

MISSING = "–"


def fmt(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec``, or :data:`MISSING` for None/NaN/NA."""
    return MISSING if missing(value) else format(value, spec)


def missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class PivotCell:
    """One series at one size."""

    status: str
    reason: str = ""
    top1: float = math.nan
    half_ci: float | None = None
    delta: float | None = None  # vs the native size of the same series; None at the native size
    delta_p: float | None = None
    differs_from_reference: bool = False  # exact McNemar p < 0.05 against the reference series
    shared: bool = False  # identical embedding to another series: evaluated once


@dataclass(frozen=True)
class PivotRow:
    size: int
    rel: float
    native: bool
    cells: dict[str, PivotCell]
    gflops: float | None
    imgs_per_s: float | None


@dataclass(frozen=True)
class Section:
    """One measurement of one model: its sizes by its series."""

    label: str
    native: int
    series: list[str]
    rows: list[PivotRow]
    reference: str | None
    headline: str
    notes: list[str] = field(default_factory=list)


def pivot(table: pd.DataFrame) -> list[Section]:
    """Sections of the annotated tidy table, in table order."""
    if table.empty:
        return []
    df = table.assign(_label=section_labels(table), _series=series_names(table))
    return [_section(label, part) for label, part in df.groupby("_label", sort=False)]


def _section(label: str, part: pd.DataFrame) -> Section:
    native = int(part["native_size"].iloc[0])
    series = list(dict.fromkeys(part["_series"]))
    rows = []
    for size, at in part.groupby("img_size", sort=True):
        cells = {name: _cell(r) for name, r in zip(at["_series"], (row for _, row in at.iterrows()))}
        ok = at[at["status"].eq("ok")]
        rows.append(PivotRow(int(size), int(size) / native, int(size) == native, cells,
                             _value(ok["gflops"].iloc[-1]) if len(ok) else None,
                             _value(ok["imgs_per_s"].iloc[-1]) if len(ok) else None))
    refs = [r for r in part.get("mcnemar_ref", pd.Series(dtype=object)) if isinstance(r, str) and r]
    return Section(label, native, series, rows, refs[0] if refs else None, headline(part), legend(part))


def _cell(r: pd.Series) -> PivotCell:
    if r["status"] != "ok":
        return PivotCell(str(r["status"]), str(r.get("reason", "") or ""))
    low, high = r.get("top1_ci_low"), r.get("top1_ci_high")
    native = int(r["img_size"]) == int(r["native_size"])
    p = r.get("mcnemar_p")
    return PivotCell(
        "ok", top1=float(r["top1"]), half_ci=None if missing(low) or missing(high) else (high - low) / 2,
        delta=None if native else _value(r.get("top1_delta_vs_native")), delta_p=_value(r.get("delta_p")),
        differs_from_reference=not missing(p) and p < 0.05,
        shared=isinstance(r.get("shared_with"), str) and bool(r["shared_with"]),
    )


def _value(v: Any) -> float | None:
    return None if missing(v) else float(v)


def legend(part: pd.DataFrame) -> list[str]:
    """The notes a section needs, one per line."""
    notes = []
    if "top1_ci_low" in part and part["top1_ci_low"].notna().any():
        notes.append("± half-width of the 95 % bootstrap CI (images resampled); Δ vs the native size of the same "
                     "scheme, paired over the same images; * p<0.05, ** p<0.01, *** p<0.001 (exact McNemar).")
    if "mcnemar_p" in part and (part["mcnemar_p"] < 0.05).any():
        ref = next(r for r in part["mcnemar_ref"] if isinstance(r, str) and r)
        notes.append(f"† differs from {ref} at this size (exact McNemar, p<0.05).")
    if part["shared_with"].fillna("").astype(str).str.len().gt(0).any():
        notes.append("≡ identical embedding to another scheme at this size: evaluated once, reported for both.")
    return notes


def headline(part: pd.DataFrame) -> str:
    """One line: the best size and scheme against the native size of that scheme, and whether it is significant."""
    ok = part[part["status"] == "ok"]
    if ok.empty:
        return "no cell evaluated"
    # ties go to the size closest to native: a change of size must earn its place
    ranked = ok.assign(_dist=(ok["img_size"] / ok["native_size"] - 1.0).abs())
    best = ranked.sort_values(["top1", "_dist", "img_size"], ascending=[False, True, True], kind="stable").iloc[0]
    native = int(best["native_size"])
    base = ok[ok["img_size"] == native]
    base = base[base["scheme"] == best["scheme"]] if (base["scheme"] == best["scheme"]).any() else base
    rel = 100.0 * (int(best["img_size"]) / native - 1.0)
    text = f"best: {best['scheme']} @{int(best['img_size'])} ({rel:+.0f} %): {best['top1']:.3f} top-1"
    if not base.empty:
        text += f", {best['top1'] - base['top1'].iloc[0]:+.3f} vs native {native} ({base['top1'].iloc[0]:.3f})"
        low, high, p = best.get("delta_ci_low"), best.get("delta_ci_high"), best.get("delta_p")
        if int(best["img_size"]) != native and not (missing(low) or missing(p)):
            verdict = "significant" if p < 0.05 else "not significant"
            text += f", 95 % CI [{low:+.2f}, {high:+.2f}], p={p:.2g} ({verdict})"
    return text


# --- renderers -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CellStyle:
    """How one output writes the marks of a cell."""

    pm: str = "±"
    dagger: str = "†"
    equiv: str = "≡"
    not_ok: Callable[[PivotCell], str] = lambda c: f"{c.status} ({c.reason})" if c.reason else c.status
    delta: Callable[[float, str], str] = lambda d, stars: f"({d:+.3f}{stars})"
    ci: Callable[[str], str] = lambda text: text


def cell_text(cell: PivotCell, style: CellStyle = CellStyle()) -> str:
    """top-1, ± half the 95 % CI, Δ vs native with its McNemar stars, † when it differs from the reference."""
    if cell.status != "ok":
        return style.not_ok(cell)
    text = fmt(cell.top1, ".3f")
    if cell.half_ci is not None:
        text += " " + style.ci(f"{style.pm} {cell.half_ci:.2f}")
    if cell.delta is not None:
        text += " " + style.delta(cell.delta, significance_mark(cell.delta_p))
    if cell.differs_from_reference:
        text += style.dagger
    if cell.shared:
        text += f" {style.equiv}"
    return text


def markdown(sections: list[Section]) -> str:
    """Per section: rows = size, columns = series, cells = top-1 ± CI (Δ vs native, significance); ready to paste."""
    out = []
    for s in sections:
        out.append(f"### {s.label} (native {s.native} px, top-1 % and Δ vs native)\n")
        out.append("| size | rel | " + " | ".join(s.series) + " |")
        out.append("|---:|---:|" + "---:|" * len(s.series))
        for row in s.rows:
            cells = [cell_text(row.cells[name]) if name in row.cells else "" for name in s.series]
            mark = " **native**" if row.native else ""
            out.append(f"| {row.size}{mark} | {row.rel:.2f} | " + " | ".join(cells) + " |")
        if s.notes:
            out.append("\n" + "  \n".join(s.notes))
        out.append("\n" + s.headline + "\n")
    return "\n".join(out).rstrip() + "\n" if out else ""


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_TEX = CellStyle(pm=r"$\pm$", dagger=r"$^\dagger$", equiv=r"$\equiv$", not_ok=lambda c: "--")


def tex_escape(text: str) -> str:
    return re.sub(r"[\\_%&#${}~^]", lambda m: _TEX_ESCAPES[m.group()], str(text))


def latex(sections: list[Section]) -> str:
    """One booktabs table per section."""
    blocks = ["% hiera-bench report: needs \\usepackage{booktabs}"]
    for s in sections:
        lines = [r"\begin{table}[t]", r"\centering", r"\small",
                 rf"\caption{{{tex_escape(s.label)}: top-1 accuracy (\%) by input size, native {s.native}\,px. "
                 r"$\pm$: half-width of the 95\,\% bootstrap CI; in brackets: $\Delta$ vs native, paired; "
                 r"* $p<0.05$, ** $p<0.01$, *** $p<0.001$ (exact McNemar); $^\dagger$ differs from the reference "
                 r"scheme at that size ($p<0.05$).}",
                 r"\begin{tabular}{rr" + "r" * len(s.series) + "}", r"\toprule",
                 "Size (px) & Rel. & " + " & ".join(tex_escape(name) for name in s.series) + r" \\", r"\midrule"]
        for row in s.rows:
            cells = [cell_text(row.cells[name], _TEX).replace("−", "-") if name in row.cells else "--"
                     for name in s.series]
            size = rf"\textbf{{{row.size}}}" if row.native else str(row.size)
            lines.append(f"{size} & {row.rel:.2f} & " + " & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _rich_delta(delta: float, stars: str) -> str:
    colour = "green" if delta > 0 else "red" if delta < 0 else "white"
    return f"[{colour}]({delta:+.3f}{stars})[/{colour}]"


_TERMINAL = CellStyle(dagger="", not_ok=lambda c: f"[dim]{c.status}[/dim]", delta=_rich_delta,
                      ci=lambda text: f"[dim]{text}[/dim]")


def terminal(section: Section):
    """A rich ``Table`` of one section, with GFLOPs and images/s per size."""
    from rich.table import Table

    table = Table(title=f"{section.label} — top-1 % (Δ vs native {section.native} px)", title_justify="left")
    table.add_column("size", justify="right")
    table.add_column("rel", justify="right")
    for name in section.series:
        table.add_column(name, justify="right")
    table.add_column("GFLOPs", justify="right")
    table.add_column("img/s", justify="right")
    for row in section.rows:
        cells = [cell_text(row.cells[name], _TERMINAL) if name in row.cells else "" for name in section.series]
        label = f"[bold]{row.size}*[/bold]" if row.native else str(row.size)
        table.add_row(label, f"{row.rel:.2f}", *cells, fmt(row.gflops, ".2f"), fmt(row.imgs_per_s, ".1f"))
    table.caption = ("* native size   ± half the 95 % bootstrap CI   */**/*** Δ significant at p<0.05/0.01/0.001 "
                     "(exact McNemar)   ≡ identical embedding to another scheme: evaluated once")
    return table
