"""Every number in results.csv is recomputed from predictions.parquet, on random small data sets with
failed, duplicate-named and odd images; every CI contains its estimate.

Each example is a real sweep (a few seconds), so CI runs a bounded number of them:
``HIERA_BENCH_PROPERTY_EXAMPLES`` (default 4) raises it for a longer local run.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from hiera_bench.sweep import SweepConfig, run_sweep
from hiera_bench.testing import WNIDS, make_class_folder

from test_data_decoding import broken_files, odd_files

EXAMPLES = int(os.environ.get("HIERA_BENCH_PROPERTY_EXAMPLES", "4"))


def _folder(root, per_class: int, broken: int, duplicate: bool, odd: bool, seed: int):
    make_class_folder(root, per_class=per_class, seed=seed)
    classes = sorted(WNIDS)
    for i, payload in enumerate(list(broken_files().values())[:broken]):
        (root / classes[i % 3] / f"ILSVRC2012_val_{900 + i:08d}.JPEG").write_bytes(payload)
    if odd:
        for i, payload in enumerate(odd_files().values()):
            (root / classes[(i + 1) % 3] / f"ILSVRC2012_val_{800 + i:08d}.JPEG").write_bytes(payload)
    if duplicate:  # the same file name in two class folders (ImageNet-Sketch's names): ids must stay distinct
        first = sorted((root / classes[0]).iterdir())[0]
        for wnid in (classes[0], classes[2]):  # not a val number: one of those in two folders is refused
            shutil.copyfile(first, root / wnid / "sketch_1.JPEG")


def _discordant(a: pd.Series, b: pd.Series) -> tuple[int, int]:
    a, b = a.align(b, join="inner")
    return int((a & ~b).sum()), int((~a & b).sum())


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(per_class=st.integers(2, 4), broken=st.integers(0, 3), duplicate=st.booleans(), odd=st.booleans(),
       seed=st.integers(0, 1000))
def test_results_are_recomputed_from_the_per_image_records(tmp_path_factory, full_ckpt, per_class, broken,
                                                             duplicate, odd, seed):
    base = tmp_path_factory.mktemp("prop")
    _folder(base / "val", per_class, broken, duplicate, odd, seed)
    run_sweep(SweepConfig(checkpoint=str(full_ckpt), data=str(base / "val"), out=str(base / "run"), res="32,64,96",
                          batch_size=4, workers=0, max_failed=1.0))
    table = pd.read_csv(base / "run" / "results.csv")
    preds = pd.read_parquet(base / "run" / "predictions.parquet")
    ok = table[table["status"] == "ok"]
    assert len(ok) == 6  # 32, 64, 96 x interp, abswin (at the native 64 one forward serves both cells)
    outcome = {}
    for row in ok.itertuples():
        p = preds[preds["cell_key"] == row.cell_key]
        assert p["image_id"].is_unique
        good = p[~p["failed"]]
        outcome[(row.scheme, row.img_size)] = good.set_index("image_id")["correct1"].astype(bool)
        assert (row.n_images, row.n_failed) == (len(good), int(p["failed"].sum()))
        assert (row.n_correct1, row.n_correct5) == (int(good["correct1"].sum()), int(good["correct5"].sum()))
        assert row.top1 == pytest.approx(100.0 * good["correct1"].mean(), abs=1e-9)
        assert row.top5 == pytest.approx(100.0 * good["correct5"].mean(), abs=1e-9)
        assert row.nll == pytest.approx(float(np.mean(good["nll"].astype(np.float64))), rel=1e-9)
        assert row.top1_ci_low <= row.top1 <= row.top1_ci_high
    for row in ok.itertuples():
        mine, native = outcome[(row.scheme, row.img_size)], outcome[(row.scheme, row.native_size)]
        assert row.top1_delta_vs_native == pytest.approx(100.0 * (mine.mean() - native.mean()), abs=1e-9)
        assert (row.delta_b, row.delta_c) == _discordant(mine, native)
        assert row.delta_ci_low <= row.top1_delta_vs_native <= row.delta_ci_high
        if row.scheme != "interp":
            ref = outcome[("interp", row.img_size)]
            assert (row.mcnemar_b, row.mcnemar_c) == _discordant(mine, ref)
            assert row.scheme_delta == pytest.approx(100.0 * (mine.mean() - ref.mean()), abs=1e-9)
            assert row.scheme_delta_ci_low <= row.scheme_delta <= row.scheme_delta_ci_high
