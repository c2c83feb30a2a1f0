"""No silent wrong number, no silent loss: each case was reproduced on an earlier version (issue 12)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from hiera_bench.sweep import SweepConfig, run_sweep
from hiera_bench.testing import WNIDS, make_class_folder

from test_data_decoding import broken_files

VIEWS = ("results.csv", "results.parquet", "results.md", "predictions.parquet", "run.json")


def _sweep(cli, ckpt, data, out, *extra):
    return cli("sweep", "--checkpoint", ckpt, "--data", data, "--out", out, "--res", "32,64", "-b", "4", "-j", "0",
               "-q", *extra)


@pytest.fixture(scope="module")
def all_broken(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("broken") / "val"
    for i, wnid in enumerate(sorted(WNIDS)):
        (root / wnid).mkdir(parents=True)
        for kind, payload in broken_files().items():
            (root / wnid / f"ILSVRC2012_val_{10 * i + len(kind):08d}.JPEG").write_bytes(payload)
    return root


@pytest.fixture(scope="module")
def one_broken(tmp_path_factory) -> Path:
    root = make_class_folder(tmp_path_factory.mktemp("one") / "val", per_class=4)
    (root / sorted(WNIDS)[0] / "ILSVRC2012_val_00000999.JPEG").write_bytes(b"")
    return root


def test_a_sweep_that_decoded_no_image_is_not_ok_and_check_says_so(cli, full_ckpt, all_broken, tmp_path):
    result = _sweep(cli, full_ckpt, all_broken, tmp_path / "run")
    assert result.code == 1, result.err
    assert "cell(s) gave no result" in result.err and "could not be decoded" in result.err and "Traceback" not in result.err
    table = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(table["status"]) == {"failed"} and table["top1"].isna().all()  # written, never "ok"
    # a baseline with nothing evaluated is no baseline; a run against a good baseline fails
    assert cli("check", tmp_path / "run", "--baseline", tmp_path / "run").code == 2


def test_failed_images_above_the_threshold_exit_1_below_it_a_note(cli, full_ckpt, one_broken, tmp_path):
    over = _sweep(cli, full_ckpt, one_broken, tmp_path / "a")  # 1 of 13 = 7.7 % > 1 %
    assert over.code == 1 and "1 of 13 images (7.69 %) could not be decoded" in over.err
    assert pd.read_csv(tmp_path / "a" / "results.csv")["status"].eq("ok").all()  # the numbers are written
    under = _sweep(cli, full_ckpt, one_broken, tmp_path / "b", "--max-failed", "10")
    assert under.code == 0, under.err
    assert under.err.strip().splitlines()[-1].startswith("note: 1 of 13 images could not be decoded")


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, full_ckpt, class_folder) -> Path:
    out = tmp_path_factory.mktemp("good") / "run"
    run_sweep(SweepConfig(checkpoint=str(full_ckpt), data=str(class_folder), out=str(out), res="32,64",
                          batch_size=4, workers=0))
    return out


def test_check_fails_a_nan_run_cell_and_refuses_a_nan_baseline(cli, good_run, tmp_path):
    table = pd.read_csv(good_run / "results.csv")
    nan_run = table.copy()
    nan_run.loc[0, "top1"] = float("nan")
    nan_run.to_csv(tmp_path / "run.csv", index=False)
    result = cli("check", tmp_path / "run.csv", "--baseline", good_run, "--json")
    assert result.code == 1
    verdicts = json.loads(result.out)
    assert [c["verdict"] for c in verdicts["cells"]].count("not evaluated") == 1
    result = cli("check", good_run, "--baseline", tmp_path / "run.csv")
    assert result.code == 2 and "NaN" in result.err and len(result.err.strip().splitlines()) == 1


def test_check_refuses_tables_without_provenance_unless_told(cli, good_run, tmp_path):
    bare = pd.read_csv(good_run / "results.csv").drop(columns=["checkpoint_sha256", "data_fingerprint"])
    bare.to_csv(tmp_path / "bare.csv", index=False)
    refused = cli("check", good_run, "--baseline", tmp_path / "bare.csv")
    assert refused.code == 2 and "lacks provenance (checkpoint_sha256, data_fingerprint)" in refused.err
    assert cli("check", good_run, "--baseline", tmp_path / "bare.csv", "--allow-missing-provenance").code == 0


def test_check_says_which_file_it_reads_and_refuses_an_edited_csv(cli, good_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(good_run, copy, symlinks=True)
    ok = cli("check", copy, "--baseline", good_run)
    assert ok.code == 0 and f"run: {copy / 'results.parquet'}" in ok.out
    csv = (copy / "results.csv").resolve()
    edited = pd.read_csv(csv)
    edited.loc[edited["status"] == "ok", "nll"] += 5  # (top1 is 0 here: a drop below it is no percentage)
    csv.write_text(edited.to_csv(index=False))
    refused = cli("check", copy, "--baseline", good_run)
    assert refused.code == 2 and "results.csv differs from results.parquet" in refused.err
    # asked for the csv itself: it is read, and fails
    assert cli("check", csv, "--baseline", good_run, "--metric", "nll").code == 1


def test_sweep_refuses_an_out_folder_with_someone_elses_results(cli, full_ckpt, class_folder, tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "results.csv").write_text("a,b\n1,2\n")
    (theirs / "run.json").write_text("{}")
    result = _sweep(cli, full_ckpt, class_folder, theirs)
    assert result.code == 2 and "hiera-bench did not write" in result.err
    assert (theirs / "results.csv").read_text() == "a,b\n1,2\n" and (theirs / "run.json").read_text() == "{}"
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "notes.txt").write_text("mine")  # unrelated files are left alone and do not block
    assert _sweep(cli, full_ckpt, class_folder, mixed).code == 0 and (mixed / "notes.txt").read_text() == "mine"


def _views_consistent(root: Path) -> None:
    """The five views show one generation: same folder behind every name, and the same cells in each."""
    parents = {(root / name).resolve().parent for name in VIEWS if (root / name).exists()}
    assert len(parents) == 1, parents
    csv, parquet = pd.read_csv(root / "results.csv"), pd.read_parquet(root / "results.parquet")
    assert list(csv["cell_key"].fillna("")) == list(parquet["cell_key"].fillna(""))
    ok = set(parquet.loc[parquet["status"] == "ok", "cell_key"])
    assert set(pq.read_table(root / "predictions.parquet", columns=["cell_key"]).column(0).to_pylist()) == ok
    assert set(json.loads((root / "run.json").read_text())["cells"]) <= set(parquet["cell_key"])


def test_views_stay_one_set_when_writing_them_is_interrupted_at_any_step(good_run, tmp_path, monkeypatch):
    """Interrupt the publishing of new views at every rename: each time, every view is the old one or every
    view is the new one."""
    from hiera_bench.sweep import views
    from hiera_bench.sweep.rows import tidy_table
    from hiera_bench.sweep.store import RunDir

    run = json.loads((good_run / "run.json").read_text())
    rows = RunDir(good_run).finished_rows()
    new_rows = [dict(r, top1=0.0) for r in rows]  # what a "new" generation would say
    real_replace, calls = os.replace, {"n": 0, "stop_at": 0}

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] == calls["stop_at"]:
            raise KeyboardInterrupt
        return real_replace(src, dst)

    stop = 1
    while True:
        folder = tmp_path / f"k{stop}"
        shutil.copytree(good_run, folder, symlinks=True)
        before = pd.read_csv(folder / "results.csv")
        calls.update(n=0, stop_at=stop)
        monkeypatch.setattr(views.os, "replace", replace)
        try:
            views.write_views(RunDir(folder), tidy_table(new_rows), run)
            finished = True
        except KeyboardInterrupt:
            finished = False
        monkeypatch.setattr(views.os, "replace", real_replace)
        _views_consistent(folder)
        after = pd.read_csv(folder / "results.csv")
        assert after["top1"].equals(before["top1"]) or (after.loc[after.status == "ok", "top1"] == 0).all()
        if finished:
            break
        stop += 1
    assert stop > 7  # each of the 5 views, the switch and the history file was interrupted once


def test_an_older_folder_of_plain_files_becomes_generations_without_a_mix(good_run, tmp_path):
    """A folder written before views were generations: its plain files are adopted, then replaced at once."""
    from hiera_bench.sweep import views
    from hiera_bench.sweep.store import RunDir

    old = tmp_path / "old"
    shutil.copytree(good_run, old, symlinks=False)  # plain files, as older versions wrote them
    shutil.rmtree(old / ".views")
    assert not (old / "results.csv").is_symlink()
    views.write_views(RunDir(old), pd.DataFrame(RunDir(old).finished_rows()), json.loads((old / "run.json").read_text()))
    assert (old / "results.csv").is_symlink()
    _views_consistent(old)


def test_a_repaired_image_is_read_again_on_the_next_run(cli, full_ckpt, tmp_path):
    """The cell key covers the files' sizes and mtimes: fixing a broken file recomputes, nothing stale is reused."""
    import numpy as np

    from hiera_bench.testing import make_image

    root = make_class_folder(tmp_path / "val", per_class=2)
    broken = root / sorted(WNIDS)[1] / "ILSVRC2012_val_00000777.JPEG"
    broken.write_bytes(b"")
    first = _sweep(cli, full_ckpt, root, tmp_path / "run", "--max-failed", "50")
    assert first.code == 0, first.err
    assert set(pd.read_csv(tmp_path / "run" / "results.csv")["n_failed"]) == {1}
    make_image(np.random.default_rng(7), (80, 60), 1).save(broken, format="JPEG")
    again = _sweep(cli, full_ckpt, root, tmp_path / "run", "--max-failed", "50")
    assert again.code == 0, again.err
    table = pd.read_csv(tmp_path / "run" / "results.csv")  # the new measurement replaces the stale one
    assert len(table) == 4 and set(table["n_failed"]) == {0} and set(table["n_images"]) == {7}


