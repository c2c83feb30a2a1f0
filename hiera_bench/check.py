"""The CI gate: compare every cell of a run with a baseline and say whether accuracy held.

A cell holds when its metric is no more than ``tol`` points worse than the baseline's (and, with
``use_ci``, not below the baseline's 95 % CI); a run cell not evaluated, or NaN, fails. Comparing cells of
different data, preprocessing or checkpoints would be meaningless (:data:`hiera_bench.cells.MUST_MATCH`
says what must agree), so that, like a baseline cell the run lacks, a NaN baseline value or a table
without provenance, is a :class:`~hiera_bench.errors.UserError` naming what is wrong; so are cells
evaluated on different numbers of images (images that failed to decode are left out of every metric).

A run folder holds the cells of every sweep into it; the gate checks those of the checkpoint, data and
preprocessing its latest sweep measured (run.json's ``cells``), so cells of an older checkpoint, data or options
left there never answer for the new one.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from .cells import (MODEL_IDENTITY, MUST_MATCH, NOTED, counts_differ, counts_text, differences, differing, group_ids,
                    missing, missing_provenance, noted_differences, same_value, several_devices_note, unrecorded,
                    with_defaults)
from .errors import UserError, listed
from .report import read_table, unfinished_note
from .untrusted import RESWEEP, read_json, wrong


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    ci: tuple[str, str] | None = None  # baseline columns of its 95 % CI

    def worse_by(self, value: float, baseline: float) -> float:
        """How much worse ``value`` is than ``baseline`` (negative: better)."""
        return baseline - value if self.higher_is_better else value - baseline

    def below_ci(self, value: float, low: float, high: float) -> bool:
        return value < low if self.higher_is_better else value > high


#: Metrics ``check`` can gate on.
METRICS = {
    "top1": Metric("top1", True, ("top1_ci_low", "top1_ci_high")),
    "top5": Metric("top5", True),
    "nll": Metric("nll", False),
    "ece": Metric("ece", False),
}
#: A cell of the run answers a cell of the baseline with the same values here.
CELL = ["model", "scheme", "img_size", "global_size", "crop_pct"]


@dataclass
class CellCheck:
    model: str
    scheme: str
    img_size: int
    baseline: float
    value: float
    delta: float
    ci_low: float | None
    ci_high: float | None
    verdict: str  # "hold", "drop", "below CI", "not evaluated"
    note: str = ""
    crop_pct: float | None = None
    global_size: str | None = None  # the abswin fit's global grid (full-grid checkpoints), where one was chosen

    @property
    def series(self) -> str:
        return series_text(self.scheme, self.global_size)

    @property
    def failed(self) -> bool:
        return self.verdict != "hold"


@dataclass
class CheckResult:
    metric: str
    tol: float
    use_ci: bool
    cells: list[CellCheck] = field(default_factory=list)
    new: list[dict] = field(default_factory=list)  # run cells the baseline does not have
    run_source: str = ""  # the files actually read
    baseline_source: str = ""
    notes: list[str] = field(default_factory=list)  # what differs but does not stop the comparison
    left_out: int = 0  # cells of earlier sweeps in the run folder, not checked

    @property
    def ok(self) -> bool:
        return not any(c.failed for c in self.cells)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "metric": self.metric, "tol": self.tol, "ci": self.use_ci,
                "run_source": self.run_source, "baseline_source": self.baseline_source,
                "n_cells": len(self.cells), "n_failed": sum(c.failed for c in self.cells),
                "cells": [_clean(asdict(c)) for c in self.cells], "new": self.new, "notes": self.notes,
                "left_out": self.left_out}


def _clean(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def series_text(scheme: str, global_size: str | None) -> str:
    """The scheme, with the abswin fit's global grid where the cell has one: ``abswin (global 2x2)``."""
    return scheme if global_size is None else f"{scheme} (global {global_size})"


def _name(row: pd.Series) -> str:
    where = _where(row)
    crop = "" if where["crop_pct"] is None else f" crop {where['crop_pct']:g}"
    return f"{row['model']} {series_text(row['scheme'], where['global_size'])}@{int(row['img_size'])}{crop}"


def _where(row: pd.Series) -> dict:
    """A checked cell's crop and global grid, as :class:`CellCheck` holds them."""
    crop, grid = row.get("crop_pct"), row.get("global_size")
    return {"crop_pct": None if missing(crop) else float(crop), "global_size": None if missing(grid) else str(grid)}


#: The :data:`CELL` columns a run's rows are indexed by before they are matched value by value (:func:`_match`).
_BUCKET = ("model", "scheme", "img_size")


