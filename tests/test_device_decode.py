"""``--decode device``: torchvision's decode_jpeg and timm's own Resize/CenterCrop on the decoded tensor.

Not bit-identical to timm's PIL path (another decoder, torch's antialiased bicubic), so its cells are
cells of their own; these tests pin how close it is and that the geometry is timm's exactly (a wrong
size or crop offset would move most pixels by tens of levels). On the CPU, decode_jpeg is libjpeg-turbo;
on a GPU it is nvJPEG (benchmarks/gpu_suite.py measures that one).
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from hiera_bench.data.devicedecode import DeviceCrops, collate_encoded, read_bytes
from hiera_bench.data.loader import decode
from hiera_bench.preprocess import EvalPreprocess, MultiSizeTransform
from hiera_bench.testing import make_class_folder, make_image

from test_data_decoding import broken_files, jpeg_bytes, odd_files

PRE = EvalPreprocess(crop_pct=0.875, interpolation="bicubic", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _device_and_pil(paths, sizes):
    transform = MultiSizeTransform(PRE, sizes)
    batch = collate_encoded([(i, str(p), 0, read_bytes({"bytes": None, "path": str(p)}), "") for i, p in enumerate(paths)])
    crops = DeviceCrops(transform, torch.device("cpu"))
    got = {size: crop for (size, _), crop in crops(batch).items()}
    ref = {s: torch.stack([transform(decode({"bytes": None, "path": str(p)}))[s, PRE.crop_pct] for p in paths])
           for s in sizes}
    return got, ref, crops, batch


def _levels(got: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    diff = (got.int() - ref.int()).abs()
    return float(diff.float().mean()), float((diff <= 1).float().mean())


def test_device_decode_has_timms_geometry_on_generated_images(tmp_path):
    root = make_class_folder(tmp_path / "val", per_class=3, sizes=((96, 72), (64, 80), (120, 90), (70, 70), (61, 97)))
    paths = sorted(root.glob("*/*.JPEG"))
    got, ref, crops, batch = _device_and_pil(paths, [32, 64, 96])
    for size in (32, 64, 96):
        assert got[size].shape == ref[size].shape == (len(paths), 3, size, size)
        assert got[size].dtype == torch.uint8
        mean, within_one = _levels(got[size], ref[size])
        assert mean < 1.0 and within_one > 0.97, (size, mean, within_one)
    assert crops.fallbacks == 0 and bool(batch.ok.all())


def test_device_decode_is_within_a_level_of_pil_on_real_jpegs(shared_sample):
    with (shared_sample / "INDEX.csv").open() as fh:
        paths = [shared_sample / row["file"] for row in csv.DictReader(fh)][:64]
    got, ref, crops, _ = _device_and_pil(paths, [224, 288])
    for size in (224, 288):
        mean, within_one = _levels(got[size], ref[size])
        # measured on the CPU decoder: mean 0.18 levels, 99.9 % of values within one level
        assert mean < 0.5 and within_one > 0.99, (size, mean, within_one)


def test_device_decode_falls_back_to_pil_and_counts_failures():
    files = {**odd_files(), **broken_files()}
    names = list(files)
    items = [(i, name, 0, files[name], "") for i, name in enumerate(names)]
    items.append((len(items), "unreadable", 0, None, "FileNotFoundError: gone"))
    batch = collate_encoded(items)
    crops = DeviceCrops(MultiSizeTransform(PRE, [32]), torch.device("cpu"))
    out = crops(batch)
    ok = dict(zip(names + ["unreadable"], batch.ok.tolist()))
    assert all(ok[n] for n in odd_files()), ok  # grey, CMYK, 1x1, a PNG named .JPEG, EXIF: all decode
    assert not any(ok[n] for n in broken_files()) and not ok["unreadable"]
    assert out[32, PRE.crop_pct].shape == (len(odd_files()), 3, 32, 32)
    assert crops.fallbacks >= 1  # at least the PNG went through PIL
    errors = dict(zip(names + ["unreadable"], batch.errors))
    assert all(errors[n] for n in broken_files()) and errors["unreadable"].startswith("FileNotFoundError")


def test_sweep_with_device_decode_makes_cells_of_its_own(full_ckpt, class_folder, tmp_path):
    from hiera_bench.sweep import SweepConfig, run_sweep

    common = dict(checkpoint=str(full_ckpt), data=str(class_folder), res="64,96", out=str(tmp_path / "run"),
                  batch_size=4, workers=0)
    pil_run = run_sweep(SweepConfig(**common))
    pil = pil_run.table
    dev = run_sweep(SweepConfig(**common, decode="device"))
    assert set(pil["cell_key"]).isdisjoint(dev.table["cell_key"])
    assert dev.run["preprocess"]["decode"] == "device:cpu"
    assert "decode" not in pil_run.run["preprocess"]  # PIL cells keep the keys they had before the option
    assert dev.run["decode"] == {"decoder": "device:cpu", "pil_fallbacks": 0}
    merged = dev.table.merge(pil, on=["scheme", "img_size"], suffixes=("_dev", "_pil"))
    assert len(merged) == 4 and (merged["n_images_dev"] == merged["n_images_pil"]).all()
    # a pixel or so of difference moves a random tiny model's top-1 by an image at most here
    assert (merged["top1_dev"] - merged["top1_pil"]).abs().max() <= 100 / 12 + 1e-9


def test_decode_option_is_checked():
    from hiera_bench.sweep import SweepConfig, validate_config
    from hiera_bench.errors import UserError

    with pytest.raises(UserError, match="--decode 'gpu'"):
        validate_config(SweepConfig(decode="gpu", device="cpu"))


def test_encoded_bytes_round_trip():
    data = jpeg_bytes(make_image(np.random.default_rng(0), (20, 10), 0))
    batch = collate_encoded([(0, "a", 1, data, "")])
    assert bytes(batch.encoded[0].numpy()) == data
