"""``hiera-bench sweep`` end to end on a tiny real Hiera and a generated class folder."""

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import create_transform
from safetensors.torch import load_file

from hiera_bench.models import load_model
from hiera_bench.posembed import get_scheme, spec_from_model
from hiera_bench.sweep.rows import COLUMNS
from hiera_bench.testing import TINY_ARGS, WNIDS, make_class_folder

REQUIRED = ["model", "pretrained_tag", "scheme", "img_size", "native_size", "rel_size", "crop_pct", "interpolation",
            "n_images", "top1", "top5", "nll", "ece", "top1_delta_vs_native", "imgs_per_s", "gflops", "device",
            "dtype", "status"]


@pytest.fixture(scope="module")
def two_class(tmp_path_factory):
    return make_class_folder(tmp_path_factory.mktemp("two") / "val", wnids=WNIDS[:2], per_class=5)


def reference_metrics(ckpt, data_root, size, scheme):
    """Top-1 and NLL the slow way: timm's transform per image, one image at a time, plain timm model."""
    cfg = json.loads((ckpt / "config.json").read_text())
    loaded = load_model(checkpoint=ckpt)
    spec = spec_from_model(loaded.model, loaded.native_size)
    net = timm.create_model("hiera_tiny_224", img_size=size, num_classes=cfg["num_classes"], **TINY_ARGS).eval()
    state = load_file(ckpt / "model.safetensors")
    state["pos_embed"] = get_scheme(scheme)(spec, (size // 4,) * 2, (size // 32,) * 2)
    net.load_state_dict(state)
    transform = create_transform(input_size=(3, size, size), crop_pct=cfg["pretrained_cfg"]["crop_pct"],
                                 interpolation="bicubic")
    names = sorted(cfg["label_names"])
    correct, nll = [], []
    for path in sorted(data_root.glob("*/*.JPEG"), key=lambda p: p.stem):
        x = transform(Image.open(path).convert("RGB"))[None]
        target = torch.tensor([cfg["label_names"].index(path.parent.name)])
        with torch.no_grad():
            logits = net(x)
        correct.append(int(logits.argmax(1) == target))
        nll.append(F.cross_entropy(logits, target).item())
    assert names == cfg["label_names"]
    return 100 * np.mean(correct), float(np.mean(nll))


def test_sweep_writes_tidy_outputs_matching_a_hand_reference(cli, full_ckpt, two_class, tmp_path):
    out = tmp_path / "run"
    result = cli("sweep", "--checkpoint", full_ckpt, "--data", two_class, "--res", "32:128:16", "--out", out,
                 "-b", "3", "-q")
    assert result.code == 0, result.err
    for name in ("results.csv", "results.parquet", "results.md", "run.json", "predictions.parquet"):
        assert (out / name).is_file(), name
    df = pd.read_csv(out / "results.csv")
    assert set(REQUIRED) <= set(df.columns) and list(df.columns[: len(COLUMNS)]) == COLUMNS
    ok = df[df.status == "ok"]
    assert sorted(set(ok.img_size)) == [32, 64, 96, 128]
    assert len(ok) == 8 and set(ok.scheme) == {"interp", "abswin"}
    skipped = df[df.status == "skipped"]
    assert sorted(set(skipped.img_size)) == [48, 80, 112] and skipped.reason.str.contains("multiple of 32").all()
    assert (ok.n_images == 10).all()
    assert pd.read_parquet(out / "results.parquet").shape == df.shape
    for size in (64, 96):
        for scheme in ("interp", "abswin"):
            top1, nll = reference_metrics(full_ckpt, two_class, size, scheme)
            row = ok[(ok.img_size == size) & (ok.scheme == scheme)].iloc[0]
            assert row.top1 == pytest.approx(top1, abs=1e-3)
            assert row.nll == pytest.approx(nll, abs=1e-5)
    native = ok[ok.img_size == 64]
    assert (native.top1_delta_vs_native == 0).all()
    assert set(native.shared_with) == {"interp", "abswin"}  # identical at native: one forward, both rows
    run = json.loads((out / "run.json").read_text())
    for key in ("command", "versions", "checkpoint_sha256", "data", "host", "started", "device", "dtype"):
        assert run[key], key
    assert {"torch", "timm", "pillow", "datasets"} <= set(run["versions"])
    phases = ("load_s", "prepare_s", "loop_s", "rows_s", "statistics_s")  # where a run's wall time went
    assert set(phases) <= set(run["timing"]) and all(run["timing"][k] >= 0 for k in phases)
    assert sum(run["timing"][k] for k in phases) <= run["wall_s"]
    md = (out / "results.md").read_text()
    assert "| 64 **native** |" in md and "abswin" in md and "interp" in md
    assert "best:" in result.out


def test_json_output_is_the_tidy_table(cli, abswin_ckpt, two_class, tmp_path):
    result = cli("sweep", "--checkpoint", abswin_ckpt, "--data", two_class, "--res", "64,96", "--out", tmp_path,
                 "--json", "--schemes", "abswin")
    assert result.code == 0, result.err
    rows = json.loads(result.out)
    assert [(r["scheme"], r["img_size"]) for r in rows] == [("abswin", 64), ("abswin", 96)]
    assert rows[0]["pos_embed_kind"] == "abswin" and rows[0]["crop_pct"] == 0.95
    # every figure as results.parquet holds it (pandas' JSON kept 10 decimals: a p of 1e-12 printed as 0.0)
    stored = pd.read_parquet(tmp_path / "results.parquet").set_index("img_size")
    for row in rows:
        for col, value in row.items():
            if isinstance(value, float):
                assert value == stored.at[row["img_size"], col], col


def test_rerun_skips_finished_cells_and_force_recomputes(cli, full_ckpt, two_class, tmp_path):
    args = ["sweep", "--checkpoint", full_ckpt, "--data", two_class, "--res", "96", "--out", tmp_path, "-q"]
    assert cli(*args).code == 0
    rows = sorted(tmp_path.glob("cells/*/row.json"))
    stamps = [p.stat().st_mtime_ns for p in rows]
    assert cli(*args).code == 0
    assert [p.stat().st_mtime_ns for p in rows] == stamps
    assert cli(*args, "--force").code == 0
    assert all(p.stat().st_mtime_ns > s for p, s in zip(rows, stamps))


def test_limit_is_first_n_by_image_id(cli, full_ckpt, two_class, tmp_path):
    result = cli("sweep", "--checkpoint", full_ckpt, "--data", two_class, "--out", tmp_path, "--limit", "4", "--json")
    assert result.code == 0, result.err
    preds = pd.read_parquet(tmp_path / "predictions.parquet")
    ids = sorted(p.stem for p in two_class.glob("*/*.JPEG"))[:4]
    assert sorted(set(preds.image_id)) == ids


def test_python_dash_m_and_fast_help():
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "hiera_bench", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "sweep" in done.stdout
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "timm" not in imported


def _real_json(class_folder, path):
    """A real.json labelling each image with its folder's class, except the first (left unlabelled); its files."""
    from timm.data import ImageNetInfo

    wnids = list(ImageNetInfo().label_names())
    files = sorted(class_folder.glob("*/*.JPEG"), key=lambda p: p.stem)
    real = [[] for _ in range(max(int(p.stem[-8:]) for p in files))]
    for p in files:
        real[int(p.stem[-8:]) - 1] = [wnids.index(p.parent.name)]
    real[int(files[0].stem[-8:]) - 1] = []  # an image ReaL left unlabelled: not counted
    path.write_text(json.dumps(real))
    return files


def test_real_labels_columns_match_a_hand_count(cli, full_ckpt, class_folder, tmp_path):
    files = _real_json(class_folder, tmp_path / "real.json")
    result = cli("sweep", "--checkpoint", full_ckpt, "--data", class_folder, "--res", "96", "--out", tmp_path / "o",
                 "--real-labels", tmp_path / "real.json", "--json")
    assert result.code == 0, result.err
    rows = pd.DataFrame(json.loads(result.out))
    preds = pd.read_parquet(tmp_path / "o" / "predictions.parquet")
    for row in rows.itertuples():
        cell = preds[(preds.scheme == row.scheme) & (preds.img_size == row.img_size)]
        counted = cell[cell.image_id != files[0].stem]
        assert row.real_top1 == pytest.approx(100 * counted.correct1.mean(), abs=1e-3)
        assert row.n_real == len(counted) == len(files) - 1


def test_real_figures_stay_with_their_cells_in_every_later_view(cli, full_ckpt, class_folder, tmp_path):
    """ReaL figures are kept with the finished row: cells a later sweep does not cover, or covers without
    --real-labels, keep them; they are the counts' exact percentages, as predictions.parquet gives them."""
    files = _real_json(class_folder, tmp_path / "real.json")
    out = tmp_path / "o"
    args = ["sweep", "--checkpoint", full_ckpt, "--data", class_folder, "--out", out, "-q"]
    real = ["--real-labels", tmp_path / "real.json"]
    assert cli(*args, "--res", "64").code == 0  # finished without ReaL
    assert cli(*args, "--res", "64,96", *real).code == 0  # 64: read back and scored; 96: new
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/row.json")}
    assert cli(*args, "--res", "64,96", *real).code == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("cells/*/row.json")} == stamps  # nothing new to keep
    assert cli(*args, "--res", "64").code == 0  # 96 not covered, and no --real-labels
    table = pd.read_parquet(out / "results.parquet")
    assert sorted(table.img_size.unique()) == [64, 96] and table.real_top1.notna().all()
    preds = pd.read_parquet(out / "predictions.parquet")
    for row in table.itertuples():
        counted = preds[(preds.cell_key == row.cell_key) & (preds.image_id != files[0].stem)]
        assert row.n_real == len(counted) == len(files) - 1
        assert row.real_top1 == pytest.approx(100.0 * counted.correct1.sum() / len(counted), rel=1e-12, abs=0)
        assert row.real_top5 == pytest.approx(100.0 * counted.correct5.sum() / len(counted), rel=1e-12, abs=0)


def test_the_views_show_real_figures_of_one_labels_file(cli, full_ckpt, abswin_ckpt, class_folder, tmp_path):
    """A sweep with other ReaL labels over some sizes: the views showed the other sizes' figures of the first labels
    file beside its own, one real_top1 column of two files, with no note (adv28). This checkpoint's earlier cells are
    scored again with the new file (and keep it); another checkpoint's are shown without ReaL figures, with a note."""
    from timm.data import ImageNetInfo

    files = _real_json(class_folder, tmp_path / "a.json")
    every = sorted(ImageNetInfo().label_names().index(w) for w in WNIDS)  # the model's three classes
    (tmp_path / "b.json").write_text(json.dumps([every if labels else [] for labels in
                                                 json.loads((tmp_path / "a.json").read_text())]))
    out = tmp_path / "o"
    args = ["sweep", "--data", class_folder, "--out", out, "-q", "--no-plots"]
    assert cli(*args, "-c", abswin_ckpt, "--label", "other", "--res", "64", "--real-labels", tmp_path / "a.json").code == 0
    assert cli(*args, "-c", full_ckpt, "--res", "32,64,96", "--real-labels", tmp_path / "a.json").code == 0
    result = cli(*args, "-c", full_ckpt, "--res", "64", "--real-labels", tmp_path / "b.json")
    assert result.code == 0 and "2 cell(s) of earlier sweeps of other checkpoints or images were scored with other ReaL" in \
        result.err, result.err
    table = pd.read_parquet(out / "results.parquet")
    mine = table[table["label"] != "other"]
    assert sorted(mine.img_size.unique()) == [32, 64, 96] and mine["real_labels"].nunique() == 1
    assert table.loc[table["label"] == "other", "real_top1"].isna().all()
    preds = pd.read_parquet(out / "predictions.parquet")
    for row in mine.itertuples():  # every size scored with b.json, which labels every image with every class
        counted = preds[(preds.cell_key == row.cell_key) & (preds.image_id != files[0].stem)]
        assert row.n_real == len(counted) == len(files) - 1
        assert row.real_top1 == 100.0 and row.top1 < 100.0


def test_real_labels_of_other_images_leave_earlier_cells_unscored(cli, full_ckpt, class_folder, tmp_path):
    """Cells of other images in the folder (another half of the data) were rescored with a labels file that does not
    cover them: the sweep ended in an error after its evaluation, or rewrote their figures over a few images (adv30).
    They are shown without ReaL figures now, with a note."""
    import shutil

    halves = {}
    files = sorted(class_folder.glob("*/*.JPEG"), key=lambda p: p.stem)
    for name, keep in (("a", files[:6]), ("b", files[6:])):
        halves[name] = shutil.copytree(class_folder, tmp_path / name)
        for p in halves[name].glob("*/*.JPEG"):
            if p.stem not in {f.stem for f in keep}:
                p.unlink()
    _real_json(class_folder, tmp_path / "all.json")
    labels = json.loads((tmp_path / "all.json").read_text())
    (tmp_path / "b.json").write_text(json.dumps([v if i >= 6 else [] for i, v in enumerate(labels)]))
    out = tmp_path / "o"
    args = ["sweep", "-c", full_ckpt, "--out", out, "-q", "--no-plots", "--res", "64"]
    assert cli(*args, "--data", halves["a"], "--real-labels", tmp_path / "all.json").code == 0
    result = cli(*args, "--data", halves["b"], "--real-labels", tmp_path / "b.json")
    assert result.code == 0 and "were scored with other ReaL labels" in result.err, result.err
    table = pd.read_parquet(out / "results.parquet")
    assert table.groupby("data_fingerprint")["real_top1"].apply(lambda s: s.notna().all()).sort_values().tolist() \
        == [False, True]


def test_json_output_is_never_wrapped(cli, full_ckpt, class_folder, tmp_path):
    """stdout a pipe: the console wrapped lines at 200 characters, so a long label, path or note split the JSON of
    sweep --json and compare --json in two."""
    label = "a-label-as-long-as-a-paper-s-run-names-get-" * 5
    result = cli("sweep", "-c", full_ckpt, "--data", class_folder, "--res", "64", "--out", tmp_path / "o",
                 "--label", label, "--json", "--no-plots")
    assert result.code == 0, result.err
    assert {row["label"] for row in json.loads(result.out)} == {label}


def test_real_labels_need_val_numbers(cli, full_ckpt, tmp_path):
    data = make_class_folder(tmp_path / "val", wnids=WNIDS[:2], per_class=2)
    for p in data.glob("*/*.JPEG"):
        p.rename(p.with_name(f"photo_{p.stem[-2:]}.JPEG"))
    result = cli("sweep", "--checkpoint", full_ckpt, "--data", data, "--out", tmp_path / "o", "--real-labels", "timm")
    assert result.code == 2 and "ImageNet val number" in result.err
    # before the image loop, not after it (on ImageNet val, the whole sweep's time; adv19): nothing evaluated
    assert not list((tmp_path / "o").glob("cells/*/part-*")) and not list((tmp_path / "o").glob("runs/*"))


def test_two_subsets_in_one_out_get_a_column_group_each(cli, full_ckpt, class_folder, tmp_path):
    for limit in ("4", "8"):
        assert cli("sweep", "--checkpoint", full_ckpt, "--data", class_folder, "--res", "96", "--out", tmp_path,
                   "--limit", limit, "-q").code == 0
    md = (tmp_path / "results.md").read_text()
    assert md.count("| size |") == 1 and "limit 4]: abswin |" in md and "limit 8]: interp |" in md
    df = pd.read_csv(tmp_path / "results.csv")
    for _, part in df.groupby("limit"):  # every delta is against the native cell of its own subset
        native = part[part.img_size == part.native_size].set_index("scheme").top1
        other = part[part.img_size != part.native_size]
        assert (other.top1_delta_vs_native.round(3) == (other.top1 - other.scheme.map(native)).round(3)).all()


def test_a_new_label_renames_the_checkpoint_s_earlier_cells(cli, full_ckpt, abswin_ckpt, class_folder, tmp_path):
    """--label names a checkpoint: renamed, its cells of earlier sweeps stay one column group with their native
    cell (no orphan group of the old name); another checkpoint's cells in the folder keep their own label."""
    out = tmp_path / "run"
    common = ["--data", class_folder, "--device", "cpu", "-q", "--no-plots", "--out", out]
    assert cli("sweep", "-c", abswin_ckpt, "--res", "64", "--label", "other", *common).code == 0
    assert cli("sweep", "-c", full_ckpt, "--res", "64,96", "--label", "mae", *common).code == 0
    result = cli("sweep", "-c", full_ckpt, "--res", "64", "--label", "mae-64", *common)
    assert result.code == 0, result.err
    table = pd.read_parquet(out / "results.parquet")
    assert dict(table.groupby("label").size()) == {"mae-64": 4, "other": 2}
    mine = table[table["label"] == "mae-64"]
    assert mine["top1_delta_vs_native"].notna().all() and mine["delta_p"].notna().all()
    assert "| size |" in (out / "results.md").read_text() and "mae:" not in (out / "results.md").read_text()


def test_skipped_sizes_of_a_full_grid_checkpoint_stay_in_its_abswin_column(cli, full_ckpt, class_folder, tmp_path):
    """--res 224:320:16 on an MAE checkpoint skips every other size: the skipped abswin rows name the fit's global
    grid as the evaluated ones do, so the pivot has one abswin column, not an invented 'global learned' one."""
    out = tmp_path / "run"
    result = cli("sweep", "-c", full_ckpt, "--data", class_folder, "--res", "32:96:16", "--device", "cpu", "-q",
                 "--no-plots", "--out", out)
    assert result.code == 0, result.err
    table = pd.read_parquet(out / "results.parquet")
    abswin = table[table["scheme"] == "abswin"]
    assert set(abswin.loc[abswin["status"] == "skipped", "img_size"]) == {48, 80}
    assert abswin["global_size"].nunique(dropna=False) == 1 and abswin["global_size"].notna().all()
    md = (out / "results.md").read_text()
    assert "global" not in md and "| 48 |" in md


def test_each_row_names_the_real_labels_it_was_scored_with(cli, full_ckpt, class_folder, tmp_path):
    """Two ReaL files in one folder's history: every row says which labels its real_top1 comes from, and the rows
    of the checkpoint a sweep with other labels measures are all scored with those."""
    import json as _json

    _real_json(class_folder, tmp_path / "a.json")
    other = _json.loads((tmp_path / "a.json").read_text())
    other = [labels if i % 2 else [] for i, labels in enumerate(other)]
    (tmp_path / "b.json").write_text(_json.dumps(other))
    out = tmp_path / "o"
    args = ["sweep", "--checkpoint", full_ckpt, "--data", class_folder, "--out", out, "-q", "--no-plots"]
    assert cli(*args, "--res", "64,96", "--real-labels", tmp_path / "a.json").code == 0
    before = pd.read_parquet(out / "results.parquet")
    assert cli(*args, "--res", "64", "--real-labels", tmp_path / "b.json").code == 0
    table = pd.read_parquet(out / "results.parquet")
    used = dict(zip(table["img_size"], table["real_labels"]))
    assert used[64] == used[96] and all(isinstance(v, str) and len(v) == 12 for v in used.values())
    assert table["real_labels"].nunique() == 1 and set(before["real_labels"]) != set(table["real_labels"])
    assert (table["n_real"] < before["n_real"]).all()  # b.json labels every other image only


def test_a_limit_above_the_data_size_is_no_limit(cli, full_ckpt, class_folder, tmp_path):
    """--limit 1000 on 12 images selects every image: the same cells as no --limit (reused, and check compares)."""
    args = ["sweep", "--checkpoint", full_ckpt, "--data", class_folder, "--res", "64", "-q", "--no-plots"]
    assert cli(*args, "--out", tmp_path / "all").code == 0
    assert cli(*args, "--out", tmp_path / "big", "--limit", "1000").code == 0
    a, b = (pd.read_parquet(tmp_path / name / "results.parquet") for name in ("all", "big"))
    assert sorted(a["cell_key"]) == sorted(b["cell_key"]) and b["limit"].isna().all()
    assert cli("check", tmp_path / "big", "--baseline", tmp_path / "all").code == 0
    assert cli(*args, "--out", tmp_path / "cut", "--limit", "5").code == 0
    assert set(pd.read_parquet(tmp_path / "cut" / "results.parquet")["limit"]) == {5}


def test_a_limit_of_exactly_the_data_size_is_no_limit(cli, full_ckpt, class_folder, tmp_path):
    args = ["sweep", "--checkpoint", full_ckpt, "--data", class_folder, "--res", "64", "-q", "--no-plots"]
    assert cli(*args, "--out", tmp_path / "all").code == 0
    assert cli(*args, "--out", tmp_path / "exact", "--limit", "12").code == 0  # the set has 12 images
    assert cli("check", tmp_path / "exact", "--baseline", tmp_path / "all").code == 0


def test_a_bare_command_shows_its_help_and_usage_hints_name_the_command_under_python_m():
    """``hiera-bench`` alone printed its help squashed into one error line; under ``python -m hiera_bench`` a
    usage error's hint read ``see 'hiera-bench -m hiera_bench sweep --help'``."""
    bare = subprocess.run([sys.executable, "-m", "hiera_bench"], capture_output=True, text=True)
    assert bare.returncode == 2 and not bare.stderr.startswith("error")
    assert "Usage:" in bare.stdout and "sweep" in bare.stdout and len(bare.stdout.splitlines()) > 10
    wrong = subprocess.run([sys.executable, "-m", "hiera_bench", "sweep", "--bogus"], capture_output=True, text=True)
    assert wrong.returncode == 2
    assert wrong.stderr.strip().endswith("see 'hiera-bench sweep --help'"), wrong.stderr


def test_a_sweep_names_its_series_as_the_folder_s_results_md_does(cli, full_ckpt, class_folder, tmp_path):
    """adv33 #8: a second sweep into a folder with another --global-size showed its fit as plain "abswin" in its own
    table and headline, while the folder's results.md beside it said "abswin (global 1x1)" (beside 2x2)."""
    common = ["-c", full_ckpt, "--data", class_folder, "--res", "64,96", "--device", "cpu", "-q", "--no-plots",
              "--out", tmp_path / "run"]
    assert cli("sweep", *common).code == 0
    result = cli("sweep", *common, "--global-size", "1")
    assert result.code == 0, result.err
    assert "abswin (global 1x1)" in (tmp_path / "run" / "results.md").read_text()
    shown = " ".join(result.out.split())  # the console wraps a long headline
    assert "┃ abswin (global 1x1) ┃" in shown and "abswin (global 1x1) − interp @96" in shown, result.out
    assert not re.search(r"abswin(?! \(global 1x1\))", shown), result.out
