"""``hiera-bench report``: runs of two checkpoints (and a data subset) merged into tables and plots."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from hiera_bench import plots
from hiera_bench.sweep import SweepConfig, run_sweep
from hiera_bench.pivot import latex, pivot
from hiera_bench.report import build, headlines

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
        f"plots/{fig}.{fmt}" for fig in ("top1-vs-size", "top1-vs-gflops") for fmt in ("png", "svg")]
    for name in expected:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for png in out.glob("plots/*.png"):
        with Image.open(png) as img:
            img.verify()
        with Image.open(png) as img:
            assert img.format == "PNG" and img.size[0] >= 600
    assert "<svg" in (out / "plots/top1-vs-size.svg").read_text()

    table = pd.read_csv(out / "report.csv")
    assert sorted(table.groupby("model").size().items()) == [(ABSWIN, 6), (FULL, 6)]
    assert list(dict.fromkeys(table["label"])) == [FULL, ABSWIN]  # the order the runs were given in
    assert table["top1_ci_low"].notna().all() and (table["top1_ci_low"] <= table["top1"]).all()
    assert (table["top1"] <= table["top1_ci_high"]).all()
    md = (out / "report.md").read_text()
    assert md.count("| size |") == 1, "one table for every run"
    assert f"| {FULL}: interp |" in md and f"| {ABSWIN}: abswin − interp |" in md
    assert f"- {FULL}: native 64 px, n = 12 images" in md
    assert md.count("best: ") == 2 and "95 % CI (Bonett–Price)" in md and "exact 95 % binomial CI" in md
    heads = json.loads((out / "headlines.json").read_text())
    assert list(heads) == [FULL, ABSWIN] and all(h.startswith("best: ") for h in heads.values())
    assert all(h in result.out for h in heads.values())


def test_report_statistics_equal_the_sweeps_own(runs, tmp_path):
    merged = build([runs / "full", runs / "abswin"])
    own = pd.read_parquet(runs / "full" / "results.parquet")
    cols = ["cell_key", "top1", "top1_ci_low", "top1_ci_high", "delta_ci_low", "delta_p", "mcnemar_p"]
    mine = merged[merged["model"] == FULL][cols].sort_values("cell_key").reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, own[cols].sort_values("cell_key").reset_index(drop=True))


def test_figures_have_one_line_per_scheme_a_native_marker_and_labelled_axes(runs):
    table = build([runs / "full"])
    fig = plots.top1_vs_size(table)
    ax, diff = fig.axes[0], fig.axes[1]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["interp", "abswin", "native 64 px", "chance 33.3 %"]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["interp"].get_xdata()) == [32, 64, 96]
    assert list(lines["abswin"].get_ydata()) == list(table[table["scheme"] == "abswin"].sort_values("img_size")["top1"])
    assert list(lines["native 64 px"].get_xdata()) == [64, 64]
    assert list(lines["chance 33.3 %"].get_ydata()) == pytest.approx([100 / 3] * 2)
    assert len(ax.collections) == 2  # a CI band per scheme
    assert ax.get_ylim()[0] >= 0.0 and ax.get_ylim()[1] <= 100.0
    assert ax.get_ylabel() == "top-1 accuracy (%)" and diff.get_xlabel() == "input size (px)"
    # the panel under it: abswin − interp per size, paired, with its CI
    (bars,) = diff.containers
    abswin = table[table["scheme"] == "abswin"].sort_values("img_size")
    assert list(bars.lines[0].get_ydata()) == list(abswin["scheme_delta"]) and bars.has_yerr
    assert bars.get_label() == "abswin − interp"
    assert any("n = 12 images" in t.get_text() for t in fig.texts)

    fig = plots.top1_vs_gflops(table)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "compute per image (GFLOPs = 2 × GMACs)"
    gflops = sorted(table[table["scheme"] == "interp"]["gflops"])
    series = {c.get_label(): c for c in ax.containers}  # errorbar containers: data line + CI bars
    assert set(series) == {"abswin", "interp"}
    assert list(series["interp"].lines[0].get_xdata()) == gflops and series["interp"].has_yerr
    assert "native size" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert len([t for t in ax.texts if t.get_text().endswith(" px")]) == 2  # smallest and largest size only


def test_overlaid_figures_name_each_label_and_scheme(runs):
    table = build([runs / "full", runs / "abswin"], labels=["tiny", "small"])
    fig = plots.top1_vs_size(table)
    legend = next(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)  # one, under the axes
    names = [t.get_text() for t in legend.get_texts()]
    assert names[:4] == ["tiny: interp", "tiny: abswin", "small: interp", "small: abswin"]
    assert {c.get_label() for c in fig.axes[1].containers} == {"tiny: abswin − interp", "small: abswin − interp"}
    colours = {line.get_label(): line.get_color() for line in fig.axes[0].get_lines()}
    assert colours["tiny: interp"] == colours["tiny: abswin"] != colours["small: abswin"]


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


def test_latex_is_one_booktabs_table_with_aligned_columns_and_a_label(runs):
    tex = latex(pivot(build([runs / "full", runs / "abswin"])), key="two runs")
    assert tex.count(r"\begin{tabular}") == 1 == tex.count(r"\bottomrule") == tex.count(r"\toprule")
    assert r"\label{tab:two-runs}" in tex and r"hiera\_tiny\_224" in tex and r"$\pm$" in tex and "±" not in tex
    # a column group per run: 2 schemes x 4 sub-columns (top-1, CI, delta, stars) + their contrast's 3
    assert r"\cmidrule(lr){3-13} \cmidrule(lr){14-24}" in tex
    assert r"$\equiv$: both schemes use the identical embedding" in tex
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert [line.split(" & ")[0] for line in body] == ["32", r"\textbf{64}", "96", "128"]
    assert all(line.count(" & ") == 23 and line.endswith(r"\\") for line in body)
    spec = re.sub(r"@\{[^}]*\}", "", tex.split(r"\begin{tabular}{")[1].split("}\n")[0])
    # numbers right-aligned so decimals line up; a CI left-aligned beside its value; stars in columns of their own
    assert spec == "rr" + ("rlrl" * 2 + "rll") * 2
    for line in body:
        cells = line.removesuffix(r"\\").split(" & ")[2:]
        groups = [cells[i:i + 11] for i in (0, 11)]
        for g in groups:
            for value, ci, delta, stars in (g[0:4], g[4:8]):
                assert ci in ("", ) or ci.startswith(r"{\scriptsize"), ci
                assert stars in ("", "$^{*}$", "$^{**}$", "$^{***}$") and "^" not in delta, (delta, stars)
            assert g[9] in ("", "$^{*}$", "$^{**}$", "$^{***}$") and "^" not in g[8]
    outside_math = re.sub(r"\$[^$]*\$", "", "\n".join(body))
    assert re.search(r"\$-[0-9]", tex) and not re.search(r"-[0-9]", outside_math), "minus signs in math mode"
    assert not re.search(r"[0-9]\*", tex), "stars are superscripts in math mode, never text after a number"


@pytest.mark.skipif(not __import__("shutil").which("pdflatex"), reason="no pdflatex here (texlive-latex-recommended)")
def test_latex_compiles_as_pasted_into_a_paper(runs, tmp_path):
    """The table as its header comment says to use it: \\input with booktabs loaded."""
    import subprocess

    tex = latex(pivot(build([runs / "full", runs / "abswin"], labels=["ours-α", 'β_2 & 50% <"x">'])), key="two runs")
    (tmp_path / "table.tex").write_text(tex)
    (tmp_path / "paper.tex").write_text("\n".join([
        r"\documentclass{article}", r"\usepackage{booktabs}", r"\usepackage{graphicx}", r"\begin{document}",
        r"\input{table.tex}", r"\end{document}", ""]))
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "Missing" not in done.stdout and "Undefined" not in done.stdout, done.stdout[-3000:]


def test_report_usage_errors(cli, runs, tmp_path):
    result = cli("report", runs / "full", tmp_path / "nowhere")
    assert result.code == 2 and "does not exist" in result.err
    (tmp_path / "empty").mkdir()
    result = cli("report", tmp_path / "empty")
    assert result.code == 2 and "not a run folder" in result.err


def test_a_table_made_by_hand_with_numbers_for_names_and_keys_is_reported(cli, runs, tmp_path):
    """Names and keys a spreadsheet wrote as numbers (label 2024, cell keys 1, 2, ...) ended report in a numpy
    UFuncNoLoopError traceback, exit 1 (adv33); they are text wherever they are joined."""
    table = pd.read_csv(runs / "full" / "results.csv")
    table["cell_key"] = range(1, len(table) + 1)
    table["label"] = 2024
    paths = [tmp_path / "by-hand.csv", tmp_path / "again.csv"]
    for path in paths:
        table.to_csv(path, index=False)
    # the same cells under two labels: each label keeps them, their keys marked with the run that holds them
    result = cli("report", *paths, "-l", "2024", "-l", "2025", "-o", tmp_path / "rep")
    assert result.code == 0 and "Traceback" not in result.err, result.err
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "2024" in text and "2025" in text


def test_a_cell_its_runs_records_lack_shows_its_stored_statistics_with_a_note(cli, runs, tmp_path):
    """A folder whose predictions.parquet lacks a cell its table shows (edited, or copied from another folder's views):
    the report left that cell's CI and tests blank, which reads as "not significant", without a word (adv35)."""
    import shutil

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folder = tmp_path / "lacking"
    shutil.copytree(runs / "full", folder, symlinks=True)
    table = pd.read_parquet(folder / "results.parquet")
    cell = table[(table["status"] == "ok") & (table["img_size"] == 96)].iloc[0]
    path = (folder / "predictions.parquet").resolve()
    records = pq.read_table(path)
    pq.write_table(records.filter(pc.not_equal(records["cell_key"], cell["cell_key"])), path)
    result = cli("report", folder, "-o", tmp_path / "rep")
    assert result.code == 0, result.err
    shown = pd.read_parquet(tmp_path / "rep" / "report.parquet").set_index("cell_key").loc[cell["cell_key"]]
    assert shown["top1_ci_low"] == pytest.approx(cell["top1_ci_low"]) and not pd.isna(shown["top1_ci_low"])
    assert "no per-image records (predictions.parquet)" in (tmp_path / "rep" / "report.md").read_text()


def test_a_folder_whose_views_a_sweep_replaces_while_report_reads_it_is_said(runs, full_ckpt, class_folder, tmp_path):
    """report reads a folder's records after its table: a sweep finishing in between deletes the views they were in.
    It said the predictions did not exist and to re-run the sweep (adv35); nothing is damaged: run it again."""
    import shutil

    from hiera_bench.errors import UserError
    from hiera_bench.report import merge_runs, read_run

    folder = tmp_path / "busy"
    shutil.copytree(runs / "full", folder, symlinks=True)
    run = read_run(folder)
    run.table = run.table.assign(_run=0)
    run_sweep(SweepConfig(checkpoint=str(full_ckpt), data=str(class_folder), out=str(folder), res="32,64,96,128",
                          batch_size=6, workers=0))
    with pytest.raises(UserError, match="changed while this command read it .* run the command again"):
        merge_runs([run])


def test_run_json_records_full_provenance(runs, full_ckpt):
    import hashlib

    from hiera_bench.stats import SETTINGS

    run = json.loads((runs / "full" / "run.json").read_text())
    assert run["checkpoint_sha256"] == hashlib.sha256((full_ckpt / "model.safetensors").read_bytes()).hexdigest()
    assert run["command"] and run["device"].startswith(("cpu", "cuda", "mps")) and run["dtype"] == "float32"
    assert len(run["data"]["fingerprint"]) == 16 and run["data"]["n_images"] == 12
    assert {"python", "torch", "timm", "numpy", "scipy", "pandas", "cuda", "platform"} <= set(run["versions"])
    assert run["git_sha"] is None or len(run["git_sha"]) == 40  # None outside a git checkout
    assert run["statistics"] == SETTINGS and "Bonett-Price" in run["statistics"]["ci"] and run["statistics"]["ci_level"] == 0.95
    table = pd.read_csv(runs / "full" / "results.csv")
    assert set(table["data_fingerprint"]) == {run["data"]["fingerprint"]}


def corrupted_copy(src, dest):
    """The same file names (ids) and class folders (labels), other pixels: as ImageNet-C is to val."""
    import shutil

    import numpy as np

    shutil.copytree(src, dest)
    for path in sorted(dest.glob("*/*.JPEG")):
        with Image.open(path) as img:
            pixels = 255 - np.asarray(img.convert("RGB"))
        Image.fromarray(pixels[:, ::-1].copy()).save(path, quality=90)
    return dest


def test_two_named_sets_with_the_same_ids_are_paired_each_with_itself(cli, full_ckpt, class_folder, tmp_path):
    corrupt = corrupted_copy(class_folder, tmp_path / "corrupt")
    result = cli("sweep", "-c", full_ckpt, "--data", f"clean={class_folder}", "--data", f"corrupt={corrupt}",
                 "--res", "32,64,96", "-b", "6", "--device", "cpu", "-q", "--no-plots", "--out", tmp_path / "runs")
    assert result.code == 0, result.err
    own = {name: pd.read_parquet(tmp_path / "runs" / name / "results.parquet") for name in ("clean", "corrupt")}
    assert set(own["clean"]["data_fingerprint"]) == set(own["corrupt"]["data_fingerprint"])  # same ids and labels
    assert "[data clean]: native 64 px" in result.out and "[data corrupt]: native 64 px" in result.out
    preds = {name: pd.read_parquet(tmp_path / "runs" / name / "predictions.parquet") for name in own}
    assert not preds["clean"]["correct1"].equals(preds["corrupt"]["correct1"]), "the two sets must be told apart"
    merged = build([tmp_path / "runs" / "clean", tmp_path / "runs" / "corrupt"])
    assert merged["label"].nunique() == 2
    cols = ["cell_key", "top1", "delta_ci_low", "delta_b", "delta_c", "mcnemar_b", "mcnemar_c", "scheme_delta"]
    for name, table in own.items():
        mine = merged[merged["data_name"] == name][cols].sort_values("cell_key").reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, table[cols].sort_values("cell_key").reset_index(drop=True))


