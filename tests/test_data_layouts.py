"""Every data layout gives the same (image id -> label) mapping, in timm's class order.

The layouts are built on disk from the same generated JPEGs with the real tools users have
(``datasets`` parquet/save_to_disk, tarfile shards, scipy ``savemat`` for the devkit's meta.mat,
a hub-cache snapshot folder) and read back through :func:`hiera_bench.data.open_data`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import datasets
import numpy as np
import pytest
from timm.data import ImageNetInfo

from hiera_bench.data import detect_layout, list_layouts, open_data
from hiera_bench.data.base import get_layout
from hiera_bench.data.real import load_real_labels, real_accuracy
from hiera_bench.errors import UserError
from hiera_bench.testing import WNIDS, make_class_folder, write_devkit_meta

TIMM_CLASSES = list(ImageNetInfo().label_names())
MODEL_CLASSES = sorted(WNIDS)
#: Real devkit IDs where known (ID 1 = kit fox, 490 = sea snake); wok's is made up but, like the others,
#: differs from its timm index + 1, so reading devkit IDs as indices would fail this test.
DEVKIT_IDS = {"n02119789": 1, "n01751748": 490, "n04596742": 17}
HUB_SHA = "0123456789abcdef0123456789abcdef01234567"


def records(root: Path) -> list[tuple[str, str, Path]]:
    """(val id, wnid, file) of every image in a class-folder tree, by val id."""
    return sorted((p.stem, p.parent.name, p) for p in root.glob("*/*.JPEG"))


def hub_label_names() -> list[str]:
    """The hub's ClassLabel names: timm's descriptions in timm order (the two 'crane's made unique)."""
    info = ImageNetInfo()
    names = [info.index_to_description(i) for i in range(1000)]
    names[517] = "crane, construction crane"
    return names


def hub_path(vid: str, wnid: str) -> str | None:
    """The hub's image path: ``ILSVRC2012_val_00000001_n01751748.JPEG``."""
    return f"{vid}_{wnid}.JPEG"


def id_only_path(vid: str, wnid: str) -> str | None:
    """A path without the wnid, so the label has to come from the ClassLabel index."""
    return f"{vid}.JPEG"


def hub_rows(recs, path_of=hub_path) -> datasets.Dataset:
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=hub_label_names())})
    return datasets.Dataset.from_dict({
        "image": [{"bytes": p.read_bytes(), "path": path_of(vid, wnid)} for vid, wnid, p in recs],
        "label": [TIMM_CLASSES.index(wnid) for _, wnid, _ in recs],
    }, features=features)


def build_parquet(recs, folder: Path, path_of=hub_path) -> Path:
    folder.mkdir(parents=True)
    half = len(recs) // 2
    for i, part in enumerate((recs[:half], recs[half:])):
        hub_rows(part, path_of).to_parquet(str(folder / f"validation-{i:05d}-of-00002.parquet"))
    # train shards beside the validation ones must be ignored
    hub_rows(recs[:1], path_of).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    return folder


def build_hub_cache(recs, cache: Path, repo: str = "ILSVRC/imagenet-1k") -> Path:
    """A real HF hub-cache entry: datasets--OWNER--NAME/{refs/main, snapshots/<sha>/data/*.parquet}."""
    entry = cache / f"datasets--{repo.replace('/', '--')}"
    data = entry / "snapshots" / HUB_SHA / "data"
    data.mkdir(parents=True)
    hub_rows(recs).to_parquet(str(data / "validation-00000-of-00001.parquet"))
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(HUB_SHA)
    return cache


