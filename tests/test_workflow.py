"""The researcher's workflow: labels, one combined table, paired checkpoint comparisons, headlines that
say ties, files colleagues can read, --version."""

from __future__ import annotations

import json
import os
import shutil
import stat

import numpy as np
import pandas as pd
import pytest

from hiera_bench import io as hio
from hiera_bench.compare import compare_runs
from hiera_bench.pivot import headline, markdown, pivot
from hiera_bench.report import build
from hiera_bench.stats import mcnemar_exact, paired_difference_ci
from hiera_bench.sweep import SweepConfig, run_sweep


@pytest.fixture(scope="module")
def pair(tmp_path_factory, full_ckpt, abswin_ckpt, class_folder):
    """Two checkpoints on the same images, and the first again on a subset."""
    base = tmp_path_factory.mktemp("pair")
    specs = {"a": (full_ckpt, None, "tiny"), "b": (abswin_ckpt, None, "small"), "subset": (full_ckpt, 6, None)}
    for name, (ckpt, limit, label) in specs.items():
        run_sweep(SweepConfig(checkpoint=str(ckpt), data=str(class_folder), out=str(base / name), res="64,96",
                              limit=limit, batch_size=6, workers=0, label=label))
    return base


def test_sweep_label_names_the_rows_and_the_default_run_folder(cli, full_ckpt, class_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("sweep", "-c", full_ckpt, "--data", class_folder, "--res", "64", "--device", "cpu", "--quiet",
                 "--label", "ft-320")
    assert result.code == 0, result.err
    table = pd.read_csv(tmp_path / "results" / "ft-320" / "results.csv")
    assert set(table["label"]) == {"ft-320"} and set(table["num_classes"]) == {3}
    assert json.loads((tmp_path / "results" / "ft-320" / "run.json").read_text())["label"] == "ft-320"
    for bad in ("a/b", " ", ".."):
        result = cli("sweep", "-c", full_ckpt, "--data", class_folder, "--label", bad)
        assert result.code == 2 and result.err.count("\n") == 1 and "--label" in result.err, result.err


def test_report_labels_override_and_must_match_the_runs(cli, pair, tmp_path):
    table = build([pair / "a", pair / "b"], labels=["A", "B"])
    assert list(dict.fromkeys(table["label"])) == ["A", "B"]
    assert list(dict.fromkeys(build([pair / "b", pair / "a"])["label"])) == ["small", "tiny"]
    result = cli("report", pair / "a", pair / "b", "--label", "only-one", "-o", tmp_path / "r")
    assert result.code == 2 and "one --label per run" in result.err


def test_one_table_with_a_paired_scheme_difference_per_label(pair):
    table = build([pair / "a", pair / "b"])
    p = pivot(table)
    assert [g.label for g in p.groups] == ["tiny", "small"] and p.sizes == [64, 96]
    titles = [c.title(p.several) for c in p.columns()]
    assert titles == ["tiny: abswin", "tiny: interp", "tiny: abswin − interp",
                      "small: abswin", "small: interp", "small: abswin − interp"]
    for g in p.groups:
        rows = table[(table["label"] == g.label) & (table["scheme"] == "abswin")].set_index("img_size")
        assert p.groups[0].contrast_cells[(64, "abswin")].shared  # one evaluation at native: ≡, not a number
        contrast = g.contrast_cells[(96, "abswin")]
        assert contrast.delta == rows.at[96, "scheme_delta"] and contrast.p == rows.at[96, "mcnemar_p"]
    md = markdown(p)
    assert md.count("| size |") == 1 and "- tiny: native 64 px, n = 12 images" in md


def _row(scheme: str, size: int, top1: float, shared: str = "", **extra) -> dict:
    return {"model": "m", "label": "m", "checkpoint_sha256": "c", "data_fingerprint": "d", "limit": None,
            "per_class": None, "crop_pct": 0.9, "interpolation": "bicubic", "decode": "pil", "dtype": "float32",
            "global_size": None, "scheme": scheme, "img_size": size, "native_size": 224, "status": "ok",
            "top1": top1, "shared_with": shared, **extra}


def test_headline_shows_a_tie_at_native_as_a_tie_and_the_scheme_difference_off_native():
    rows = [_row("interp", 224, 80.0, "abswin"), _row("abswin", 224, 80.0, "interp"),
            _row("interp", 288, 78.0), _row("abswin", 288, 79.5, scheme_delta=1.5, scheme_delta_ci_low=0.5,
                                                 scheme_delta_ci_high=2.5, mcnemar_p=0.004)]
    text = headline(pd.DataFrame(rows))
    assert text.startswith("best: abswin = interp @224 (native): 80.000 top-1")
    assert "abswin − interp @288 (its best size off native): +1.500, 95 % CI [+0.50, +2.50], p=0.004 (significant)" in text
    assert "+0 %" not in text  # a tie at native is not an abswin win

    rows[3] = _row("abswin", 288, 81.0, delta_ci_low=0.2, delta_ci_high=1.8, delta_p=0.03, scheme_delta=3.0,
                   scheme_delta_ci_low=1.0, scheme_delta_ci_high=5.0, mcnemar_p=0.001)
    text = headline(pd.DataFrame(rows))
    assert text.startswith("best: abswin @288 (+29 %): 81.000 top-1, +1.000 vs native 224")
    assert "interp @224 (native): 80.000 top-1" in text and "abswin − interp @288: +3.000" in text


def test_the_headline_contrast_is_abswin_minus_interp_whatever_the_order_of_the_rows():
    """adv33 #5: a label with interp-hf and abswin (``report hfonly awonly``) headlined interp-hf − interp, and
    abswin − interp with the runs the other way round: the first other series in table order was taken."""
    interp = [_row("interp", 224, 80.0, "interp-hf,abswin"), _row("interp", 288, 78.0)]
    hf = [_row("interp-hf", 224, 80.0, "interp"), _row("interp-hf", 288, 78.0, scheme_delta=0.0, mcnemar_p=1.0,
                                                         scheme_delta_ci_low=-0.5, scheme_delta_ci_high=0.5)]
    aw = [_row("abswin", 224, 80.0, "interp"), _row("abswin", 288, 79.0, scheme_delta=1.0, mcnemar_p=0.62,
                                                    scheme_delta_ci_low=-1.0, scheme_delta_ci_high=3.0)]
    texts = {headline(pd.DataFrame(rows)) for rows in (interp + hf + aw, aw + interp + hf, hf + aw + interp)}
    assert len(texts) == 1, texts  # the tie at native too: "abswin = interp-hf = interp" in every order
    (text,) = texts
    assert text.startswith("best: abswin = interp-hf = interp @224 (native)"), text
    assert "abswin − interp @288 (its best size off native): +1.000" in text and "interp-hf − interp" not in text, text
    # without abswin, the other series by name, not by order: "interp-hf" before "zz"
    zz = [{**r, "scheme": "zz"} for r in hf]
    for rows in (interp + zz + hf, interp + hf + zz):
        assert "interp-hf − interp @288" in headline(pd.DataFrame(rows))
    # a series without a contrast off native gives way to one that has it
    assert "interp-hf − interp @288" in headline(pd.DataFrame(interp + hf + aw[:1]))


def test_compare_pairs_two_checkpoints_on_the_same_images(cli, pair):
    result = cli("compare", pair / "a", pair / "b", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert (data["label_a"], data["label_b"]) == ("tiny", "small")
    assert {(p["scheme"], p["img_size"]) for p in data["pairs"]} == {("abswin", 64), ("interp", 64), ("abswin", 96),
                                                                      ("interp", 96)}
    preds = {k: pd.read_parquet(pair / k / "predictions.parquet") for k in ("a", "b")}
    for p in data["pairs"]:
        right = [preds[k][(preds[k]["scheme"] == p["scheme"]) & (preds[k]["img_size"] == p["img_size"])]
                 .set_index("image_id")["correct1"].sort_index().astype(bool) for k in ("a", "b")]
        assert list(right[0].index) == list(right[1].index)
        a, b = right[0].to_numpy(), right[1].to_numpy()
        assert p["n_images"] == len(a) and p["top1_b"] - p["top1_a"] == pytest.approx(p["delta"])
        assert p["delta"] == pytest.approx(100 * (b.mean() - a.mean()))
        assert (p["b_only"], p["a_only"]) == (int((b & ~a).sum()), int((a & ~b).sum()))
        assert p["p"] == mcnemar_exact(p["b_only"], p["a_only"])
        assert (p["delta_ci_low"], p["delta_ci_high"]) == pytest.approx(
            paired_difference_ci(int((b & ~a).sum()), int((a & ~b).sum()), len(a)))
    assert any("crop_pct" in n for n in data["notes"])  # each checkpoint kept its own preprocessing, and it says so

    result = cli("compare", pair / "a", pair / "b", "--at", "96", "--scheme", "abswin")
    assert result.code == 0 and "abswin" in result.out and " 64 " not in result.out


def test_compare_refuses_different_images_and_missing_cells(cli, pair):
    result = cli("compare", pair / "a", pair / "subset")
    assert result.code == 2 and result.err.count("\n") == 1 and "different images" in result.err
    result = cli("compare", pair / "a", pair / "b", "--at", "128")
    assert result.code == 2 and "share no evaluated cell" in result.err
    # the cells there are to choose from, not those --at left ("they have none and none"; adv33)
    assert "they have abswin@64, interp@64, abswin@96, interp@96 and abswin@64" in result.err, result.err


def test_compare_names_two_global_grids_of_one_folder(cli, full_ckpt, class_folder, tmp_path):
    """A full-grid checkpoint swept again with another --global-size holds two abswin series: compare blamed "other
    data or preprocessing" and named no way round (adv33)."""
    for grid in (1, 2):
        run_sweep(SweepConfig(checkpoint=str(full_ckpt), data=str(class_folder), out=str(tmp_path / "two"), res="64,96",
                              global_size=grid, batch_size=6, workers=0, device="cpu"))
    result = cli("compare", tmp_path / "two", tmp_path / "two")
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert "two abswin fit global grids (1x1, 2x2); compare one scheme (--scheme interp)" in result.err, result.err
    assert cli("compare", tmp_path / "two", tmp_path / "two", "--scheme", "interp").code == 0


def test_compare_refuses_a_run_folder_of_several_measurements(cli, full_ckpt, class_folder, tmp_path):
    """A folder swept at one crop in fp32 and at another in bf16 (or with another checkpoint under the same label)
    was paired cell by cell with B's crops, its notes taken from the first pair only: the Δ of the second crop
    mixed in the change of precision, unsaid."""
    def sweep(out: str, crops: str, amp: str = "none") -> None:
        run_sweep(SweepConfig(checkpoint=str(full_ckpt), data=str(class_folder), out=str(tmp_path / out), res="64",
                              crop_pct=crops, amp=amp, batch_size=6, workers=0, label="tiny", device="cpu"))

    sweep("mixed", "0.875"), sweep("mixed", "1.0", "bf16"), sweep("both", "0.875,1.0")
    result = cli("compare", tmp_path / "both", tmp_path / "mixed")
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert "several measurements" in result.err and "precision (dtype)" in result.err
    sweep("bf16", "0.875,1.0", "bf16")
    result = cli("compare", tmp_path / "both", tmp_path / "bf16", "--json")
    assert result.code == 0, result.err
    assert any("precision (dtype) differs" in n for n in json.loads(result.out)["notes"])


def test_compare_takes_rows_of_an_earlier_version_beside_todays_as_one_measurement(cli, pair, tmp_path):
    """Rows without the crop mode and normalisation (an earlier version's) beside rows with them: compare took them
    for two measurements and refused the folder, where every other comparison treats those columns as unknown
    (adv30)."""
    import shutil

    from pathlib import Path

    from hiera_bench.sweep.views import current_views

    older = Path(shutil.copytree(pair / "a", tmp_path / "a", symlinks=True))
    table = current_views(older) / "results.parquet"
    rows = pd.read_parquet(table)
    rows.loc[rows["img_size"] == 96, ["crop_mode", "mean", "std"]] = None
    rows.to_parquet(table)
    rows.to_csv(table.with_name("results.csv"), index=False)
    result = cli("compare", older, pair / "b", "--json")
    assert result.code == 0, result.err
    assert len(json.loads(result.out)["pairs"]) == 4


def test_compare_refuses_runs_whose_undecodable_images_differ(cli, pair, full_ckpt, class_folder, tmp_path):
    """Dropping B's undecodable images from A too would show A a top-1 its own table does not have."""
    broken = tmp_path / "val"
    shutil.copytree(class_folder, broken)
    victim = sorted(broken.rglob("*.JPEG"))[0]
    victim.write_bytes(b"not a jpeg")
    run_sweep(SweepConfig(checkpoint=str(full_ckpt), data=str(broken), out=str(tmp_path / "c"), res="64,96",
                          batch_size=6, workers=0, max_failed=0.5))
    result = cli("compare", pair / "a", tmp_path / "c")
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert "failed to decode different images" in result.err and victim.stem in result.err


def test_compare_of_a_run_with_itself_is_zero_everywhere(pair):
    result = compare_runs(pair / "a", pair / "a")
    assert all(p.delta == 0 and p.b_only == p.a_only == 0 and p.p == 1.0 for p in result.pairs)
    assert all((p.delta_ci_low, p.delta_ci_high) == (0.0, 0.0) for p in result.pairs)  # one measurement, not two
    assert "same checkpoint" in " ".join(result.notes)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    hio.file_mode.cache_clear()
    try:
        hio.atomic_write_text(tmp_path / "results.csv", "a\n")
        assert stat.S_IMODE((tmp_path / "results.csv").stat().st_mode) == mode
    finally:
        os.umask(old)
        hio.file_mode.cache_clear()


def test_a_sweeps_files_are_readable_by_the_group_under_a_shared_umask(cli, full_ckpt, class_folder, tmp_path):
    old = os.umask(0o022)
    hio.file_mode.cache_clear()
    try:
        result = cli("sweep", "-c", full_ckpt, "--data", class_folder, "--res", "64", "--device", "cpu", "--quiet",
                     "--out", tmp_path / "run")
    finally:
        os.umask(old)
        hio.file_mode.cache_clear()
    assert result.code == 0, result.err
    for name in ("results.csv", "results.parquet", "results.md", "predictions.parquet", "run.json"):
        assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == 0o644, name


def test_version(cli):
    result = cli("--version")
    assert result.code == 0 and result.out.startswith("hiera-bench 0.1.0 (timm ")


def test_a_cell_with_no_correct_image_gets_a_ci_of_nonzero_width(pair):
    table = build([pair / "a"])
    zero = table[table["top1"] == 0]
    assert len(zero) and (zero["top1_ci_high"] > 20).all() and np.isclose(zero["top1_ci_low"], 0).all()


def test_one_sweep_command_runs_several_checkpoints_into_one_table(cli, full_ckpt, abswin_ckpt, class_folder, tmp_path):
    result = cli("sweep", "-c", full_ckpt, "-c", abswin_ckpt, "--label", "tiny", "--label", "small", "--data",
                 class_folder, "--img-size", "64", "--device", "cpu", "--quiet", "--out", tmp_path)
    assert result.code == 0, result.err
    for name, model in (("tiny", "hiera_tiny_224"), ("small", "hiera_small_abswin_256")):
        table = pd.read_csv(tmp_path / name / "results.csv")
        assert set(table["label"]) == {name} and set(table["model"]) == {model} and set(table["img_size"]) == {64}
    assert result.out.count(" size ┃") == 1 and "tiny: abswin" in result.out and "small: abswin" in result.out
    assert "tiny: best: " in result.out and "small: best: " in result.out


@pytest.mark.parametrize("args, message", [
    (("-c", "A", "-c", "B", "--label", "x"), "1 --label for 2 checkpoints"),
    (("-m", "hiera_tiny_224", "-m", "hiera_small_224", "-m", "hiera_base_224", "-c", "A", "-c", "B"),
     "3 --model for 2 --checkpoint"),
    (("-c", "a/ckpt", "-c", "b/ckpt"), "share the label 'ckpt'"),
    (("--img-size", "64", "--res", "64,96", "-c", "A"), "--img-size and --res"),
    (("--amp-dtype", "int8", "-c", "A"), "--amp-dtype 'int8'"),
])
def test_several_checkpoints_usage_errors_are_one_line(cli, args, message):
    result = cli("sweep", *args)
    assert result.code == 2 and result.err.count("\n") == 1 and message in result.err, result.err


def test_timm_spellings_and_a_bare_amp(cli, full_ckpt, class_folder, tmp_path):
    result = cli("sweep", "-c", full_ckpt, "--data", class_folder, "--img-size", "64", "--device", "cpu", "--amp",
                 "--torchcompile", "--quiet", "--out", tmp_path / "run")
    assert result.code == 0, result.err
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["config"]["amp"] == "none" and run["config"]["compile"] is True  # bare --amp: fp32 on a CPU
    assert run["sizes"] == [64]
    result = cli("sweep", "-c", full_ckpt, "--data", class_folder, "--img-size", "64", "--device", "cpu",
                 "--amp-dtype", "bfloat16", "--quiet", "--out", tmp_path / "bf16")
    assert result.code == 0, result.err
    assert set(pd.read_csv(tmp_path / "bf16" / "results.csv")["dtype"]) == {"bf16"}


def test_progress_in_a_log_is_plain_lines_with_a_rate_and_eta(cli, full_ckpt, class_folder, tmp_path):
    result = cli("sweep", "-c", full_ckpt, "--data", class_folder, "--res", "64,96", "--device", "cpu", "-b", "4",
                 "--progress-every", "0", "--out", tmp_path / "run")
    assert result.code == 0, result.err
    lines = [line for line in result.err.splitlines() if "/s, eta " in line]
    assert len(lines) == 3  # one per batch of 4 images (each counts its 3 forwards: interp and abswin at 96, native 64)
    assert [line.split(": ")[-1].split(" (")[0] for line in lines] == ["12/36", "24/36", "36/36"]
    assert lines[-1].endswith("(100.0 %), " + lines[-1].split("(100.0 %), ")[1]) and "eta 0:00:00" in lines[-1]
    assert result.err.splitlines()[0].endswith(": started")
    assert "\x1b[" not in result.err  # no terminal codes in a log


def test_the_rate_is_over_the_loop_since_it_started(monkeypatch, capsys):
    """Progress lines in a log: the rate is over the loop since it started, so a short run's single line (one
    batch) or its last batch (counted right after the one before) is never work read as done in no time."""
    import hiera_bench.cli.sweep as cli_sweep

    clock = [100.0]
    monkeypatch.setattr(cli_sweep.time, "monotonic", lambda: clock[0])
    progress = cli_sweep.RichProgress(enabled=True, every=0.0)
    assert progress.lines  # stderr is captured, not a terminal
    progress.start(300, "m")
    for t, n in ((110.0, 100), (112.0, 100), (114.0, 100)):
        clock[0] = t
        progress.advance(n)
    rates = [line.split("), ")[1] for line in capsys.readouterr().err.splitlines() if "/s" in line]
    assert rates == ["10/s, eta 0:00:20", "17/s, eta 0:00:06", "21/s, eta 0:00:00"]
    progress.start(240, "one batch")
    clock[0] = 124.0
    progress.advance(240)
    progress.advance(0)  # a torchrun rank 0 ticking on while the other ranks finish: no second last line
    said = capsys.readouterr().err.strip().splitlines()
    assert said[-1].endswith("240/240 (100.0 %), 24/s, eta 0:00:00") and sum("240/240" in s for s in said) == 1


def test_a_sweep_draws_its_figures_into_its_run_folder(cli, full_ckpt, class_folder, tmp_path):
    result = cli("sweep", "-c", full_ckpt, "--data", class_folder, "--res", "64,96", "--device", "cpu", "-q",
                 "--out", tmp_path / "run")
    assert result.code == 0, result.err
    for name in ("top1-vs-size.png", "top1-vs-gflops.png"):
        assert (tmp_path / "run" / "plots" / name).stat().st_size > 10_000
    result = cli("sweep", "-c", full_ckpt, "--data", class_folder, "--res", "64", "--device", "cpu", "-q",
                 "--no-plots", "--out", tmp_path / "bare")
    assert result.code == 0 and not (tmp_path / "bare" / "plots").exists()


def test_several_data_sets_in_one_sweep_get_a_run_folder_and_a_column_group_each(cli, full_ckpt, class_folder,
                                                                                  tmp_path):
    import shutil

    v2 = tmp_path / "v2"
    shutil.copytree(class_folder, v2)
    for extra in sorted(v2.glob("*/*.JPEG"))[::3]:
        extra.unlink()  # another set: fewer images
    result = cli("sweep", "-c", full_ckpt, "--data", f"val={class_folder}", "--data", f"v2={v2}", "--res", "64",
                 "--device", "cpu", "-q", "--no-plots", "--label", "tiny", "--out", tmp_path / "runs")
    assert result.code == 0, result.err
    for name, n in (("val", 12), ("v2", 8)):
        table = pd.read_csv(tmp_path / "runs" / name / "results.csv")
        assert set(table["data_name"]) == {name} and set(table["n_images"]) == {n} and set(table["label"]) == {"tiny"}
    assert "tiny [data val]: abswin" in result.out and "tiny [data v2]: abswin" in result.out
    result = cli("sweep", "-c", full_ckpt, "--data", f"a={class_folder}", "--data", f"a={v2}")
    assert result.code == 2 and "both named 'a'" in result.err
