"""ImageNet-R/-A scoring: logits restricted to the subset's 200 classes, as their papers and timm's
``validate.py --valid-labels`` do; checked image by image against plain timm."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

from hiera_bench.data.base import imagenet_wnids
from hiera_bench.errors import UserError
from hiera_bench.subsets import subset
from hiera_bench.testing import TINY_ARGS, make_class_folder, save_checkpoint_folder, tiny_hiera


@pytest.fixture(scope="module")
def imagenet_ckpt(tmp_path_factory):
    """A tiny Hiera with ImageNet's 1000 classes (timm order)."""
    net = tiny_hiera(num_classes=1000)
    folder = save_checkpoint_folder(net, tmp_path_factory.mktemp("in1k") / "ckpt", "hiera_tiny_224", dict(TINY_ARGS),
                                    label_names=list(imagenet_wnids()))
    return folder, net


def _timm_reference(net, folder, root, valid: list[int]) -> pd.DataFrame:
    """correct@1 and NLL of every image with plain timm: its eval transform, logits sliced to ``valid``."""
    config = json.loads((folder / "config.json").read_text())["pretrained_cfg"]
    transform = create_transform(**resolve_data_config(pretrained_cfg=config))
    order = list(imagenet_wnids())
    rows = []
    for path in sorted(root.glob("*/*.JPEG")):
        with Image.open(path) as img:
            x = transform(img.convert("RGB"))[None]
        with torch.no_grad():
            logits = net(x)[0, valid]
        target = valid.index(order.index(path.parent.name))
        rows.append({"image_id": path.stem, "correct1": int(logits.argmax()) == target,
                     "nll": float(-torch.log_softmax(logits, 0)[target])})
    return pd.DataFrame(rows).set_index("image_id").sort_index()


def test_imagenet_r_scoring_equals_timm_with_sliced_logits(cli, imagenet_ckpt, tmp_path):
    folder, net = imagenet_ckpt
    r = subset("imagenet-r")
    assert len(r.wnids) == 200
    data = make_class_folder(tmp_path / "r", wnids=r.wnids[:4], per_class=3)
    result = cli("sweep", "-c", folder, "--data", data, "--res", "64", "--schemes", "interp", "--device", "cpu", "-q",
                 "--no-plots", "--class-subset", "imagenet-r", "--out", tmp_path / "run")
    assert result.code == 0, result.err
    preds = pd.read_parquet(tmp_path / "run" / "predictions.parquet").set_index("image_id").sort_index()
    order = list(imagenet_wnids())
    valid = sorted(order.index(w) for w in r.wnids)
    reference = _timm_reference(net, folder, data, valid)
    assert list(preds.index) == list(reference.index)
    assert list(preds["correct1"]) == list(reference["correct1"])
    np.testing.assert_allclose(preds["nll"], reference["nll"], atol=1e-4)
    assert all(set(k) <= set(valid) for k in preds["topk"])  # no class outside the subset is ever predicted
    table = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(table["class_subset"]) == {"imagenet-r"}
    assert json.loads((tmp_path / "run" / "run.json").read_text())["class_subset"] == "imagenet-r"
    # a paper reader sees it: 200-way top-1 is not 1000-way top-1 (only report.csv once said so)
    said = "top-1 over the imagenet-r classes only"
    assert said in (tmp_path / "run" / "results.md").read_text()
    report = cli("report", tmp_path / "run", "-o", tmp_path / "report")
    assert report.code == 0, report.err
    assert said in (tmp_path / "report" / "report.md").read_text()
    assert said in (tmp_path / "report" / "report.tex").read_text()

    # the same images scored over all 1000 classes are other cells, and the run says what it did
    result = cli("sweep", "-c", folder, "--data", data, "--res", "64", "--schemes", "interp", "--device", "cpu",
                 "--no-plots", "--out", tmp_path / "all", "--progress-every", "1000")
    assert result.code == 0 and "scored over all 1000" in result.err
    full = pd.read_csv(tmp_path / "all" / "results.csv")
    assert full["class_subset"].isna().all() and set(full["cell_key"]).isdisjoint(table["cell_key"])


