"""timm's published top-1 ships with the package; a native cell in the published setting is held against it."""

from __future__ import annotations

import pandas as pd
import pytest
import timm

from hiera_bench.pivot import headline
from hiera_bench.published import REFERENCE_SETS, TOLERANCE, published, published_table, reference_checks
from hiera_bench.sweep.run import problems

SMALL = "hiera_small_224.mae_in1k_ft_in1k"


def test_the_shipped_table_is_timms_setting_for_every_checkpoint():
    table = published_table()
    assert set(table["dataset"]) == set(REFERENCE_SETS)
    assert len(table) == 32 and not table.duplicated(["model", "dataset"]).any()
    known = set(timm.list_pretrained("hiera_*"))
    for row in table.itertuples():
        assert row.model in known, row.model
        cfg = timm.models.get_pretrained_cfg(row.model)
        assert (row.img_size, row.crop_pct, row.interpolation) == (cfg.input_size[-1], cfg.crop_pct, cfg.interpolation)
        assert 0 < row.top1 < row.top5 < 100
    assert published(SMALL)["top1"] == 83.886
    assert published("hiera_small_abswin_256.sbb2_e200_in12k_ft_in1k")["top1"] == 84.900
    assert published(SMALL, "imagenetv2") is None and published("hiera_small_224.mae") is None


def _native_rows(top1: float, **changes) -> pd.DataFrame:
    """Both schemes' native cells (one evaluation) of a full-val sweep of hiera_small_224, as its table has them."""
    half = 0.32
    base = dict(label="hiera_small", model=SMALL, checkpoint=f"hf-hub:timm/{SMALL}", checkpoint_sha256="ab" * 32,
                img_size=224, native_size=224,
                crop_pct=0.9, interpolation="bicubic", decode="pil", dtype="bfloat16", n_images=50_000, n_failed=0,
                limit=None, per_class=None, class_subset=None, status="ok", top1=top1, top1_ci_low=top1 - half,
                top1_ci_high=top1 + half, real_top1=None, global_size=None)
    rows = [dict(base, scheme="interp", shared_with="abswin"), dict(base, scheme="abswin", shared_with="interp")]
    return pd.DataFrame([{**r, **changes} for r in rows])


def test_a_shifted_native_cell_is_a_problem_and_said_in_the_headline():
    shifted = _native_rows(83.886 - 0.5)
    checks = reference_checks(shifted)
    assert len(checks) == 1 and not checks[0].ok and checks[0].difference == pytest.approx(-0.5)
    found = problems(shifted, 0, 50_000, 0.01)
    assert len(found) == 1 and "-0.500 points from timm's published 83.886" in found[0] and "--crop-pct" in found[0]
    line = headline(shifted)
    assert "vs timm's published 83.886 (imagenet @224 crop 0.9): -0.500" in line and "more than 0.3 points" in line
    assert "[-0.82, -0.18]" in line  # the measured CI, shifted by the published figure


def test_a_close_native_cell_passes_and_only_the_published_setting_is_compared():
    close = _native_rows(83.886 + TOLERANCE - 0.01)
    assert reference_checks(close)[0].ok and problems(close, 0, 50_000, 0.01) == []
    assert "vs timm's published 83.886" in headline(close) and "more than" not in headline(close)
    for changes in ({"crop_pct": 0.875}, {"interpolation": "bilinear"}, {"limit": 1000}, {"n_images": 49_000},
                    {"model": "my-finetune"}, {"img_size": 256}, {"class_subset": "imagenet-r"},
                    {"checkpoint": "/home/me/finetuned.pth"}, {"n_images": 16, "n_failed": 49_984},
                    {"n_images": 49_900, "n_failed": 100}):
        assert reference_checks(_native_rows(80.0, **changes)) == [], changes


def test_a_named_copy_of_val_is_not_held_to_vals_published_figure():
    """ImageNet-C (each corruption and severity), face-blurred or stylised val: 50 000 images with val's names and
    labels, far below val's figure; by its count alone such a sweep was 'not ok' (exit 1) with no way out."""
    corrupted = _native_rows(59.1, data_name="imagenet-c-gaussian-noise-3")
    assert reference_checks(corrupted) == [] and problems(corrupted, 0, 50_000, 0.01) == []
    assert "published" not in headline(corrupted)
    unnamed = problems(_native_rows(59.1), 0, 50_000, 0.01)
    assert len(unnamed) == 1 and "--data NAME=PATH" in unnamed[0] and "ImageNet-C" in unnamed[0]
    # several unnamed sets are named after their paths: such a name says nothing, and the set is compared by its count
    derived = problems(_native_rows(70.0, data_name="validation", data="/datasets/ILSVRC2012/validation"), 0, 50_000,
                       0.01)
    assert len(derived) == 1 and "-13.886 points" in derived[0]
    assert reference_checks(_native_rows(59.1, data_name="c3", data="/data/imagenet-c/noise/3")) == []
    for name in ("val", "ImageNet_1k", "imagenet"):
        assert [c.dataset for c in reference_checks(_native_rows(83.9, data_name=name))] == ["imagenet"], name
    assert [c.dataset for c in reference_checks(_native_rows(37.774, n_images=50_889, data_name="sketch"))] == ["sketch"]
    assert reference_checks(_native_rows(37.774, n_images=50_889, data_name="val")) == []


def test_several_unnamed_data_files_are_named_without_their_suffix(tmp_path):
    """--data val.parquet --data v2.parquet: the run folders were named val.parquet/ and refused as an --out named
    like a file (adv30)."""
    from hiera_bench.sweep.config import named_data

    for name in ("val.parquet", "v2.parquet"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "folder.v1").mkdir()
    pairs = named_data([str(tmp_path / "val.parquet"), str(tmp_path / "v2.parquet"), str(tmp_path / "folder.v1")])
    assert [name for name, _ in pairs] == ["val", "v2", "folder.v1"]


def test_real_labels_sketch_and_imagenet_a_are_compared_too():
    real = reference_checks(_native_rows(83.9, real_top1=88.210 - 0.4))
    assert [(c.dataset, c.ok) for c in real] == [("imagenet", True), ("imagenet-real", False)]
    sketch = reference_checks(_native_rows(37.774, n_images=50_880, n_failed=9))
    assert [(c.dataset, c.ok) for c in sketch] == [("sketch", True)]
    a = reference_checks(_native_rows(36.413, n_images=7_500, class_subset="imagenet-a"))
    assert [(c.dataset, c.published) for c in a] == [("imagenet-a", 36.413)]


def test_models_lists_the_published_figure(cli):
    result = cli("models")
    assert result.code == 0 and "83.886 @224 crop 0.9" in result.out and "7479d451" in result.out
