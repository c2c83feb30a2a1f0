"""Merge run folders into one annotated tidy table and write it as markdown, CSV, LaTeX and plots.

Runs may hold different models, checkpoints or data subsets: cells are merged by their key, and
statistics only pair cells of the same model, checkpoint, data and preprocessing
(:data:`hiera_bench.stats.GROUP_COLUMNS`). A model measured under several of those gets one section
per combination, labelled by what differs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import UserError
from .results import atomic_write_parquet, atomic_write_text, format_cell, headline, markdown_pivot, tidy_table
from .stats import GROUP_COLUMNS, annotate, group_ids, with_cell_keys

#: Per-image columns the statistics read; the rest of predictions.parquet stays on disk.
_PRED_COLUMNS = ["cell_key", "model", "scheme", "img_size", "image_id", "correct1", "failed"]
#: How a differing group field is shown in a section label.
_LABEL_FIELDS = {"checkpoint_sha256": ("ckpt", 8), "data_fingerprint": ("data", 8), "limit": ("limit", None),
                 "crop_pct": ("crop", None), "interpolation": ("interp", None), "dtype": ("dtype", None)}


@dataclass
class Run:
    """One run folder's tidy table and per-image predictions."""

    root: Path
    table: pd.DataFrame
    predictions: pd.DataFrame | None


def read_table(path: Path) -> pd.DataFrame:
    """A results table from a run folder (results.parquet, else results.csv) or a results file."""
    path = Path(path)
    if path.is_dir():
        found = next((path / n for n in ("results.parquet", "results.csv") if (path / n).is_file()), None)
        if found is None:
            raise UserError(f"{path} is not a run folder (no results.parquet or results.csv); give the --out of a sweep")
        path = found
    elif not path.is_file():
        raise UserError(f"{path} does not exist; give a run folder or a results .csv/.parquet file")
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (ValueError, OSError, pa.ArrowException, pd.errors.ParserError) as exc:
        raise UserError(f"{path} cannot be read as a results table ({type(exc).__name__}); re-run the sweep") from exc
    missing = [c for c in ("model", "scheme", "img_size", "native_size", "status", "top1") if c not in df]
    if missing:
        raise UserError(f"{path} is not a hiera-bench results table (no column {', '.join(missing)})")
    return df


def read_run(root: Path) -> Run:
    """A run folder; its predictions are named by cell key (older folders: by model, scheme and size)."""
    root = Path(root)
    table = read_table(root)
    path = root / "predictions.parquet"
    preds = None
    if path.is_file():
        names = pq.read_schema(path).names
        preds = with_cell_keys(pq.read_table(path, columns=[c for c in _PRED_COLUMNS if c in names]).to_pandas(),
                               table)
    return Run(root, table, preds)


def merge_runs(runs: list[Run]) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """One row per cell (the first run that has a cell wins) and the predictions of those cells."""
    tables = [r.table for r in runs]
    df = pd.concat(tables, ignore_index=True)
    ok = df[df["status"].eq("ok")].drop_duplicates("cell_key")
    where = [c for c in GROUP_COLUMNS if c in df] + ["scheme", "img_size"]
    rest = df[~df["status"].eq("ok")].drop_duplicates(where)
    rest = rest.merge(ok[where].drop_duplicates(), on=where, how="left", indicator=True)
    rest = rest[rest["_merge"] == "left_only"].drop(columns="_merge")  # a skip is moot where a run measured it
    table = tidy_table(pd.concat([ok, rest], ignore_index=True).to_dict("records"))
    preds = [r.predictions for r in runs if r.predictions is not None]
    if not preds:
        return table, None
    merged = pd.concat(preds, ignore_index=True).drop_duplicates(["cell_key", "image_id"])
    return table, merged[merged["cell_key"].isin(set(ok["cell_key"]))]


def section_labels(df: pd.DataFrame) -> pd.Series:
    """The model name, plus whatever tells apart several measurements of one model (e.g. ``data 1a2b3c4d``)."""
    groups = group_ids(df)
    labels = df["model"].astype(str).copy()
    for model, part in df.groupby("model", sort=False):
        ids = groups[part.index]
        if ids.nunique() < 2:
            continue
        varying = [c for c in _LABEL_FIELDS if c in part and part[c].astype(str).nunique(dropna=False) > 1]
        for idx in part.index:
            bits = []
            for col in varying:
                name, width = _LABEL_FIELDS[col]
                value = part.at[idx, col]
                bits.append(f"{name} {'all' if pd.isna(value) else str(value)[:width]}")
            labels[idx] = f"{model} [{', '.join(bits)}]"
    return labels