def test_a_folder_of_exactly_imagenet_as_classes_is_scored_as_imagenet_a(cli, imagenet_ckpt, tmp_path):
    folder, _ = imagenet_ckpt
    a = subset("imagenet-a")
    data = make_class_folder(tmp_path / "a", wnids=a.wnids, per_class=1)
    result = cli("sweep", "-c", folder, "--data", data, "--res", "64", "--schemes", "interp", "--device", "cpu",
                 "--no-plots", "--out", tmp_path / "run", "--progress-every", "1000")
    assert result.code == 0, result.err
    assert "exactly imagenet-a's" in result.err
    assert set(pd.read_csv(tmp_path / "run" / "results.csv")["class_subset"]) == {"imagenet-a"}


def test_bad_subsets_are_one_line(cli, full_ckpt, class_folder, tmp_path):
    (tmp_path / "empty.txt").write_text("\n")
    for value, message in (("imagenet-z", "give imagenet-r, imagenet-a or a text file"),
                           (tmp_path / "empty.txt", "lists no class"),
                           ("imagenet-r", "not the model's")):
        result = cli("sweep", "-c", full_ckpt, "--data", class_folder, "--class-subset", value, "--out", tmp_path / "o")
        assert result.code == 2 and result.err.count("\n") == 1 and message in result.err, result.err


def test_a_subset_that_leaves_out_some_of_the_data_s_classes_is_refused(cli, imagenet_ckpt, tmp_path):
    """ImageNet-R and -A share only part of their classes: scored under the wrong one, the other images could
    never be right (their logits are left out) and would lower every figure without a word."""
    folder, _ = imagenet_ckpt
    r, a = subset("imagenet-r"), subset("imagenet-a")
    only_r = [w for w in r.wnids if w not in set(a.wnids)][:2]
    shared = next(w for w in r.wnids if w in set(a.wnids))
    data = make_class_folder(tmp_path / "r", wnids=[*only_r, shared], per_class=1)
    result = cli("sweep", "-c", folder, "--data", data, "--res", "64", "--schemes", "interp", "--device", "cpu", "-q",
                 "--no-plots", "--class-subset", "imagenet-a", "--out", tmp_path / "run")
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert f"{len(only_r)} of the data's 3 classes are not in it" in result.err and only_r[0] in result.err
    assert "all in imagenet-r" in result.err and not (tmp_path / "run" / "results.csv").exists()


def test_a_subset_file_saved_with_a_byte_order_mark_reads_as_without(tmp_path):
    """Windows editors start a text file with a UTF-8 BOM; it joined the first wnid and the file was refused (adv19)."""
    wnids = ["n01440764", "n01443537"]
    (tmp_path / "plain.txt").write_text("\n".join(wnids) + "\n")
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(wnids).encode())
    plain, bom = subset(str(tmp_path / "plain.txt")), subset(str(tmp_path / "bom.txt"))
    assert bom.wnids == plain.wnids == tuple(wnids)
    assert bom.name.split(":")[1] == plain.name.split(":")[1]  # the same classes: the same digest


def test_a_file_of_timm_class_indices_is_the_subset_of_their_wnids(tmp_path):
    """timm's ``--valid-labels`` file lists class indices; it was refused as 'not the model's classes' (adv26)."""
    order = list(imagenet_wnids())
    (tmp_path / "valid.txt").write_text("0\n391\n999\n")
    (tmp_path / "wnids.txt").write_text(f"{order[999]}\n{order[0]}\n{order[391]}\n")
    indices, wnids = subset(str(tmp_path / "valid.txt")), subset(str(tmp_path / "wnids.txt"))
    assert indices.wnids == (order[0], order[391], order[999])
    assert indices.name.split(":")[1] == wnids.name.split(":")[1]  # the same classes: the same subset
    assert indices.mask(order).nonzero().flatten().tolist() == [0, 391, 999]
    indices.require_covers({order[0], order[999]})
    (tmp_path / "big.txt").write_text("3\n1000\n")
    with pytest.raises(UserError, match="lists class index 1000, outside ImageNet-1k's 0-999"):
        subset(str(tmp_path / "big.txt"))


def test_a_model_whose_class_names_are_numbers_reads_a_file_of_numbers_as_its_names(tmp_path):
    """A fine-tune on digits names its classes "0".."9": a file of numbers names those, not ImageNet's."""
    (tmp_path / "digits.txt").write_text("7\n2\n")
    names = ["3", "1", "2", "0", "4", "5", "6", "7", "8", "9"]
    chosen = subset(str(tmp_path / "digits.txt"))
    assert chosen.mask(names).nonzero().flatten().tolist() == [2, 7]
    chosen.require_covers({"2", "7"})
    with pytest.raises(UserError, match="1 of the data's 2 classes are not in it"):
        chosen.require_covers({"2", "5"})