def _bucket(row: pd.Series) -> tuple:
    return tuple(None if missing(v := row[col]) else round(float(v), 9) if isinstance(v, numbers.Real) else str(v)
                 for col in _BUCKET)


def _index(run: pd.DataFrame) -> dict[tuple, list[int]]:
    """The run's row positions by :func:`_bucket`: matching every baseline cell stays linear in the cells."""
    index: dict[tuple, list[int]] = {}
    for i, (_, row) in enumerate(run.iterrows()):
        index.setdefault(_bucket(row), []).append(i)
    return index


def _match(run: pd.DataFrame, base_row: pd.Series, index: dict[tuple, list[int]] | None = None) -> pd.Series | None:
    """The run's row for a baseline cell; None when the run lacks it. Incomparable rows raise. ``index``: the
    run's :func:`_index`, made once for many baseline cells."""
    near = run.iloc[(index if index is not None else _index(run)).get(_bucket(base_row), [])]
    candidates = near[[all(same_value(r[col], base_row[col]) for col in CELL) for _, r in near.iterrows()]]
    if candidates.empty:
        return None
    apart = [(r, differing(r, base_row)) for _, r in candidates.iterrows()]
    comparable = [r for r, cols in apart if not cols]
    # the same cell of another model under the same name, on the same data and preprocessing: the table holds
    # several sweeps (a results file of a folder whose checkpoint was replaced), and which one is "the run"
    # is not the table's to say
    rivals = [(r, cols) for r, cols in apart if cols and set(cols) <= set(MODEL_IDENTITY)]
    if comparable and rivals:
        found = sorted({f"{r['checkpoint_sha256']}"[:8] for r in [*comparable, *(r for r, _ in rivals)]})
        raise UserError(f"the run{_source(run)} holds {_name(base_row)} of {len(comparable) + len(rivals)} models "
                        f"under one name ({MUST_MATCH[rivals[0][1][0]]}: {', '.join(found)}) and "
                        "does not say which sweep came last; check the run folder of a sweep by this version (its "
                        "latest sweep is checked), or a table of one sweep")
    if len(comparable) == 1:
        return comparable[0]
    if len(comparable) > 1:
        raise UserError(f"the run has {len(comparable)} comparable rows for {_name(base_row)}; "
                        "check one run folder at a time")
    diffs = "; ".join(differences(candidates.iloc[0], base_row))
    raise UserError(f"{_name(base_row)} is not comparable with the baseline: different {diffs}; "
                    "re-run the sweep with the baseline's data and options, or make a new baseline")


def _crops_hint(missing: list[pd.Series], run: pd.DataFrame) -> str:
    """`` and crops (--crop-pct 0.95; the run has 0.875)`` when the run lacks a crop_pct the missing cells have."""
    wanted = sorted({float(b["crop_pct"]) for b in missing if not pd.isna(b.get("crop_pct"))})
    have = sorted({float(c) for c in run.get("crop_pct", pd.Series(dtype=float)).dropna()})
    lacking = [c for c in wanted if c not in have]
    if not lacking:
        return ""
    return (f" and crops (--crop-pct {','.join(f'{c:g}' for c in lacking)}; the run has "
            f"{','.join(f'{c:g}' for c in have) or 'none'})")


def _unnamed_grid_hint(missing: list[pd.Series], run: pd.DataFrame, baseline: pd.DataFrame) -> str:
    """Why abswin cells of a full-grid checkpoint went unmatched when one side's table is of a version before
    tables named the abswin fit's global grid (such cells are never matched to a guessed grid)."""
    from .posembed import reads_global_grid

    def unnamed(row: pd.Series) -> bool:
        return reads_global_grid(str(row["scheme"]), row.get("pos_embed_kind")) and pd.isna(row.get("global_size"))

    if any(unnamed(b) for b in missing):
        which, table = "baseline", baseline
    elif any(unnamed(r) for _, r in run.iterrows()):
        which, table = "run", run
    else:
        return ""
    return (f" (the {which}{_source(table)} is of a version before tables named the abswin fit's global grid, so "
            f"its abswin cells of a full-grid checkpoint match no cell; its sweep run again with this version names the "
            "grid)")


