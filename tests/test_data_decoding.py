"""Images are decoded as timm decodes them, and bad files are counted, never fatal (unless --strict)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from timm.data import ImageDataset

from hiera_bench.data import open_data
from hiera_bench.data.loader import MultiSizeImages, collate, decode
from hiera_bench.preprocess import EvalPreprocess, MultiSizeTransform
from hiera_bench.testing import WNIDS, make_class_folder, make_image, run_cli_batch

CLASSES = sorted(WNIDS)
ORIENTATION = 0x0112


def jpeg_bytes(image: Image.Image, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, **kw)
    return buffer.getvalue()


def exif_rotated_jpeg(size=(48, 24)) -> bytes:
    """A landscape JPEG whose EXIF says 'rotate 90 degrees' (orientation 6): viewers show it portrait."""
    image = make_image(np.random.default_rng(1), size, 0)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    return jpeg_bytes(image, exif=exif)


def palette_png() -> bytes:
    buffer = io.BytesIO()
    make_image(np.random.default_rng(2), (40, 30), 1).convert("P", palette=Image.Palette.ADAPTIVE).save(buffer, "PNG")
    return buffer.getvalue()


def odd_files() -> dict[str, bytes]:
    """Files users really have in ImageNet-like sets: each converts to RGB (name -> content, all named .JPEG)."""
    rng = np.random.default_rng(3)
    return {
        "cmyk": jpeg_bytes(make_image(rng, (50, 40), 2).convert("CMYK")),
        "gray": jpeg_bytes(make_image(rng, (40, 50), 1).convert("L")),
        "one_pixel": jpeg_bytes(Image.new("RGB", (1, 1), (10, 200, 30))),
        "palette_png": palette_png(),
        "exif_rotated": exif_rotated_jpeg(),
    }


def broken_files() -> dict[str, bytes]:
    """Files no decoder can read."""
    whole = jpeg_bytes(make_image(np.random.default_rng(4), (64, 64), 0))
    return {"zero_bytes": b"", "truncated": whole[: len(whole) // 2], "text": b"this is not an image\n"}


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """Class folders with 2 good images per class plus every odd and broken file; returns (root, {kind: val id})."""
    root = make_class_folder(tmp_path_factory.mktemp("messy") / "val", per_class=2)
    ids = {}
    for n, (kind, payload) in enumerate({**odd_files(), **broken_files()}.items(), start=101):
        ids[kind] = f"ILSVRC2012_val_{n:08d}"
        (root / CLASSES[n % 3] / f"{ids[kind]}.JPEG").write_bytes(payload)
    return root, ids


def test_odd_files_decode_to_timms_pixels(messy_folder):
    """Every convertible file gives exactly the RGB pixels timm's own ImageDataset loads."""
    root, ids = messy_folder
    timm_set = ImageDataset(str(root))
    by_id = {Path(timm_set.filename(i)).stem: i for i in range(len(timm_set))}
    for kind in odd_files():
        path = next(root.glob(f"*/{ids[kind]}.JPEG"))
        ours = decode({"bytes": None, "path": str(path)})
        theirs = timm_set[by_id[ids[kind]]][0]
        assert ours.mode == "RGB" and theirs.mode == "RGB", kind
        assert np.array_equal(np.asarray(ours), np.asarray(theirs)), kind
        assert np.array_equal(np.asarray(decode({"bytes": path.read_bytes(), "path": None})), np.asarray(theirs))


def test_exif_rotation_is_ignored_like_timm(tmp_path):
    """datasets' Image feature applies EXIF rotation, timm does not; we must match timm."""
    payload = exif_rotated_jpeg((48, 24))
    assert decode({"bytes": payload, "path": None}).size == (48, 24)
    rotated = datasets.Image().decode_example({"bytes": payload, "path": None})
    assert rotated.size == (24, 48), "datasets stopped rotating: this test no longer guards anything"
    (tmp_path / CLASSES[0]).mkdir()
    (tmp_path / CLASSES[0] / "ILSVRC2012_val_00000001.JPEG").write_bytes(payload)
    row = open_data(str(tmp_path), CLASSES).dataset[0]
    assert np.array_equal(np.asarray(decode(row["image"])), np.asarray(ImageDataset(str(tmp_path))[0][0]))


def test_broken_files_are_reported_not_raised(messy_folder):
    root, ids = messy_folder
    data = open_data(str(root), CLASSES)
    transform = MultiSizeTransform(EvalPreprocess.from_config({"input_size": (3, 32, 32), "crop_pct": 0.875}), [32, 48])
    batch = collate([item for item in MultiSizeImages(data.dataset, transform)])
    failed = {i for i, ok in zip(batch.image_ids, batch.ok.tolist()) if not ok}
    assert failed == {ids[k] for k in broken_files()}
    assert all(e and "\n" not in e for e, ok in zip(batch.errors, batch.ok.tolist()) if not ok)
    n_ok = len(data) - len(failed)
    assert {v: tuple(t.shape) for v, t in batch.crops.items()} == {(32, 0.875): (n_ok, 3, 32, 32),
                                                                    (48, 0.875): (n_ok, 3, 48, 48)}


