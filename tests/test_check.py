"""``hiera-bench check``: exit 0 when cells hold, 1 on a regression, 2 when run and baseline cannot be compared."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from hiera_bench.check import compare
from hiera_bench.sweep import SweepConfig, run_sweep
from hiera_bench.errors import UserError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, full_ckpt, class_folder):
    out = tmp_path_factory.mktemp("run")
    run_sweep(SweepConfig(checkpoint=str(full_ckpt), data=str(class_folder), out=str(out), res="32,64,96",
                          batch_size=6, workers=0))
    return out


@pytest.fixture
def results(run_dir) -> pd.DataFrame:
    return pd.read_csv(run_dir / "results.csv")


def _save(df: pd.DataFrame, tmp_path, name="baseline.csv"):
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def _at(df, scheme, size):
    return (df["scheme"] == scheme) & (df["img_size"] == size)


def test_run_against_itself_holds(cli, run_dir):
    result = cli("check", run_dir, "--baseline", run_dir, "--ci")
    assert result.code == 0, result.err
    assert "ok: all 6 cells hold" in result.out and "hold" in result.out


def test_small_drop_holds_larger_drop_fails(cli, run_dir, results, tmp_path):
    base = results.copy()
    base.loc[_at(base, "interp", 96), "top1"] += 0.15  # the run is 0.15 points worse: within 0.2
    assert cli("check", run_dir, "--baseline", _save(base, tmp_path)).code == 0
    base.loc[_at(base, "abswin", 32), "top1"] += 0.5
    result = cli("check", run_dir, "--baseline", _save(base, tmp_path), "--json")
    assert result.code == 1, result.err
    verdicts = json.loads(result.out)
    assert verdicts["ok"] is False and verdicts["n_failed"] == 1 and verdicts["n_cells"] == 6
    bad = [c for c in verdicts["cells"] if c["verdict"] != "hold"]
    assert [(c["scheme"], c["img_size"], c["verdict"]) for c in bad] == [("abswin", 32, "drop")]
    assert bad[0]["delta"] == pytest.approx(-0.5)
    assert cli("check", run_dir, "--baseline", _save(base, tmp_path), "--tol", "0.6").code == 0
    human = cli("check", run_dir, "--baseline", _save(base, tmp_path))
    assert human.code == 1 and "FAIL: 1 of 6 cells regressed in top1" in human.out and "drop" in human.out


def test_ci_flag_fails_a_cell_below_the_baseline_interval(cli, run_dir, results, tmp_path):
    base = results.copy()
    run_value = float(base.loc[_at(base, "interp", 64), "top1"].iloc[0])
    base.loc[_at(base, "interp", 64), ["top1", "top1_ci_low"]] = [run_value + 0.1, run_value + 0.05]
    path = _save(base, tmp_path)
    assert cli("check", run_dir, "--baseline", path).code == 0
    result = cli("check", run_dir, "--baseline", path, "--ci")
    assert result.code == 1 and "below CI" in result.out


def test_lower_is_better_metrics_fail_when_they_rise(cli, run_dir, results, tmp_path):
    base = results.copy()
    base.loc[_at(base, "interp", 32), "nll"] -= 0.3
    path = _save(base, tmp_path)
    assert cli("check", run_dir, "--baseline", path, "--metric", "nll").code == 1
    assert cli("check", run_dir, "--baseline", path, "--metric", "top1").code == 0
    base.loc[_at(base, "interp", 32), "nll"] += 0.6  # the run is better: never a failure
    assert cli("check", run_dir, "--baseline", _save(base, tmp_path), "--metric", "nll").code == 0


@pytest.mark.parametrize("change, expected", [
    (lambda b: b.assign(data_fingerprint="0123456789abcdef"), "different data (fingerprint"),
    (lambda b: b.assign(crop_pct=0.95), "crops (--crop-pct 0.95; the run has 0.875)"),
    (lambda b: b.assign(interpolation="bilinear"), "preprocessing (interpolation)"),
    (lambda b: b.assign(checkpoint_sha256="f" * 64), "checkpoint (sha256)"),
    (lambda b: b.assign(limit=6, data_fingerprint="0123456789abcdef"), "data subset (--limit)"),  # other images
    (lambda b: pd.concat([b, b[_at(b, "interp", 96)].assign(img_size=128)]), "lacks 1 baseline cell(s): hiera_tiny_224 interp@128"),
])
def test_incomparable_baselines_are_usage_errors_naming_what_differs(cli, run_dir, results, tmp_path, change, expected):
    result = cli("check", run_dir, "--baseline", _save(change(results.copy()), tmp_path))
    assert result.code == 2, (result.code, result.out)
    assert result.err.startswith("error: ") and expected in result.err and "Traceback" not in result.err


@pytest.mark.parametrize("args, expected", [
    (["--baseline", "{tmp}/nowhere.csv"], "does not exist"),
    (["--baseline", "{tmp}"], "not a run folder"),
    (["--baseline", "{run}", "--metric", "top7"], "--metric 'top7'"),
    (["--baseline", "{run}", "--tol", "-1"], "--tol must be a finite number, 0 or more"),
    (["--baseline", "{run}", "--tol", "inf"], "--tol must be a finite number"),  # a templated value turned the gate off
    (["--baseline", "{run}", "--metric", "nll", "--ci"], "only top1 has one"),
])
def test_usage_errors_exit_2(cli, run_dir, tmp_path, args, expected):
    args = [a.format(tmp=tmp_path, run=run_dir) for a in args]
    result = cli("check", run_dir, *args)
    assert result.code == 2 and expected in result.err, result.err


def test_cells_missing_from_the_baseline_are_listed_not_failed(cli, run_dir, results, tmp_path):
    base = results[~_at(results, "abswin", 96)]
    result = cli("check", run_dir, "--baseline", _save(base, tmp_path))
    assert result.code == 0 and "1 cell(s) not in the baseline, not checked: abswin (global 2x2)@96" in result.out


def test_a_baseline_without_ci_columns_refuses_ci(results):
    old = results.drop(columns=["top1_ci_low", "top1_ci_high"])
    assert compare(results, old).ok
    with pytest.raises(UserError, match="--ci needs"):
        compare(results, old, use_ci=True)


def test_a_run_cell_that_was_not_evaluated_fails(results):
    run = results.astype({"reason": object})
    run.loc[_at(run, "abswin", 96), ["status", "reason", "top1"]] = ["skipped", "out of memory", float("nan")]
    result = compare(run, results)
    assert not result.ok and [c.verdict for c in result.cells if c.failed] == ["not evaluated"]


# --- a run folder holds every sweep into it: the gate checks its latest -----------------------------------

def _sweep(cli, ckpt, data, out, *extra):
    result = cli("sweep", "-c", ckpt, "--data", data, "-o", out, "--res", "32,64,96", "--device", "cpu", "-b", "6",
                 "-j", "0", "--no-plots", "-q", *extra)
    assert result.code in (0, 1), result.err  # 1: more images failed than --max-failed; the table is written
    return result


@pytest.fixture(scope="module")
def other_ckpt(tmp_path_factory):
    from hiera_bench.testing import TINY_ARGS, WNIDS, save_checkpoint_folder, tiny_hiera

    net = tiny_hiera("hiera_tiny_224", img_size=64, num_classes=3, seed=12)
    return save_checkpoint_folder(net, tmp_path_factory.mktemp("other") / "ckpt", "hiera_tiny_224", TINY_ARGS,
                                  label_names=sorted(WNIDS))


def test_a_new_checkpoint_swept_into_an_old_folder_is_checked_not_the_old_cells(cli, run_dir, other_ckpt,
                                                                                 class_folder, full_ckpt, tmp_path):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder, symlinks=True)  # the baseline's own cells, still in the folder
    _sweep(cli, other_ckpt, class_folder, folder)
    result = cli("check", folder, "--baseline", run_dir)
    assert result.code == 2 and "different checkpoint (sha256)" in result.err, result.out + result.err
    # the folder's own results file is checked as the folder (it passed on the old checkpoint's rows, in it too)
    own = cli("check", folder / "results.csv", "--baseline", run_dir)
    assert own.code == 2 and "different checkpoint (sha256)" in own.err, own.out + own.err
    # a copy of it (an artifact) has no run.json to say which sweep came last: two models of one name are refused
    copy = tmp_path / "artifact.csv"
    copy.write_bytes((folder / "results.csv").read_bytes())
    mixed = cli("check", copy, "--baseline", run_dir)
    assert mixed.code == 2 and "of 2 models under one name (checkpoint (sha256)" in mixed.err, mixed.out + mixed.err
    # the first checkpoint again (every cell reused): checked, and the other checkpoint's cells are said
    _sweep(cli, full_ckpt, class_folder, folder)
    again = cli("check", folder, "--baseline", run_dir, "--json")
    assert again.code == 0, again.err
    verdicts = json.loads(again.out)
    assert verdicts["n_cells"] == 6 and verdicts["new"] == [] and verdicts["left_out"] == 6
    assert verdicts["notes"] == ["6 cell(s) of earlier sweeps in the run folder not checked: another checkpoint, "
                                 "data or options than its latest sweep's (run.json cells)"]
    assert "note: 6 cell(s) of earlier sweeps" in cli("check", folder, "--baseline", run_dir).out


def test_sizes_swept_by_earlier_commands_of_the_same_checkpoint_are_checked(cli, run_dir, full_ckpt, other_ckpt,
                                                                            class_folder, tmp_path):
    """The latest sweep names what is gated (its checkpoint, data, options), not which command measured a size."""
    folder = tmp_path / "run"
    common = ["--data", class_folder, "-o", folder, "--device", "cpu", "-b", "6", "-j", "0", "--no-plots", "-q"]
    for ckpt, res in ((other_ckpt, "64"), (full_ckpt, "32,64"), (full_ckpt, "96")):
        result = cli("sweep", "-c", ckpt, "--res", res, *common)
        assert result.code == 0, result.err
    verdicts = json.loads(cli("check", folder, "--baseline", run_dir, "--json").out)
    assert verdicts["ok"] and verdicts["n_cells"] == 6 and verdicts["left_out"] == 2, verdicts
    result = cli("sweep", "-c", other_ckpt, "--res", "96", *common)
    assert result.code == 0, result.err
    result = cli("check", folder, "--baseline", run_dir)
    assert result.code == 2 and "different checkpoint (sha256)" in result.err, result.err


def test_a_run_folder_whose_run_json_lists_no_cells_cannot_say_which_model_is_the_run(cli, run_dir, other_ckpt,
                                                                                     class_folder, tmp_path):
    """A folder from before run.json listed its cells, holding two checkpoints' cells: it once passed by checking
    the old checkpoint's cells and listing the new one's as "not in the baseline"."""
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder, symlinks=True)
    _sweep(cli, other_ckpt, class_folder, folder)
    info = (folder / "run.json").resolve()
    raw = json.loads(info.read_text())
    del raw["cells"]  # a folder from before run.json listed its cells
    info.unlink()
    info.write_text(json.dumps(raw))
    result = cli("check", folder, "--baseline", run_dir)
    assert result.code == 2 and "does not say which sweep came last" in result.err, result.out + result.err
    _sweep(cli, other_ckpt, class_folder, folder)  # swept again by this version: its run.json names the cells
    again = cli("check", folder, "--baseline", run_dir)
    assert again.code == 2 and "different checkpoint (sha256)" in again.err, again.out + again.err


# --- images that failed to decode change the image set ----------------------------------------------------

def test_a_run_that_lost_images_to_decoding_cannot_be_compared(cli, run_dir, results, full_ckpt, class_folder,
                                                              tmp_path):
    import shutil

    broken = tmp_path / "val"
    shutil.copytree(class_folder, broken)
    first = sorted(broken.rglob("*.JPEG"))[0]
    first.write_bytes(b"")  # same ids and labels (the same data fingerprint), one image undecodable
    folder = tmp_path / "run"
    _sweep(cli, full_ckpt, broken, folder, "--max-failed", "10")
    result = cli("check", folder, "--baseline", run_dir, "--tol", "100")
    assert result.code == 2, result.out + result.err
    assert result.err.startswith("error: hiera_tiny_224 ") and len(result.err.strip().splitlines()) == 1
    assert ("and 5 more cell(s) evaluated 11 images (1 failed to decode) in the run but 12 images (0 failed to "
            "decode) in the baseline") in result.err and "repair the images" in result.err, result.err
    assert cli("check", run_dir, "--baseline", folder, "--tol", "100").code == 2  # either way round
    # a baseline without the counts (made by hand, or by an old version) is not held to them
    bare = _save(results.drop(columns=["n_images", "n_failed"]), tmp_path)
    assert cli("check", folder, "--baseline", bare, "--tol", "100").code == 0


def test_a_parquet_table_holding_bytes_for_a_number_is_one_line(cli, results, tmp_path):
    """A parquet file may hold any type where a number belongs: the message formatted it as a number, a TypeError
    traceback (adv35)."""
    path = tmp_path / "bytes.parquet"
    results.assign(top1=[b"x"] * len(results)).to_parquet(path)
    result = cli("check", path, "--baseline", path)
    assert result.code == 2 and "top1 b'x' (row 1) is not a number" in result.err, result.err


def test_runs_that_lost_other_images_to_decoding_cannot_be_compared(cli, full_ckpt, class_folder, tmp_path):
    """As many images failed in the run as in the baseline, but other ones: the counts agreed, so the gate passed with
    each cell's top-1 over another set of images (adv33). Each run.json lists its failed images: they must agree too;
    a baseline results file, which does not list them, is compared with a note."""
    import shutil

    runs = []
    for i in range(2):
        copy = tmp_path / f"val{i}"
        shutil.copytree(class_folder, copy)
        broken = sorted(copy.rglob("*.JPEG"))[i]
        stat = broken.stat()
        broken.write_bytes(broken.read_bytes()[:200])  # a JPEG cut short, its size the only trace in the key
        os.utime(broken, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        runs.append(tmp_path / f"run{i}")
        _sweep(cli, full_ckpt, copy, runs[-1], "--max-failed", "10")
    result = cli("check", runs[1], "--baseline", runs[0], "--tol", "100")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.out + result.err
    assert "the run and the baseline failed to decode different images (2 in one only, e.g. ILSVRC2012_val_00000" \
        in result.err and "make a new baseline on the same images" in result.err, result.err
    assert cli("check", runs[0], "--baseline", runs[0]).code == 0
    bare = shutil.copy(runs[0] / "results.csv", tmp_path / "baseline.csv")
    noted = cli("check", runs[1], "--baseline", bare, "--tol", "100")
    assert noted.code == 0 and "note: which images failed to decode was not compared (the baseline is a results " \
        "file" in noted.out, noted.out


def test_a_baseline_cut_inside_a_row_or_pasted_twice(cli, run_dir, tmp_path):
    """A results.csv cut inside a row was read as that row with its last values empty (pandas fills them), and check
    passed with the rest of the table's cells unchecked; a table pasted twice counted each cell twice (adv33)."""
    text = (run_dir / "results.csv").read_text()
    lines = text.splitlines(keepends=True)
    cut = tmp_path / "cut.csv"
    cut.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])
    result = cli("check", run_dir, "--baseline", cut)
    assert result.code == 2 and "is truncated or corrupt (record 4 has " in result.err, result.out + result.err
    packed = tmp_path / "baseline.csv.gz"  # pandas reads it whole, or says it is cut
    packed.write_bytes(gzip.compress(text.encode()))
    assert cli("check", run_dir, "--baseline", packed).code == 0
    twice = tmp_path / "twice.csv"
    twice.write_text(text + "".join(lines[1:]))
    n_ok = int((pd.read_csv(run_dir / "results.csv")["status"] == "ok").sum())
    result = cli("check", run_dir, "--baseline", twice)
    assert result.code == 0 and f"ok: all {n_ok} cells hold" in result.out, result.out + result.err


