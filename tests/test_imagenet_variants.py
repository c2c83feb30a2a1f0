"""ImageNet variants as released: V2's integer class folders (timm order) read as the same labels as wnid folders;
Sketch's wnid folders whose file names repeat across classes keep every image, paired by unique ids."""

from __future__ import annotations

import shutil

import pandas as pd

from hiera_bench.data import open_data
from hiera_bench.data.base import imagenet_wnids
from hiera_bench.testing import WNIDS, make_class_folder


def _as_v2(src, dst):
    """The same images with each wnid folder renamed to its index in timm's class order."""
    order = imagenet_wnids()
    for folder in src.iterdir():
        shutil.copytree(folder, dst / str(order.index(folder.name)))
    return dst


def test_index_folders_get_the_labels_of_their_wnids(tmp_path):
    src = make_class_folder(tmp_path / "wnid", per_class=2)
    v2 = _as_v2(src, tmp_path / "imagenetv2-matched-frequency-format-val")
    classes = sorted(WNIDS)
    by_wnid, by_index = open_data(str(src), classes), open_data(str(v2), classes)
    assert by_index.layout == "imagenetv2" and by_wnid.layout == "folder"
    a = pd.DataFrame({"id": by_wnid.dataset["image_id"], "label": by_wnid.dataset["label"]}).sort_values("id")
    b = pd.DataFrame({"id": by_index.dataset["image_id"], "label": by_index.dataset["label"]}).sort_values("id")
    assert a.reset_index(drop=True).equals(b.reset_index(drop=True))


def test_a_thousand_class_model_reads_v2_labels_in_timm_order(tmp_path):
    src = make_class_folder(tmp_path / "wnid", per_class=1)
    v2 = _as_v2(src, tmp_path / "v2")
    data = open_data(str(v2), list(imagenet_wnids()))
    expected = sorted(imagenet_wnids().index(w) for w in WNIDS)
    assert sorted(data.dataset["label"]) == expected


def test_a_sweep_on_v2_folders_equals_the_sweep_on_wnid_folders(cli, full_ckpt, tmp_path):
    src = make_class_folder(tmp_path / "wnid", per_class=2)
    v2 = _as_v2(src, tmp_path / "v2")
    for name, data in (("a", src), ("b", v2)):
        result = cli("sweep", "-c", full_ckpt, "--data", data, "--res", "64", "--device", "cpu", "-q", "--no-plots",
                     "--out", tmp_path / name)
        assert result.code == 0, result.err
    a, b = (pd.read_parquet(tmp_path / n / "predictions.parquet").sort_values(["scheme", "image_id"]) for n in "ab")
    assert list(a["image_id"]) == list(b["image_id"]) and list(a["target"]) == list(b["target"])
    assert list(a["correct1"]) == list(b["correct1"])


def test_a_sketch_style_folder_sweeps_with_class_prefixed_ids(cli, full_ckpt, tmp_path):
    src = make_class_folder(tmp_path / "src", per_class=3)
    sketch = tmp_path / "imagenet-sketch" / "sketch"
    for folder in src.iterdir():  # ImageNet-Sketch names files sketch_<n>.JPEG within each wnid folder
        (sketch / folder.name).mkdir(parents=True)
        for i, image in enumerate(sorted(folder.iterdir())):
            shutil.copyfile(image, sketch / folder.name / f"sketch_{i}.JPEG")
    result = cli("sweep", "-c", full_ckpt, "--data", sketch, "--res", "64", "--device", "cpu", "-q", "--no-plots",
                 "--out", tmp_path / "run")
    assert result.code == 0, result.err
    preds = pd.read_parquet(tmp_path / "run" / "predictions.parquet")
    ids = set(preds["image_id"])
    assert len(ids) == 9 and all(i.split("/")[0] in WNIDS and i.split("/")[1].startswith("sketch_") for i in ids)
    assert set(pd.read_csv(tmp_path / "run" / "results.csv")["n_images"]) == {9}
