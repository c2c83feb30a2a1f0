"""The results pivot: one model of the table a paper shows, and thin renderers of it for the terminal,
markdown and LaTeX.

Rows are input sizes. Columns come in one group per *label* (a checkpoint as measured: ``--label``, by
default the model's name, see :func:`hiera_bench.cells.section_labels`); within a group one column per
series (top-1 ± CI, Δ vs the group's native size) and one per contrast with the reference series
(e.g. ``abswin − interp``: the paired difference on the same images, its CI and McNemar p). Every
renderer reads only a :class:`Pivot`, so the three outputs agree on what a cell says, which notes it
needs and how a missing value reads (:func:`fmt`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from .cells import REFERENCE_SERIES, missing, section_labels, series_names
from .published import reference_checks
from .stats import significance_mark

MISSING = "–"


def fmt(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec``, or :data:`MISSING` for None/NaN/NA."""
    return MISSING if missing(value) else format(value, spec)


@dataclass(frozen=True)
class PivotCell:
    """One series at one size."""

    status: str
    reason: str = ""
    top1: float = math.nan
    ci: tuple[float, float] | None = None  # the exact 95 % interval of top-1
    delta: float | None = None  # vs the native size of the same series; None at the native size
    delta_p: float | None = None
    shared: bool = False  # identical embedding to another series: evaluated once


@dataclass(frozen=True)
class Contrast:
    """A series minus the reference series at one size, paired over the same images, in points."""

    delta: float
    low: float | None
    high: float | None
    p: float | None
    shared: bool = False  # one evaluation for both: zero by construction


@dataclass(frozen=True)
class Group:
    """One label: one checkpoint as measured, its sizes by its series."""

    label: str
    native: int
    n_images: int | None
    series: list[str]
    reference: str | None
    contrasts: list[str]  # the series with a paired difference to ``reference``
    cells: dict[tuple[int, str], PivotCell]
    contrast_cells: dict[tuple[int, str], Contrast]
    gflops: dict[int, float | None]
    imgs_per_s: dict[int, float | None]
    headline: str
    data: str = ""  # the images: the --data name, else where they were read

    def contrast_name(self, series: str) -> str:
        return f"{series} − {self.reference}"


@dataclass(frozen=True)
class Column:
    """One column of the pivot: a series (``kind == "top1"``) or a contrast of a group."""

    group: Group
    kind: str
    series: str

    def title(self, several_groups: bool) -> str:
        name = self.series if self.kind == "top1" else self.group.contrast_name(self.series)
        return f"{self.group.label}: {name}" if several_groups else name


@dataclass(frozen=True)
class BestCrop:
    """The crop_pct(s) with the highest top-1 of one label and series at one size (several when tied)."""

    crops: tuple[float, ...]
    top1: float
    of: int  # how many crops were evaluated there

    def text(self) -> str:
        shown = f"{self.top1:.3f} @{'/'.join(f'{c:g}' for c in self.crops)}"
        return shown if self.of > 1 else f"{shown} (the only crop evaluated)"  # best of one is no finding


@dataclass(frozen=True)
class Pivot:
    groups: list[Group]
    sizes: list[int]
    notes: list[str]
    #: ``(label without its crop, series) -> size -> best crop``, for labels measured at several crop_pcts
    best_crops: dict[tuple[str, str], dict[int, BestCrop]] = field(default_factory=dict)
    #: what the labels side by side were measured under where they differ (:func:`setup_differences`)
    setup: str = ""
    #: the labels side by side, each without its crop (several: the best-crop table names them)
    bases: int = 1

    @property
    def several(self) -> bool:
        return len(self.groups) > 1

    @property
    def native(self) -> int | None:
        """The native size every group shares, if they share one (then a relative-size column makes sense)."""
        natives = {g.native for g in self.groups}
        return natives.pop() if len(natives) == 1 else None

    def columns(self) -> list[Column]:
        return [Column(g, kind, s) for g in self.groups
                for kind, names in (("top1", g.series), ("contrast", g.contrasts)) for s in names]

    def natives_at(self, size: int) -> list[str]:
        return [g.label for g in self.groups if g.native == size]

    def value(self, column: Column, size: int) -> PivotCell | Contrast | None:
        store = column.group.cells if column.kind == "top1" else column.group.contrast_cells
        return store.get((size, column.series))

    def marks(self) -> set[str]:
        """What the table shows besides top-1, for its caption: ``ci``, ``p`` (McNemar stars), ``contrast``
        (a − b columns), ``shared`` (≡) and ``not_ok`` (a cell not evaluated)."""
        values = [self.value(c, size) for c in self.columns() for size in self.sizes]
        found = {"contrast"} if any(c.kind == "contrast" for c in self.columns()) else set()
        for v in values:
            if isinstance(v, PivotCell) and v.ci is not None:
                found.add("ci")
            if (isinstance(v, PivotCell) and v.delta_p is not None) or (isinstance(v, Contrast) and v.p is not None):
                found.add("p")
            if getattr(v, "shared", False):
                found.add("shared")
            if isinstance(v, PivotCell) and v.status != "ok":
                found.add("not_ok")
        return found