def test_report_inspect_and_demo_never_overwrite_a_folder_of_the_users(cli, full_ckpt, class_folder, tmp_path):
    """``report -o ~/paper`` once replaced the user's own report.tex (and ``./report``, the default for several
    runs, is a common name for one's own folder); ``inspect -o`` and the demo's ``--out`` did the same."""
    from hiera_bench.demo.run import run_demo
    from hiera_bench.errors import UserError

    run = tmp_path / "run"
    assert _sweep(cli, full_ckpt, class_folder, run).code == 0
    paper = tmp_path / "paper"
    (paper / "plots").mkdir(parents=True)
    mine = {paper / "report.tex": "\\documentclass{article}", paper / "plots" / "top1-vs-size.png": "my figure"}
    for path, text in mine.items():
        path.write_text(text)
    refused = cli("report", run, "-o", paper)
    assert refused.code == 2 and len(refused.err.strip().splitlines()) == 1, refused.err
    assert "holds plots/top1-vs-size.png, report.tex that hiera-bench did not write" in refused.err
    assert all(path.read_text() == text for path, text in mine.items()) and not (paper / "report.md").exists()

    other = tmp_path / "notes"  # files of other names neither block nor get touched
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert cli("report", run, "-o", other).code == 0 and (other / "notes.txt").read_text() == "mine"
    assert (other / ".hiera-bench-report").is_file() and (other / "report.tex").is_file()
    assert cli("report", run, "-o", other).code == 0  # its own folder is rewritten

    older = tmp_path / "older"  # a report folder of a hiera-bench from before the marker is still its own
    older.mkdir()
    (older / "report.md").write_text("# hiera-bench report\n\nRuns: `x`\n")
    assert cli("report", run, "-o", older).code == 0 and "Runs: `x`" not in (older / "report.md").read_text()

    theirs = tmp_path / "figures"
    theirs.mkdir()
    (theirs / "inspect-96.json").write_text('{"mine": 1}')
    refused = cli("inspect", "--checkpoint", full_ckpt, "--res", "96", "-o", theirs)
    assert refused.code == 2 and "inspect-96.json that hiera-bench did not write" in refused.err
    assert (theirs / "inspect-96.json").read_text() == '{"mine": 1}' and not (theirs / "posembed-96.png").exists()
    (theirs / "inspect-96.json").unlink()
    (theirs / "posembed-mae-224.png").write_text("my figure")  # a name inspect never writes: left alone
    assert cli("inspect", "--checkpoint", full_ckpt, "--res", "96", "-o", theirs).code == 0
    assert (theirs / "posembed-mae-224.png").read_text() == "my figure" and (theirs / "posembed-96.png").is_file()
    # another command's files are not this one's: a report would replace the run's figures, a sweep a report's
    before = (run / "plots" / "top1-vs-size.png").read_bytes() if (run / "plots" / "top1-vs-size.png").exists() else None
    refused = cli("report", run, "-o", run)
    assert refused.code == 2 and len(refused.err.strip().splitlines()) == 1, refused.err
    assert "that another hiera-bench command wrote there (its run output" in refused.err
    assert not (run / "report.md").exists()
    assert (None if before is None else (run / "plots" / "top1-vs-size.png").read_bytes()) == before
    paper = tmp_path / "paper-of-runs"
    assert cli("report", run, "-o", paper).code == 0
    figures = {p: p.read_bytes() for p in (paper / "plots").iterdir()}
    refused = _sweep(cli, full_ckpt, class_folder, paper, "--plots")
    assert refused.code == 2 and "its report output" in refused.err, refused.err
    assert {p: p.read_bytes() for p in (paper / "plots").iterdir()} == figures and not (paper / "results.csv").exists()

    # a marker lists what its command wrote: it does not make the user's other files hiera-bench's
    (theirs / "report.md").write_text("my report")  # theirs now carries inspect's marker
    refused = cli("report", run, "-o", theirs)
    assert refused.code == 2 and "report.md that hiera-bench did not write" in refused.err
    assert (theirs / "report.md").read_text() == "my report"
    copied = tmp_path / "copied"  # an export's marker copied along with a model: it lists nothing of a report's
    copied.mkdir()
    (copied / ".hiera-bench-export").write_text("Written by `hiera-bench export`\n")
    (copied / "report.md").write_text("my report")
    assert cli("report", run, "-o", copied).code == 2 and (copied / "report.md").read_text() == "my report"
    sizes = tmp_path / "sizes"
    sizes.mkdir()
    (sizes / "posembed-96.png").write_text("my figure")
    assert cli("inspect", "--checkpoint", full_ckpt, "--res", "128", "-o", sizes).code == 0
    refused = cli("inspect", "--checkpoint", full_ckpt, "--res", "96", "-o", sizes)
    assert refused.code == 2 and (sizes / "posembed-96.png").read_text() == "my figure"
    swept = tmp_path / "swept"
    swept.mkdir()
    (swept / "report.md").write_text("my report")
    assert _sweep(cli, full_ckpt, class_folder, swept).code == 0
    assert cli("report", swept, "-o", swept).code == 2 and (swept / "report.md").read_text() == "my report"
    inspected = tmp_path / "inspected"
    assert cli("inspect", "--checkpoint", full_ckpt, "--res", "96", "-o", inspected).code == 0
    (inspected / ".hiera-bench-inspect").unlink()  # as an older hiera-bench left it: its own JSON tells it apart
    assert cli("inspect", "--checkpoint", full_ckpt, "--res", "96", "-o", inspected).code == 0

    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "summary.md").write_text("my summary")
    with pytest.raises(UserError, match="summary.md that hiera-bench did not write"):
        run_demo(demo, log=lambda m: None, data_root=tmp_path / "cache")
    assert (demo / "summary.md").read_text() == "my summary" and sorted(p.name for p in demo.iterdir()) == ["summary.md"]


