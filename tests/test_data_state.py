"""``DataSource.state()``: a hash of what is on disk behind a data set, so stale results are never reused.

The fingerprint (ids and labels) says which set it is; the state changes when a file behind it is
rewritten or touched, from stat alone, fast enough for ImageNet val's 50 000 files.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import datasets
import pytest
from timm.data import ImageNetInfo

from hiera_bench.data import open_data
from hiera_bench.testing import WNIDS, make_class_folder

CLASSES = sorted(WNIDS)


def touch(path: Path, seconds: int = 10) -> None:
    """Move the mtime forward (explicitly: a rewrite within the file system's time resolution may not)."""
    found = path.stat()
    os.utime(path, ns=(found.st_atime_ns, found.st_mtime_ns + seconds * 10**9))


@pytest.fixture
def folder(class_folder, tmp_path) -> Path:
    return Path(shutil.copytree(class_folder, tmp_path / "val"))


def test_state_is_stable_while_nothing_changes(folder):
    data = open_data(str(folder), CLASSES)
    assert data.state() == data.state() == open_data(str(folder), CLASSES).state()
    assert len(data.state()) == 16


def test_state_changes_when_an_image_is_rewritten_or_touched(folder):
    data = open_data(str(folder), CLASSES)
    before, fingerprint = data.state(), data.fingerprint()
    image = sorted(folder.glob("*/*.JPEG"))[3]
    image.write_bytes(image.read_bytes())  # a repaired file, byte for byte the same size
    touch(image)
    rewritten = data.state()
    assert rewritten != before
    touch(image)
    assert data.state() not in (before, rewritten)
    assert open_data(str(folder), CLASSES).fingerprint() == fingerprint  # the identity stays


def test_a_copy_that_keeps_the_mtimes_keeps_the_state_wherever_it_lies(folder, tmp_path):
    """A node-local copy or a SLURM job's scratch folder (rsync -a, cp -p) is the same files: same state."""
    state = open_data(str(folder), CLASSES).state()
    copy = Path(shutil.copytree(folder, tmp_path / "scratch" / "job-123" / "imagenet-val"))  # copy2 keeps mtimes
    assert open_data(str(copy), CLASSES).state() == state
    assert open_data(str(copy), CLASSES, limit=2).state() == open_data(str(folder), CLASSES, limit=2).state()
    touch(next(copy.glob("*/*.JPEG")))
    assert open_data(str(copy), CLASSES).state() != state
    fresh = Path(shutil.copytree(folder, tmp_path / "plain-cp", copy_function=shutil.copyfile))  # new mtimes
    assert open_data(str(fresh), CLASSES).state() != state


def test_a_sweep_over_a_moved_copy_reuses_every_cell(cli, full_ckpt, folder, tmp_path):
    import json

    import pandas as pd

    out = tmp_path / "run"
    args = ["sweep", "--checkpoint", full_ckpt, "--out", out, "-q", "--res", "64,96"]
    assert cli(*args, "--data", folder).code == 0
    first = pd.read_csv(out / "results.csv")
    moved = Path(shutil.copytree(folder, tmp_path / "elsewhere" / "val"))
    shutil.rmtree(folder)
    assert cli(*args, "--data", moved).code == 0
    run = json.loads((out / "run.json").read_text())
    assert sum(r["evaluated_images"] for r in run["ranks"]) == 0
    again = pd.read_csv(out / "results.csv")
    assert list(again.cell_key) == list(first.cell_key) and again.top1.tolist() == first.top1.tolist()
    # the rows name where this sweep read the images, as its header does (they named the first location; adv27)
    assert set(again["data"]) == {str(moved)} and again["data_place"].nunique() == 1
    assert set(again["data_place"]) != set(first["data_place"])


def test_cells_an_earlier_version_keyed_still_count(cli, full_ckpt, folder, tmp_path):
    """hiera-bench 0.1.0 hashed the paths as given; its run folders' cells are found under their own keys, not
    recomputed, as long as the files are where they were and unchanged."""
    import json

    import pandas as pd

    from hiera_bench.cells import CellIdentity

    out = tmp_path / "run"
    args = ["sweep", "--checkpoint", full_ckpt, "--data", folder, "--out", out, "-q", "--res", "64,96"]
    assert cli(*args).code == 0
    old_state = open_data(str(folder), CLASSES).earlier_states()[0]
    assert old_state != open_data(str(folder), CLASSES).state()
    old_keys = {}
    for cell_dir in sorted((out / "cells").iterdir()):  # the folder as 0.1.0 wrote it: cells under the old keys
        fields = json.loads((cell_dir / "cell.json").read_text())
        old = CellIdentity(**dict(fields, data_state=old_state))
        (cell_dir / "cell.json").write_text(json.dumps(old.fields()))
        row = json.loads((cell_dir / "row.json").read_text())
        (cell_dir / "row.json").write_text(json.dumps(dict(row, cell_key=old.key)))
        cell_dir.rename(cell_dir.with_name(old.key))
        old_keys[cell_dir.name] = old.key
    assert cli(*args).code == 0
    run = json.loads((out / "run.json").read_text())
    assert sum(r["evaluated_images"] for r in run["ranks"]) == 0
    assert set(pd.read_csv(out / "results.csv").cell_key.dropna()) == set(old_keys.values())
    touch(next(folder.glob("*/*.JPEG")))  # a changed file: neither key fits, the cells are computed again
    assert cli(*args).code == 0
    run = json.loads((out / "run.json").read_text())
    assert sum(r["evaluated_images"] for r in run["ranks"]) > 0


def test_a_new_run_folder_never_computes_the_earlier_state(cli, full_ckpt, folder, tmp_path, monkeypatch):
    """Earlier keys can only be in a folder that holds cells: a fresh run stats its files once, not twice."""
    from hiera_bench.data import DataSource

    def not_needed(self):
        raise AssertionError("earlier_states() on a new run folder")

    monkeypatch.setattr(DataSource, "earlier_states", not_needed)
    result = cli("sweep", "--checkpoint", full_ckpt, "--data", folder, "--out", tmp_path / "new", "-q", "--res", "64,96")
    assert result.code == 0, result.err


def test_state_covers_only_the_selected_images(folder):
    first_two = open_data(str(folder), CLASSES, limit=2)
    before = first_two.state()
    outside = sorted(folder.glob("*/*.JPEG"), key=lambda p: p.stem)[5]
    touch(outside)
    assert first_two.state() == before
    touch(sorted(folder.glob("*/*.JPEG"), key=lambda p: p.stem)[1])
    assert first_two.state() != before


def test_a_dangling_link_has_a_state_and_repairing_it_changes_it(folder, tmp_path):
    image = next(folder.glob("*/*.JPEG"))
    (folder / CLASSES[0] / "ILSVRC2012_val_00000099.JPEG").symlink_to(tmp_path / "later.JPEG")
    data = open_data(str(folder), CLASSES)
    broken = data.state()
    shutil.copy(image, tmp_path / "later.JPEG")
    assert data.state() != broken


def test_inline_images_count_through_their_data_files_only(class_folder, tmp_path, monkeypatch):
    """Rows with bytes never stat their stored path (relative, usually absent); the parquet file counts."""
    files = sorted(class_folder.glob("*/*.JPEG"))
    (tmp_path / "p").mkdir()
    shard = tmp_path / "p" / "validation-00000-of-00001.parquet"
    datasets.Dataset.from_dict(
        {"image": [{"bytes": p.read_bytes(), "path": f"{p.stem}_{p.parent.name}.JPEG"} for p in files]},
        features=datasets.Features({"image": datasets.Image()})).to_parquet(str(shard))
    monkeypatch.chdir(tmp_path)
    data = open_data(str(tmp_path / "p"), CLASSES)
    before = data.state()
    (tmp_path / f"{files[0].stem}_{files[0].parent.name}.JPEG").write_bytes(b"a file the row only names")
    assert data.state() == before
    touch(shard)
    assert data.state() != before


def test_state_of_50000_files_takes_well_under_a_second(tmp_path):
    """ImageNet val's size, as hard links over a few JPEGs: stat only, never the bytes."""
    sources = sorted(make_class_folder(tmp_path / "src", per_class=1).glob("*/*.JPEG"))
    classes = list(ImageNetInfo().label_names())
    root = tmp_path / "val"
    for c, wnid in enumerate(classes):
        (root / wnid).mkdir(parents=True)
        for i in range(50):
            n = c * 50 + i + 1
            os.link(sources[n % len(sources)], root / wnid / f"ILSVRC2012_val_{n:08d}.JPEG")
    data = open_data(str(root), classes)
    assert len(data) == 50_000
    start = time.perf_counter()
    state = data.state()
    seconds = time.perf_counter() - start
    print(f"state() of 50 000 files: {seconds:.3f} s")
    assert seconds < 2.0, seconds
    touch(root / classes[-1] / "ILSVRC2012_val_00050000.JPEG")
    assert data.state() != state


def _rows(out: Path) -> dict[str, Path]:
    return {p.parent.name: p for p in out.glob("cells/*/row.json")}


def _unstamp(path: Path) -> None:
    """row.json as versions before the finish stamp wrote it, with its mtime kept."""
    import json

    from hiera_bench.sweep.store import FINISHED

    found = path.stat()
    row = json.loads(path.read_text())
    del row[FINISHED]
    path.write_text(json.dumps(row))
    os.utime(path, ns=(found.st_atime_ns, found.st_mtime_ns))


def test_a_later_sweep_shows_only_the_newest_version_of_each_cell(cli, full_ckpt, folder, tmp_path):
    """Cells measured before and after the files changed are two versions of one slot: a later sweep that
    covers fewer sizes shows the newest of each (its stamp decides; for older rows, when row.json was
    written), in every view; the older versions stay in cells/."""
    import pandas as pd

    out = tmp_path / "run"
    args = ["sweep", "--checkpoint", full_ckpt, "--data", folder, "--out", out, "-q"]
    assert cli(*args, "--res", "64,96").code == 0
    old = set(_rows(out))
    touch(sorted(folder.glob("*/*.JPEG"))[0])
    assert cli(*args, "--res", "64,96").code == 0  # measured again: every cell has a new key
    new = set(_rows(out)) - old
    assert len(new) == len(old) and set(pd.read_csv(out / "results.csv").cell_key) == new
    for key in old:  # an old version's row.json written last (copied, restored from a backup): the stamp decides
        touch(_rows(out)[key], seconds=3600)
    for stripped in (False, True):
        if stripped:  # rows of versions before the stamp: when row.json was written decides
            for key, path in _rows(out).items():
                _unstamp(path)
                if key in new:
                    touch(path, seconds=7200)
        assert cli(*args, "--res", "64").code == 0  # 96 px not covered: its two versions come from cells/
        csv, parquet = pd.read_csv(out / "results.csv"), pd.read_parquet(out / "results.parquet")
        assert set(csv.cell_key) == set(parquet.cell_key) == new
        assert not parquet.duplicated(["scheme", "img_size"]).any() and sorted(parquet.img_size.unique()) == [64, 96]
        assert set(pd.read_parquet(out / "predictions.parquet").cell_key) == new
        assert set(_rows(out)) == old | new  # nothing measured is deleted
        result = cli("check", out, "--baseline", out)
        assert result.code == 0, result.err


def _negative(folder: Path) -> None:
    """Other pixels under the same names (ids) and class folders (labels): another version of the set."""
    import numpy as np
    from PIL import Image

    for path in sorted(folder.glob("*/*.JPEG")):
        with Image.open(path) as img:
            pixels = 255 - np.asarray(img.convert("RGB"))
        Image.fromarray(pixels).save(path, quality=90)
        touch(path)


def test_the_views_show_the_cells_of_the_files_as_they_are_now(cli, full_ckpt, folder, tmp_path):
    """Cells measured on files that have changed since never stand in the views next to cells of the files as
    they are: after a restore (cp -p) the restored files' cells come back, whatever finished last; cells of
    files no longer there are left out (kept in cells/), so check cannot pass on them."""
    import pandas as pd

    out = tmp_path / "run"
    args = ["sweep", "--checkpoint", full_ckpt, "--data", folder, "--out", out, "-q", "--no-plots"]
    pristine = Path(shutil.copytree(folder, tmp_path / "pristine"))  # copytree keeps the mtimes
    assert cli(*args, "--res", "32,64,96").code == 0
    first = pd.read_parquet(out / "results.parquet").set_index(["scheme", "img_size"])["cell_key"]
    _negative(folder)
    assert cli(*args, "--res", "32,64,96").code == 0
    shutil.rmtree(folder)
    shutil.copytree(pristine, folder)  # restored as it was: the first cells count again
    result = cli(*args, "--res", "64,128")
    assert result.code == 0, result.err
    shown = pd.read_parquet(out / "results.parquet").set_index(["scheme", "img_size"])["cell_key"]
    assert sorted(shown.index.get_level_values("img_size").unique()) == [32, 64, 96, 128]
    for where, key in first.items():
        assert shown[where] == key, where  # the restored files' own cells, not the negatives' (finished later)
    # the negatives' cells at 32 and 96 px are out (at 64 px this sweep measured the files again)
    assert "4 cell(s) of earlier sweeps were measured on files that have changed since" in result.err

    _negative(folder)  # the files change again; only 64 px is measured on them
    result = cli(*args, "--res", "64")
    assert result.code == 0 and "6 cell(s) of earlier sweeps" in result.err  # 32, 96 and 128 px, both schemes
    table = pd.read_parquet(out / "results.parquet")
    assert sorted(table["img_size"].unique()) == [64]  # nothing measured on other files stands next to it
    assert len(_rows(out)) == 16  # every measurement is still on disk


def test_rows_older_versions_wrote_fill_the_same_slots_as_todays(cli, full_ckpt, folder, tmp_path):
    """Rows of versions before ``decode`` and ``global_size`` existed, or that kept a ``--limit`` above the data's
    size, are the same measurement slots as today's rows: after the files changed, the newer cell replaces them in the views. They
    once stood beside it as a second column group (``[decode all]``, ``[limit 1000]``) showing the old files'
    numbers with no note."""
    import json

    import pandas as pd

    out = tmp_path / "run"
    args = ["sweep", "--checkpoint", full_ckpt, "--data", folder, "--out", out, "-q", "--res", "64,96"]
    assert cli(*args).code == 0
    old = set(_rows(out))
    for key, path in _rows(out).items():  # as an older version wrote them (its own keys stay as they are)
        found = path.stat()
        row = json.loads(path.read_text())
        del row["decode"], row["global_size"]  # abswin of this full-grid checkpoint: the default grid, unnamed
        row["limit"] = 1000
        path.write_text(json.dumps(row))
        os.utime(path, ns=(found.st_atime_ns, found.st_mtime_ns))
        cell = json.loads((path.parent / "cell.json").read_text())
        del cell["data_state"]  # versions before it: which files a cell measured is unknown
        (path.parent / "cell.json").write_text(json.dumps(cell))
    touch(sorted(folder.glob("*/*.JPEG"))[0])
    assert cli(*args).code == 0
    new = set(_rows(out)) - old
    assert len(new) == len(old)
    table = pd.read_parquet(out / "results.parquet")
    assert set(table.cell_key) == new and not table.duplicated(["scheme", "img_size"]).any()
    assert "[" not in (out / "results.md").read_text().splitlines()[0], "one column group"


def test_cells_of_images_since_removed_or_added_leave_the_views(cli, full_ckpt, folder, tmp_path):
    """Files removed from or added to the --data folder make another set (another fingerprint). Its earlier
    cells stood in the views as a second section, "n = 12 images of …" beside "n = 11", with no note, although
    those images are no longer there (adv19). A sweep of the same --data now leaves them out, with the note, and so
    those of another selection (--limit) whose images changed too."""
    import pandas as pd

    out = tmp_path / "run"
    args = ["sweep", "--checkpoint", full_ckpt, "--data", folder, "--out", out, "-q", "--no-plots"]
    assert cli(*args, "--res", "32,64,96").code == 0
    assert cli(*args, "--res", "64", "--limit", "5").code == 0
    images = sorted(folder.glob("*/*.JPEG"))
    images[0].unlink()
    shutil.copy(images[1], images[1].with_name("ILSVRC2012_val_00009999.JPEG"))
    images[2].unlink()
    result = cli(*args, "--res", "64")
    assert result.code == 0, result.err
    table = pd.read_parquet(out / "results.parquet")
    now = table[table["limit"].isna()]
    assert sorted(now["img_size"].unique()) == [64] and set(now["n_images"]) == {11}  # 32 and 96 px of 12 left
    assert table["limit"].isna().all()  # the first 5 images are others now: --limit 5's cells are out too
    assert "6 cell(s) of earlier sweeps were measured on files that have changed since" in result.err
    assert "n = 12" not in (out / "results.md").read_text()
    assert len(_rows(out)) == 10  # every measurement is still on disk


def test_cells_of_another_selection_leave_the_views_when_their_files_changed(cli, full_ckpt, folder, tmp_path):
    """A full sweep, an image rewritten, then a sweep with --limit: the full sweep's cells, measured on the old file,
    stood in the views with no note (only cells of the sweep's own selection were checked; adv28). The data where it
    lies is now read again under each earlier selection; cells of a selection whose files did not change stay."""
    import pandas as pd

    out = tmp_path / "run"
    args = ["sweep", "--checkpoint", full_ckpt, "--data", folder, "--out", out, "-q", "--no-plots"]
    assert cli(*args, "--res", "32,64").code == 0
    assert cli(*args, "--res", "64", "--limit", "5").code == 0
    result = cli(*args, "--res", "64", "--per-class", "2")  # nothing changed: every selection's cells stay
    assert result.code == 0 and "changed since" not in result.err, result.err
    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == 4 + 2 + 2
    last = max(folder.glob("*/*.JPEG"), key=lambda p: p.stem)  # the 4th of its class: in neither selection
    touch(last)
    result = cli(*args, "--res", "64", "--limit", "5")
    assert result.code == 0, result.err
    assert "4 cell(s) of earlier sweeps were measured on files that have changed since" in result.err
    table = pd.read_parquet(out / "results.parquet")
    shown = sorted(zip(table["limit"].fillna(0), table["per_class"].fillna(0), table["scheme"]))
    assert shown == [(0, 2, "abswin"), (0, 2, "interp"), (5, 0, "abswin"), (5, 0, "interp")]  # the full set's are out


def test_the_same_relative_data_from_two_folders_is_two_places(cli, full_ckpt, class_folder, tmp_path, monkeypatch):
    """``--data val`` (or ``.``) from two working folders names two data sets; the second sweep hid the first's rows
    as if its images had changed, with no note (adv21). The place is where the data lies, not what was typed."""
    import pandas as pd

    out = tmp_path / "run"
    for name, per_class in (("a", 4), ("b", 2)):
        make_class_folder(tmp_path / name / "val", wnids=CLASSES, per_class=per_class, seed=per_class)
        monkeypatch.chdir(tmp_path / name)
        result = cli("sweep", "--checkpoint", full_ckpt, "--data", "val", "--out", out, "-q", "--no-plots", "--res", "64")
        assert result.code == 0 and "changed since" not in result.err, result.err
    table = pd.read_parquet(out / "results.parquet")
    assert sorted(set(table["n_images"])) == [6, 12] and table["data_place"].nunique() == 2


def test_the_place_of_the_data_is_where_it_lies(folder, tmp_path, monkeypatch):
    """Relative, absolute, through a link: one place; the host is not part of it (a CI job restoring its run folder
    runs on a new host each time, and the stale cells stayed, adv22)."""
    link = tmp_path / "link"
    link.symlink_to(folder, target_is_directory=True)
    monkeypatch.chdir(folder.parent)
    places = {open_data(str(p), CLASSES).place() for p in (folder, Path(folder.name), link)}
    monkeypatch.setattr("socket.gethostname", lambda: "another-runner")
    places.add(open_data(str(folder), CLASSES).place())
    assert len(places) == 1


def test_the_state_names_files_as_commonpath_and_relpath_do():
    # files_state cuts names below the common folder itself (relpath and commonpath of 50 000 files took 0.5 s):
    # the same hash as os.path's, for paths with odd components, a bare /, // and relative ones
    import random

    from hiera_bench.data import base

    def by_os_path(row_files, data_files):
        absolute = [os.path.abspath(p) for p in (*row_files, *data_files)]
        root = os.path.commonpath(absolute) if absolute else ""
        named = [(os.path.relpath(p, root), p) for p in absolute]
        return base._stats_hash(sorted(named[:len(row_files)]) + named[len(row_files):])

    rng = random.Random(0)
    parts = ["a", "b", "a-b", "a.b", "ab", "A", "z", "é", "x y", ".h", "..", "."]
    for _ in range(3000):
        paths = [rng.choice(["/", "/", "//", "///", "", "./", "../", "/r/"])
                 + "/".join(rng.choice(parts) for _ in range(rng.randint(0, 4))) or "/"
                 for _ in range(rng.randint(0, 6))]
        k = rng.randint(0, len(paths))
        assert base.files_state(paths[:k], paths[k:]) == by_os_path(paths[:k], paths[k:]), paths