def pivot(table: pd.DataFrame, series: pd.Series | None = None) -> Pivot:
    """The pivot of an annotated tidy table: a group per label, in table order. ``series``: each row's series
    (:func:`hiera_bench.cells.series_names`) where ``table`` is part of the table that names them, as a sweep's
    own rows are of its run folder's; by default the names ``table`` gives."""
    if table.empty:
        return Pivot([], [], [])
    df = table.assign(_label=section_labels(table),
                      _series=series_names(table) if series is None else series.set_axis(table.index))
    groups = [_group(label, part) for label, part in df.groupby("_label", sort=False)]
    sizes = sorted({int(s) for s in df["img_size"]})
    setup = setup_differences(df)
    return Pivot(groups, sizes, legend(df) + ([setup] if setup else []), best_crops(df), setup,
                 section_labels(table, ignore=("crop_pct",)).nunique())


#: Settings that move top-1 by themselves (a crop alone moved the demo's by 2-7 points), as a caption names them.
SETUP_FIELDS = {"crop_pct": "crop", "interpolation": "interpolation", "dtype": "dtype", "decode": "decode"}


def setup_differences(df: pd.DataFrame) -> str:
    """A sentence naming the settings in which the labels side by side differ, each label's values ("" when they
    agree): only ``report.csv`` said that one label was measured at crop 0.875 and the next at 1.0."""
    ok = df[df["status"].eq("ok")]
    if "label" not in ok or ok["label"].nunique() < 2:
        return ""
    values = {col: {str(label): "/".join(sorted({f"{v:g}" if isinstance(v, float) else str(v)
                                                  for v in part[col].dropna()}))
                    for label, part in ok.groupby("label", sort=False)}
              for col in SETUP_FIELDS if col in ok}
    differing = [col for col, by_label in values.items() if len(set(by_label.values())) > 1]
    if not differing:
        return ""
    labels = list(values[differing[0]])
    said = "; ".join(f"{label}: " + ", ".join(f"{SETUP_FIELDS[col]} {values[col][label] or '?'}" for col in differing)
                     for label in labels)
    return f"The labels were measured under different settings, which move top-1 by themselves ({said})."


def best_crops(df: pd.DataFrame) -> dict[tuple[str, str], dict[int, BestCrop]]:
    """For each label measured at several crop_pcts (``--crop-pct 0.875,0.95,1.0``): per series and size, the
    crop with the best top-1. Labels are taken without their crop, so a label's crops meet in one entry."""
    if "crop_pct" not in df or df["crop_pct"].nunique() < 2:
        return {}
    ok = df[df["status"].eq("ok")]
    ok = ok.assign(_base=section_labels(ok, ignore=("crop_pct",)))
    out: dict[tuple[str, str], dict[int, BestCrop]] = {}
    for (base, series), part in ok.groupby(["_base", "_series"], sort=False):
        if part["crop_pct"].nunique() < 2:
            continue
        at_size = {}
        for size, at in part.groupby("img_size", sort=True):
            best = at["top1"].max()
            crops = tuple(sorted(float(c) for c in at.loc[at["top1"].eq(best), "crop_pct"]))
            at_size[int(size)] = BestCrop(crops, float(best), int(at["crop_pct"].nunique()))
        out[(str(base), str(series))] = at_size
    return out