# --- a change of precision is said, not refused ----------------------------------------------------------

@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory, full_ckpt, class_folder):
    out = tmp_path_factory.mktemp("bf16") / "run"
    run_sweep(SweepConfig(checkpoint=str(full_ckpt), data=str(class_folder), out=str(out), res="32,64,96",
                          batch_size=6, workers=0, amp="bf16", device="cpu"))
    return out


def test_check_and_compare_note_a_change_of_precision(cli, run_dir, bf16_run):
    human = cli("check", bf16_run, "--baseline", run_dir, "--tol", "100")
    assert human.code == 0, human.err
    assert "note: precision (dtype) differs: run bf16, baseline float32 (6 of 6 cells)" in human.out, human.out
    verdicts = json.loads(cli("check", bf16_run, "--baseline", run_dir, "--tol", "100", "--json").out)
    assert len(verdicts["notes"]) == 1 and verdicts["notes"][0].startswith("precision (dtype) differs: run bf16")
    assert json.loads(cli("check", run_dir, "--baseline", run_dir, "--json").out)["notes"] == []
    compared = cli("compare", run_dir, bf16_run, "--json")
    assert compared.code == 0, compared.err
    assert any(n.startswith("precision (dtype) differs: float32 vs bf16") for n in json.loads(compared.out)["notes"])