def test_threaded_batches_equal_one_by_one_items_in_order(messy_folder):
    """The CPU path decodes a batch on threads: same items, same order, same bad-file rows, same bits."""
    root, _ = messy_folder
    data = open_data(str(root), CLASSES)
    transform = MultiSizeTransform(EvalPreprocess.from_config({"input_size": (3, 32, 32), "crop_pct": 0.875}), [32, 48])
    serial = [item for item in MultiSizeImages(data.dataset, transform, start=1)]
    threaded = MultiSizeImages(data.dataset, transform, start=1, threads=3)
    indices = list(range(len(threaded)))[::-1]  # a batch in any index order comes back in that order
    got = threaded.__getitems__(indices)
    assert [g[:3] for g in got] == [serial[i][:3] for i in indices]
    assert [g[4] for g in got] == [serial[i][4] for i in indices]
    for g, i in zip(got, indices):
        assert (g[3] is None) == (serial[i][3] is None)
        if g[3] is not None:
            assert all(torch.equal(g[3][view], serial[i][3][view]) for view in transform.views)
    loader = torch.utils.data.DataLoader(threaded, batch_size=4, collate_fn=collate)  # the fetcher uses __getitems__
    assert [pid for b in loader for pid in b.image_ids] == [s[1] for s in serial]


def test_zero_byte_image_inside_parquet_fails_as_an_image(tmp_path):
    """Empty inline bytes are a broken image, not a cue to open the (relative, absent) path."""
    error = None
    try:
        decode({"bytes": b"", "path": "ILSVRC2012_val_00000001_n01751748.JPEG"})
    except Exception as exc:  # noqa: BLE001  (which exception PIL picks is its business)
        error = exc
    assert error is not None and not isinstance(error, FileNotFoundError)


def test_a_bad_image_held_as_bytes_is_recorded_the_same_in_every_run():
    """PIL names an image given as bytes by its BytesIO object's repr, with its address: run.json's record of one bad
    image in a parquet or hub set (and under --decode device, which always decodes bytes) differed between runs and
    ranks (adv32)."""
    from hiera_bench.data.loader import image_error

    said = set()
    for _ in range(3):
        try:
            decode({"bytes": b"not an image", "path": None})
        except Exception as exc:  # noqa: BLE001
            said.add(image_error(exc))
    assert said == {"UnidentifiedImageError: cannot identify image file <_io.BytesIO>"}


def test_sweep_counts_bad_images_and_strict_stops(full_ckpt, messy_folder, tmp_path):
    """End to end: the run completes with the broken files counted and listed (3 of 14 is more than the
    default --max-failed of 1 %: written, then exit 1); --strict fails in one line."""
    root, ids = messy_folder
    sweep = ["sweep", "--checkpoint", full_ckpt, "--data", root, "--res", "64", "--schemes", "interp",
             "--device", "cpu", "--quiet"]
    normal, strict = run_cli_batch([[*sweep, "--out", tmp_path / "run"], [*sweep, "--out", tmp_path / "strict", "--strict"]])
    assert normal["code"] == 1 and "3 of 14 images (21.43 %) could not be decoded" in normal["stderr"], normal["stderr"]
    table = pd.read_csv(tmp_path / "run" / "results.csv")
    n_total = len(list(root.glob("*/*.JPEG")))
    assert set(table["n_failed"]) == {len(broken_files())}
    assert set(table["n_images"]) == {n_total - len(broken_files())}
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert {f["image_id"] for f in run["failed_images"]} == {ids[k] for k in broken_files()}
    assert strict["code"] == 2
    lines = strict["stderr"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --strict: image ILSVRC2012_val_"), strict["stderr"]


@pytest.mark.parametrize("layout", ["folder", "flatval"])
def test_looping_and_dangling_links_are_failed_images(cli, full_ckpt, tmp_path, layout):
    """A link named like an image that loops (x.JPEG -> x.JPEG) or dangles is a failed image, never dropped."""
    src = make_class_folder(tmp_path / "src", per_class=1)
    links = {"ILSVRC2012_val_00000201": CLASSES[0], "ILSVRC2012_val_00000202": CLASSES[1]}
    if layout == "folder":
        root, folder_of = src, lambda wnid: src / wnid
    else:
        root = tmp_path / "flat"
        root.mkdir()
        for p in src.glob("*/*.JPEG"):
            (root / p.name).symlink_to(p)
        truth = {p.stem: p.parent.name for p in src.glob("*/*.JPEG")} | links
        (tmp_path / "LOC_val_solution.csv").write_text(
            "ImageId,PredictionString\n" + "".join(f"{v},{w} 1 2 3 4\n" for v, w in truth.items()))
        folder_of = lambda wnid: root  # noqa: E731
    looping, dangling = (folder_of(w) / f"{v}.JPEG" for v, w in links.items())
    looping.symlink_to(looping.name)
    dangling.symlink_to(tmp_path / "gone.JPEG")
    assert open_data(str(root), CLASSES).dataset["image_id"][-2:] == list(links)
    result = cli("sweep", "--checkpoint", full_ckpt, "--data", root, "--res", "64", "--schemes", "interp",
                 "--device", "cpu", "--quiet", "--max-failed", "100", "--out", tmp_path / "run")
    assert result.code == 0, result.err
    table = pd.read_csv(tmp_path / "run" / "results.csv")
    assert (table["n_failed"].tolist(), table["n_images"].tolist()) == ([2], [3])
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert {f["image_id"] for f in run["failed_images"]} == set(links)