def test_two_named_sets_of_identical_files_both_stay_in_the_report(cli, full_ckpt, class_folder, tmp_path):
    """Byte-identical copies under two --data names share their cells' keys (the name is not part of a cell's
    numbers): the report kept one and dropped the other set's column groups without a word (adv27)."""
    import shutil

    copy = shutil.copytree(class_folder, tmp_path / "copy")  # copy2: the same sizes and mtimes, so the same keys
    result = cli("sweep", "-c", full_ckpt, "--data", f"val={class_folder}", "--data", f"v2={copy}", "--res", "64,96",
                 "-b", "6", "--device", "cpu", "-q", "--no-plots", "--out", tmp_path / "runs")
    assert result.code == 0, result.err
    own = {name: pd.read_parquet(tmp_path / "runs" / name / "results.parquet") for name in ("val", "v2")}
    assert set(own["val"]["cell_key"]) == set(own["v2"]["cell_key"])
    merged = build([tmp_path / "runs" / "val", tmp_path / "runs" / "v2"])
    cols = ["top1", "top1_delta_vs_native", "delta_ci_low", "scheme_delta"]
    for name, table in own.items():
        mine = merged[merged["data_name"] == name].sort_values(["scheme", "img_size"])[cols].reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, table.sort_values(["scheme", "img_size"])[cols].reset_index(drop=True))