def best_crop_rows(p: Pivot) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The best-crop table as column titles and ``(size, cells)`` rows (empty without several crops)."""
    keys = list(p.best_crops)
    several = p.bases > 1  # another label beside the one measured at several crops must not read as its columns
    titles = [f"{label}: {series}" if several else series for label, series in keys]
    rows = [(size, [p.best_crops[k][size].text() if size in p.best_crops[k] else MISSING for k in keys])
            for size in p.sizes if any(size in p.best_crops[k] for k in keys)]
    return titles, rows


def _group(label: str, part: pd.DataFrame) -> Group:
    native = int(part["native_size"].iloc[0])
    series = list(dict.fromkeys(part["_series"]))
    ok = part[part["status"].eq("ok")]
    reference = REFERENCE_SERIES if REFERENCE_SERIES in series else None
    cells, contrasts, gflops, speed = {}, {}, {}, {}
    for size, at in part.groupby("img_size", sort=True):
        size = int(size)
        for name, (_, r) in zip(at["_series"], at.iterrows()):
            cells[(size, name)] = _cell(r)
            if reference and name != reference and r["status"] == "ok" and not missing(r.get("scheme_delta")):
                contrasts[(size, name)] = _contrast(r)
        done = at[at["status"].eq("ok")]
        gflops[size] = _value(done["gflops"].iloc[-1]) if len(done) else None
        speed[size] = _value(done["imgs_per_s"].iloc[-1]) if len(done) else None
    n = int(ok["n_images"].max()) if len(ok) and "n_images" in ok and ok["n_images"].notna().any() else None
    with_contrast = [s for s in series if any(k[1] == s for k in contrasts)]
    return Group(label, native, n, series, reference, with_contrast, cells, contrasts, gflops, speed,
                 headline(part, part["_series"]), data_text(ok))


def data_text(rows: pd.DataFrame) -> str:
    """The --data name of the rows, else their data location (shortened), and what narrowed the images or the
    classes: ``--limit``/``--per-class``, images that failed to decode, ``--class-subset`` (200-way ImageNet-R
    top-1 is not 1000-way top-1); "" when the table says none of these."""
    shown = ""
    for column in ("data_name", "data"):
        names = rows[column].dropna().astype(str) if column in rows else pd.Series(dtype=str)
        names = names[names != ""]
        if len(names):
            shown = short_path(names.iloc[0], 40)
            break
    said = [shown or "the data"]

    def first(col: str) -> Any:
        return rows[col].dropna().iloc[0] if col in rows and rows[col].notna().any() else None

    if first("limit") is not None:
        said.append(f"the first {int(first('limit')):,} by image id (--limit)")
    if first("per_class") is not None:
        said.append(f"{int(first('per_class')):,} per class (--per-class)")
    failed = int(rows["n_failed"].max()) if "n_failed" in rows and rows["n_failed"].notna().any() else 0
    if failed:
        said.append(f"{failed:,} that failed to decode left out")
    if first("class_subset") is not None:
        said.append(f"top-1 over the {first('class_subset')} classes only (--class-subset)")
    return ", ".join(said) if len(said) > 1 or shown else ""


def short_path(path: str, keep: int) -> str:
    """``path`` in at most ``keep`` characters: its end, after an ellipsis."""
    return path if len(path) <= keep else "…" + path[-keep + 1:]


def _cell(r: pd.Series) -> PivotCell:
    if r["status"] != "ok":
        return PivotCell(str(r["status"]), str(r.get("reason", "") or ""))
    low, high = r.get("top1_ci_low"), r.get("top1_ci_high")
    native = int(r["img_size"]) == int(r["native_size"])
    return PivotCell(
        "ok", top1=float(r["top1"]), ci=None if missing(low) or missing(high) else (float(low), float(high)),
        delta=None if native else _value(r.get("top1_delta_vs_native")), delta_p=_value(r.get("delta_p")),
        shared=_shared(r),
    )


def _contrast(r: pd.Series) -> Contrast:
    return Contrast(float(r["scheme_delta"]), _value(r.get("scheme_delta_ci_low")),
                    _value(r.get("scheme_delta_ci_high")), _value(r.get("mcnemar_p")), _shared(r))


def _shared(r: pd.Series) -> bool:
    return isinstance(r.get("shared_with"), str) and bool(r["shared_with"])


def _value(v: Any) -> float | None:
    return None if missing(v) else float(v)


def legend(part: pd.DataFrame) -> list[str]:
    """The notes a table needs, one per line."""
    notes = []
    if "top1_ci_low" in part and part["top1_ci_low"].notna().any():
        notes.append("± half-width of the exact 95 % binomial CI of top-1 ([low, high] where it is lopsided, near 0 or "
                     "100 %); Δ vs the native size of the same scheme, "
                     "paired over the same images; * p<0.05, ** p<0.01, *** p<0.001 (exact McNemar).")
    if "scheme_delta" in part and part["scheme_delta"].notna().any():
        notes.append("a − b: top-1 of scheme a minus scheme b at the same size, paired over the same images, with its "
                     "95 % CI (Bonett–Price) and exact McNemar stars.")
    if part["shared_with"].map(lambda v: not missing(v) and str(v) != "").any():
        notes.append("≡ identical embedding to another scheme at this size: evaluated once, reported for both "
                     "(a difference of zero by construction).")
    return notes


# --- the headline ------------------------------------------------------------------------------------

def headline(part: pd.DataFrame, series: pd.Series | None = None) -> str:
    """One line for one label: each scheme's best size (ties go to the size nearest native, and schemes that
    are one evaluation there are one entry), then the contrast with the reference scheme at the best size
    that is not native (at native they are the same model). ``series``: the rows' series names, as the
    pivot's columns name them (by default those ``part`` gives)."""
    named = series_names(part) if series is None else series.set_axis(part.index)
    ok = part[part["status"] == "ok"]
    if ok.empty:
        return "no cell evaluated"
    ok = ok.assign(_series=named[ok.index], _dist=(ok["img_size"] / ok["native_size"] - 1.0).abs())
    bests = {name: rows.sort_values(["top1", "_dist", "img_size"], ascending=[False, True, True],
                                    kind="stable").iloc[0] for name, rows in ok.groupby("_series", sort=False)}
    entries: list[tuple[list[str], pd.Series]] = []
    for name in sorted(bests, key=_reference_last):  # by name: ties read the same whatever the order of the runs
        same = next((e for e in entries if _one_evaluation(e[1], bests[name])), None)
        if same:
            same[0].append(name)
        else:
            entries.append(([name], bests[name]))
    entries.sort(key=lambda e: -e[1]["top1"])  # the best of all first
    text = "best: " + "; ".join(_best_text(" = ".join(names), best, ok) for names, best in entries)
    contrast = _contrast_text(ok, bests)
    published = "; ".join(check.text() for check in reference_checks(part))
    return text + (f"; {contrast}" if contrast else "") + (f"; {published}" if published else "")


