"""Two checkpoints on the same images: the paired difference of their top-1 at each size and scheme.

``check`` asks "did this checkpoint hold its numbers"; this asks "is checkpoint B better than A", e.g.
``hiera_small`` evaluated at 320 px against a checkpoint fine-tuned at 320. The two runs must have
evaluated the same images (same data fingerprint and subset, same image ids); their preprocessing may
differ (each checkpoint brings its own crop), which is then said. Statistics are the tool's own: the
exact McNemar test on the discordant images and the Bonett–Price interval of the paired difference
(:func:`hiera_bench.stats.paired_difference_ci`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from .cells import (GROUP_COLUMNS, MUST_MATCH, NAME_COLUMNS, NOTED, RECORDED_LATER, group_ids, missing,
                    noted_differences, on_several_devices, same_value, with_defaults)
from .errors import UserError, listed
from .report import Run, read_records, read_run, unfinished_note
from .stats import discordant, mcnemar_exact, outcomes, paired_difference_ci

#: The fields that make two runs' images the same images; the rest of MUST_MATCH may differ here.
SAME_IMAGES = ("data_fingerprint", "limit", "per_class")
#: Preprocessing a comparison of checkpoints may legitimately change, said in a note.
PREPROCESSING = tuple(c for c in MUST_MATCH if c not in SAME_IMAGES and c not in ("checkpoint_sha256", "native_size"))


@dataclass(frozen=True)
class Pair:
    """A's cell and B's cell at one scheme and size, on the images both decoded. Points are top-1 %."""

    scheme: str
    img_size: int
    n_images: int
    top1_a: float
    top1_b: float
    delta: float  # B minus A
    delta_ci_low: float
    delta_ci_high: float
    b_only: int  # images B gets right and A does not
    a_only: int
    p: float
    crop_pct: float | None = None  # set when a run holds several crops (``--crop-pct`` lists): pairs are per crop

    @property
    def significant(self) -> bool:
        return self.p < 0.05


@dataclass
class Comparison:
    label_a: str
    label_b: str
    pairs: list[Pair]
    notes: list[str] = field(default_factory=list)

    def table(self) -> pd.DataFrame:
        rows = [asdict(p) | {"label_a": self.label_a, "label_b": self.label_b} for p in self.pairs]
        return pd.DataFrame(rows)

    def markdown(self) -> str:
        crops = any(p.crop_pct is not None for p in self.pairs)
        lines = [f"### {self.label_b} − {self.label_a} (top-1 %, paired over the same images)\n",
                 f"| scheme | size |{' crop |' if crops else ''} n | {self.label_a} | {self.label_b} | Δ | 95 % CI | b / c | p |",
                 "|---|---:|" + ("---:|" if crops else "") + "---:|---:|---:|---:|---:|---:|---:|"]
        for p in self.pairs:
            crop = f" {p.crop_pct:g} |" if crops else ""
            lines.append(f"| {p.scheme} | {p.img_size} |{crop} {p.n_images:,} | {p.top1_a:.3f} | {p.top1_b:.3f} | "
                         f"{p.delta:+.3f} | [{p.delta_ci_low:+.2f}, {p.delta_ci_high:+.2f}] | {p.b_only} / {p.a_only} "
                         f"| {p.p:.2g} |")
        lines.append("\nΔ: B − A; b / c: images only B / only A gets right (exact McNemar p); CI: paired, Bonett–Price.")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def compare_runs(run_a: Path, run_b: Path, at: int | None = None, scheme: str | None = None,
                 labels: tuple[str | None, str | None] = (None, None)) -> Comparison:
    """Pair every (scheme, size) cell the two runs share (or only ``scheme`` / ``at``) on the same images."""
    a, b = read_run(Path(run_a), labels[0]), read_run(Path(run_b), labels[1])
    for run in (a, b):
        if run.records is None and not run.root.is_dir():
            raise UserError(f"{run.root} is a results file; a paired comparison needs the per-image records of both "
                            "runs: give its run folder (the --out of its sweep)")
        if run.records is None:
            raise UserError(f"{run.root} has no predictions.parquet; a paired comparison needs the per-image records "
                            "of both runs (re-run its sweep)")
    by_crop = any(run.table["crop_pct"].nunique() > 1 for run in (a, b) if "crop_pct" in run.table)
    cells_a, cells_b = _cells(a, scheme, at, by_crop), _cells(b, scheme, at, by_crop)
    common = sorted(set(cells_a) & set(cells_b), key=lambda k: (k[2] or 0, k[1], k[0]))
    if not common:
        raise UserError(f"{a.root} and {b.root} share no evaluated cell" + _which(scheme, at)
                        + f"; they have {_evaluated(a)} and {_evaluated(b)}")
    notes = list(dict.fromkeys(note for k in common for note in _same_images(a, b, cells_a[k], cells_b[k])))
    notes += _failed_notes(a, b, scheme, at)
    notes += [note for note in (unfinished_note(a.table), unfinished_note(b.table)) if note]
    records_a = _Records.of(a, {cells_a[k]["cell_key"] for k in common})
    records_b = _Records.of(b, {cells_b[k]["cell_key"] for k in common})
    pairs = [_pair(records_a, records_b, cells_a[k], cells_b[k], k[2]) for k in common]
    label_a, label_b = _label(a), _label(b)
    if label_a == label_b:
        label_a, label_b = f"A ({label_a})", f"B ({label_b})"
    return Comparison(label_a, label_b, pairs, notes)


def _failed_notes(a: Run, b: Run, scheme: str | None, at: int | None) -> list[str]:
    """A note per run with cells that gave no result (they cannot be compared, and are not)."""
    notes = []
    for name, run in (("A", a), ("B", b)):
        failed = run.table[run.table["status"].eq("failed")]
        if scheme is not None:
            failed = failed[failed["scheme"] == scheme]
        if at is not None:
            failed = failed[failed["img_size"] == at]
        if len(failed):
            cells = ", ".join(f"{r.scheme}@{int(r.img_size)}" for r in failed.itertuples())
            notes.append(f"{name} ({run.root}) has {len(failed)} cell(s) that gave no result, left out: {cells} "
                         f"({failed['reason'].iloc[0]})")
    return notes


def _cells(run: Run, scheme: str | None, at: int | None,
           by_crop: bool = False) -> dict[tuple[str, int, float | None], pd.Series]:
    ok = run.table[run.table["status"].eq("ok")]
    if scheme is not None:
        ok = ok[ok["scheme"] == scheme]
    if at is not None:
        ok = ok[ok["img_size"] == at]
    _one_measurement(run, ok)
    cells: dict[tuple[str, int, float | None], pd.Series] = {}
    for _, row in ok.iterrows():
        key = (str(row["scheme"]), int(row["img_size"]), float(row["crop_pct"]) if by_crop else None)
        if key in cells and cells[key]["cell_key"] != row["cell_key"]:
            grids = sorted({"none" if missing(g) else str(g) for g in (cells[key].get("global_size"), row.get("global_size"))})
            if len(grids) > 1:  # a full-grid checkpoint swept with two --global-size: one series each
                raise UserError(f"{run.root} holds {key[0]} @{key[1]} with two abswin fit global grids ({', '.join(grids)}); "
                                "compare one scheme (--scheme interp), or sweep each --global-size into its own --out")
            raise UserError(f"{run.root} holds two measurements of {key[0]} @{key[1]} (other data or preprocessing); "
                            "compare run folders that hold one each")
        cells[key] = row
    return cells


def _one_measurement(run: Run, chosen: pd.DataFrame) -> None:
    """Refuse a run whose chosen cells are of several measurements (other checkpoints, data, preprocessing or
    precision: sweeps into one folder under one label), apart from a crop list's crops, which pair crop by crop:
    a paired difference of one run against another is of one measurement each."""
    # the columns a row of an earlier version lacks (crop mode, normalisation) are not compared, here as elsewhere
    unknown = tuple(c for c in RECORDED_LATER if c in chosen and chosen[c].isna().any())
    if len(chosen) < 2 or group_ids(chosen, ignore=("crop_pct", *unknown)).nunique() < 2:
        return
    chosen = with_defaults(chosen)
    differ = [MUST_MATCH.get(c) or NOTED.get(c) or c.replace("_", " ") for c in (*GROUP_COLUMNS, *NAME_COLUMNS)
              if c not in ("crop_pct", *unknown) and c in chosen and chosen[c].astype(str).nunique(dropna=False) > 1]
    raise UserError(f"{run.root} holds cells of several measurements (they differ in {listed(differ, most=3) or 'their settings'}: "
                    "sweeps of other settings into one folder); compare run folders of one measurement each (sweep each "
                    "into its own --out)")


def _same_images(a: Run, b: Run, row_a: pd.Series, row_b: pd.Series) -> list[str]:
    """Refuse runs on different images; the notes on what else differs."""
    fingerprint = row_a.get("data_fingerprint")
    # the fingerprint hashes the ids and labels a --limit or --per-class selected: equal, they are the same images
    # (an older version kept a --limit at or above the data's size, which newer ones drop)
    same = not missing(fingerprint) and same_value(fingerprint, row_b.get("data_fingerprint"))
    differ = [f"{MUST_MATCH[c]}: {row_a.get(c)} vs {row_b.get(c)}" for c in (() if same else SAME_IMAGES)
              if not same_value(row_a.get(c), row_b.get(c))]
    if differ:
        raise UserError(f"{a.root} and {b.root} were evaluated on different images ({'; '.join(differ)}); "
                        "run both sweeps on the same --data, --limit and --per-class")
    notes = [f"{MUST_MATCH[c]} differs: {row_a.get(c)} vs {row_b.get(c)} — each checkpoint is compared as its run "
             "measured it" for c in PREPROCESSING if not same_value(row_a.get(c), row_b.get(c))
             and not (c in RECORDED_LATER and (missing(row_a.get(c)) or missing(row_b.get(c))))]
    unknown = [MUST_MATCH[c] for c in RECORDED_LATER if missing(row_a.get(c)) != missing(row_b.get(c))]
    if unknown:
        older = a.root if missing(row_a.get(RECORDED_LATER[0])) else b.root
        notes.append(f"{older} does not record {listed(unknown)} (a version before they were recorded): not compared")
    notes += [f"{NOTED[c]} differs: {row_a.get(c)} vs {row_b.get(c)} — the difference includes that change"
              for c in noted_differences(row_a, row_b)]
    grids = [row.get("global_size") for row in (row_a, row_b)]
    if not same_value(*grids):  # the abswin fit of a full-grid checkpoint on another global grid
        notes.append(f"the abswin fit's global grid differs: {' vs '.join('none' if missing(g) else str(g) for g in grids)}"
                     " — the difference includes that change")
    notes += [f"{run.root} has cells measured on several devices ({row.get('device')}): the difference mixes their "
              "kernels" for run, row in ((a, row_a), (b, row_b)) if on_several_devices(row.get("device"))]
    if same_value(row_a.get("checkpoint_sha256"), row_b.get("checkpoint_sha256")):
        notes.append("both runs evaluated the same checkpoint (same sha256)")
    return notes


@dataclass(frozen=True)
class _Records:
    """One run's per-image records by cell: every image id, and correct@1 of those that decoded (the
    statistics' own reading, :func:`hiera_bench.stats.outcomes`)."""

    root: Path
    ids: dict[str, set[str]]
    correct: dict[str, pd.Series]

    @classmethod
    def of(cls, run: Run, keys: set[str]) -> _Records:
        """The records of the cells ``keys`` names (those compared: a folder may hold many more)."""
        records = read_records(run, keys)
        named = records.select(["cell_key", "image_id"]).to_pandas()
        ids = named.groupby("cell_key", observed=True)["image_id"].agg(set).to_dict()
        return cls(run.root, ids, outcomes(run.table, records))


