"""``hiera-bench report``: runs of two checkpoints (and a data subset) merged into tables and plots."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image

from hiera_bench import plots
from hiera_bench.sweep import SweepConfig, run_sweep
from hiera_bench.pivot import latex, pivot
from hiera_bench.report import build

FULL, ABSWIN = "hiera_tiny_224", "hiera_small_abswin_256"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, full_ckpt, abswin_ckpt, class_folder):
    base = tmp_path_factory.mktemp("runs")
    specs = {"full": (full_ckpt, "32,64,96", None), "abswin": (abswin_ckpt, "64,96,128", None),
             "subset": (full_ckpt, "64,96", 6)}
    for name, (ckpt, res, limit) in specs.items():
        run_sweep(SweepConfig(checkpoint=str(ckpt), data=str(class_folder), out=str(base / name), res=res,
                              limit=limit, batch_size=6, workers=0))
    return base


def test_report_on_two_runs_writes_every_file(cli, runs, tmp_path):
    out = tmp_path / "report"
    result = cli("report", runs / "full", runs / "abswin", "-o", out)
    assert result.code == 0, result.err
    expected = ["report.md", "report.csv", "report.parquet", "report.tex", "headlines.json"] + [
        f"plots/{model}-{fig}.{fmt}" for model in (FULL, ABSWIN) for fig in ("top1-vs-size", "top1-vs-gflops")
        for fmt in ("png", "svg")]
    for name in expected:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for png in out.glob("plots/*.png"):
        with Image.open(png) as img:
            img.verify()
        with Image.open(png) as img:
            assert img.format == "PNG" and img.size[0] >= 600
    assert "<svg" in (out / f"plots/{FULL}-top1-vs-size.svg").read_text()

    table = pd.read_csv(out / "report.csv")
    assert sorted(table.groupby("model").size().items()) == [(ABSWIN, 6), (FULL, 6)]
    assert table["top1_ci_low"].notna().all() and (table["top1_ci_low"] <= table["top1"]).all()
    assert (table["top1"] <= table["top1_ci_high"]).all()
    md = (out / "report.md").read_text()
    assert f"### {FULL} (native 64 px" in md and f"### {ABSWIN} (native 64 px" in md and " ± " in md
    assert md.count("best: ") == 2 and "95 % bootstrap CI" in md
    heads = json.loads((out / "headlines.json").read_text())
    assert set(heads) == {FULL, ABSWIN} and all(h.startswith("best: ") for h in heads.values())
    assert all(h in result.out for h in heads.values())


def test_report_statistics_equal_the_sweeps_own(runs, tmp_path):
    merged = build([runs / "full", runs / "abswin"])
    own = pd.read_parquet(runs / "full" / "results.parquet")
    cols = ["cell_key", "top1", "top1_ci_low", "top1_ci_high", "delta_ci_low", "delta_p", "mcnemar_p"]
    mine = merged[merged["model"] == FULL][cols].sort_values("cell_key").reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, own[cols].sort_values("cell_key").reset_index(drop=True))


def test_figures_have_one_line_per_scheme_a_native_marker_and_labelled_axes(runs):
    table = build([runs / "full"])
    fig = plots.top1_vs_size(table, FULL)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["abswin", "interp", "native 64 px"]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["interp"].get_xdata()) == [32, 64, 96]
    assert list(lines["abswin"].get_ydata()) == list(table[table["scheme"] == "abswin"].sort_values("img_size")["top1"])
    assert list(lines["native 64 px"].get_xdata()) == [64, 64]
    assert len(ax.collections) == 2  # a CI band per scheme
    assert ax.get_xlabel() == "input size (px)" and ax.get_ylabel() == "top-1 accuracy (%)"

    fig = plots.top1_vs_gflops(table, FULL)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["native 64 px", "abswin", "interp"]
    assert ax.get_xlabel() == "compute per image (GFLOPs)"
    gflops = sorted(table[table["scheme"] == "interp"]["gflops"])
    series = {c.get_label(): c for c in ax.containers}  # errorbar containers: data line + CI bars
    assert set(series) == {"abswin", "interp"}
    assert list(series["interp"].lines[0].get_xdata()) == gflops and series["interp"].has_yerr


def test_one_model_on_two_data_subsets_gets_two_sections(runs, tmp_path):
    table = build([runs / "full", runs / "subset"])
    labels = sorted(set(table["label"]))
    assert len(labels) == 2 and all(label.startswith(FULL + " [data ") for label in labels)
    assert any("limit 6" in label for label in labels) and any("limit all" in label for label in labels)
    subset = table[table["limit"] == 6]
    assert (subset["n_images"] == 6).all() and subset["top1_delta_vs_native"].notna().all()
    # each subset is paired with its own native cell, never with the other subset's
    assert (subset["delta_ci_low"] <= 0).all() and (subset["img_size"] == 64).sum() == 2


def test_the_same_run_twice_is_counted_once(runs):
    assert len(build([runs / "full", runs / "full"])) == len(build([runs / "full"]))


def test_latex_is_booktabs_with_one_row_per_size(runs):
    tex = latex(pivot(build([runs / "full", runs / "abswin"])))
    assert tex.count(r"\begin{tabular}") == 2 == tex.count(r"\bottomrule") == tex.count(r"\toprule")
    assert r"hiera\_tiny\_224" in tex and r"$\pm$" in tex and "±" not in tex
    block = next(b for b in tex.split(r"\begin{table}") if r"hiera\_tiny\_224" in b)
    body = block.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert [line.split(" & ")[0] for line in body] == ["32", r"\textbf{64}", "96"]
    assert all(line.count(" & ") == 3 and line.endswith(r"\\") for line in body)


def test_report_usage_errors(cli, runs, tmp_path):
    result = cli("report", runs / "full", tmp_path / "nowhere")
    assert result.code == 2 and "does not exist" in result.err
    (tmp_path / "empty").mkdir()
    result = cli("report", tmp_path / "empty")
    assert result.code == 2 and "not a run folder" in result.err


def test_run_json_records_full_provenance(runs, full_ckpt):
    import hashlib

    from hiera_bench.stats import N_RESAMPLES

    run = json.loads((runs / "full" / "run.json").read_text())
    assert run["checkpoint_sha256"] == hashlib.sha256((full_ckpt / "model.safetensors").read_bytes()).hexdigest()
    assert run["command"] and run["device"].startswith(("cpu", "cuda", "mps")) and run["dtype"] == "float32"
    assert len(run["data"]["fingerprint"]) == 16 and run["data"]["n_images"] == 12
    assert {"python", "torch", "timm", "numpy", "scipy", "pandas", "cuda", "platform"} <= set(run["versions"])
    assert run["git_sha"] is None or len(run["git_sha"]) == 40  # None outside a git checkout
    assert run["statistics"]["resamples"] == N_RESAMPLES and run["statistics"]["ci_level"] == 0.95
    table = pd.read_csv(runs / "full" / "results.csv")
    assert set(table["data_fingerprint"]) == {run["data"]["fingerprint"]}