def _reference_last(name: str) -> tuple[bool, str]:
    return name == REFERENCE_SERIES, name


def _one_evaluation(a: pd.Series, b: pd.Series) -> bool:
    """Two series' best cells are one evaluation (identical embeddings, e.g. both schemes at native)."""
    return int(a["img_size"]) == int(b["img_size"]) and a["top1"] == b["top1"] and (_shared(a) or _shared(b))


def _best_text(name: str, best: pd.Series, ok: pd.DataFrame) -> str:
    size, native = int(best["img_size"]), int(best["native_size"])
    if size == native:
        return f"{name} @{size} (native): {best['top1']:.3f} top-1"
    text = f"{name} @{size} ({100.0 * (size / native - 1.0):+.0f} %): {best['top1']:.3f} top-1"
    base = ok[(ok["img_size"] == native) & (ok["_series"] == best["_series"])]
    if not base.empty:
        text += f", {best['top1'] - base['top1'].iloc[0]:+.3f} vs native {native}"
        low, high, p = best.get("delta_ci_low"), best.get("delta_ci_high"), best.get("delta_p")
        if not (missing(low) or missing(p)):
            text += f" (95 % CI [{low:+.2f}, {high:+.2f}], p={p:.2g}, {_verdict(p)})"
    return text


#: The scheme whose contrast with the reference a headline gives where a label has it (README: "abswin − interp at
#: abswin's best size off native").
HEADLINE_SCHEME = "abswin"


def _contrast_order(bests: dict[str, pd.Series]) -> list[str]:
    """The series a headline may contrast with the reference, in the order it prefers them: those of
    :data:`HEADLINE_SCHEME` first, then by name. Never the order of the runs: ``report A B`` and ``report B A``
    once headlined interp-hf − interp and abswin − interp, from whichever run came first."""
    others = [name for name in bests if name != REFERENCE_SERIES]
    return sorted(others, key=lambda name: (bests[name]["scheme"] != HEADLINE_SCHEME, name))


def _contrast_text(ok: pd.DataFrame, bests: dict[str, pd.Series]) -> str:
    """``abswin − interp @288: +1.200, 95 % CI [..], p=.. (significant)`` at the best non-native size, of the first
    series of :func:`_contrast_order` with a contrast off native."""
    if REFERENCE_SERIES not in bests or "scheme_delta" not in ok:
        return ""
    contrasted = ok[ok["scheme_delta"].notna() & (ok["img_size"] != ok["native_size"])]
    name = next((n for n in _contrast_order(bests) if (contrasted["_series"] == n).any()), None)
    if name is None:
        return ""
    off = contrasted[contrasted["_series"] == name]
    best = bests[name]
    at = off[off["img_size"] == best["img_size"]] if int(best["img_size"]) != int(best["native_size"]) else off.iloc[:0]
    where = "" if len(at) else " (its best size off native)"
    row = at.iloc[0] if len(at) else off.sort_values(["top1", "_dist"], ascending=[False, True]).iloc[0]
    text = f"{name} − {REFERENCE_SERIES} @{int(row['img_size'])}{where}: {row['scheme_delta']:+.3f}"
    low, high, p = row.get("scheme_delta_ci_low"), row.get("scheme_delta_ci_high"), row.get("mcnemar_p")
    if not (missing(low) or missing(p)):
        text += f", 95 % CI [{low:+.2f}, {high:+.2f}], p={p:.2g} ({_verdict(p)})"
    return text


def _verdict(p: float) -> str:
    return "significant" if p < 0.05 else "not significant"


