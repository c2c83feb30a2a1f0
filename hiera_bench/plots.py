"""Report figures, ready for a paper: top-1 against input size with the paired scheme difference under
it, and top-1 against compute. Every label of a report is overlaid in one figure.

Each function takes the annotated tidy table (a ``label`` column names the groups, see
:func:`hiera_bench.report.build`) and returns a matplotlib ``Figure`` (Agg, no pyplot state), so callers
can save it and tests can read its lines and labels. Colour tells labels apart, line style and marker
tell series apart (a scheme, and the global grid of an abswin fit where a label has several: the pivot's columns,
:func:`hiera_bench.cells.series_names`); the caption says n, the data and what the bands are.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from .cells import REFERENCE_SERIES, section_labels, series_names
from .io import atomic_write_bytes
from .pivot import data_text
from .subsets import KNOWN, subset

#: Colours per label (colour-blind safe, Okabe–Ito), in report order.
LABEL_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
#: (line style, marker, marker fill) of a series.
Style = tuple[Any, str, str | None]
#: Line style and marker per series: the reference is dashed and hollow, so a series drawn on it stays visible.
SCHEME_STYLES: dict[str, Style] = {"interp": ("--", "o", "none"), "abswin": ("-", "s", None)}
_FALLBACK_STYLES: tuple[Style, ...] = ((":", "^", None), ("-.", "D", None), ((0, (1, 1)), "v", None),
                                       ((0, (5, 1, 1, 1)), "P", None), ((0, (3, 1, 1, 1, 1, 1)), "X", None))
FORMATS = ("png", "svg")


def _ok(table: pd.DataFrame) -> pd.DataFrame:
    """The evaluated rows, each labelled by its section (a label's crops or data sets are lines of their own), as
    plain text: matplotlib reads a label with two ``$`` as math ("cost $5 and $6" lost its spaces), and named by
    its series (``_series``) as the tables name it: two abswin fits of one checkpoint on two global grids are two
    lines, not one line through both fits' points. Both are taken from every row, as the pivot takes them."""
    table = table.assign(label=section_labels(table).str.replace("$", r"\$", regex=False),
                         _series=series_names(table))
    return table[table["status"].eq("ok")].sort_values("img_size")


def _labels(table: pd.DataFrame) -> list[str]:
    col = table["label"] if "label" in table else table["model"]
    return list(dict.fromkeys(col.astype(str)))


def _rows_of(table: pd.DataFrame, label: str) -> pd.DataFrame:
    col = table["label"] if "label" in table else table["model"]
    return table[col.astype(str) == label]


def _series(ok: pd.DataFrame) -> list[str]:
    """The series of the figure, the reference first so that the others draw on it."""
    return sorted(dict.fromkeys(ok["_series"]), key=lambda s: s != REFERENCE_SERIES)


def series_styles(names: list[str]) -> dict[str, Style]:
    """A style per series, each its own: interp and abswin keep theirs; every other series (interp-hf, a scheme of
    the user's, an abswin fit named by its grid) takes the next unused fallback, so no two share a look while
    there are fallbacks left."""
    others = [n for n in names if n not in SCHEME_STYLES]
    return {n: SCHEME_STYLES.get(n) or _FALLBACK_STYLES[others.index(n) % len(_FALLBACK_STYLES)] for n in names}


def _lines(ok: pd.DataFrame) -> Iterator[tuple[str, str, pd.DataFrame, str, Style]]:
    """(label, series, rows by size, colour, style) per line; the reference series first so others draw on it."""
    names = _series(ok)
    styles = series_styles(names)
    for i, label in enumerate(_labels(ok)):
        mine = _rows_of(ok, label)
        for name in names:
            rows = mine[mine["_series"] == name]
            if len(rows):
                yield label, name, rows, LABEL_COLOURS[i % len(LABEL_COLOURS)], styles[name]


def _name(label: str, series: str, several: bool) -> str:
    return f"{label}: {series}" if several else series


def _has_ci(rows: pd.DataFrame, low: str = "top1_ci_low", high: str = "top1_ci_high") -> bool:
    return low in rows and rows[low].notna().all() and rows[high].notna().all()


def _yerr(rows: pd.DataFrame, value: str, low: str, high: str) -> np.ndarray | None:
    """Asymmetric error bars (below, above ``value``) from a CI, or None where a row lacks one."""
    if not _has_ci(rows, low, high):
        return None
    return np.vstack([rows[value] - rows[low], rows[high] - rows[value]]).clip(0)


def caption(table: pd.DataFrame) -> str:
    """n, data and what the intervals are, for the foot of a figure."""
    ok = _ok(table)
    parts = []
    for label in _labels(ok):
        rows = _rows_of(ok, label)
        n = int(rows["n_images"].max()) if "n_images" in rows and rows["n_images"].notna().any() else None
        data = data_text(rows) or "?"
        parts.append(f"{label}: n = {n:,} images of {data}" if n else f"{label}: {data}")
    return "; ".join(parts) + ". Bands/bars: 95 % CI (top-1: exact binomial; differences: paired, Bonett–Price)."


def chance(table: pd.DataFrame) -> float | None:
    """Chance top-1 in %, when every label is scored over the same number of classes (a ``--class-subset``
    scores fewer than the model has; a subset from a file: not known from the table, no line)."""
    if "num_classes" not in table or table["num_classes"].isna().all():
        return None
    subsets_used = set(table["class_subset"].dropna()) if "class_subset" in table else set()
    if subsets_used:
        named = subsets_used.pop()
        if subsets_used or named not in KNOWN or table["class_subset"].isna().any():
            return None
        return 100.0 / len(subset(named).wnids)
    classes = set(table["num_classes"].dropna().astype(int))
    return 100.0 / classes.pop() if len(classes) == 1 else None


def _accuracy_axis(ax: Any, ok: pd.DataFrame, level: float | None) -> None:
    """Chance level drawn; the y range within [0, 100] around the values, their CIs and chance."""
    if level is not None:
        ax.axhline(level, color="0.6", linestyle=(0, (4, 3)), linewidth=0.8, label=f"chance {level:.3g} %")
    if ok.empty:
        return
    low = min(ok["top1_ci_low"].min() if _has_ci(ok) else ok["top1"].min(), level if level is not None else 100.0)
    high = ok["top1_ci_high"].max() if _has_ci(ok) else ok["top1"].max()
    pad = max(1.0, 0.05 * (high - low))
    ax.set_ylim(max(0.0, low - pad), min(100.0, high + pad))
    ax.set_ylabel("top-1 accuracy (%)")


def _size_ticks(ax: Any, sizes: list[int]) -> None:
    step = int(np.ceil(len(sizes) / 10)) if sizes else 1
    ax.set_xticks(sizes[::step])


def top1_vs_size(table: pd.DataFrame, title: str = "") -> Any:
    """Top panel: a line per label and series with its 95 % CI band, native sizes marked. Bottom panel (when
    a label has the reference scheme and another): the other minus the reference, paired, with its CI."""
    from matplotlib.figure import Figure

    ok = _ok(table)
    several = len(_labels(ok)) > 1
    has_contrast = "scheme_delta" in ok and ok["scheme_delta"].notna().any()
    fig = Figure(figsize=(6.8, 6.4 if has_contrast else 4.6), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True, height_ratios=[2.2, 1]) if has_contrast else [fig.add_subplot()]
    ax = axes[0]
    ax.set_title(title or "top-1 vs input size", fontsize=10)
    for label, series, rows, colour, (dash, marker, fill) in _lines(ok):
        ax.plot(rows["img_size"], rows["top1"], linestyle=dash, marker=marker, markerfacecolor=fill or colour,
                color=colour, label=_name(label, series, several), zorder=3 if series != REFERENCE_SERIES else 2)
        if _has_ci(rows):
            ax.fill_between(rows["img_size"], rows["top1_ci_low"], rows["top1_ci_high"], color=colour,
                            alpha=0.10 if series == REFERENCE_SERIES else 0.18, linewidth=0)
    natives = sorted({int(n) for n in table["native_size"]})
    for native in natives:
        ax.axvline(native, color="0.35", linestyle=":", linewidth=1.0,
                   label=f"native {native} px" if len(natives) == 1 else None)
    _accuracy_axis(ax, ok, chance(table))
    ax.grid(True, alpha=0.3)
    if not several:
        ax.legend(fontsize=8)
    if len(natives) == 1:
        top = ax.secondary_xaxis("top", functions=(lambda s: s / natives[0], lambda r: r * natives[0]))
        top.set_xlabel("size relative to native (×)")
    if has_contrast:
        _contrast_panel(axes[1], ok, several)
    axes[-1].set_xlabel("input size (px)")
    _size_ticks(axes[-1], sorted({int(s) for s in ok["img_size"]}))
    if several:  # under the x-axis label: labels as long as papers use were cut off at the figure's edge
        axes[-1].legend(*ax.get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.0),
                        borderaxespad=5.4, ncols=2, fontsize=7)
    _foot(fig, caption(table))
    return fig