def test_a_baseline_re_made_in_its_own_folder_is_the_new_one(cli, full_ckpt, other_ckpt, class_folder, tmp_path):
    """Re-baselining into the committed baseline folder is a routine CI step: the folder's latest sweep is the
    baseline, and the older checkpoint's cells still there are left out with a note."""
    base, run = tmp_path / "base", tmp_path / "run"
    _sweep(cli, other_ckpt, class_folder, base)
    _sweep(cli, full_ckpt, class_folder, base)
    _sweep(cli, full_ckpt, class_folder, run)
    result = cli("check", run, "--baseline", base)
    assert result.code == 0, result.err
    assert "6 cell(s) of earlier sweeps in the baseline folder not used" in result.out
    assert cli("check", base, "--baseline", base).code == 0


def test_a_table_that_does_not_name_the_abswin_grid_is_never_matched_to_some_grid(cli, run_dir, results, tmp_path):
    """Tables of versions before the global_size column do not say on which grid their abswin cells of a full-grid
    checkpoint were fitted (``--global-size`` existed already): such cells are not matched to whatever grid the other
    side has, which once passed a run of another grid against them. They are missing cells, exit 2."""
    assert results.loc[results["scheme"].eq("abswin"), "global_size"].notna().all()
    old = results.drop(columns=["global_size"])
    for args in ((run_dir, "--baseline", _save(old, tmp_path)), (_save(old, tmp_path, "run.csv"), "--baseline", run_dir)):
        result = cli("check", *args)
        assert result.code == 2 and "lacks 3 baseline cell(s)" in result.err, result.out + result.err
        which = "baseline" if args[0] == run_dir else "run"
        assert f"the {which} " in result.err and "before tables named the abswin fit's global grid" in result.err
    # a run that lacks cells for another reason is not blamed on the grid
    fewer = _save(results[results["img_size"].ne(results["img_size"].max())], tmp_path, "fewer.csv")
    result = cli("check", fewer, "--baseline", run_dir)
    assert result.code == 2 and "lacks" in result.err and "global grid" not in result.err, result.err