# --- renderers -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CellStyle:
    """How markdown and the terminal write the marks of a cell (LaTeX has its own sub-columns, :func:`latex`)."""

    not_ok: Callable[[PivotCell], str] = lambda c: f"{c.status} ({c.reason})" if c.reason else c.status
    delta: Callable[[str], str] = lambda text: f"({text})"
    ci: Callable[[str], str] = lambda text: text


#: How far the sides of an interval may differ for "± half-width" to stand for it (near 0 or 100 % an exact
#: interval is lopsided, and a ± would put one of its ends at half or twice its distance).
LOPSIDED = 1.2


def interval_parts(value: float, ci: tuple[float, float]) -> tuple[float, float] | float:
    """The half-width when ``ci`` is about symmetric around ``value``, else the interval's two ends."""
    low, high = ci
    below, above = value - low, high - value
    if min(below, above) > 0 and max(below, above) <= LOPSIDED * min(below, above):
        return (high - low) / 2
    return low, high


def cell_text(cell: PivotCell, style: CellStyle = CellStyle()) -> str:
    """top-1, ± half the 95 % CI (its two ends when lopsided), Δ vs native with its McNemar stars, ≡ when shared
    with another series."""
    if cell.status != "ok":
        return style.not_ok(cell)
    text = f"{cell.top1:.3f}"
    if cell.ci is not None:
        parts = interval_parts(cell.top1, cell.ci)
        text += " " + style.ci(f"± {parts:.2f}" if isinstance(parts, float) else f"[{parts[0]:.2f}, {parts[1]:.2f}]")
    if cell.delta is not None:
        text += " " + style.delta(f"{cell.delta:+.3f}{significance_mark(cell.delta_p)}")
    if cell.shared:
        text += " ≡"
    return text


def contrast_text(c: Contrast, style: CellStyle = CellStyle()) -> str:
    """The paired difference, its 95 % CI in brackets and McNemar stars; ≡ when it is zero by construction."""
    if c.shared:
        return "≡"
    text = f"{c.delta:+.3f}{significance_mark(c.p)}"
    if c.low is not None and c.high is not None:
        text += " " + style.ci(f"[{c.low:+.2f}, {c.high:+.2f}]")
    return text


def render(value: PivotCell | Contrast | None, style: CellStyle) -> str:
    if value is None:
        return ""
    return cell_text(value, style) if isinstance(value, PivotCell) else contrast_text(value, style)


def _n(n: int | None, data: str = "") -> str:
    of = f" of {data}" if data else ""
    return f"n unknown{of}" if n is None else f"n = {n:,} images{of}"


def describe(p: Pivot) -> list[str]:
    """What each column group is: its label, native size, number of images and the data."""
    return [f"{g.label}: native {g.native} px, {_n(g.n_images, g.data)}" for g in p.groups]


def size_text(p: Pivot, size: int, bold: Callable[[str], str], escape: Callable[[str], str] = str) -> str:
    """The size, marked native where it is every group's native size, or naming the groups it is native for."""
    natives = p.natives_at(size)
    if not natives:
        return str(size)
    if len(natives) == len(p.groups):
        return bold(str(size))
    return f"{size} (native: {escape(', '.join(natives))})"


def markdown(p: Pivot) -> str:
    """rows = size, columns = label × series and contrasts; cells = top-1 ± CI (Δ vs native, significance)."""
    if not p.groups:
        return ""
    g = p.groups[0]
    if p.several:
        out = ["### " + ", ".join(x.label for x in p.groups) + " (top-1 % and Δ vs each one's native size)\n",
               "\n".join(f"- {line}" for line in describe(p)) + "\n"]
    else:
        out = [f"### {g.label} (native {g.native} px, {_n(g.n_images, g.data)}; top-1 % and Δ vs native)\n"]
    columns = p.columns()
    rel = p.native is not None
    out.append("| size |" + (" rel |" if rel else "") + "".join(f" {md_cell(c.title(p.several))} |" for c in columns))
    out.append("|---:|" + ("---:|" if rel else "") + "---:|" * len(columns))
    for size in p.sizes:
        label = size_text(p, size, lambda s: f"{s} **native**", md_cell)
        cells = [render(p.value(c, size), CellStyle()) for c in columns]
        out.append(f"| {label} |" + (f" {size / p.native:.2f} |" if rel else "") + "".join(f" {md_cell(c)} |" for c in cells))
    if p.notes:
        out.append("\n" + "  \n".join(p.notes))
    out.append("\n" + "\n".join((f"{x.label}: " if p.several else "") + x.headline for x in p.groups) + "\n")
    titles, rows = best_crop_rows(p)
    if rows:
        out.append("#### Best crop_pct per size (top-1 % @crop; ties joined by /)\n")
        out.append("| size |" + "".join(f" {md_cell(t)} |" for t in titles))
        out.append("|---:|" + "---:|" * len(titles))
        out += [f"| {size} |" + "".join(f" {c} |" for c in cells) for size, cells in rows]
    return "\n".join(out).rstrip() + "\n"


