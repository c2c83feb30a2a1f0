"""crop_pct as a second grid axis: ``--crop-pct 0.875,0.95,1.0`` evaluates every (scheme, size, crop) from one
decode per image, each crop bit-identical to timm's transform, each crop's cells those of a one-crop sweep."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from timm.data import create_transform

from hiera_bench.pivot import best_crop_rows, latex, markdown, pivot
from hiera_bench.preprocess import EvalPreprocess, MultiSizeTransform, normalise
from hiera_bench.report import build

CROPS = (0.875, 0.95, 1.0)


def _images():
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in ((500, 375), (97, 203),
                                                                                         (333, 333), (61, 1000))]


def test_every_crop_of_one_decode_is_bit_identical_to_timms_transform_for_it():
    pre = EvalPreprocess.from_config({"crop_pct": 0.9})
    multi = MultiSizeTransform(pre, [64, 96, 224], CROPS)
    assert multi.views == tuple((s, c) for c in CROPS for s in (64, 96, 224))
    for img in _images():
        crops = multi(img)
        for (size, crop), got in crops.items():
            reference = create_transform(input_size=(3, size, size), crop_pct=crop, interpolation="bicubic",
                                         mean=pre.mean, std=pre.std)(img)
            assert torch.equal(normalise(got[None], pre.mean, pre.std)[0], reference), (img.size, size, crop)


def _records(run_dir) -> pd.DataFrame:
    preds = pd.read_parquet(run_dir / "predictions.parquet")
    keep = [c for c in ("cell_key", "image_id", "pred", "top1", "top5", "nll") if c in preds]
    return preds[keep].sort_values(["cell_key", "image_id"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, full_ckpt, class_folder):
    """One three-crop sweep, and a one-crop sweep per crop."""
    from hiera_bench.sweep import SweepConfig, run_sweep

    base = tmp_path_factory.mktemp("crops")
    common = dict(checkpoint=str(full_ckpt), data=str(class_folder), res="64,96", batch_size=5, workers=0, device="cpu")
    run_sweep(SweepConfig(**common, crop_pct="0.875,0.95,1.0", out=str(base / "all")))
    for crop in CROPS:
        run_sweep(SweepConfig(**common, crop_pct=crop, out=str(base / f"one-{crop}")))
    return base


def test_each_crops_cells_are_a_one_crop_sweeps_cells(runs):
    table = pd.read_csv(runs / "all" / "results.csv")
    assert sorted(set(table["crop_pct"])) == list(CROPS) and len(table) == 2 * 2 * len(CROPS)
    together = _records(runs / "all")
    alone = pd.concat([_records(runs / f"one-{crop}") for crop in CROPS]).sort_values(["cell_key", "image_id"])
    pd.testing.assert_frame_equal(together, alone.reset_index(drop=True))
    info = json.loads((runs / "all" / "run.json").read_text())
    assert info["crop_pcts"] == list(CROPS) and info["config"]["crop_pct"] == list(CROPS)


def test_statistics_pair_cells_within_a_crop(runs):
    table = pd.read_csv(runs / "all" / "results.csv")
    for crop, part in table.groupby("crop_pct"):
        native = part[part["img_size"].eq(64) & part["scheme"].eq("interp")].iloc[0]
        other = part[part["img_size"].eq(96) & part["scheme"].eq("interp")].iloc[0]
        assert other["top1_delta_vs_native"] == pytest.approx(other["top1"] - native["top1"], abs=1e-9), crop


def test_pivot_and_report_show_the_best_crop_per_size_and_scheme(runs, tmp_path):
    table = build([runs / "all"])
    assert set(table["label"]) == {"hiera_tiny_224"}  # one label; the crop is a column of its own
    p = pivot(table)
    assert len(p.groups) == len(CROPS) and all("crop" in g.label for g in p.groups)
    ok = table[table["status"].eq("ok")]
    for (base, series), by_size in p.best_crops.items():
        for size, best in by_size.items():
            at = ok[ok["scheme"].eq(series) & ok["img_size"].eq(size)]
            assert best.top1 == pytest.approx(at["top1"].max())
            assert set(best.crops) == set(at.loc[at["top1"].eq(at["top1"].max()), "crop_pct"])
            assert best.of == len(CROPS)
    assert "Best crop_pct per size" in markdown(p)
    assert "Best crop_pct" not in markdown(pivot(build([runs / "one-1.0"])))
    tex = latex(p, key="crops")
    assert tex.count(r"\begin{table}") == 2 and r"\label{tab:crops-best-crop}" in tex
    best_table = tex.split(r"\label{tab:crops-best-crop}")[1]
    titles, rows = best_crop_rows(p)
    assert rows and len(rows) == len(p.sizes)
    for size, cells in rows:  # the same winners as markdown's table, one row per size
        assert f"{size} & " + " & ".join(cells) + r" \\" in best_table
    assert latex(pivot(build([runs / "one-1.0"]))).count(r"\begin{table}") == 1


def test_check_matches_cells_by_crop(cli, runs):
    assert cli("check", runs / "all", "--baseline", runs / "one-0.95").code == 0
    result = cli("check", runs / "one-0.95", "--baseline", runs / "all")
    assert result.code == 2 and "lacks 8 baseline cell(s)" in result.err, result.out + result.err
    assert "interp@64 crop 0.875" in result.err and "crop 0.95" not in result.err


@pytest.mark.parametrize("value,message", [("0.9,0.9", "twice"), ("0.9,x", "not a number"), ("0.5,1.5", "(0, 1]"),
                                           ("nan", "(0, 1]")])
def test_bad_crop_lists_are_one_line(cli, full_ckpt, class_folder, value, message):
    result = cli("sweep", "-c", full_ckpt, "--data", class_folder, "--crop-pct", value)
    assert result.code == 2 and result.err.count("\n") == 1 and message in result.err, result.err


def test_compare_pairs_a_crop_list_run_crop_by_crop(cli, runs):
    from hiera_bench.compare import compare_runs

    result = compare_runs(runs / "all", runs / "one-1.0")
    assert {p.crop_pct for p in result.pairs} == {1.0} and len(result.pairs) == 4
    assert all(p.delta == 0 and p.b_only == p.a_only == 0 for p in result.pairs)  # the same cells, computed twice
    itself = compare_runs(runs / "all", runs / "all")
    assert sorted({p.crop_pct for p in itself.pairs}) == list(CROPS) and len(itself.pairs) == 12
    shown = cli("compare", runs / "all", runs / "one-1.0", "--markdown")
    assert shown.code == 0 and "| crop |" in shown.out, shown.err


def test_a_size_with_one_crop_evaluated_does_not_name_a_best_crop():
    """A size swept at one crop only (a later command added it) read as "crop 1.0 is best at 192 px"."""
    from hiera_bench.pivot import BestCrop

    assert BestCrop((1.0,), 100.0, of=1).text() == "100.000 @1 (the only crop evaluated)"
    assert BestCrop((0.875, 1.0), 98.5, of=2).text() == "98.500 @0.875/1"


def test_the_best_crop_table_names_its_label_beside_another_and_check_names_each_crop(cli, runs, tmp_path):
    """A report of a crop-list run beside a one-crop run titled the best-crop columns by scheme alone; check's rows
    of one scheme and size at three crops could not be told apart (adv23)."""
    import json

    p = pivot(build([runs / "all", runs / "one-1.0"], labels=["crops", "one"]))
    titles, rows = best_crop_rows(p)
    assert titles and all(t.startswith("crops: ") for t in titles), titles
    result = cli("check", runs / "all", "--baseline", runs / "all", "--json")
    assert result.code == 0, result.err
    cells = json.loads(result.out)["cells"]
    assert len({(c["scheme"], c["img_size"], c["crop_pct"]) for c in cells}) == len(cells) == 12
    assert {c["crop_pct"] for c in cells} == set(CROPS)
    shown = cli("check", runs / "all", "--baseline", runs / "all")
    assert " crop " in shown.out and "0.95" in shown.out, shown.out
