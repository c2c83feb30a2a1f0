"""Mistakes in --data become one-line UserErrors (exit 2 through the CLI), never tracebacks or wrong labels."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest

from hiera_bench.data import open_data
from hiera_bench.data.real import load_real_labels, real_targets
from hiera_bench.errors import UserError
from hiera_bench.testing import WNIDS, make_class_folder, make_image, run_cli_batch, write_devkit_meta

CLASSES = sorted(WNIDS)


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    return make_class_folder(tmp_path_factory.mktemp("src") / "val", per_class=1)


def flat_copy(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for p in src.glob("*/*.JPEG"):
        shutil.copy(p, dest / p.name)
    return dest


def one_line_error(location: str, match: str, **kw) -> str:
    with pytest.raises(UserError, match=match) as exc:
        open_data(location, CLASSES, **kw)
    message = str(exc.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def test_missing_path(tmp_path):
    one_line_error(str(tmp_path / "nope"), "does not exist")


def test_empty_folder(tmp_path):
    one_line_error(str(tmp_path), "empty folder")


def test_glob_matching_nothing(tmp_path):
    one_line_error(str(tmp_path / "*.parquet"), "no known ImageNet layout")


def test_flat_val_folder_without_labels(src, tmp_path):
    message = one_line_error(str(flat_copy(src, tmp_path / "val")), "no labels")
    assert "LOC_val_solution.csv" in message and "meta.mat" in message


def test_flat_images_without_val_names_are_no_layout(tmp_path):
    make_image(np.random.default_rng(0), (8, 8), 0).save(tmp_path / "cat.jpg")
    one_line_error(str(tmp_path), "no known ImageNet layout")


def test_devkit_truth_without_meta(src, tmp_path):
    images = flat_copy(src, tmp_path / "val")
    (tmp_path / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n2\n3\n")
    one_line_error(str(images), "meta.mat")


def test_devkit_id_not_in_meta(src, tmp_path):
    images = flat_copy(src, tmp_path / "val")
    write_devkit_meta(tmp_path / "meta.mat", {"n01751748": 490, "n02119789": 1, "n04596742": 17})
    (tmp_path / "ILSVRC2012_validation_ground_truth.txt").write_text("490\n1\n999\n")
    one_line_error(str(images), "devkit ID 999")


def _kaggle_solution(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("ImageId,PredictionString\n" + "".join(f"{vid},{wnid} 1 2 30 40 \n" for vid, wnid in rows))
    return path


def test_kaggle_solution_duplicates(src, tmp_path, cli, full_ckpt):
    """A second row for an image with another wnid silently relabelled it; a repeated identical label is harmless."""
    images = flat_copy(src, tmp_path / "val")
    truth = sorted((p.stem, p.parent.name) for p in src.glob("*/*.JPEG"))
    (vid, wnid), other = truth[1], truth[0][1]
    solution = _kaggle_solution(tmp_path / "LOC_val_solution.csv", [*truth, (vid, wnid)])
    data = open_data(str(images), CLASSES)
    assert dict(zip(data.dataset["image_id"], data.dataset["label"])) == {v: CLASSES.index(w) for v, w in truth}

    _kaggle_solution(solution, [*truth, (vid, other)])
    message = one_line_error(str(images), f"{vid}.*{wnid}.*{other}")
    assert str(solution) in message
    result = cli("sweep", "--checkpoint", full_ckpt, "--data", images, "--out", tmp_path / "run", "--device", "cpu",
                 "--quiet")
    lines = result.err.strip().splitlines()
    assert result.code == 2 and len(lines) == 1 and vid in lines[0] and str(solution) in lines[0], result.err


def test_unknown_format(src):
    one_line_error(str(src), "unknown --data-format 'tfrecord'", data_format="tfrecord")


@pytest.mark.parametrize("wnid, match", [
    ("n99999999", "'n99999999'.*not one of the model's 3 classes"),
    # a real ImageNet class the model does not know is an error too, not a silently dropped image
    ("n01440764", "'n01440764'"),
])
def test_unknown_class_folder(src, tmp_path, wnid, match):
    root = tmp_path / "val"
    shutil.copytree(src, root)
    (root / wnid).mkdir()
    shutil.copy(next(src.glob("*/*.JPEG")), root / wnid / "ILSVRC2012_val_00000099.JPEG")
    one_line_error(str(root), match)


def _hub_parquet(folder: Path, labels: list[int], names: list[str]) -> Path:
    folder.mkdir()
    rows = datasets.Dataset.from_dict(
        {"image": [{"bytes": b"x", "path": f"ILSVRC2012_test_{i:08d}.JPEG"} for i in range(len(labels))],
         "label": labels},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}))
    rows.to_parquet(str(folder / "validation-00000-of-00001.parquet"))
    return folder


def test_unlabelled_test_split(tmp_path):
    from hiera_bench.data.base import _imagenet_descriptions

    names = list(_imagenet_descriptions())
    names[517] += " (machine)"
    one_line_error(str(_hub_parquet(tmp_path / "p", [-1, -1], names)), "unlabelled")


def test_label_names_that_are_not_imagenet(tmp_path):
    one_line_error(str(_hub_parquet(tmp_path / "p", [0, 1], ["cat", "dog"])), "neither wnids nor ImageNet-1k")


def test_saved_dict_without_validation_split(src, tmp_path):
    ds = datasets.Dataset.from_dict({"image": [{"bytes": b"x", "path": "a_n01751748.JPEG"}], "label": [0]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "label": datasets.Value("int64")}))
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "saved"))
    one_line_error(str(tmp_path / "saved"), "none is the validation split")


def test_hub_format_errors(tmp_path):
    one_line_error("hf:imagenet-1k", "hf:OWNER/NAME")
    one_line_error("hf:ILSVRC/imagenet-1k", "not in the HF cache.*--data")


def test_hub_format_on_a_local_folder_says_drop_it(src):
    one_line_error(str(src), "local path, not a hub dataset.*drop --data-format hub", data_format="hub")


def test_real_labels_need_val_numbers(tmp_path):
    real = load_real_labels()
    assert real_targets(real, ["ILSVRC2012_val_00000002", "cat"])[1] is None
    with pytest.raises(UserError, match="folder layout.*ILSVRC2012_val_00000001") as exc:
        real_targets(real, ["cat", "dog"], layout="folder")
    assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match="does not exist"):
        load_real_labels(tmp_path / "real.json")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(UserError, match="not valid JSON"):
        load_real_labels(tmp_path / "bad.json")


def test_cli_exits_2_with_one_line(full_ckpt, src, tmp_path):
    """The same mistakes through ``hiera-bench sweep``: exit 2 and a single 'error:' line on stderr."""
    (tmp_path / "empty").mkdir()
    flat = flat_copy(src, tmp_path / "flat")
    sweep = ["sweep", "--checkpoint", full_ckpt, "--out", tmp_path / "out", "--device", "cpu", "--quiet"]
    cases = {
        "does not exist": ["--data", tmp_path / "missing"],
        "empty folder": ["--data", tmp_path / "empty"],
        "no labels": ["--data", flat],
        "unknown --data-format": ["--data", src, "--data-format", "tfrecord"],
        "not in the HF cache": ["--data", "hf:ILSVRC/imagenet-1k"],
    }
    results = run_cli_batch([[*sweep, *extra] for extra in cases.values()])
    for (expected, _), result in zip(cases.items(), results):
        lines = result["stderr"].strip().splitlines()
        assert result["code"] == 2, (expected, result)
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (expected, result)


def test_class_folders_are_found_past_empty_leading_folders(src, tmp_path):
    """Detection looks at every class folder until one holds images, not at the first few."""
    root = tmp_path / "val"
    shutil.copytree(src, root)
    for i in range(6):
        (root / f"n0000000{i}").mkdir()  # sorts before every real class, holds nothing
    assert open_data(str(root), CLASSES + [f"n0000000{i}" for i in range(6)]).layout == "folder"


@pytest.mark.parametrize("layout", ["folder", "wnidnames"])
def test_a_file_name_that_is_not_utf8_is_one_line_naming_it(src, tmp_path, layout):
    """Names from a Latin-1 archive reach Python as surrogates, which Arrow cannot hold as text."""
    root = tmp_path / "val"
    if layout == "folder":
        shutil.copytree(src, root)
        folder = next(p for p in root.iterdir() if p.is_dir())
        name = b"caf\xe9.JPEG"
    else:
        folder = flat_copy(src, root)
        for i, p in enumerate(sorted(folder.glob("*.JPEG"))):
            p.rename(folder / f"{CLASSES[i % len(CLASSES)]}_{i}.JPEG")
        folder, name = root, f"{CLASSES[0]}_caf".encode() + b"\xe9.JPEG"
    shutil.copy(next(src.glob("*/*.JPEG")), os.fsdecode(os.fsencode(folder) + b"/" + name))
    message = one_line_error(str(root), "not UTF-8")
    assert "caf\\xe9.JPEG" in message and "1 such name" in message and "convmv" in message