def md_cell(text: str) -> str:
    """Text in a markdown table cell: a ``|`` (in a label) would end the cell."""
    return str(text).replace("|", r"\|")


#: LaTeX's special characters as text. ``|``, ``<``, ``>`` and ``"`` are no specials, but LaTeX's default (OT1)
#: fonts have other glyphs in their places (—, ¡, ¿, ”): the kernel's \textbar, \textless and \textgreater take them
#: from the math fonts in every encoding; \textquotedbl is not defined for OT1, so a straight quote is the typewriter
#: font's, which holds one at 34 in OT1, T1 and Unicode alike.
_TEX_ESCAPES = {"|": r"\textbar{}", "\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
                ">": r"\textgreater{}", '"': r"\texttt{\char34}"}


def tex_escape(text: str) -> str:
    """Text as LaTeX prints it: its special characters escaped, ``--`` kept two hyphens (LaTeX makes it an en
    dash: ``--class-subset`` read "–class-subset"), and the symbols and Greek letters pdflatex's UTF-8 input
    stops at written as LaTeX commands. Other characters are left to the document's own set-up (accented
    Latin letters work as they are; CJK needs the user's CJK package)."""
    escaped = re.sub("[" + re.escape("".join(_TEX_ESCAPES)) + "]", lambda m: _TEX_ESCAPES[m.group()], str(text))
    escaped = re.sub(r"-(?=-)", "-{}", escaped)
    return re.sub(r"[\u0370-\u03ff]", lambda m: _tex_greek(m.group()),
                  re.sub(f"[{''.join(_TEX_SYMBOLS)}]", lambda m: _TEX_SYMBOLS[m.group()], escaped))


#: Symbols a label or a setup line may hold that pdflatex's UTF-8 input has no definition for (or, for
#: typographic dashes and quotes, writes other than the ASCII LaTeX has for them).
_TEX_SYMBOLS = {"−": "$-$", "×": r"\ensuremath{\times}", "±": r"\ensuremath{\pm}", "·": r"\ensuremath{\cdot}",
                "→": r"\ensuremath{\rightarrow}", "←": r"\ensuremath{\leftarrow}", "↔": r"\ensuremath{\leftrightarrow}",
                "≤": r"\ensuremath{\leq}", "≥": r"\ensuremath{\geq}", "≈": r"\ensuremath{\approx}",
                "≠": r"\ensuremath{\neq}", "≡": r"\ensuremath{\equiv}", "∞": r"\ensuremath{\infty}",
                "√": r"\ensuremath{\surd}", "°": r"\ensuremath{^\circ}", "µ": r"\ensuremath{\mu}",
                "–": r"\textendash{}", "—": r"\textemdash{}", "‘": "`", "’": "'", "“": "``", "”": "''", "…": r"\ldots{}",
                "\u00a0": "~", "★": r"\ensuremath{\star}", "✓": r"\ensuremath{\surd}", "†": r"\dag{}", "‡": r"\ddag{}"}


#: Greek capitals LaTeX has a command for (the others look like Latin letters and are written as those).
_GREEK_CAPITALS = {"Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi", "Psi", "Omega"}


def _tex_greek(letter: str) -> str:
    """A Greek letter in math mode (pdflatex stops at a bare α in a label)."""
    import unicodedata

    words = unicodedata.name(letter, "").split()  # "GREEK SMALL LETTER ALPHA"
    if len(words) != 4 or words[:1] != ["GREEK"] or words[2] != "LETTER":
        return "?"
    spelled = "LAMBDA" if words[3] == "LAMDA" else words[3]  # Unicode's spelling, not LaTeX's
    name = spelled.capitalize() if words[1] == "CAPITAL" else spelled.lower()
    if words[1] == "CAPITAL" and name not in _GREEK_CAPITALS:
        return "X" if spelled == "CHI" else spelled[0]  # Alpha, Beta, ... look like A, B, ...
    return "o" if name == "omicron" else rf"\ensuremath{{\{name}}}"


def _tex_number(value: float, spec: str) -> str:
    """A number in math mode: its minus is a minus sign, not a hyphen."""
    return "$" + format(value, spec) + "$"


def _tex_count(n: int | None) -> str:
    return "?" if n is None else f"{n:,}".replace(",", r"\,")


def _tex_stars(stars: str) -> str:
    """Stars as a superscript in a sub-column of their own: they take its width, never the next column's."""
    return rf"$^{{{stars}}}$" if stars else ""


#: A column's sub-columns by kind. top-1: the value and its CI side by side, then Δ vs native and Δ's stars;
#: a contrast: the difference, its stars, its CI. Numbers are right-aligned so decimal points line up.
_TEX_SUBCOLUMNS = {"top1": r"r@{\,}l@{\;}r@{}l", "contrast": r"r@{}l@{\,}l"}