def _contrast_panel(ax: Any, ok: pd.DataFrame, several: bool) -> None:
    """Each label's non-reference series minus the reference at each size, paired, with its 95 % CI: a label's
    colour and a series' line style and marker, as in the top panel, so that two contrasts of one label
    (abswin − interp, interp-hf − interp) are told apart in the panel and its legend."""
    contrasts = ok[ok["scheme_delta"].notna()]
    styles = series_styles(_series(ok))
    drawn = [(i, label, name) for i, label in enumerate(_labels(ok)) for name in styles
             if ((contrasts["label"] == label) & (contrasts["_series"] == name)).any()]
    for k, (i, label, name) in enumerate(drawn):
        shift = 2.0 * (k - (len(drawn) - 1) / 2)  # px: the contrasts' bars side by side, not on top of each other
        part = contrasts[(contrasts["label"] == label) & (contrasts["_series"] == name)]
        dash, marker, _ = styles[name]
        yerr = _yerr(part, "scheme_delta", "scheme_delta_ci_low", "scheme_delta_ci_high")
        ax.errorbar(part["img_size"] + shift, part["scheme_delta"], yerr=yerr, marker=marker,
                    color=LABEL_COLOURS[i % len(LABEL_COLOURS)], capsize=3, linestyle=dash,
                    label=_name(label, f"{name} − {REFERENCE_SERIES}", several))
    ax.axhline(0.0, color="0.2", linewidth=0.8)
    names = sorted({name for _, _, name in drawn})
    ax.set_ylabel(f"{names[0]} − {REFERENCE_SERIES} (points)" if len(names) == 1 else "difference (points)",
                  fontsize=9)
    ax.grid(True, alpha=0.3)
    if not several or len(names) > 1:  # several labels: their colours are the top panel's, in the figure legend
        ax.legend(fontsize=8)