def test_compare_takes_the_same_images_under_an_old_limit_equal_to_the_data_size(cli, run_dir, results, tmp_path):
    """Versions before a --limit at or above the data's size was dropped kept it (here 12 of 12 images): the data
    fingerprint, of the ids and labels the limit selected, is the same, so the images are; compare once refused."""
    import shutil

    old = Path(shutil.copytree(run_dir, tmp_path / "old", symlinks=True))
    views = (old / "results.parquet").resolve().parent
    table = pd.read_parquet(views / "results.parquet").assign(limit=12)
    assert (table["n_images"] + table["n_failed"]).eq(12).all()
    table.to_parquet(views / "results.parquet")
    table.to_csv(views / "results.csv", index=False)
    result = cli("compare", old, run_dir, "--at", "64")
    assert result.code == 0, result.err
    other = table.assign(limit=6, data_fingerprint="0123456789abcdef")  # other images: still refused
    other.to_parquet(views / "results.parquet")
    other.to_csv(views / "results.csv", index=False)
    refused = cli("compare", old, run_dir, "--at", "64")
    assert refused.code == 2 and "evaluated on different images" in refused.err


def test_compare_notes_an_abswin_fit_on_another_global_grid(cli, run_dir, full_ckpt, class_folder, tmp_path):
    run_sweep(SweepConfig(checkpoint=str(full_ckpt), data=str(class_folder), out=str(tmp_path / "g1"), res="64,96",
                          global_size=1, batch_size=6, workers=0))
    compared = cli("compare", run_dir, tmp_path / "g1", "--at", "96", "--json")
    assert compared.code == 0, compared.err
    assert "the abswin fit's global grid differs: 2x2 vs 1x1 — the difference includes that change" in \
        json.loads(compared.out)["notes"]