def test_a_sweeps_plots_do_not_replace_the_users_in_an_unmarked_out(cli, full_ckpt, class_folder, tmp_path):
    out = tmp_path / "out"
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "top1-vs-size.png").write_text("my figure")
    result = _sweep(cli, full_ckpt, class_folder, out, "--plots")
    assert result.code == 2 and "plots/top1-vs-size.png that hiera-bench did not write" in result.err
    assert (out / "plots" / "top1-vs-size.png").read_text() == "my figure" and not (out / "cells").exists()


def _copy_with_config(ckpt: Path, to: Path, **changes) -> Path:
    """A copy of a checkpoint folder whose config.json ``pretrained_cfg``/``model_args`` are updated."""
    folder = Path(shutil.copytree(ckpt, to))
    config = json.loads((folder / "config.json").read_text())
    for part, values in changes.items():
        config[part] = {**config.get(part, {}), **values}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_non_finite_logits_fail_the_cell_and_the_gate(cli, full_ckpt, class_folder, tmp_path):
    """A forward that overflows gave NaN logits; topk ranks NaN first, so every image "predicted" class 0 and the
    cell stood as ok at top-1 33.333 (one class in three), nll NaN; exit 0 and check passed (adv20)."""
    from safetensors.torch import load_file, save_file

    folder = Path(shutil.copytree(full_ckpt, tmp_path / "ckpt"))
    weights = load_file(str(folder / "model.safetensors"))
    weights["pos_embed"] = torch.full_like(weights["pos_embed"], 3.0e38)  # finite: the weights check passes
    save_file(weights, str(folder / "model.safetensors"))
    result = _sweep(cli, folder, class_folder, tmp_path / "run")
    assert result.code == 1 and "gave non-finite logits (NaN or inf): the forward overflows" in result.err, result.err
    table = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(table["status"]) == {"failed"} and table["top1"].isna().all() and table["nll"].isna().all()
    assert table["n_correct1"].isna().all()  # no count of a failed cell tells a top-1 either (adv22)
    assert cli("check", tmp_path / "run", "--baseline", tmp_path / "run").code == 2