def _unrecorded_args_notes(run: pd.DataFrame, baseline: pd.DataFrame) -> list[str]:
    """A note where one table records a checkpoint folder's model_args, or the crop mode and normalisation, and the
    other, of a version before they were recorded, does not: those were not compared."""
    notes = []
    for which, table, other in (("baseline", baseline, run), ("run", run, baseline)):
        lacking = [MUST_MATCH[col] for col in unrecorded(table, other)]
        if "model_args" not in table and "model_args" in other and other["model_args"].notna().any():
            lacking.insert(0, "the checkpoint folder's config.json model_args")
        if lacking:
            notes.append(f"the {which}{_source(table)} does not record {listed(lacking, most=4)} (a version before they were "
                         f"recorded), so a change in them is not caught; make a new {which} to hold them too")
    return notes


def _source(table: pd.DataFrame) -> str:
    """`` <file>`` a table was read from, for messages about it (empty for a table built in memory)."""
    return f" {table.attrs['source']}" if table.attrs.get("source") else ""


def _require_provenance(table: pd.DataFrame, which: str) -> None:
    """A table without the fields that make cells comparable cannot vouch for a comparison."""
    lacking = sorted({col for _, row in table[table["status"].eq("ok")].iterrows() for col in missing_provenance(row)})
    if lacking:
        raise UserError(f"the {which}{_source(table)} lacks provenance ({', '.join(lacking)}): it cannot be shown to "
                        "measure the "
                        "same thing; use results written by hiera-bench sweep, or pass --allow-missing-provenance")