def test_cells_two_labels_hold_stay_in_each_label_with_its_own_statistics(full_ckpt, class_folder, tmp_path):
    """A checkpoint's sizes swept under two labels share its native cell (one key): each label keeps it, so each
    has its Δ vs native, paired with that run's own records, and a headline of its own sizes."""
    for label, res in (("x", "32,64"), ("y", "64,96")):
        run_sweep(SweepConfig(checkpoint=str(full_ckpt), data=str(class_folder), out=str(tmp_path / label), res=res,
                              batch_size=6, workers=0, label=label))
    merged = build([tmp_path / "x", tmp_path / "y"])
    cols = ["cell_key", "top1", "top1_delta_vs_native", "delta_ci_low", "delta_b", "delta_c", "delta_p",
            "scheme_delta"]
    for label in ("x", "y"):
        own = pd.read_parquet(tmp_path / label / "results.parquet")
        mine = merged[merged["label"] == label][cols].sort_values("cell_key").reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, own[cols].sort_values("cell_key").reset_index(drop=True))
    assert set(merged["cell_key"]) == {k for label in "xy" for k in pd.read_parquet(tmp_path / label / "results.parquet").cell_key}
    heads = headlines(merged)
    assert "@96" in heads["y"] and "@32" in heads["x"]


def test_each_label_is_paired_with_its_own_runs_records_and_no_failed_image(full_ckpt, class_folder, tmp_path):
    """Two runs under two labels hold the native cell (one key, the same image ids) and an image that failed:
    each label's CIs and discordant counts are those of its own run's records of the images that decoded, each
    counted once. The report reads each run's records only for the cells it shows and renames a shared cell per
    run on its dictionary; a mix-up of runs, a record counted twice or a failed image counted would show here."""
    import shutil

    from hiera_bench.stats import binomial_ci

    data = Path(shutil.copytree(class_folder, tmp_path / "data"))
    sorted(data.glob("*/*.JPEG"))[0].write_bytes(b"this is not an image\n")
    for name, res in (("x", "32,64"), ("y", "64,96")):
        run_sweep(SweepConfig(checkpoint=str(full_ckpt), data=str(data), out=str(tmp_path / name), res=res,
                              batch_size=6, workers=0, max_failed=0.5))
    records = {name: (tmp_path / name / "predictions.parquet").resolve() for name in "xy"}
    shared = set(pd.read_parquet(records["x"]).cell_key) & set(pd.read_parquet(records["y"]).cell_key)
    assert shared, "the native cell is in both runs"
    flipped = pd.read_parquet(records["y"])  # y's records of the shared cells told apart from x's
    flipped["correct1"] = flipped["correct1"] ^ flipped["cell_key"].isin(shared)
    flipped.to_parquet(records["y"])

    merged = build([tmp_path / "x", tmp_path / "y"], labels=["a", "b"])
    assert set(merged["n_failed"]) == {1}
    for name, label in (("x", "a"), ("y", "b")):
        preds = pd.read_parquet(records[name])
        right = {key: part.set_index("image_id")["correct1"] for key, part in preds[~preds["failed"]].groupby("cell_key")}
        rows = merged[merged["label"] == label]
        assert len(rows) == 4
        for row in rows.itertuples():
            mine = right[row.cell_key]
            native = right[rows[(rows["scheme"] == row.scheme) & (rows["img_size"] == row.native_size)].cell_key.iloc[0]]
            assert len(mine) == 11 and (row.top1_ci_low, row.top1_ci_high) == binomial_ci(int(mine.sum()), len(mine))
            assert (row.delta_b, row.delta_c) == (int((mine & ~native).sum()), int((~mine & native).sum()))