# --- a checkpoint folder's architecture arguments --------------------------------------------------------

def _edit_args(ckpt: Path, **changes) -> None:
    config = json.loads((ckpt / "config.json").read_text())
    config["model_args"].update(changes)
    (ckpt / "config.json").write_text(json.dumps(config))


def test_a_change_of_config_json_model_args_is_a_new_model_not_a_cached_one(cli, run_dir, full_ckpt, class_folder,
                                                                              tmp_path):
    """A PR that edits only config.json's model_args (q_pool changes the forward, not one weight): the cached run
    folder once showed the old cells (same keys) and check passed on them; a fresh folder failed."""
    import shutil

    ckpt = Path(shutil.copytree(full_ckpt, tmp_path / "ckpt"))
    folder = Path(shutil.copytree(run_dir, tmp_path / "run", symlinks=True))  # job 1's cells, cached
    before = {p.name for p in (folder / "cells").iterdir()}
    _edit_args(ckpt, q_pool=1)
    _sweep(cli, ckpt, class_folder, folder)
    after = {p.name for p in (folder / "cells").iterdir()}
    assert len(after - before) == 6, "every cell measured again with the new arguments"
    table = pd.read_csv(folder / "results.csv")
    assert len(table) == 6 and table["model_args"].nunique() == 1  # the views show the new cells where the old were
    result = cli("check", folder, "--baseline", run_dir)
    assert result.code == 2 and "architecture (the checkpoint folder's config.json model_args)" in result.err, \
        result.out + result.err
    assert cli("check", folder, "--baseline", folder).code == 0


def test_a_baseline_from_before_model_args_were_recorded_is_checked_with_a_note(cli, run_dir, results, tmp_path):
    old = results.drop(columns=["model_args"])
    result = cli("check", run_dir, "--baseline", _save(old, tmp_path), "--json")
    assert result.code == 0, result.err
    assert any("does not record the checkpoint folder's config.json model_args" in n
               for n in json.loads(result.out)["notes"])


@pytest.mark.parametrize("bad", [
    {"patch_padding": [0, 0]},  # builds, and every weight fits, but the patch grid is 15x15, not 16x16
    {"q_stride": [0, 0]},  # ZeroDivisionError, once a traceback (adv15)
    {"dim_mul": 0.5},
    {"sep_pos_embed": True},  # IndexError
])
def test_model_args_the_net_fails_with_are_one_line(cli, full_ckpt, class_folder, tmp_path, bad):
    import shutil

    ckpt = Path(shutil.copytree(full_ckpt, tmp_path / "ckpt"))
    _edit_args(ckpt, **bad)
    result = cli("sweep", "-c", ckpt, "--data", class_folder, "-o", tmp_path / "run", "--res", "64", "-q")
    assert result.code == 2 and "config.json" in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1