def test_an_abswin_checkpoints_native_size_is_part_of_its_cells(abswin_ckpt, class_folder, tmp_path, monkeypatch):
    """Abs-win weights do not say their native size; config.json does. After it changed (64 -> 96 px) the folder's
    cells were reused, interp resampled from the old grid and "Δ vs native 64 px" (adv20). Cells of the same
    native size that an earlier version keyed without it still count."""
    import hiera_bench.sweep.run as sweep_run

    def sweep(ckpt, out):
        return run_sweep(SweepConfig(checkpoint=str(ckpt), data=str(class_folder), out=str(out), res="64,96",
                                     batch_size=4, workers=0, plots=False))

    out = tmp_path / "run"
    with monkeypatch.context() as patched:  # as the version before native_size was recorded keyed them
        patched.setattr(sweep_run, "native_in_identity", lambda loaded: None)
        sweep(abswin_ckpt, out)
    again = sweep(abswin_ckpt, out)
    assert sum(r["evaluated_images"] for r in again.run["ranks"]) == 0  # same native size: every cell reused
    at96 = _copy_with_config(abswin_ckpt, tmp_path / "ckpt96", pretrained_cfg={"input_size": [3, 96, 96]})
    moved = sweep(at96, out).table.set_index(["scheme", "img_size"])
    fresh = sweep(at96, tmp_path / "fresh").table.set_index(["scheme", "img_size"])
    assert set(moved["native_size"]) == {96}
    assert moved.loc[("interp", 64), "cell_key"] != again.table.set_index(["scheme", "img_size"]).loc[
        ("interp", 64), "cell_key"]
    pd.testing.assert_series_equal(moved["nll"], fresh["nll"])
    assert moved.loc[("interp", 64), "nll"] != again.table.set_index(["scheme", "img_size"]).loc[("interp", 64), "nll"]