def test_one_label_measured_on_two_copies_of_the_files_is_refused(cli, full_ckpt, class_folder, tmp_path):
    corrupt = corrupted_copy(class_folder, tmp_path / "corrupt")
    for name, data in (("a", class_folder), ("b", corrupt)):
        run_sweep(SweepConfig(checkpoint=str(full_ckpt), data=str(data), out=str(tmp_path / name), res="64",
                              batch_size=6, workers=0))
    result = cli("report", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "rep")
    assert result.code == 2 and "measured on different files" in result.err and "own --label" in result.err
    result = cli("report", tmp_path / "a", tmp_path / "b", "-l", "clean", "-l", "corrupt", "-o", tmp_path / "rep")
    assert result.code == 0, result.err


def test_a_label_with_a_pipe_keeps_the_markdown_and_latex_tables_whole(runs):
    import re as _re

    from hiera_bench.pivot import markdown

    table = build([runs / "full", runs / "abswin"], labels=["x|y", "z"])
    md = markdown(pivot(table))
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    cells = {len(_re.findall(r"(?<!\\)\|", line)) for line in rows + [next(line for line in md.splitlines()
                                                                           if line.startswith("|---"))]}
    assert len(cells) == 1 and r"x\|y" in md
    # natives that differ name their labels in the size column: "64 (native: x|y)" once had one cell too many
    other = table.assign(native_size=table["native_size"].where(table["label"].ne("z"), 96))
    md = markdown(pivot(other))
    assert "(native: x\\|y)" in md
    cells = {len(_re.findall(r"(?<!\\)\|", line)) for line in md.splitlines() if line.startswith("|")}
    assert len(cells) == 1, md
    assert "bold: the native size" not in latex(pivot(other)) and "bold: the native size" in latex(pivot(table))
    tex = latex(pivot(table), key="pipe")
    assert r"x\textbar{}y" in tex and "x|y" not in tex


