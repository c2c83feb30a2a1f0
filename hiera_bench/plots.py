"""Report figures: top-1 against input size (CI bands, native size marked) and against compute.

Each function takes the annotated tidy rows of one model and returns a matplotlib ``Figure`` (Agg, no
pyplot state), so callers can save it and tests can read its lines and labels.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .io import atomic_write_bytes

#: A fixed colour per known scheme, so every figure of a report reads the same way.
SCHEME_COLOURS = {"interp": "#1f77b4", "abswin": "#d62728"}
_FALLBACK = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2")
FORMATS = ("png", "svg")


def _series(ok: pd.DataFrame):
    """(scheme, its rows by size, its colour) for each scheme, in table order."""
    schemes = list(dict.fromkeys(ok["scheme"]))
    for i, scheme in enumerate(schemes):
        yield scheme, ok[ok["scheme"] == scheme], SCHEME_COLOURS.get(scheme) or _FALLBACK[i % len(_FALLBACK)]


def _ok(part: pd.DataFrame) -> pd.DataFrame:
    return part[part["status"].eq("ok")].sort_values("img_size")


def _has_ci(rows: pd.DataFrame) -> bool:
    return "top1_ci_low" in rows and rows["top1_ci_low"].notna().all() and rows["top1_ci_high"].notna().all()


def _figure(title: str) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    return fig, ax


def top1_vs_size(part: pd.DataFrame, label: str) -> Any:
    """One line per scheme with its 95 % CI band; a dashed vertical line at the native size."""
    ok = _ok(part)
    native = int(part["native_size"].iloc[0])
    fig, ax = _figure(f"{label}: top-1 vs input size")
    for scheme, rows, colour in _series(ok):
        ax.plot(rows["img_size"], rows["top1"], marker="o", color=colour, label=scheme)
        if _has_ci(rows):
            ax.fill_between(rows["img_size"], rows["top1_ci_low"], rows["top1_ci_high"], color=colour, alpha=0.18,
                            linewidth=0)
    ax.axvline(native, color="0.35", linestyle="--", linewidth=1.0, label=f"native {native} px")
    ax.set_xlabel("input size (px)")
    ax.set_ylabel("top-1 accuracy (%)")
    sizes = sorted(ok["img_size"].unique())
    if sizes:
        ax.set_xticks(sizes if len(sizes) <= 12 else sizes[:: int(np.ceil(len(sizes) / 12))])
    top = ax.secondary_xaxis("top", functions=(lambda s: s / native, lambda r: r * native))
    top.set_xlabel("size relative to native (×)")
    ax.legend(title="scheme (95 % CI band)" if _has_ci(ok) else "scheme", fontsize=9)
    return fig


def top1_vs_gflops(part: pd.DataFrame, label: str) -> Any:
    """Accuracy against compute: one line per scheme over sizes, each point labelled with its size."""
    ok = _ok(part)
    ok = ok[ok["gflops"].notna() & (ok["gflops"] > 0)]
    native = int(part["native_size"].iloc[0])
    fig, ax = _figure(f"{label}: top-1 vs compute")
    for scheme, rows, colour in _series(ok):
        yerr = None
        if _has_ci(rows):
            yerr = np.vstack([rows["top1"] - rows["top1_ci_low"], rows["top1_ci_high"] - rows["top1"]]).clip(0)
        ax.errorbar(rows["gflops"], rows["top1"], yerr=yerr, marker="o", color=colour, capsize=3, label=scheme)
        at_native = rows[rows["img_size"] == native]
        ax.plot(at_native["gflops"], at_native["top1"], linestyle="none", marker="*", markersize=14,
                color=colour, markeredgecolor="black")
    for size, at in ok.groupby("img_size"):
        ax.annotate(f"{int(size)} px", (at["gflops"].iloc[0], at["top1"].min()), textcoords="offset points",
                    xytext=(7, -12), ha="left", fontsize=7, color="0.3")
    if len(ok) and ok["gflops"].max() / ok["gflops"].min() > 8:
        ax.set_xscale("log")
    ax.set_xlabel("compute per image (GFLOPs)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.plot([], [], linestyle="none", marker="*", markersize=10, color="white", markeredgecolor="black",
            label=f"native {native} px")
    ax.legend(title="scheme (labels: size in px)", fontsize=9)
    return fig


def _png_svg_bytes(fig: Any, fmt: str) -> bytes:
    buffer = io.BytesIO()  # torch-free twin of inspect.figure_bytes: a report never loads a model
    fig.savefig(buffer, format=fmt, dpi=150)
    return buffer.getvalue()


#: Figure name -> function drawing it for one model.
PLOTS = {"top1-vs-size": top1_vs_size, "top1-vs-gflops": top1_vs_gflops}


def write_plots(part: pd.DataFrame, label: str, slug: str, out: Path) -> list[Path]:
    """Every figure of :data:`PLOTS` for one model as ``<slug>-<name>.png`` and ``.svg``, each atomically."""
    paths = []
    for name, draw in PLOTS.items():
        fig = draw(part, label)
        for fmt in FORMATS:
            path = out / f"{slug}-{name}.{fmt}"
            atomic_write_bytes(path, _png_svg_bytes(fig, fmt))
            paths.append(path)
    return paths