def test_cells_of_a_version_before_model_args_are_not_grouped_with_cells_that_have_them(monkeypatch, full_ckpt,
                                                                                         class_folder, tmp_path):
    """A folder of the version before: its cells carry no model_args. Adding a size measured the native cell again
    (with them) and the views split the label in two, the old rows without a native cell, Δ or stars."""
    import hiera_bench.models as models

    out = tmp_path / "run"
    with monkeypatch.context() as patch:  # the version before recorded none
        patch.setattr(models, "args_digest", lambda args: None)
        run_sweep(SweepConfig(checkpoint=str(full_ckpt), data=str(class_folder), out=str(out), res="32,64,96",
                              batch_size=6, workers=0))
    assert pd.read_csv(out / "results.csv")["model_args"].isna().all()
    result = run_sweep(SweepConfig(checkpoint=str(full_ckpt), data=str(class_folder), out=str(out), res="128",
                                   batch_size=6, workers=0))
    table = pd.read_csv(out / "results.csv")
    assert sorted(table["img_size"].unique()) == [64, 128] and table["model_args"].notna().all()
    assert table.loc[table["img_size"].eq(128), "top1_delta_vs_native"].notna().all()
    assert result.run["cells_of_other_model_args"] == 4  # 32 and 96 px, both schemes: kept in cells/, not shown


def test_cells_of_other_model_args_are_not_shown_beside_a_sweep_of_new_ones(cli, run_dir, full_ckpt, class_folder,
                                                                              tmp_path):
    """config.json edited, then one size swept again: the views showed a half-old, half-new model, the old-args
    sizes as a label of their own without a native cell (adv15)."""
    import shutil

    ckpt = Path(shutil.copytree(full_ckpt, tmp_path / "ckpt"))
    folder = Path(shutil.copytree(run_dir, tmp_path / "run", symlinks=True))
    _edit_args(ckpt, q_pool=1)
    result = cli("sweep", "-c", ckpt, "--data", class_folder, "-o", folder, "--res", "64", "--device", "cpu", "-b",
                 "6", "-j", "0", "--no-plots")
    assert result.code == 0, result.err
    table = pd.read_csv(folder / "results.csv")
    assert list(table["img_size"].unique()) == [64] and table["model_args"].nunique() == 1
    assert "4 cell(s) of earlier sweeps were measured under other config.json model_args" in result.err


def test_a_folder_without_model_args_is_the_same_model_as_its_bare_weights():
    """A checkpoint folder whose config.json gives no model_args (or only training-time ones) builds timm's net for
    the name, as the weights file alone does: the same cells, not "another architecture" (adv15)."""
    from hiera_bench.models import architecture_digest
    from hiera_bench.testing import TINY_ARGS

    assert architecture_digest({}) is None and architecture_digest({"drop_path_rate": 0.1}) is None
    assert architecture_digest(dict(TINY_ARGS)) == architecture_digest({**TINY_ARGS, "drop_path_rate": 0.2}) is not None
    assert architecture_digest({**TINY_ARGS, "q_pool": 1}) != architecture_digest(dict(TINY_ARGS))


def test_only_an_unfinished_sweep_of_the_run_s_model_blocks_its_gate(cli, run_dir, tmp_path):
    """A sweep that began after the views and did not finish blocks check for its model; a concurrent sweep of another
    model, or a mark in the baseline folder, does not (adv15: a nightly sweep into the baseline blocked every gate)."""
    import shutil
    import time

    from hiera_bench.sweep.store import RunDir

    folder = Path(shutil.copytree(run_dir, tmp_path / "run", symlinks=True))
    model = pd.read_csv(folder / "results.csv")["model"].iloc[0]
    RunDir(folder).begin_sweep(time.time() + 1, "another-model")
    assert cli("check", folder, "--baseline", run_dir).code == 0
    baseline = Path(shutil.copytree(run_dir, tmp_path / "base", symlinks=True))
    RunDir(baseline).begin_sweep(time.time() + 1, model)
    assert cli("check", folder, "--baseline", baseline).code == 0
    RunDir(folder).begin_sweep(time.time() + 1, model)
    refused = cli("check", folder, "--baseline", baseline)
    assert refused.code == 2 and "the run" in refused.err and "has not finished" in refused.err, refused.err
    # the same folder copied with its links dereferenced (a CI artifact): its results file is read as the folder
    copied = Path(shutil.copytree(folder, tmp_path / "artifact", symlinks=False))
    also = cli("check", copied / "results.csv", "--baseline", baseline)
    assert also.code == 2 and "has not finished" in also.err, also.err