def test_chance_line_counts_the_classes_scored_not_the_models():
    rows = pd.DataFrame({"num_classes": [1000, 1000], "class_subset": [None, None]})
    assert plots.chance(rows) == pytest.approx(0.1)
    assert plots.chance(rows.assign(class_subset="imagenet-r")) == pytest.approx(100 / 200)  # ImageNet-R: 200 classes
    assert plots.chance(rows.assign(class_subset="mine.txt:1a2b3c4d")) is None  # a file's count is not in the table
    assert plots.chance(rows.assign(class_subset=["imagenet-r", None])) is None  # two scorings in one figure


def test_a_lopsided_exact_interval_is_shown_by_its_ends_not_as_a_half_width():
    from hiera_bench.pivot import PivotCell, _tex_cells, cell_text
    from hiera_bench.stats import binomial_ci

    # 600 of 600: the exact interval is [99.39, 100]; "100.000 ± 0.31" would say [99.69, 100.31]
    full = PivotCell("ok", top1=100.0, ci=(99.3876, 100.0))
    assert cell_text(full) == "100.000 [99.39, 100.00]"
    assert _tex_cells(full, "top1")[1] == r"{\scriptsize [$99.39$, $100.00$]}"
    # 0 of 6: [0, 45.93], not "± 22.96"
    assert cell_text(PivotCell("ok", top1=0.0, ci=(0.0, 45.93))) == "0.000 [0.00, 45.93]"
    # about symmetric (372 of 600): the usual ± half-width
    low, high = binomial_ci(372, 600)
    half = (high - low) / 2
    assert cell_text(PivotCell("ok", top1=62.0, ci=(low, high))) == f"62.000 ± {half:.2f}"
    assert _tex_cells(PivotCell("ok", top1=62.0, ci=(low, high)), "top1")[1] == rf"{{\scriptsize $\pm$${half:.2f}$}}"