def top1_vs_gflops(table: pd.DataFrame, title: str = "") -> Any:
    """Accuracy against compute: a line per label and series over sizes; the native size starred, the
    smallest and largest size named (naming every point overlaps)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ok = _ok(table)
    ok = ok[ok["gflops"].notna() & (ok["gflops"] > 0)]
    several = len(_labels(ok)) > 1
    fig = Figure(figsize=(6.8, 4.6), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title or "top-1 vs compute", fontsize=10)
    for label, series, rows, colour, (dash, marker, fill) in _lines(ok):
        yerr = _yerr(rows, "top1", "top1_ci_low", "top1_ci_high")
        ax.errorbar(rows["gflops"], rows["top1"], yerr=yerr, marker=marker, markerfacecolor=fill or colour,
                    linestyle=dash, color=colour, capsize=2, label=_name(label, series, several))
        at_native = rows[rows["img_size"] == rows["native_size"]]
        ax.plot(at_native["gflops"], at_native["top1"], linestyle="none", marker="*", markersize=13,
                color=colour, markeredgecolor="black", zorder=4)
        if series == REFERENCE_SERIES or REFERENCE_SERIES not in set(_rows_of(ok, label)["_series"]):
            for _, r in rows.iloc[[0, -1]].iterrows() if len(rows) > 1 else rows.iterrows():
                ax.annotate(f"{int(r['img_size'])} px", (r["gflops"], r["top1"]), textcoords="offset points",
                            xytext=(6, -11), ha="left", fontsize=7, color="0.3")
    if len(ok) and ok["gflops"].max() / ok["gflops"].min() > 4:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # labelled 1-2-5 steps, none on the minors
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("compute per image (GFLOPs = 2 × GMACs)")
    _accuracy_axis(ax, ok, chance(table))
    ax.grid(True, alpha=0.3)
    ax.plot([], [], linestyle="none", marker="*", markersize=10, color="white", markeredgecolor="black",
            label="native size")
    ax.legend(fontsize=8)
    _foot(fig, caption(table))
    return fig


#: Characters of a 7 pt caption line across a 6.8 in figure (DejaVu Sans averages ~0.55 em), with some slack.
_CAPTION_CHARS = 118


def _foot(fig: Any, text: str) -> None:
    """The caption at the figure's foot, wrapped here so that the axes are laid out above all of its lines (a
    caption of three lines ran over the x-axis label when matplotlib wrapped it after the layout)."""
    lines = textwrap.wrap(text, _CAPTION_CHARS)
    fig.text(0.01, 0.005, "\n".join(lines), fontsize=7, color="0.3", ha="left", va="bottom")
    room = (len(lines) * 7 * 1.3 / 72 + 0.06) / fig.get_figheight()
    fig.get_layout_engine().set(rect=(0, room, 1, 1 - room))


def _figure_bytes(fig: Any, fmt: str) -> bytes:
    buffer = io.BytesIO()  # torch-free twin of inspect.figure_bytes: a report never loads a model
    fig.savefig(buffer, format=fmt, dpi=150)
    return buffer.getvalue()


#: Figure name -> function drawing it.
PLOTS = {"top1-vs-size": top1_vs_size, "top1-vs-gflops": top1_vs_gflops}


def figure_files(prefix: str = "", formats: tuple[str, ...] = FORMATS) -> tuple[str, ...]:
    """The file names :func:`write_plots` writes."""
    return tuple(f"{prefix}{name}.{fmt}" for name in PLOTS for fmt in formats)


def write_plots(table: pd.DataFrame, out: Path, prefix: str = "", formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Every figure of :data:`PLOTS` as ``<prefix><name>.png`` and ``.svg``, each written atomically."""
    paths = []
    for name, draw in PLOTS.items():
        fig = draw(table)
        for fmt in formats:
            path = Path(out) / f"{prefix}{name}.{fmt}"
            atomic_write_bytes(path, _figure_bytes(fig, fmt))
            paths.append(path)
    return paths