def build_webdataset(recs, folder: Path) -> Path:
    """Shards as timm/imagenet-1k-wds: key = val id; jpg, cls (timm index), json (filename wnid/val.JPEG)."""
    folder.mkdir(parents=True)
    for shard, part in enumerate((recs[: len(recs) // 2], recs[len(recs) // 2:])):
        with tarfile.open(folder / f"imagenet1k-validation-{shard:02d}.tar", "w") as tar:
            for vid, wnid, p in part:
                label = TIMM_CLASSES.index(wnid)
                meta = {"filename": f"{wnid}/{vid}.JPEG", "label": label, "width": 1, "height": 1}
                for ext, payload in (("jpg", p.read_bytes()), ("cls", str(label).encode()),
                                     ("json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(f"{vid}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return folder


def _flat_images(recs, folder: Path) -> None:
    folder.mkdir(parents=True)
    for vid, _, p in recs:
        (folder / f"{vid}.JPEG").symlink_to(p)


def build_flatval_devkit(recs, folder: Path) -> Path:
    """Flat val images + ILSVRC2012_devkit_t12/data/{ground truth, meta.mat} beside them."""
    _flat_images(recs, folder / "val")
    devkit = folder / "ILSVRC2012_devkit_t12" / "data"
    write_devkit_meta(devkit / "meta.mat", DEVKIT_IDS)
    numbers = {int(vid.rsplit("_", 1)[1]): wnid for vid, wnid, _ in recs}
    lines = [str(DEVKIT_IDS[numbers[n]]) for n in range(1, max(numbers) + 1)]
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("\n".join(lines) + "\n")
    return folder / "val"


def build_flatval_kaggle(recs, folder: Path) -> Path:
    """Kaggle's nesting: ILSVRC/Data/CLS-LOC/val/*.JPEG with LOC_val_solution.csv at the top."""
    images = folder / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    _flat_images(recs, images)
    with (folder / "LOC_val_solution.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ImageId", "PredictionString"])
        for vid, wnid, _ in reversed(recs):
            writer.writerow([vid, f"{wnid} 1 2 30 40 {wnid} 5 6 70 80 "])
    return images


def build_wnid_names(recs, folder: Path) -> Path:
    """One flat folder, every image named ``<wnid>_<name>`` as ImageNet's train files are (the name here is the
    val id, so the image ids are the other layouts')."""
    folder.mkdir(parents=True)
    for vid, wnid, p in recs:
        (folder / f"{wnid}_{vid}.JPEG").symlink_to(p)
    return folder


def build_saved_common(recs, folder: Path) -> Path:
    """The common schema saved to disk, integer labels in timm's ImageNet-1k order."""
    ds = datasets.Dataset.from_dict({
        "image_id": [vid for vid, _, _ in recs],
        "label": [TIMM_CLASSES.index(wnid) for _, wnid, _ in recs],
        "image": [{"bytes": p.read_bytes(), "path": None} for _, _, p in recs],
    }, features=datasets.Features({"image_id": datasets.Value("string"), "label": datasets.Value("int64"),
                                   "image": datasets.Image()}))
    ds.save_to_disk(str(folder))
    return folder


def build_saved_hub(recs, folder: Path) -> Path:
    """What ``load_dataset("ILSVRC/imagenet-1k").save_to_disk(...)`` writes: a DatasetDict in the hub schema."""
    datasets.DatasetDict({"train": hub_rows(recs[:2]), "validation": hub_rows(recs)}).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def recs(tmp_path_factory):
    return records(make_class_folder(tmp_path_factory.mktemp("src") / "val", per_class=3))


@pytest.fixture(scope="module")
def hub_cache(recs, tmp_path_factory):
    return build_hub_cache(recs, tmp_path_factory.mktemp("hub") / "hub")


@pytest.fixture
def offline_hub(hub_cache, monkeypatch):
    """Point huggingface_hub at the test's cache (HF_HUB_CACHE is read once, at import)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))
    assert huggingface_hub.constants.HF_HUB_OFFLINE
    return hub_cache


@pytest.fixture(scope="module")
def layouts(recs, tmp_path_factory) -> dict[str, str]:
    """Every local layout built from the same images: {case name: --data location}."""
    base = tmp_path_factory.mktemp("layouts")
    return {
        "folder": str(recs[0][2].parents[1]),
        "parquet": str(build_parquet(recs, base / "parquet")),
        "parquet-glob": str(base / "parquet" / "validation-*.parquet"),
        "parquet-no-paths": str(build_parquet(recs, base / "parquet-nopath", id_only_path)),
        "webdataset": str(build_webdataset(recs, base / "wds")),
        "flatval-devkit": str(build_flatval_devkit(recs, base / "devkit")),
        "flatval-kaggle": str(build_flatval_kaggle(recs, base / "kaggle")),
        "wnidnames": str(build_wnid_names(recs, base / "named")),
        "saved-common": str(build_saved_common(recs, base / "saved-common")),
        "saved-hub": str(build_saved_hub(recs, base / "saved-hub")),
    }


def mapping(location: str, classes: list[str], **kw) -> dict[str, int]:
    data = open_data(location, classes, **kw)
    table = data.dataset.select_columns(["image_id", "label"]).to_dict()
    return dict(zip(table["image_id"], table["label"]))


@pytest.mark.parametrize("case", ["folder", "parquet", "parquet-glob", "parquet-no-paths", "webdataset",
                                  "flatval-devkit", "flatval-kaggle", "wnidnames", "saved-common", "saved-hub"])
@pytest.mark.parametrize("classes", [TIMM_CLASSES, MODEL_CLASSES], ids=["timm1000", "model3"])
def test_layout_labels_follow_timm_order(layouts, recs, case, classes):
    expected = {vid: classes.index(wnid) for vid, wnid, _ in recs}
    assert mapping(layouts[case], classes) == expected


def test_every_layout_agrees_with_timm(layouts, offline_hub, recs):
    """The acceptance check: one mapping across every layout, and it is timm's (sea snake 65, kit fox 278)."""
    found = {case: mapping(loc, TIMM_CLASSES) for case, loc in layouts.items()}
    found["hub"] = mapping("hf:ILSVRC/imagenet-1k", TIMM_CLASSES)
    reference = {vid: TIMM_CLASSES.index(wnid) for vid, wnid, _ in recs}
    assert {c: m == reference for c, m in found.items()} == {c: True for c in found}
    assert {get_layout(n).name for n in list_layouts()} >= {"folder", "parquet", "hub", "webdataset", "flatval", "saved",
                                                             "wnidnames"}
    assert reference["ILSVRC2012_val_00000001"] == 65 == TIMM_CLASSES.index("n01751748")
    assert TIMM_CLASSES.index("n02119789") == 278 != DEVKIT_IDS["n02119789"] - 1


def test_hub_reads_validation_files_from_the_cache(offline_hub, recs):
    data = open_data("hf:ILSVRC/imagenet-1k", MODEL_CLASSES)
    assert data.layout == "hub" and len(data) == len(recs)
    assert mapping(f"hf:ILSVRC/imagenet-1k@{HUB_SHA}", MODEL_CLASSES) == mapping("hf:ILSVRC/imagenet-1k", MODEL_CLASSES)


def test_hub_not_cached_offline_names_data(offline_hub):
    with pytest.raises(UserError, match="--data") as exc:
        open_data("hf:timm/imagenet-1k-wds", MODEL_CLASSES)
    assert "\n" not in str(exc.value) and "HF_HUB_OFFLINE" in str(exc.value)


EXPECTED_LAYOUT = {"folder": "folder", "parquet": "parquet", "parquet-glob": "parquet", "parquet-no-paths": "parquet",
                   "webdataset": "webdataset", "flatval-devkit": "flatval", "flatval-kaggle": "flatval",
                   "wnidnames": "wnidnames",
                   "saved-common": "saved", "saved-hub": "saved"}


def test_detection_is_unambiguous(layouts):
    """Exactly one layout claims each location, so the priority order never decides a tie."""
    for case, location in layouts.items():
        claims = [n for n in list_layouts() if get_layout(n).detect(location)]
        assert claims == [EXPECTED_LAYOUT[case]], case
        assert detect_layout(location).name == EXPECTED_LAYOUT[case]


def test_forced_format_matches_detection(layouts):
    assert mapping(layouts["webdataset"], MODEL_CLASSES, data_format="webdataset") == \
        mapping(layouts["webdataset"], MODEL_CLASSES)
    with pytest.raises(UserError, match="no .parquet files"):
        open_data(layouts["folder"], MODEL_CLASSES, data_format="parquet")


def test_wnid_names_need_every_image_named_so(recs, tmp_path):
    """One image without a wnid prefix: the folder is not claimed (a stray file must not be read unlabelled)."""
    named = tmp_path / "named"
    named.mkdir()
    for i, (_, wnid, p) in enumerate(recs):  # train-style names: no val number for another layout to claim
        (named / f"{wnid}_{i}.JPEG").symlink_to(p)
    assert detect_layout(str(named)).name == "wnidnames"
    (named / "preview.JPEG").symlink_to(recs[0][2])
    assert not get_layout("wnidnames").detect(str(named))
    with pytest.raises(UserError, match="9 of its 10 images are named <wnid>_<name>") as exc:  # says which one
        open_data(str(named), MODEL_CLASSES)
    assert "but preview.JPEG is not; move it out" in str(exc.value)
    for i in range(10):  # mostly other names: no layout's near miss, the general error
        (named / f"photo_{i}.JPEG").symlink_to(recs[0][2])
    with pytest.raises(UserError, match="no known ImageNet layout"):
        open_data(str(named), MODEL_CLASSES)
    with pytest.raises(UserError, match="<wnid>_<name>"):
        open_data(str(named), MODEL_CLASSES, data_format="wnidnames")
    for stray in named.glob("p*.JPEG"):
        stray.unlink()
    (named / "n09999999_unknown.JPEG").symlink_to(recs[0][2])
    with pytest.raises(UserError, match="n09999999"):
        open_data(str(named), MODEL_CLASSES)


def test_the_folder_above_a_layout_names_it(recs, tmp_path):
    """``--data imagenet`` where ``imagenet/{train,val}/<wnid>/`` lie: the error names the folder to give."""
    root = tmp_path / "imagenet"
    (root / "train").mkdir(parents=True)
    shutil.copytree(recs[0][2].parents[1], root / "val")
    with pytest.raises(UserError, match=f"but {root / 'val'} is one \\(folder\\); give --data {root / 'val'}$"):
        open_data(str(root), MODEL_CLASSES)
    assert mapping(str(root / "val"), MODEL_CLASSES)  # and that folder reads
    nested = tmp_path / "nested"  # <wnid>/images/*.JPEG: the class folder's images, a level down
    (nested / MODEL_CLASSES[0] / "images").mkdir(parents=True)
    (nested / MODEL_CLASSES[0] / "images" / "a.JPEG").symlink_to(recs[0][2])
    assert mapping(str(nested), MODEL_CLASSES) == {"a": 0}
    photos = tmp_path / "photos"  # folders not named as classes, images a level down: no set to suggest
    (photos / "holiday" / "day1").mkdir(parents=True)
    (photos / "holiday" / "day1" / "a.JPEG").symlink_to(recs[0][2])
    with pytest.raises(UserError, match="no known ImageNet layout found"):
        open_data(str(photos), MODEL_CLASSES)
    kaggle = tmp_path / "CLS-LOC"  # Kaggle's train/<wnid>/, val/<wnid>/ (sorted) and a flat test/
    shutil.copytree(recs[0][2].parents[1], kaggle / "val")
    (kaggle / "train" / MODEL_CLASSES[0]).mkdir(parents=True)
    (kaggle / "test").mkdir()
    (kaggle / "test" / "ILSVRC2012_test_00000001.JPEG").symlink_to(recs[0][2])
    with pytest.raises(UserError, match=f"not classes of the model, but {kaggle / 'val'} is a data set \\(folder\\); "
                                        f"give --data {kaggle / 'val'}$"):
        open_data(str(kaggle), MODEL_CLASSES)


def _copy_of_the_set(recs, root: Path) -> Path:
    return Path(shutil.copytree(recs[0][2].parents[1], root))


def test_images_below_their_class_folder_are_read(recs, tmp_path):
    """``val/<wnid>/<wnid>/*.JPEG`` (a class's tar unpacked into its own folder) was skipped without a word: 9
    of 12 images scored (adv19). timm and torchvision read the images below a class folder; so does this layout."""
    reference = {vid: MODEL_CLASSES.index(wnid) for vid, wnid, _ in recs}
    some = _copy_of_the_set(recs, tmp_path / "some")
    wnid = MODEL_CLASSES[1]
    (some / wnid / wnid).mkdir()
    for image in (some / wnid).glob("*.JPEG"):
        image.rename(some / wnid / wnid / image.name)
    assert mapping(str(some), MODEL_CLASSES) == reference
    every = _copy_of_the_set(recs, tmp_path / "every")  # every class a level down: still class folders
    for folder in [d for d in every.iterdir()]:
        (folder / folder.name).mkdir()
        for image in folder.glob("*.JPEG"):
            image.rename(folder / folder.name / image.name)
    assert detect_layout(str(every)).name == "folder" and mapping(str(every), MODEL_CLASSES) == reference
    mixed = _copy_of_the_set(recs, tmp_path / "mixed")  # below one class, in a folder named as another
    (mixed / MODEL_CLASSES[0] / MODEL_CLASSES[2]).mkdir()
    next((mixed / MODEL_CLASSES[0]).glob("*.JPEG")).rename(mixed / MODEL_CLASSES[0] / MODEL_CLASSES[2] / "x.JPEG")
    with pytest.raises(UserError, match=f"lies in class folder {MODEL_CLASSES[0]} but in a folder named "
                                        f"{MODEL_CLASSES[2]}, another class"):
        open_data(str(mixed), MODEL_CLASSES)


def test_a_second_file_of_one_val_image_is_refused(recs, tmp_path):
    """``ILSVRC2012_val_00000001 (1).JPEG`` beside the original counted the image twice, and switched every id to
    ``<wnid>/<stem>`` so the set's baselines and ReaL labels no longer matched (adv19)."""
    root = _copy_of_the_set(recs, tmp_path / "val")
    vid, wnid, _ = recs[0]
    shutil.copy(root / wnid / f"{vid}.JPEG", root / wnid / f"{vid} (1).JPEG")
    with pytest.raises(UserError, match=f"{vid} is there twice \\({wnid}/{vid} \\(1\\).JPEG and {wnid}/{vid}.JPEG\\); "
                                        "delete the copy"):
        open_data(str(root), MODEL_CLASSES)


def test_flat_val_images_beside_class_folders_are_refused(layouts, recs, tmp_path):
    """A Kaggle val folder half sorted into class folders read only its flat images (45 of 105, adv19); class
    folders with one stray flat image said "no labels" without a word of the class folders."""
    kaggle = Path(shutil.copytree(Path(layouts["flatval-kaggle"]).parents[3], tmp_path / "kaggle", symlinks=True))
    val = kaggle / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    vid, wnid, _ = recs[0]
    (val / wnid).mkdir()
    (val / f"{vid}.JPEG").rename(val / wnid / f"{vid}.JPEG")
    with pytest.raises(UserError, match=f"{len(recs) - 1} val images lie directly in it and 1 class folder\\(s\\) "
                                        f"hold more \\({wnid}/\\); sort every image into its class folder"):
        open_data(str(val), MODEL_CLASSES)
    (val / wnid / f"{vid}.JPEG").rename(val / f"{vid}.JPEG")  # sorted back: a NAS's recycle bin is no class folder
    (val / wnid).rmdir()
    (val / "#recycle").mkdir()
    shutil.copy(recs[0][2], val / "#recycle" / "ILSVRC2012_val_00009998.JPEG")
    assert len(open_data(str(val), MODEL_CLASSES)) == len(recs)
    stray = _copy_of_the_set(recs, tmp_path / "stray")
    shutil.copy(stray / wnid / f"{vid}.JPEG", stray / "ILSVRC2012_val_00009999.JPEG")
    with pytest.raises(UserError, match="1 val images lie directly in it and 3 class folder"):
        open_data(str(stray), MODEL_CLASSES)


def test_archive_leftovers_are_not_classes(recs, tmp_path):
    """A Mac zip's ``__MACOSX/`` folder failed as "class '__MACOSX' is not one of the model's classes" (adv19)."""
    root = _copy_of_the_set(recs, tmp_path / "val")
    (root / "__MACOSX" / MODEL_CLASSES[0]).mkdir(parents=True)
    (root / "__MACOSX" / MODEL_CLASSES[0] / "._ILSVRC2012_val_00000001.JPEG").write_bytes(b"\0\5\x16\7")
    assert mapping(str(root), MODEL_CLASSES) == {vid: MODEL_CLASSES.index(w) for vid, w, _ in recs}


def test_the_hubs_val_archive_names_are_labelled_by_their_wnid(recs, tmp_path):
    """The hub's val archive names files ``ILSVRC2012_val_00000001_n01751748.JPEG``: the label is in the name
    (such a folder failed with "no labels", adv19); the id stays the val number."""
    root = tmp_path / "val_images"
    root.mkdir()
    for vid, wnid, p in recs:
        (root / hub_path(vid, wnid)).symlink_to(p)
    assert detect_layout(str(root)).name == "wnidnames"
    assert mapping(str(root), TIMM_CLASSES) == {vid: TIMM_CLASSES.index(w) for vid, w, _ in recs}


def test_split_files_named_val_are_the_validation_split(recs, tmp_path):
    """Only ``validation*`` names were told apart: a folder of ``val-*`` and ``train-*`` shards was read whole,
    train rows scored as val (adv19). ``validation00000`` (no separator) stays validation, a one-split set named
    ``train-*`` (as many are on the hub) is read, and a folder of train and test files, no validation, is refused
    (adv21)."""
    expected = {vid: MODEL_CLASSES.index(w) for vid, w, _ in recs}
    folder = tmp_path / "pq"
    folder.mkdir()
    hub_rows(recs).to_parquet(str(folder / "val-00000-of-00001.parquet"))
    hub_rows(recs[:2]).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    assert mapping(str(folder), MODEL_CLASSES) == expected
    (folder / "val-00000-of-00001.parquet").rename(folder / "test-00000-of-00001.parquet")
    with pytest.raises(UserError, match="are of the test and train splits, no validation; give the files of the split "
                                        "to evaluate \\(a file or a glob"):
        open_data(str(folder), MODEL_CLASSES)
    assert len(open_data(str(folder / "train-00000-of-00001.parquet"), MODEL_CLASSES)) == 2  # named: read as given
    (folder / "test-00000-of-00001.parquet").unlink()
    assert len(open_data(str(folder), MODEL_CLASSES)) == 2  # one split, named train: the set
    plain = tmp_path / "plain"
    plain.mkdir()
    hub_rows(recs).to_parquet(str(plain / "validation00000.parquet"))
    hub_rows(recs[:2]).to_parquet(str(plain / "train00000.parquet"))
    assert mapping(str(plain), MODEL_CLASSES) == expected
    odd = tmp_path / "odd"  # split words are whole words: "invalidation" is none, "testing" is the test split
    odd.mkdir()
    hub_rows(recs[:2]).to_parquet(str(odd / "invalidation.parquet"))
    hub_rows(recs[2:]).to_parquet(str(odd / "other.parquet"))
    assert len(open_data(str(odd), MODEL_CLASSES)) == len(recs)
    (odd / "invalidation.parquet").rename(odd / "training-0.parquet")
    (odd / "other.parquet").rename(odd / "testing-0.parquet")
    with pytest.raises(UserError, match="are of the test and train splits, no validation"):
        open_data(str(odd), MODEL_CLASSES)


def test_nas_thumbnail_folders_are_not_images_of_the_set(recs, tmp_path):
    """Synology keeps thumbnails in @eaDir folders inside every folder; read as images below a class folder they
    repeated ids or were scored (adv21)."""
    root = _copy_of_the_set(recs, tmp_path / "val")
    for vid, wnid, p in recs:
        (root / wnid / "@eaDir" / f"{vid}.JPEG").mkdir(parents=True, exist_ok=True)
        shutil.copy(p, root / wnid / "@eaDir" / f"{vid}.JPEG" / "SYNOPHOTO_THUMB_M.jpg")
    (root / "@eaDir").mkdir()
    (root / "#recycle" / MODEL_CLASSES[0]).mkdir(parents=True)
    shutil.copy(recs[0][2], root / "#recycle" / MODEL_CLASSES[0] / "old.JPEG")
    assert mapping(str(root), MODEL_CLASSES) == {vid: MODEL_CLASSES.index(w) for vid, w, _ in recs}


def test_a_hub_cache_entry_names_its_repo(hub_cache):
    entry = hub_cache / "datasets--ILSVRC--imagenet-1k"
    with pytest.raises(UserError, match=f"is the HF cache's copy of ILSVRC/imagenet-1k; give --data hf:ILSVRC/imagenet-1k "
                                        f"\\(with HF_HUB_CACHE={hub_cache} if"):
        open_data(str(entry), MODEL_CLASSES)


def test_missing_class_folder_does_not_shift_labels(recs, tmp_path):
    """imagefolder numbers the folders present; the label must still be the wnid's index."""
    root = tmp_path / "val"
    shutil.copytree(recs[0][2].parents[1], root)
    shutil.rmtree(root / MODEL_CLASSES[0])
    expected = {vid: TIMM_CLASSES.index(w) for vid, w, _ in recs if w != MODEL_CLASSES[0]}
    assert mapping(str(root), TIMM_CLASSES) == expected


def test_image_bytes_survive_every_layout(layouts, recs):
    """The undecoded image of a row is the original file's bytes, whatever the layout."""
    original = {vid: p.read_bytes() for vid, _, p in recs}
    for case, location in layouts.items():
        data = open_data(location, MODEL_CLASSES, limit=2)
        for row in data.dataset:
            image = row["image"]
            payload = image["bytes"] if image["bytes"] is not None else Path(image["path"]).read_bytes()
            assert payload == original[row["image_id"]], case


def test_limit_and_per_class_are_deterministic(layouts, recs):
    ids = sorted(vid for vid, _, _ in recs)
    for case in ("folder", "parquet", "webdataset"):
        first = open_data(layouts[case], MODEL_CLASSES, limit=4)
        again = open_data(layouts[case], MODEL_CLASSES, limit=4)
        assert first.dataset["image_id"][:] == again.dataset["image_id"][:] == ids[:4]
        assert first.fingerprint() == again.fingerprint()
        per = open_data(layouts[case], MODEL_CLASSES, per_class=2)
        by_class: dict[str, list[str]] = {}
        for vid, wnid, _ in recs:
            by_class.setdefault(wnid, []).append(vid)
        assert per.dataset["image_id"][:] == sorted(v for vids in by_class.values() for v in sorted(vids)[:2])
        assert per.fingerprint() == open_data(layouts[case], MODEL_CLASSES, per_class=2).fingerprint()
    fingerprints = {open_data(layouts[c], MODEL_CLASSES, per_class=1, limit=2).fingerprint() for c in layouts}
    assert len(fingerprints) == 1


def test_shared_sample_labels_match_index(shared_sample, tmp_path):
    """The 1000 real sample images as class folders and as parquet give INDEX.csv's labels (no decoding)."""
    with (shared_sample / "INDEX.csv").open() as f:
        index = list(csv.DictReader(f))
    folders = tmp_path / "val"
    for row in index:
        (folders / row["wnid"]).mkdir(parents=True, exist_ok=True)
        (folders / row["wnid"] / row["file"]).symlink_to(shared_sample / row["file"])
    expected = {Path(r["file"]).stem: int(r["label"]) for r in index}
    assert mapping(str(folders), TIMM_CLASSES) == expected
    assert detect_layout(str(shared_sample)).name == "wnidnames"  # n01440764_tench.JPEG: read as it is
    assert mapping(str(shared_sample), TIMM_CLASSES) == expected
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    rows = [(Path(r["file"]).stem, r["wnid"], shared_sample / r["file"]) for r in index]
    # the sample's file names hold the wnid, as the hub's paths do
    hub_rows(rows, lambda stem, wnid: f"{stem}.JPEG").to_parquet(str(parquet / "validation-00000-of-00001.parquet"))
    assert mapping(str(parquet), TIMM_CLASSES) == expected
    no_paths = tmp_path / "parquet-nopath"
    no_paths.mkdir()
    hub_rows(rows, lambda stem, wnid: None).to_parquet(str(no_paths / "validation-00000-of-00001.parquet"))
    assert sorted(mapping(str(no_paths), TIMM_CLASSES).values()) == sorted(expected.values())


def test_real_labels_are_keyed_by_val_number():
    real = load_real_labels()
    assert len(real) == 50_000
    assert real["ILSVRC2012_val_00000001"] == [] and real["ILSVRC2012_val_00000002"] == [970, 795]


def test_real_accuracy_matches_timms_evaluator():
    """Same numbers as timm's RealLabelsImagenet on 2000 val images with partly right, partly random logits."""
    import torch
    from timm.data import RealLabelsImagenet

    real = load_real_labels()
    n = 2000
    ids = [f"ILSVRC2012_val_{i + 1:08d}" for i in range(n)]
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(n, 1000, generator=generator)
    for i, vid in enumerate(ids[::3]):
        if real[vid]:
            logits[3 * i, real[vid][-1]] += 3.0 + i % 3  # sometimes top-1, sometimes only top-5
    timm_eval = RealLabelsImagenet([f"{i}.JPEG" for i in
                                    (f"ILSVRC2012_val_{j + 1:08d}" for j in range(50_000))], topk=(1, 5))
    timm_eval.add_result(logits)
    ours = real_accuracy(real, ids, logits.topk(5, dim=1).indices.numpy())
    assert ours["n_real"] == sum(bool(real[v]) for v in ids) < n
    assert ours["real_top1"] == pytest.approx(timm_eval.get_accuracy(1), abs=1e-3)
    assert ours["real_top5"] == pytest.approx(timm_eval.get_accuracy(5), abs=1e-3)
    assert 0 < ours["real_top1"] < ours["real_top5"] < 100


def test_real_accuracy_maps_a_subset_models_classes():
    """A 3-class model's ids go to ImageNet indices through its wnids; empty ReaL lists are left out."""
    real = {"ILSVRC2012_val_00000001": [65], "ILSVRC2012_val_00000002": [278, 909], "ILSVRC2012_val_00000003": []}
    ids = list(real)
    topk = np.array([[0, 1], [0, 2], [1, 2]])  # model classes sorted(WNIDS) = sea snake 65, kit fox 278, wok 909
    result = real_accuracy(real, ids, topk, class_names=MODEL_CLASSES)
    assert result == {"real_top1": 50.0, "real_top5": 100.0, "n_real": 2}
    assert real_accuracy(real, ids, topk)["real_top1"] == 0.0  # read as ImageNet indices 0..2 they are all wrong


def test_real_accuracy_is_unrounded_from_the_counts():
    """As top1/top5: a percentage of counts, never rounded where it is stored (only views round)."""
    real = {f"ILSVRC2012_val_{i:08d}": [65] for i in range(1, 4)}
    topk = np.array([[0, 1], [1, 0], [1, 2]])  # 1 of 3 right at top-1, 2 of 3 in the top 2
    result = real_accuracy(real, list(real), topk, class_names=MODEL_CLASSES)
    assert result == {"real_top1": 100.0 * 1 / 3, "real_top5": 100.0 * 2 / 3, "n_real": 3}


def test_state_follows_the_files_of_every_layout(layouts, offline_hub, recs):
    """``state()`` is stable, then changes when the files a layout reads are touched (images, parquet, tar shards,
    arrow files, the hub snapshot); the fingerprint, the set's identity, does not."""
    cases = {**layouts, "hub": "hf:ILSVRC/imagenet-1k"}
    sources = {case: open_data(location, MODEL_CLASSES) for case, location in cases.items()}
    before = {case: data.state() for case, data in sources.items()}
    assert before == {case: open_data(location, MODEL_CLASSES).state() for case, location in cases.items()}
    base = Path(layouts["parquet"]).parent
    for path in [p for _, _, p in recs] + [p for root in (base, offline_hub) for p in root.rglob("*") if p.is_file()]:
        found = path.stat()
        os.utime(path, ns=(found.st_atime_ns, found.st_mtime_ns + 10**10))
    assert {case: data.state() != before[case] for case, data in sources.items()} == {case: True for case in cases}
    assert {data.fingerprint() for data in sources.values()} == {open_data(layouts["folder"], MODEL_CLASSES).fingerprint()}


def test_number_folders_named_as_the_model_s_classes_are_class_folders(tmp_path):
    """Folders 0..2 of a fine-tune whose label names are "2", "0", "1" were read as ImageNet-V2's class indices and
    refused naming n01440764, a class the user never wrote (adv26); they are the model's classes, by name."""
    root = make_class_folder(tmp_path / "digits", wnids=["0", "1", "2"], per_class=1)
    source = open_data(str(root), ["2", "0", "1"])
    assert source.layout == "folder"
    assert {i: source.class_names[label] for i, label in zip(source.dataset["image_id"], source.dataset["label"])} \
        == {p.stem: p.parent.name for p in root.glob("*/*.JPEG")}
    assert open_data(str(root), TIMM_CLASSES).layout == "imagenetv2"  # an ImageNet model: ImageNet-V2's indices
    with pytest.raises(UserError, match="folder 0 = n01440764.*give --data-format folder"):
        open_data(str(root), ["cat", "dog", "bird"])