def test_captions_explain_only_the_marks_the_table_has(runs):
    from hiera_bench.pivot import latex, pivot, terminal
    from hiera_bench.stats import STAT_COLUMNS

    full = build([runs / "full"])
    bare = full.drop(columns=STAT_COLUMNS + ["delta_p"], errors="ignore")  # a run without its per-image records
    for table, has in ((full, True), (bare, False)):
        p = pivot(table)
        caption, tex = terminal(p).caption, latex(p)
        assert ("exact 95 % CI" in caption) == has and ("McNemar" in caption) == has
        assert (r"$\pm$" in tex) == has and ("McNemar" in tex) == has
        assert "identical embedding" in caption and r"$\equiv$" in tex  # the native cell is shared either way


def test_one_label_measured_twice_with_the_same_outcomes_is_shown_once(cli, full_ckpt, class_folder, tmp_path):
    """A copy of the files with new mtimes (or a folder an older version keyed otherwise) makes other cell keys
    for the same measurement: the report shows it once (the first run's), as it does one cell two runs hold.
    It once refused, saying the files differed."""
    import shutil

    copy = Path(shutil.copytree(class_folder, tmp_path / "copy", copy_function=shutil.copy))  # new mtimes
    for name, data in (("a", class_folder), ("b", copy)):
        run_sweep(SweepConfig(checkpoint=str(full_ckpt), data=str(data), out=str(tmp_path / name), res="32,64",
                              batch_size=6, workers=0))
    keys = [set(pd.read_csv(tmp_path / name / "results.csv")["cell_key"]) for name in "ab"]
    assert not keys[0] & keys[1], "the copy's cells are keyed apart"
    result = cli("report", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "rep")
    assert result.code == 0, result.err
    table = pd.read_csv(tmp_path / "rep" / "report.csv")
    assert len(table) == 4 and not table.duplicated(["scheme", "img_size"]).any()
    assert set(table["cell_key"]) == keys[0]


def test_a_table_that_does_not_name_the_abswin_grid_is_not_placed_beside_another_run(cli, full_ckpt, class_folder,
                                                                                       tmp_path):
    """A run folder of a version before the global_size column, reported with another run under one label, showed its
    abswin cells as a second series "abswin (global learned)" (a full-grid checkpoint learned none) beside the same
    measurement: it is refused in one line, and reported alone it is read as it is."""
    for name in ("old", "new"):
        run_sweep(SweepConfig(checkpoint=str(full_ckpt), data=str(class_folder), out=str(tmp_path / name), res="64,96",
                              batch_size=6, workers=0))
    views = (tmp_path / "old" / "results.parquet").resolve().parent
    table = pd.read_parquet(views / "results.parquet").drop(columns=["global_size"])
    table.to_parquet(views / "results.parquet")
    table.to_csv(views / "results.csv", index=False)
    result = cli("report", tmp_path / "old", tmp_path / "new", "-o", tmp_path / "rep")
    assert result.code == 2 and "does not name the abswin fit's global grid" in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1
    alone = cli("report", tmp_path / "old", "-o", tmp_path / "rep-old")
    assert alone.code == 0 and "global learned" not in (tmp_path / "rep-old" / "report.md").read_text()