def _tex_width(kind: str) -> int:
    return len(re.sub(r"@\{[^}]*\}", "", _TEX_SUBCOLUMNS[kind]))


def tex_label(text: str) -> str:
    """A ``\\label`` key: letters, digits and dashes."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "table"


def _tex_cells(value: PivotCell | Contrast | None, kind: str) -> list[str]:
    """The sub-columns of a cell (:data:`_TEX_SUBCOLUMNS`)."""
    if value is None:
        return [""] * _tex_width(kind)
    if isinstance(value, Contrast):
        if value.shared:
            return [r"$\equiv$", "", ""]
        ci = "" if value.low is None or value.high is None else \
            rf"{{\scriptsize [{_tex_number(value.low, '+.2f')}, {_tex_number(value.high, '+.2f')}]}}"
        return [_tex_number(value.delta, "+.3f"), _tex_stars(significance_mark(value.p)), ci]
    if value.status != "ok":
        return ["--", "", "", ""]
    ci = "" if value.ci is None else _tex_interval(interval_parts(value.top1, value.ci))
    if value.delta is None:
        delta, stars = r"$\equiv$" if value.shared else "", ""
    else:
        delta, stars = _tex_number(value.delta, "+.3f"), _tex_stars(significance_mark(value.delta_p))
    return [_tex_number(value.top1, ".3f"), ci, delta, stars]


def _tex_interval(parts: tuple[float, float] | float) -> str:
    if isinstance(parts, float):
        return rf"{{\scriptsize $\pm${_tex_number(parts, '.2f')}}}"
    return rf"{{\scriptsize [{_tex_number(parts[0], '.2f')}, {_tex_number(parts[1], '.2f')}]}}"


def latex(p: Pivot, key: str = "hiera-bench") -> str:
    """One booktabs table: a column group per label (\\cmidrule under its name), sub-columns per series
    (:data:`_TEX_SUBCOLUMNS`) so decimal points align; ``\\label{tab:<key>}``."""
    if not p.groups:
        return "% hiera-bench: no results\n"
    columns = p.columns()
    rel = p.native is not None
    lead = 2 if rel else 1
    kinds = [c.kind for c in columns]
    spec = "r" * lead + "@{\\quad}".join(_TEX_SUBCOLUMNS[k] for k in kinds)
    head1, head2, rules, at = [], [], [], lead + 1
    for g in p.groups:
        width = _tex_width("top1") * len(g.series) + _tex_width("contrast") * len(g.contrasts)
        head1.append(rf"\multicolumn{{{width}}}{{c}}{{{tex_escape(g.label)} (native {g.native}\,px, "
                     rf"$n={_tex_count(g.n_images)}$)}}")
        rules.append(rf"\cmidrule(lr){{{at}-{at + width - 1}}}")
        at += width
    for c, kind in zip(columns, kinds):
        name = tex_escape(c.series) if kind == "top1" else tex_escape(c.group.contrast_name(c.series))
        head2.append(rf"\multicolumn{{{_tex_width(kind)}}}{{c}}{{{name}}}")
    what = "; ".join(f"{tex_escape(g.label)}: native {g.native}\\,px, $n={_tex_count(g.n_images)}$ images"
                     + (f" of {tex_escape(g.data)}" if g.data else "")
                     for g in p.groups)
    marks = p.marks()
    caption = "".join(
        [r"Top-1 accuracy (\%) by input size"
         + (" (bold: the native size); " if any(len(p.natives_at(z)) == len(p.groups) for z in p.sizes) else "; ")
         + f"{what}. "]
        + ([r"$\pm$: half-width of the exact 95\,\% binomial CI (its two ends where it is lopsided, near 0 or "
            r"100\,\%); "] if "ci" in marks else [])
        + [r"then $\Delta$ vs the native size of the same scheme, paired over the same images. "]
        + ([r"$a-b$ columns: the paired difference of two schemes at one size with its 95\,\% CI (Bonett--Price). "]
           if "contrast" in marks else [])
        + ([r"$^{*}\,p<0.05$, $^{**}\,p<0.01$, $^{***}\,p<0.001$ (exact McNemar). "] if "p" in marks else [])
        + ([r"$\equiv$: both schemes use the identical embedding at this size (one evaluation, difference zero). "]
           if "shared" in marks else [])
        + ([r"--: not evaluated at this size (skipped or failed; report.md says why). "] if "not_ok" in marks else [])
        + ([tex_escape(p.setup)] if p.setup else [])).rstrip()
    lines = ["% hiera-bench: needs \\usepackage{booktabs}; wider than your text? put the tabular in "
             "\\resizebox{\\linewidth}{!}{...} (graphicx) or use table*"] + _tex_open(caption, tex_label(key), spec)
    if p.several:
        lines.append(" & " * (lead - 1) + " & " + " & ".join(head1) + r" \\")
        lines.append(" ".join(rules))
    lines.append("Size (px)" + (" & Rel." if rel else "") + " & " + " & ".join(head2) + r" \\")
    lines.append(r"\midrule")
    for size in p.sizes:
        label = size_text(p, size, lambda s: rf"\textbf{{{s}}}", tex_escape)
        cells = [x for c, kind in zip(columns, kinds) for x in _tex_cells(p.value(c, size), kind)]
        lines.append(label + (f" & {size / p.native:.2f}" if rel else "") + " & " + " & ".join(cells) + r" \\")
    return "\n".join(lines + _TEX_CLOSE + _latex_best_crops(p, key)) + "\n"


def _tex_open(caption: str, label: str, spec: str) -> list[str]:
    """The lines that open a booktabs table float, up to its top rule (:data:`_TEX_CLOSE` ends it)."""
    return [r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{caption}}}", rf"\label{{tab:{label}}}",
            rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]


_TEX_CLOSE = [r"\bottomrule", r"\end{tabular}", r"\end{table}"]


def _latex_best_crops(p: Pivot, key: str) -> list[str]:
    """The best-crop table (:func:`best_crop_rows`) as a second booktabs table, ``\\label{tab:<key>-best-crop}``."""
    titles, rows = best_crop_rows(p)
    if not rows:
        return []
    caption = (r"Best \texttt{crop\_pct} per input size: the highest top-1 (\%) among the crops evaluated, "
               r"@ the crop(s) that reach it (ties joined by /).")
    lines = ["", *_tex_open(caption, f"{tex_label(key)}-best-crop", "r" * (1 + len(titles))),
             "Size (px) & " + " & ".join(tex_escape(t) for t in titles) + r" \\", r"\midrule"]
    for size, cells in rows:
        lines.append(f"{size} & " + " & ".join(tex_escape(c) for c in cells) + r" \\")
    return lines + _TEX_CLOSE


def _rich_delta(text: str) -> str:
    value = float(re.match(r"[+-]?[0-9.]+", text).group())
    colour = "green" if value > 0 else "red" if value < 0 else "white"
    return f"[{colour}]({text})[/{colour}]"


_TERMINAL = CellStyle(not_ok=lambda c: f"[dim]{c.status}[/dim]", delta=_rich_delta, ci=lambda text: f"[dim]{text}[/dim]")


def terminal(p: Pivot):
    """A rich ``Table`` of the pivot; with one group, GFLOPs and images/s per size too."""
    from rich.markup import escape
    from rich.table import Table

    if p.several:  # labels are text, not markup: "tiny [data v2]" must not lose its brackets
        title = "top-1 % (Δ vs each one's native size) — " + escape("; ".join(describe(p)))
    else:
        g = p.groups[0]
        title = f"{escape(g.label)} — top-1 % (Δ vs native {g.native} px, {escape(_n(g.n_images, g.data))})"
    table = Table(title=title, title_justify="left")
    columns = p.columns()
    rel = p.native is not None
    table.add_column("size", justify="right")
    if rel:
        table.add_column("rel", justify="right")
    for c in columns:
        table.add_column(escape(c.title(p.several)), justify="right")
    if not p.several:
        table.add_column("GFLOPs", justify="right")
        table.add_column("img/s", justify="right")
    for size in p.sizes:
        row = [size_text(p, size, lambda s: f"[bold]{s} native[/bold]", escape)] + ([f"{size / p.native:.2f}"] if rel else [])
        row += [render(p.value(c, size), _TERMINAL) for c in columns]
        if not p.several:
            g = p.groups[0]
            row += [fmt(g.gflops.get(size), ".2f"), fmt(g.imgs_per_s.get(size), ".1f")]
        table.add_row(*row)
    marks = p.marks()
    table.caption = "   ".join(
        (["± half the exact 95 % CI (\\[low, high] if lopsided)"] if "ci" in marks else [])
        + (["*/**/*** significant at p<0.05/0.01/0.001 (exact McNemar)"] if "p" in marks else [])
        + (["a − b: paired difference \\[95 % CI]"] if "contrast" in marks else [])
        + (["≡ identical embedding: evaluated once"] if "shared" in marks else [])
        + ([escape(p.setup)] if p.setup else []))
    titles, rows = best_crop_rows(p)
    if not rows:
        return table
    from rich.console import Group as Renderables

    best = Table(title="best crop_pct per size (top-1 % @crop; ties joined by /)", title_justify="left")
    best.add_column("size", justify="right")
    for t in titles:
        best.add_column(escape(t), justify="right")
    for size, cells in rows:
        best.add_row(str(size), *cells)
    return Renderables(table, best)