def test_cells_an_earlier_version_kept_as_ok_with_non_finite_logits_fail_now(cli, full_ckpt, class_folder, tmp_path):
    """The non-finite check ran only where a row was built: a cell finished before it (row.json ok, nll NaN, top-1
    33.333) stayed ok in every later sweep of the folder, and a results table written then passed check (adv21)."""
    from safetensors.torch import load_file, save_file

    folder = Path(shutil.copytree(full_ckpt, tmp_path / "ckpt"))
    weights = load_file(str(folder / "model.safetensors"))
    weights["pos_embed"] = torch.full_like(weights["pos_embed"], 3.0e38)
    save_file(weights, str(folder / "model.safetensors"))
    out = tmp_path / "run"
    assert _sweep(cli, folder, class_folder, out).code == 1
    for path in out.glob("cells/*/row.json"):  # as the version before the check wrote them
        row = json.loads(path.read_text())
        row.update(status="ok", reason="", top1=33.333, top5=100.0)
        path.write_text(json.dumps(row))
    table = pd.read_csv(out / "results.csv").assign(status="ok", reason="", top1=33.333)
    table.to_csv(tmp_path / "old.csv", index=False)
    again = _sweep(cli, folder, class_folder, out)
    assert again.code == 1 and "gave non-finite logits" in again.err
    assert set(pd.read_csv(out / "results.csv")["status"]) == {"failed"}
    table.assign(nll=1.0).to_csv(tmp_path / "baseline.csv", index=False)  # what the same cells should have held
    result = cli("check", tmp_path / "old.csv", "--baseline", tmp_path / "baseline.csv", "--json")
    assert result.code == 1 and {c["verdict"] for c in json.loads(result.out)["cells"]} == {"not evaluated"}, result.out