def test_a_run_without_per_image_records_keeps_the_statistics_its_table_holds(cli, runs, tmp_path):
    """A colleague shares results.csv, not the large predictions.parquet: the report once blanked every CI and
    test (the stars gone, so -38 points read as not significant) and said nothing."""
    import shutil

    from hiera_bench.stats import STAT_COLUMNS

    shared = Path(shutil.copytree(runs / "full", tmp_path / "shared", symlinks=True))
    (shared / "predictions.parquet").resolve().unlink()
    (shared / "predictions.parquet").unlink()
    with_records, without = build([runs / "full"]), build([shared])
    assert without.attrs["stored_statistics"] == sorted(set(with_records["label"]))
    pd.testing.assert_frame_equal(without[STAT_COLUMNS], with_records[STAT_COLUMNS], check_dtype=False)
    assert without["delta_p"].notna().any()
    result = cli("report", shared, "-o", tmp_path / "report")
    assert result.code == 0 and "no per-image records (predictions.parquet)" in result.err, result.err
    assert "no per-image records (predictions.parquet)" in (tmp_path / "report" / "report.md").read_text()


def test_plot_text_shows_a_label_with_dollars_as_written(runs):
    """matplotlib reads text between two $ as math: "cost $5 and $6" came out as italic "cost 5and6"."""
    table = build([runs / "full"], labels=["cost $5 and $6"])
    assert plots.caption(table).startswith(r"cost \$5 and \$6: ")


def test_labels_measured_under_different_settings_say_so(runs):
    """Two labels side by side, each at its checkpoint's own crop (the full-grid one's 0.875, the abswin one's 0.95,
    which alone moves top-1 by points): only report.csv said so."""
    from hiera_bench.pivot import markdown

    table = build([runs / "full", runs / "abswin"], labels=["a", "b"])
    said = pivot(table).setup
    assert said.endswith("(a: crop 0.875; b: crop 0.95).") and said in markdown(pivot(table))
    assert "(a: crop 0.875; b: crop 0.95)." in latex(pivot(table))
    assert pivot(table.assign(crop_pct=0.9)).setup == ""


def test_long_labels_caption_and_legend_do_not_overlap_the_axes_text(runs):
    """Three labels as long as papers use: the legend ran off the figure's right edge and over the data, and a
    caption of three lines covered the x-axis label."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    long = ["a rather long label for the full-grid model", "another long label for the abswin one",
            "the full-grid model on a subset of the images"]
    table = build([runs / "full", runs / "abswin", runs / "subset"], labels=long)
    fig = plots.top1_vs_size(table)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    bottom = fig.axes[-1] if len(fig.axes) < 3 else [a for a in fig.axes if a.get_xlabel() == "input size (px)"][0]
    xlabel = bottom.xaxis.label.get_window_extent(renderer)
    legend = bottom.get_legend().get_window_extent(renderer)
    caption = fig.texts[-1].get_window_extent(renderer)
    width = fig.bbox.width
    assert not xlabel.overlaps(legend) and not legend.overlaps(caption) and not xlabel.overlaps(caption)
    assert 0 <= legend.x0 and legend.x1 <= width and caption.x1 <= width and caption.y0 >= 0


def test_captions_say_how_the_images_were_narrowed(runs):
    """A single-label report of a --limit run said "n = 6 images of <a larger set>" and nothing else."""
    from hiera_bench.pivot import markdown

    md = markdown(pivot(build([runs / "subset"])))
    assert "n = 6 images of" in md and "the first 6 by image id (--limit)" in md
    assert "the first 6 by image id (-{}-limit)" in latex(pivot(build([runs / "subset"])))


def test_latex_keeps_double_hyphens_of_option_names():
    from hiera_bench.pivot import tex_escape

    assert tex_escape("(--class-subset) a---b") == "(-{}-class-subset) a-{}-{}-b"  # not an en or em dash


def test_latex_escapes_every_special_character_of_a_label():
    """adv33 #7: ``<``, ``>`` and ``"`` were left as they are, and LaTeX's default (OT1) fonts print ¡, ¿ and ” for
    them."""
    from hiera_bench.pivot import tex_escape

    specials = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$", "{": r"\{",
                "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "|": r"\textbar{}",
                "<": r"\textless{}", ">": r"\textgreater{}", '"': r"\texttt{\char34}"}
    for char, written in specials.items():
        assert tex_escape(f"a{char}b") == f"a{written}b", char
    assert tex_escape('ft<320 & "ours">1') == r"ft\textless{}320 \& \texttt{\char34}ours\texttt{\char34}\textgreater{}1"


def test_latex_writes_greek_letters_of_labels_in_math():
    """pdflatex stopped at a bare α in a label (adv13)."""
    from hiera_bench.pivot import tex_escape

    assert tex_escape("abswin-α Λ Α") == r"abswin-\ensuremath{\alpha} \ensuremath{\Lambda} A"


def test_latex_writes_symbols_of_labels_as_commands():
    """pdflatex's UTF-8 input stops at ×, →, ≥ ... in a label ("Unicode character not set up for use with LaTeX");
    typographic dashes and quotes become LaTeX's own; accented letters and other scripts are left as they are."""
    from hiera_bench.pivot import tex_escape

    assert tex_escape("ft×1.5 → 384 ≥ 2–3 “ours” −1") == (
        r"ft\ensuremath{\times}1.5 \ensuremath{\rightarrow} 384 \ensuremath{\geq} 2\textendash{}3 ``ours'' $-$1")
    assert tex_escape("a––b") == r"a\textendash{}\textendash{}b"  # not four hyphens (an em dash and one more)
    assert tex_escape("modèle 模型") == "modèle 模型"