def test_a_sweep_that_fails_or_dies_while_it_loads_blocks_the_gate(cli, run_dir, full_ckpt, class_folder, tmp_path):
    """A sweep into a run folder that failed at its checkpoint (non-finite weights) or at its data, or was killed
    while they loaded, left no mark: the next step's check passed on the folder's earlier results (adv24)."""
    import shutil

    from safetensors.torch import load_file, save_file

    broken = Path(shutil.copytree(full_ckpt, tmp_path / "broken"))
    weights = load_file(broken / "model.safetensors")
    weights["head.fc.weight"][0, 0] = float("nan")
    save_file(weights, broken / "model.safetensors")
    named = Path(shutil.copytree(run_dir, tmp_path / "named", symlinks=True))
    failed = cli("sweep", "-c", broken, "--data", class_folder, "-o", named, "--res", "64", "-j", "0", "-q")
    assert failed.code == 2 and "non-finite" in failed.err, failed.err
    refused = cli("check", named, "--baseline", run_dir)
    assert refused.code == 2 and "has not finished" in refused.err, refused.err

    model = pd.read_csv(run_dir / "results.csv")["model"].iloc[0]
    root = tmp_path / "results"
    by_name = Path(shutil.copytree(run_dir, root / model, symlinks=True))  # the default --out: named by the model
    with pytest.raises(UserError):
        run_sweep(SweepConfig(checkpoint=str(full_ckpt), data=str(tmp_path / "no-such-val"), root=str(root),
                              res="64", batch_size=6, workers=0))
    refused = cli("check", by_name, "--baseline", run_dir)
    assert refused.code == 2 and "has not finished" in refused.err, refused.err

    assert cli("sweep", "-c", full_ckpt, "--data", class_folder, "-o", named, "--res", "64", "-b", "6", "-j", "0",
               "-q").code == 0
    assert cli("check", named, "--baseline", run_dir).code == 0  # a sweep that finished clears it
    other = Path(shutil.copytree(run_dir, tmp_path / "other", symlinks=True))
    bad = cli("sweep", "-c", full_ckpt, "--data", class_folder, "-o", other, "--res", "abc")
    assert bad.code == 2 and cli("check", other, "--baseline", run_dir).code == 0  # refused options begin nothing


def _config_copy(ckpt: Path, to: Path, **pretrained) -> Path:
    import shutil

    folder = Path(shutil.copytree(ckpt, to))
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"] = {**config.get("pretrained_cfg", {}), **pretrained}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_normalisation_crop_mode_and_native_size_must_match(cli, run_dir, full_ckpt, abswin_ckpt, class_folder,
                                                             tmp_path):
    """The mean/std and crop_mode of a checkpoint's config, and an abs-win checkpoint's native size, change every
    cell's numbers (they are in its key) but were in no column: check passed across them, and a folder swept again
    under another normalisation showed old and new cells as one model (adv24)."""
    sweep = ("--data", class_folder, "-b", "6", "-j", "0", "-q", "--no-plots")
    for name, change, what in (("mean", {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}, "normalisation mean"),
                               ("squash", {"crop_mode": "squash"}, "crop_mode")):
        ckpt = _config_copy(full_ckpt, tmp_path / f"ckpt-{name}", **change)
        out = tmp_path / f"run-{name}"
        assert cli("sweep", "-c", ckpt, "-o", out, "--res", "64", *sweep).code == 0
        refused = cli("check", out, "--baseline", run_dir)
        assert refused.code == 2 and what in refused.err and "not comparable" in refused.err, refused.err
        table = pd.read_csv(out / "results.csv")
        assert table[what.split()[-1]].nunique() == 1

    mixed = tmp_path / "mixed"  # 32/64/96 under the checkpoint's normalisation, then 96 under another
    import shutil
    shutil.copytree(run_dir, mixed, symlinks=True)
    assert cli("sweep", "-c", tmp_path / "ckpt-mean", "-o", mixed, "--res", "96", *sweep).code == 0
    table = pd.read_csv(mixed / "results.csv")
    assert set(table["mean"]) == {"0.485,0.456,0.406", "0.5,0.5,0.5"}
    new = table[table["mean"].eq("0.5,0.5,0.5")]
    assert sorted(new["img_size"].unique()) == [64, 96]  # its own native cell, not the old one
    assert "mean 0.5,0.5,0.5" in (mixed / "results.md").read_text()

    upgraded = tmp_path / "upgraded"  # rows of a version before the columns: filled from each cell's identity
    shutil.copytree(run_dir, upgraded, symlinks=True)
    for row_file in upgraded.glob("cells/*/row.json"):
        row = json.loads(row_file.read_text())
        row_file.write_text(json.dumps({k: v for k, v in row.items() if k not in ("crop_mode", "mean", "std")}))
    assert cli("sweep", "-c", full_ckpt, "-o", upgraded, "--res", "96", *sweep).code == 0
    table = pd.read_csv(upgraded / "results.csv")
    assert set(table["mean"]) == {"0.485,0.456,0.406"} and set(table["crop_mode"]) == {"center"}

    base, moved = tmp_path / "abswin-base", tmp_path / "abswin-128"
    assert cli("sweep", "-c", abswin_ckpt, "-o", base, "--res", "64", *sweep).code == 0
    native128 = _config_copy(abswin_ckpt, tmp_path / "abswin-ckpt-128", input_size=[3, 128, 128])
    assert cli("sweep", "-c", native128, "-o", moved, "--res", "64", *sweep).code == 0
    assert set(pd.read_csv(moved / "results.csv")["native_size"]) == {128}
    refused = cli("check", moved, "--baseline", base)
    assert refused.code == 2 and "native size" in refused.err, refused.err