def test_a_run_cell_that_failed_fails_the_gate_whatever_the_baseline_holds(cli, good_run, tmp_path):
    """check compared only the baseline's ok cells: a run cell that failed where the baseline's had failed too (or
    was an earlier version's ok row with non-finite logits, failed when read) dropped out, and check passed (adv22)."""
    table = pd.read_csv(good_run / "results.csv")
    failed = table.assign(reason=table["reason"].astype(object))
    failed.loc[0, ["status", "reason"]] = ["failed", "none of the 12 images could be decoded"]
    failed.loc[0, ["top1", "nll"]] = float("nan")
    failed.to_csv(tmp_path / "run.csv", index=False)
    failed.to_csv(tmp_path / "baseline.csv", index=False)
    result = cli("check", tmp_path / "run.csv", "--baseline", tmp_path / "baseline.csv", "--json")
    assert result.code == 1, result.out + result.err
    verdicts = [c["verdict"] for c in json.loads(result.out)["cells"]]
    assert verdicts.count("not evaluated") == 1 and verdicts.count("hold") == len(table) - 1


def test_compare_names_the_cells_that_gave_no_result(cli, good_run, tmp_path):
    """compare left out a run's failed cells without a word; asked for one it said the run had "none" (adv22)."""
    copy = Path(shutil.copytree(good_run, tmp_path / "b", symlinks=True))
    views = copy / ".views" / "current"
    table = pd.read_parquet(views / "results.parquet")
    at = table[(table["scheme"] == "interp") & (table["img_size"] == 32)].index[0]
    table["reason"] = table["reason"].astype(object)
    table.loc[at, ["status", "reason"]] = ["failed", "none of the 12 images could be decoded"]
    table.to_parquet(views / "results.parquet", index=False)
    table.to_csv(views / "results.csv", index=False)
    result = cli("compare", good_run, copy)
    assert result.code == 0, result.err
    assert "has 1 cell(s) that gave no result, left out: interp@32 (none of the 12 images could be decoded)" in (
        result.out + result.err)