@pytest.fixture(scope="module")
def two_grids(tmp_path_factory, full_ckpt, class_folder):
    """A full-grid checkpoint swept into one folder twice: its abswin fit on the default 2x2 global grid, then 1x1."""
    out = tmp_path_factory.mktemp("grids") / "run"
    for grid in (None, 1):
        run_sweep(SweepConfig(checkpoint=str(full_ckpt), data=str(class_folder), out=str(out), res="32,64,96",
                              global_size=grid, batch_size=6, workers=0, plots=False))
    return out


def test_figures_draw_two_global_grids_of_abswin_as_two_lines_as_the_tables_name_them(two_grids):
    """adv33 #3: the tables showed "abswin (global 2x2)" and "abswin (global 1x1)", the figures one "abswin" line
    through both fits' points (two at each size), and one "abswin − interp" series in the panel under it."""
    table = build([two_grids])
    names = {"abswin (global 2x2)": "2x2", "abswin (global 1x1)": "1x1"}
    fig = plots.top1_vs_size(table)
    top, panel = fig.axes[0], fig.axes[1]
    lines = {line.get_label(): line for line in top.get_lines() if not line.get_label().startswith(("native", "chance"))}
    assert set(lines) == {"interp", *names}
    for name, grid in names.items():
        rows = table[table["global_size"].eq(grid)].sort_values("img_size")
        assert list(lines[name].get_xdata()) == [32, 64, 96] and list(lines[name].get_ydata()) == list(rows["top1"])
    assert len({(lines[n].get_linestyle(), lines[n].get_marker()) for n in names}) == 2  # told apart, same colour
    contrasts = {c.get_label(): c for c in panel.containers}
    assert set(contrasts) == {f"{name} − interp" for name in names}
    for name, grid in names.items():
        rows = table[table["global_size"].eq(grid)].sort_values("img_size")
        assert list(contrasts[f"{name} − interp"].lines[0].get_ydata()) == list(rows["scheme_delta"])

    fig = plots.top1_vs_gflops(table)
    series = {c.get_label(): c for c in fig.axes[0].containers}
    assert set(series) == {"interp", *names}
    assert all(len(series[name].lines[0].get_xdata()) == 3 for name in names)


def test_each_contrast_in_the_panel_has_its_own_look_and_name(full_ckpt, class_folder, tmp_path):
    """adv33 #4: "abswin − interp" and "interp-hf − interp" shared colour, marker and line style, so the legend
    had two identical entries."""
    run_sweep(SweepConfig(checkpoint=str(full_ckpt), data=str(class_folder), out=str(tmp_path / "hf"), res="32,64,96",
                          schemes="interp-hf,abswin,interp", batch_size=6, workers=0, plots=False))
    fig = plots.top1_vs_size(build([tmp_path / "hf"]))
    panel = fig.axes[1]
    looks = {c.get_label(): (c.lines[0].get_linestyle(), c.lines[0].get_marker()) for c in panel.containers}
    assert set(looks) == {"abswin − interp", "interp-hf − interp"}
    assert len(set(looks.values())) == 2
    assert sorted(t.get_text() for t in panel.get_legend().get_texts()) == ["abswin − interp", "interp-hf − interp"]