def _pair(a: _Records, b: _Records, row_a: pd.Series, row_b: pd.Series, crop: float | None = None) -> Pair:
    ids_a, ids_b = a.ids.get(row_a["cell_key"], set()), b.ids.get(row_b["cell_key"], set())
    if ids_a != ids_b:
        only = sorted(ids_a ^ ids_b)
        raise UserError(f"{a.root} and {b.root} hold different images at {row_a['scheme']} @{int(row_a['img_size'])} "
                        f"({len(only)} in one only, e.g. {only[0]}); run both sweeps on the same data")
    empty = pd.Series(dtype=bool)
    right_a, right_b = a.correct.get(row_a["cell_key"], empty), b.correct.get(row_b["cell_key"], empty)
    if set(right_a.index) != set(right_b.index):
        only = sorted(set(right_a.index) ^ set(right_b.index))
        raise UserError(f"{a.root} and {b.root} failed to decode different images at {row_a['scheme']} "
                        f"@{int(row_a['img_size'])} ({len(ids_a) - len(right_a)} vs {len(ids_b) - len(right_b)}; "
                        f"e.g. {only[0]} decoded in one only), so they did not read the same files; run both sweeps "
                        "on the same copy of the data")
    common = right_a.index.intersection(right_b.index)
    x, y = right_a.reindex(common).to_numpy(), right_b.reindex(common).to_numpy()
    b_only, a_only = discordant(y, x)
    itself = a.root.resolve() == b.root.resolve() and row_a["cell_key"] == row_b["cell_key"]  # one measurement
    low, high = (0.0, 0.0) if itself else paired_difference_ci(b_only, a_only, len(common))
    return Pair(str(row_a["scheme"]), int(row_a["img_size"]), len(common), 100.0 * x.mean(), 100.0 * y.mean(),
                100.0 * (y.mean() - x.mean()), low, high, b_only, a_only, mcnemar_exact(b_only, a_only), crop)


def _label(run: Run) -> str:
    labels = run.table["label"].dropna().astype(str).unique() if "label" in run.table else []
    return labels[0] if len(labels) == 1 else run.root.name


def _which(scheme: str | None, at: int | None) -> str:
    bits = ([f"scheme {scheme}"] if scheme else []) + ([f"size {at}"] if at else [])
    return f" ({', '.join(bits)})" if bits else ""


def _evaluated(run: Run) -> str:
    """The (scheme, size) cells a run evaluated, whatever --scheme and --at chose: what the user may choose from."""
    ok = run.table[run.table["status"].eq("ok")]
    return ", ".join(f"{s}@{n}" for n, s in sorted({(int(r.img_size), str(r.scheme)) for r in ok.itertuples()})) \
        or "none"