def compare(run: pd.DataFrame, baseline: pd.DataFrame, metric: str = "top1", tol: float = 0.2,
            use_ci: bool = False, allow_missing_provenance: bool = False) -> CheckResult:
    """Every evaluated baseline cell against the run's cell with the same model, scheme, global grid and size.

    A run cell that was not evaluated or whose value is NaN fails; a baseline cell whose value is NaN, or
    tables without provenance, cannot be compared (a :class:`UserError`)."""
    if metric not in METRICS:
        raise UserError(f"--metric {metric!r} is not one of {', '.join(METRICS)}")
    m = METRICS[metric]
    if not (0 <= tol < math.inf):
        raise UserError(f"--tol must be a finite number, 0 or more (absolute points of {metric}), got {tol}")
    if use_ci and (m.ci is None or not set(m.ci) <= set(baseline.columns) or baseline[m.ci[0]].isna().all()):
        raise UserError(f"--ci needs the baseline's 95 % CI of {metric}: "
                        + ("only top1 has one" if m.ci is None else
                           "use a baseline made by this version (results with top1_ci_low), or drop --ci"))
    if metric not in run or metric not in baseline:
        raise UserError(f"the run or the baseline has no column {metric!r}; give results made by hiera-bench sweep")
    run, baseline = with_defaults(run), with_defaults(baseline)
    # a results file pasted twice into one holds each cell twice: one cell, checked once
    base_ok = baseline[baseline["status"].eq("ok")].drop_duplicates()
    if base_ok.empty:
        raise UserError(f"the baseline{_source(baseline)} has no evaluated cell; give the results of a finished sweep")
    if not allow_missing_provenance:
        _require_provenance(baseline, "baseline")
        _require_provenance(run, "run")
    nan_base = [_name(b) for _, b in base_ok.iterrows() if pd.isna(b[metric])]
    if nan_base:
        raise UserError(f"the baseline's {metric} is NaN for {', '.join(nan_base[:4])}: not a value to compare "
                        "against; make a new baseline")
    result = CheckResult(metric, float(tol), use_ci, run_source=run.attrs.get("source", ""),
                         baseline_source=baseline.attrs.get("source", ""))
    matched, missing, miscounted, noted = set(), [], [], {}
    index = _index(run)
    for _, b in base_ok.iterrows():
        r = _match(run, b, index)
        if r is None:
            missing.append(b)
            continue
        matched.add(r.name)
        for col in noted_differences(r, b):
            noted.setdefault((NOTED[col], str(r[col]), str(b[col])), []).append(b)
        if r["status"] == "ok" and counts_differ(r, b):
            miscounted.append((r, b))
        low, high = (float(b[m.ci[0]]), float(b[m.ci[1]])) if use_ci else (None, None)
        value, base = float(r[metric]) if r["status"] == "ok" else float("nan"), float(b[metric])
        if r["status"] != "ok" or math.isnan(value):
            note = str(r.get("reason", "") or "") if r["status"] != "ok" else f"{metric} is NaN"
            result.cells.append(CellCheck(b["model"], b["scheme"], int(b["img_size"]), base, float("nan"),
                                          float("nan"), low, high, "not evaluated", note, **_where(b)))
            continue
        worse = round(m.worse_by(value, base), 6)
        verdict = "drop" if worse > tol else "below CI" if use_ci and m.below_ci(value, low, high) else "hold"
        result.cells.append(CellCheck(b["model"], b["scheme"], int(b["img_size"]), base, value,
                                      round(value - base, 6), low, high, verdict, **_where(b)))
    for _, r in run[run["status"].eq("failed") & ~run.index.isin(matched)].iterrows():
        # a cell of the run that gave no result fails the gate, whatever the baseline has there (failed too, or
        # a row an earlier version wrote as ok with non-finite logits): it is no number to pass on
        result.cells.append(CellCheck(r["model"], r["scheme"], int(r["img_size"]), float("nan"), float("nan"),
                                      float("nan"), None, None, "not evaluated", str(r.get("reason", "") or ""),
                                      **_where(r)))
    left_out = int(run.attrs.get("left_out", 0))
    if missing:
        shown = ", ".join(_name(b) for b in missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        shown += _unnamed_grid_hint(missing, run, baseline)
        if left_out:
            raise UserError(f"the run lacks {len(missing)} baseline cell(s): {shown} ({left_out} cell(s) of other "
                            "checkpoints, data or options in the folder are not checked); sweep those sizes, schemes"
                            f"{_crops_hint(missing, run)} into the run folder, or make a new baseline")
        raise UserError(f"the run lacks {len(missing)} baseline cell(s): {shown}; sweep those sizes, schemes"
                        f"{_crops_hint(missing, run)} into the run folder, or make a new baseline")
    if miscounted:
        r, b = miscounted[0]
        more = f" and {len(miscounted) - 1} more cell(s)" if len(miscounted) > 1 else ""
        raise UserError(f"{_name(b)}{more} evaluated {counts_text(r)} in the run but {counts_text(b)} in the "
                        f"baseline, so {metric} is over different images; repair the images that failed to decode "
                        "(run.json lists them) and re-run the sweep, or make a new baseline on the same images")
    if left_out:
        result.left_out = left_out
        result.notes.append(f"{left_out} cell(s) of earlier sweeps in the run folder not checked: another "
                            "checkpoint, data or options than its latest sweep's (run.json cells)")
    result.notes += _unrecorded_args_notes(run, baseline)
    result.notes += [f"{what} differs: run {mine}, baseline {theirs} ({len(rows)} of {len(result.cells)} cells); "
                     "compared all the same, it is not required to match"
                     for (what, mine, theirs), rows in noted.items()]
    extra = run[run["status"].eq("ok") & ~run.index.isin(matched)]
    result.new = [{"model": r["model"], "scheme": r["scheme"], "img_size": int(r["img_size"]), **_where(r),
                   metric: float(r[metric])} for _, r in extra.iterrows()]
    return result


def latest_sweep(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a run folder's latest measurements: every cell of the checkpoint, data and preprocessing its
    latest sweep measured (run.json's ``cells``; crops and sizes swept by earlier commands too) and the sizes that
    sweep skipped, with the number of the folder's other cells in ``.attrs["left_out"]`` (and the sweep's note of
    cells measured with other package versions in ``.attrs["versions_note"]``); a results file, or a
    folder from before run.json listed its cells, whole. ``table`` is :func:`~hiera_bench.report.read_table`'s:
    run.json is read from the same views as the results."""
    views = table.attrs.get("views")
    path = Path(views) / "run.json" if views else None
    if path is None or not path.is_file():
        return table
    run = read_json(path, "run.json", RESWEEP)
    table.attrs["views_started"] = run.get("started_unix")
    cells = run.get("cells")
    if cells is None:
        return table
    if not isinstance(cells, list) or not all(isinstance(k, str) for k in cells):
        raise wrong(path, "run.json", "has 'cells' that is not a list of cell keys", RESWEEP)
    groups = group_ids(table, ignore=("crop_pct",))
    latest = set(groups[table["cell_key"].isin(set(cells))])
    # a row without a key is a size the latest sweep skipped (skips are not kept for later sweeps)
    keep = groups.isin(latest) | table["cell_key"].isna()
    out = table[keep]
    out.attrs = dict(table.attrs, left_out=int((~keep).sum()),
                     versions_note=_gated_versions_note(run, table.attrs.get("run_folder"), out["cell_key"]),
                     failed_images=_failed_ids(run))
    return out


def _failed_ids(run: dict) -> frozenset[str] | None:
    """The images the sweep whose ``run.json`` this is could not decode (None where it does not list them)."""
    failed = run.get("failed_images")
    if not isinstance(failed, list) or not all(isinstance(f, dict) and "image_id" in f for f in failed):
        return None
    return frozenset(str(f["image_id"]) for f in failed)


def _require_same_failures(run: pd.DataFrame, baseline: pd.DataFrame, metric: str) -> str | None:
    """Refuse a run and a baseline that lost different images to decoding, though as many (every metric leaves them
    out, so each is over other images); the note where one side does not list its failed images."""
    if not any(t["n_failed"].fillna(0).gt(0).any() for t in (run, baseline) if "n_failed" in t):
        return None
    mine, theirs = run.attrs.get("failed_images"), baseline.attrs.get("failed_images")
    if mine is None or theirs is None:
        which = "the run" if mine is None else "the baseline"
        return (f"which images failed to decode was not compared ({which} is a results file, or of a version that did "
                "not list them), only how many")
    if mine != theirs:
        only = sorted(mine ^ theirs)
        raise UserError(f"the run and the baseline failed to decode different images ({len(only)} in one only, e.g. "
                        f"{only[0]}; run.json lists each run's), so {metric} is over different images; repair the "
                        "images that failed to decode and re-run the sweep, or make a new baseline on the same images")
    return None


def _refuse_unfinished(run: pd.DataFrame) -> None:
    """A run folder into which a sweep of the run's model began after the one its views show and has not finished
    cannot vouch for that model (:func:`~hiera_bench.report.unfinished_since_views`)."""
    note = unfinished_note(run)
    if note:
        raise UserError(f"the run {note}. Re-run that sweep to finish it (or wait for it), then check")


def _gated_versions_note(run: dict, folder: str | None, keys: pd.Series) -> str | None:
    """The note of the cells ``check`` gates (``keys``: the latest sweep's and the earlier sizes of its group) that were
    measured with other package versions than that sweep ran with: read from each cell's records, where run.json
    names only the sweep's own cells (:func:`other_versions_said`, the fallback where the cells cannot be read)."""
    from .sweep.provenance import MEASURING_PACKAGES, other_versions, other_versions_note
    from .sweep.store import RunDir

    current = run.get("versions")
    keys = sorted(set(keys.dropna().astype(str)))
    if folder is None or not isinstance(current, dict) or not keys:
        return other_versions_said(run)
    cells = RunDir(Path(folder), primary=False)
    measured = [cells.cell(key).measured_with() for key in keys if (Path(folder) / "cells" / key).is_dir()]
    if len(measured) < len(keys):
        return other_versions_said(run)
    sweep_had = {name: str(current.get(name)) for name in MEASURING_PACKAGES}
    versions = other_versions(measured, sweep_had)
    if not versions:
        return None
    n_other = sum(1 for found in measured if other_versions([found], sweep_had))
    return other_versions_note(n_other, len(measured), versions, current)


def other_versions_said(run: dict) -> str | None:
    """The note of the sweep whose ``run.json`` this is when some of its cells were measured with other package
    versions than that sweep's (see :func:`hiera_bench.sweep.run.records_versions`)."""
    other = run.get("measured_with_other_versions")
    if not isinstance(other, dict) or not isinstance(other.get("cells"), list) or not isinstance(other.get("versions"), list):
        return None
    from .sweep.provenance import other_versions_note

    current = run.get("versions") if isinstance(run.get("versions"), dict) else None
    return other_versions_note(len(other["cells"]), len(run.get("cells") or []), other["versions"], current)


def check_paths(run: Path, baseline: Path, metric: str = "top1", tol: float = 0.2, use_ci: bool = False,
                allow_missing_provenance: bool = False) -> CheckResult:
    """:func:`compare` on a run folder (its latest sweep's measurements; or a results file) and a baseline run
    folder (the same: a baseline re-made into its own folder is the new one) or results file."""
    base = latest_sweep(read_table(baseline))
    ran = latest_sweep(read_table(run))
    _refuse_unfinished(ran)  # the run's only: a baseline is what its views show, whatever began in it since
    result = compare(ran, base, metric, tol, use_ci, allow_missing_provenance)
    unlisted = _require_same_failures(ran, base, metric)
    if unlisted:
        result.notes.append(unlisted)
    for table, which in ((ran, "the run"), (base, "the baseline")):
        if table.attrs.get("versions_note"):
            result.notes.append(f"in {which}, {table.attrs['versions_note']}")
        several = several_devices_note(table)
        if several:
            result.notes.append(f"in {which}, {several}")
    if base.attrs.get("left_out"):
        result.notes.append(f"{base.attrs['left_out']} cell(s) of earlier sweeps in the baseline folder not used: "
                            "another checkpoint, data or options than its latest sweep's")
    return result