def build(paths: list[Path]) -> pd.DataFrame:
    """The merged, annotated tidy table of the given run folders, with a ``label`` column per section."""
    if not paths:
        raise UserError("give at least one run folder (the --out of a sweep)")
    table, preds = merge_runs([read_run(Path(p)) for p in paths])
    out = annotate(table, None if preds is None else pa.Table.from_pandas(preds, preserve_index=False))
    out.insert(0, "label", section_labels(out))
    return out


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    return re.sub(r"[\\_%&#${}~^]", lambda m: _TEX_ESCAPES[m.group()], str(text))


def latex_tables(df: pd.DataFrame) -> str:
    """One booktabs table per section: rows = size, columns = scheme, top-1 ± CI (Δ vs native, significance)."""
    blocks = ["% hiera-bench report: needs \\usepackage{booktabs}"]
    for label, part in df.groupby("label", sort=False):
        native = int(part["native_size"].iloc[0])
        schemes = list(dict.fromkeys(part["scheme"]))
        lines = [r"\begin{table}[t]", r"\centering", r"\small",
                 rf"\caption{{{tex_escape(label)}: top-1 accuracy (\%) by input size, native {native}\,px. "
                 r"$\pm$: half-width of the 95\,\% bootstrap CI; in brackets: $\Delta$ vs native, paired; "
                 r"* $p<0.05$, ** $p<0.01$, *** $p<0.001$ (exact McNemar); $^\dagger$ differs from the reference "
                 r"scheme at that size ($p<0.05$).}",
                 r"\begin{tabular}{rr" + "r" * len(schemes) + "}", r"\toprule",
                 "Size (px) & Rel. & " + " & ".join(tex_escape(s) for s in schemes) + r" \\", r"\midrule"]
        for size, at in part.groupby("img_size", sort=True):
            cells = []
            for scheme in schemes:
                row = at[at["scheme"] == scheme]
                if row.empty or row.iloc[0]["status"] != "ok":
                    cells.append("--")
                    continue
                cells.append(format_cell(row.iloc[0], native, pm=r"$\pm$", dagger=r"$^\dagger$", equiv=r"$\equiv$")
                             .replace("−", "-"))
            size_text = rf"\textbf{{{int(size)}}}" if int(size) == native else str(int(size))
            lines.append(f"{size_text} & {int(size) / native:.2f} & " + " & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def markdown_report(df: pd.DataFrame, sources: list[Path]) -> str:
    """The pivots of every section, their headlines and the runs they came from."""
    display = df.assign(model=df["label"])
    lines = ["# hiera-bench report", "", "Runs: " + ", ".join(f"`{p}`" for p in sources), "",
             markdown_pivot(display)]
    return "\n".join(lines)


def headlines(df: pd.DataFrame) -> dict[str, str]:
    return {label: headline(part) for label, part in df.groupby("label", sort=False)}


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "-", label).strip("-") or "model"


def write_report(df: pd.DataFrame, sources: list[Path], out: Path) -> list[Path]:
    """report.md/.csv/.parquet/.tex and plots/<section>-<figure>.png/.svg under ``out``; returns the paths."""
    from .plots import write_plots

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"-o {out} is a file, not a folder; choose another -o")
    paths = [out / "report.md", out / "report.csv", out / "report.parquet", out / "report.tex"]
    atomic_write_text(paths[0], markdown_report(df, sources))
    atomic_write_text(paths[1], df.to_csv(index=False))
    atomic_write_parquet(paths[2], pa.Table.from_pandas(df, preserve_index=False))
    atomic_write_text(paths[3], latex_tables(df))
    for label, part in df.groupby("label", sort=False):
        paths += write_plots(part, label, slug(label), out / "plots")
    atomic_write_text(out / "headlines.json", json.dumps(headlines(df), indent=1, ensure_ascii=False) + "\n")
    return paths + [out / "headlines.json"]