def test_a_baseline_of_a_version_before_normalisation_columns_is_compared_with_a_note(cli, run_dir, tmp_path):
    table = pd.read_csv(run_dir / "results.csv").drop(columns=["crop_mode", "mean", "std"])
    result = cli("check", run_dir, "--baseline", _save(table, tmp_path))
    assert result.code == 0, result.err
    assert "does not record preprocessing (crop_mode), preprocessing (normalisation mean)" in result.out + result.err


@pytest.mark.parametrize("col,value,said", [
    ("img_size", "64px", "is not a whole number above 0"), ("img_size", "", "has no img_size"),
    ("img_size", "64.5", "is not a whole number"), ("crop_pct", "0,875", "decimal comma"),
    ("crop_pct", "0.875x", "is not a number"), ("n_images", "18 images", "is not a whole number"),
    ("limit", "all", "is not a whole number"), ("top1_ci_low", "x", "is not a number"), ("top1", "high", "not a number"),
    ("top1", "1e308", "top1 1e+308 (row 2) is not a percentage (0 to 100)"), ("ece", "-3", "is not a percentage"),
])
def test_a_table_with_a_value_of_the_wrong_kind_is_one_line(cli, results, tmp_path, col, value, said):
    """A baseline edited by hand or saved by a spreadsheet (``64px``, a decimal comma) ended check and report with a
    traceback, exit 1: to a CI gate, a regression (adv24)."""
    table = results.astype({col: object})
    table.loc[1, col] = value
    path = _save(table, tmp_path)
    for args in (("check", path, "--baseline", path, "--ci"), ("report", path, "-o", tmp_path / "r")):
        result = cli(*args)
        assert result.code == 2 and said in result.err and "row 2" in result.err, (args, result.err)
        assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err


def test_report_and_compare_note_a_later_sweep_that_did_not_finish(cli, run_dir, tmp_path):
    """check refuses a folder into which a later sweep of its model did not finish; report and compare showed its
    earlier views without a word (adv23)."""
    import shutil
    import time

    from hiera_bench.sweep.store import RunDir

    folder = Path(shutil.copytree(run_dir, tmp_path / "run", symlinks=True))
    model = pd.read_csv(folder / "results.csv")["model"].iloc[0]
    RunDir(folder).begin_sweep(time.time() + 1, model)
    report = cli("report", folder, "-o", tmp_path / "report")
    assert report.code == 0 and "has not finished" in report.err, report.err
    assert "has not finished" in (tmp_path / "report" / "report.md").read_text()
    compared = cli("compare", run_dir, folder)
    assert compared.code == 0 and "has not finished" in compared.out, compared.out
    assert "has not finished" not in cli("compare", run_dir, run_dir).out


def test_messages_name_what_was_given(cli, run_dir, tmp_path):
    """Misleading one-liners (adv24): /dev/null "does not exist"; a results file given to compare "has no
    predictions.parquet ... re-run its sweep"; report of a results file without -o failed with "Not a directory"."""
    import shutil

    assert "neither a folder nor a file" in cli("check", run_dir, "--baseline", "/dev/null").err
    compared = cli("compare", run_dir / "results.csv", run_dir)
    assert compared.code == 2 and "is a results file" in compared.err and "run folder" in compared.err, compared.err
    folder = Path(shutil.copytree(run_dir, tmp_path / "run", symlinks=True))
    reported = cli("report", folder / "results.parquet")
    assert reported.code == 0 and (folder / "report" / "report.md").is_file(), reported.err


def test_the_readers_of_run_folders_start_without_torch(tmp_path):
    """check (a CI gate), compare and report read tables and records: importing torch and timm for them was 4-5 s of
    a 6 s check on a 2-core VM; the sweep's own modules now import them where a forward needs them."""
    import subprocess
    import sys

    demo = Path(__file__).resolve().parents[1] / "results" / "demo"
    script = """
import runpy, sys
sys.argv = ["hiera-bench", *sys.argv[1:]]
try:
    runpy.run_module("hiera_bench", run_name="__main__")
except SystemExit as stop:
    assert not stop.code, stop.code
print(sorted(m for m in ("torch", "timm", "torchvision", "datasets") if m in sys.modules))
"""
    a, b = demo / "hiera-demo-abswin", demo / "hiera-demo-full"
    for command in (["check", a, "--baseline", a], ["compare", a, b], ["report", a, b, "-o", tmp_path / "rep"]):
        done = subprocess.run([sys.executable, "-c", script, *map(str, command)], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0 and done.stdout.splitlines()[-1] == "[]", (command, done.stdout[-300:],
                                                                                 done.stderr[-500:])
