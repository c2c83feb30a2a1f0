"""Image ids are unique in every evaluation set: the paired statistics match images by id.

Two images under one id paired the wrong outcomes (a 95 % CI of [0, 0] around a top-1 of 33 %,
McNemar counts of 0/0). Class folders make ids unique by construction; any layout that still
yields a repeated id is refused in one line.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest

from hiera_bench.data import open_data
from hiera_bench.errors import UserError
from hiera_bench.testing import WNIDS, make_image

CLASSES = sorted(WNIDS)


def same_names_in_every_class(root: Path, per_class: int = 4) -> Path:
    """``root/<wnid>/img_<i>.jpg``: the same file names in every class folder, as in ImageNet-Sketch-like sets."""
    rng = np.random.default_rng(5)
    for c, wnid in enumerate(CLASSES):
        (root / wnid).mkdir(parents=True)
        for i in range(per_class):
            make_image(rng, (60 + 7 * i, 50 + 5 * c), c).save(root / wnid / f"img_{i}.jpg", quality=90)
    return root


def test_file_names_repeated_across_class_folders_get_class_prefixed_ids(tmp_path):
    root = same_names_in_every_class(tmp_path / "val")
    data = open_data(str(root), CLASSES)
    expected = {f"{wnid}/img_{i}": CLASSES.index(wnid) for wnid in CLASSES for i in range(4)}
    assert dict(zip(data.dataset["image_id"], data.dataset["label"])) == expected
    assert len(data) == 12


@pytest.mark.parametrize("cut", [{}, {"limit": 5}, {"per_class": 2}])
def test_whole_column_reads_match_the_rows_in_order(class_folder, cut):
    """``image_ids()``/``labels()`` read the column at once; through the sort and the cut they must give
    exactly what the rows give one by one (the loop reads rows; the statistics and scoring read columns)."""
    data = open_data(str(class_folder), CLASSES, **cut)
    rows = [data.dataset[i] for i in range(len(data))]
    assert data.image_ids() == [r["image_id"] for r in rows]
    assert data.labels().tolist() == [r["label"] for r in rows]
    assert data.image_ids() == sorted(data.image_ids())


def test_unique_file_names_keep_their_ids(class_folder):
    """ImageNet val's ids (and so existing baselines and ReaL labels) do not change."""
    data = open_data(str(class_folder), CLASSES)
    assert data.dataset["image_id"][:] == sorted(p.stem for p in class_folder.glob("*/*.JPEG"))


def test_a_stem_repeated_within_one_class_folder_is_refused(tmp_path, class_folder):
    root = tmp_path / "val"
    shutil.copytree(class_folder, root)
    first = sorted(root.glob(f"{CLASSES[0]}/*.JPEG"))[0]
    shutil.copy(first, first.with_suffix(".png"))
    with pytest.raises(UserError, match=rf"{first.stem} is there twice \({CLASSES[0]}/{first.name} and "
                                        rf"{CLASSES[0]}/{first.stem}.png\); delete the copy") as info:
        open_data(str(root), CLASSES)
    assert "\n" not in str(info.value)
    renamed = first.with_name("photo.png")  # not a val number: the stems repeat, the set's ids are folder/stem
    first.with_suffix(".png").rename(renamed)
    shutil.copy(first, first.with_name("photo.JPEG"))
    with pytest.raises(UserError, match=rf"1 image id occurs more than once.*{CLASSES[0]}/photo"):
        open_data(str(root), CLASSES)


def test_repeated_ids_in_parquet_are_refused(tmp_path, class_folder):
    files = sorted(class_folder.glob("*/*.JPEG"))
    rows = [(p, p.parent.name) for p in files] + [(files[0], files[0].parent.name), (files[1], files[1].parent.name)]
    (tmp_path / "p").mkdir()
    datasets.Dataset.from_dict(
        {"image": [{"bytes": p.read_bytes(), "path": f"{p.stem}_{wnid}.JPEG"} for p, wnid in rows]},
        features=datasets.Features({"image": datasets.Image()}),
    ).to_parquet(str(tmp_path / "p" / "validation-00000-of-00001.parquet"))
    with pytest.raises(UserError, match=rf"2 image ids occur more than once \(e\.g\. {files[0].stem}, {files[1].stem}\)"):
        open_data(str(tmp_path / "p"), CLASSES)


def test_sweep_pairs_images_by_unique_ids(cli, full_ckpt, tmp_path):
    """End to end: one prediction per image and cell, and the paired counts are those of the images."""
    root = same_names_in_every_class(tmp_path / "val")
    result = cli("sweep", "--checkpoint", full_ckpt, "--data", root, "--res", "64:96:32", "--schemes", "interp",
                 "--device", "cpu", "--quiet", "--out", tmp_path / "run")
    assert result.code == 0, result.err
    table = pd.read_csv(tmp_path / "run" / "results.csv").set_index("img_size")
    predictions = pd.read_parquet(tmp_path / "run" / "predictions.parquet")
    correct = {size: predictions[predictions["cell_key"] == table.at[size, "cell_key"]].set_index("image_id")["correct1"]
               for size in (64, 96)}
    assert all(len(c) == 12 and c.index.is_unique for c in correct.values())
    gained = int((correct[96] & ~correct[64]).sum())
    lost = int((~correct[96] & correct[64]).sum())
    assert (table.at[96, "delta_b"], table.at[96, "delta_c"]) == (gained, lost)
    for size in (64, 96):
        assert table.at[size, "top1_ci_low"] <= table.at[size, "top1"] <= table.at[size, "top1_ci_high"]
