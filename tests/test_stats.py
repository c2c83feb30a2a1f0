"""Bootstrap CIs, paired differences and exact McNemar against scipy and brute-force references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st
from scipy.stats import binomtest

from hiera_bench import stats


def loop_bootstrap(columns: list[np.ndarray], n_resamples: int, seed: int = stats.SEED, level: float = 0.95):
    """The textbook bootstrap: one resample of image indices per iteration, shared by paired columns."""
    rng = np.random.default_rng(seed)
    n = len(columns[0])
    means = np.empty((n_resamples, len(columns)))
    for r in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        for j, col in enumerate(columns):
            means[r, j] = np.mean(col[idx])
    alpha = (1 - level) / 2
    return [tuple(np.quantile(means[:, j], [alpha, 1 - alpha])) for j in range(len(columns))]


@pytest.mark.parametrize("block", [stats._BLOCK, 1000])  # one block, and many blocks of a few resamples
def test_bootstrap_equals_a_loop_over_resamples(monkeypatch, block):
    monkeypatch.setattr(stats, "_BLOCK", block)
    rng = np.random.default_rng(7)
    x = (rng.random(331) < 0.73).astype(float)
    assert stats.bootstrap_ci(x, n_resamples=1000) == pytest.approx(loop_bootstrap([x], 1000)[0], abs=1e-12)


def test_paired_bootstrap_resamples_images_not_cells():
    rng = np.random.default_rng(1)
    a = rng.random(400) < 0.8
    b = a ^ (rng.random(400) < 0.1)  # strongly correlated with a, as two sizes of one model are
    diff = a.astype(float) - b.astype(float)
    low, high = stats.bootstrap_ci(diff, n_resamples=1500)
    ref_a, ref_b, ref_d = loop_bootstrap([a.astype(float), b.astype(float), diff], 1500)
    assert (low, high) == pytest.approx(ref_d, abs=1e-12)
    # pairing matters: the paired interval is much narrower than the unpaired one would be
    unpaired = np.hypot(ref_a[1] - ref_a[0], ref_b[1] - ref_b[0])
    assert high - low < 0.6 * unpaired


def test_bootstrap_interval_covers_the_mean_with_the_normal_width():
    rng = np.random.default_rng(2)
    x = (rng.random(5000) < 0.6).astype(float)
    low, high = stats.bootstrap_ci(x)
    assert low < x.mean() < high
    assert high - low == pytest.approx(2 * 1.96 * np.sqrt(x.mean() * (1 - x.mean()) / x.size), rel=0.08)


def test_bootstrap_is_reproducible_and_depends_on_the_seed():
    x = (np.random.default_rng(3).random(200) < 0.5).astype(float)
    assert stats.bootstrap_ci(x) == stats.bootstrap_ci(x)
    assert stats.bootstrap_ci(x, seed=1) != stats.bootstrap_ci(x)
    assert np.isnan(stats.bootstrap_ci(np.array([]))).all()


@settings(max_examples=300, deadline=None)
@given(b=st.integers(0, 400), c=st.integers(0, 400))
def test_exact_mcnemar_equals_scipy_binomtest(b, c):
    expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
    assert stats.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_discordant_counts():
    a = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    b = np.array([1, 0, 1, 0, 0, 0], dtype=bool)
    assert stats.discordant(a, b) == (2, 1)


# --- annotate on crafted cells ------------------------------------------------------------------

N_IMAGES = 300
FAILED = {"img_0003", "img_0100"}  # decode failures: their records say "correct" to prove they are ignored


def _crafted():
    """Two schemes x three sizes (native 64) over the same images, plus each cell's ok outcomes."""
    rng = np.random.default_rng(11)
    ids = [f"img_{i:04d}" for i in range(N_IMAGES)]
    truth = rng.random(N_IMAGES) < 0.7
    rows, preds, outcomes = [], [], {}
    for scheme, flip in (("interp", 0.15), ("abswin", 0.05)):
        for size in (32, 64, 96):
            if size == 64:
                correct = truth.copy()
            else:
                correct = truth ^ (rng.random(N_IMAGES) < flip)
            key = f"{scheme}-{size}"
            failed = np.array([i in FAILED for i in ids])
            ok = ~failed
            outcomes[key] = pd.Series(correct[ok], index=np.array(ids)[ok])
            rows.append({"model": "m", "checkpoint_sha256": "abc", "data_fingerprint": "fp", "limit": np.nan,
                         "crop_pct": 0.875, "interpolation": "bicubic", "dtype": "float32", "scheme": scheme,
                         "img_size": size, "native_size": 64, "status": "ok", "cell_key": key,
                         "top1": 100 * correct[ok].mean(), "top1_delta_vs_native": np.nan})
            order = rng.permutation(N_IMAGES)  # records need not be in image order
            preds.append(pd.DataFrame({"model": "m", "scheme": scheme, "img_size": size, "cell_key": key,
                                       "image_id": np.array(ids)[order], "correct1": (correct | failed)[order],
                                       "failed": failed[order]}))
    rows.append(dict(rows[0], img_size=40, status="skipped", cell_key=None, top1=np.nan))
    return pd.DataFrame(rows), pa.Table.from_pandas(pd.concat(preds, ignore_index=True)), outcomes


def _sorted(series: pd.Series) -> np.ndarray:
    return 100.0 * series.sort_index().to_numpy(dtype=float)


def test_annotate_matches_brute_force_references():
    table, preds, outcomes = _crafted()
    out = stats.annotate(table, preds)
    assert set(stats.STAT_COLUMNS) <= set(out.columns)
    by = {r.cell_key: r for r in out.itertuples() if isinstance(r.cell_key, str)}
    for key, series in outcomes.items():
        scheme, size = key.split("-")
        r = by[key]
        assert len(series) == N_IMAGES - len(FAILED)
        exact = binomtest(int(series.sum()), len(series)).proportion_ci(0.95, method="exact")
        assert (r.top1_ci_low, r.top1_ci_high) == pytest.approx((100 * exact.low, 100 * exact.high), abs=1e-9)
        assert r.top1_ci_low < r.top1 < r.top1_ci_high

        native = outcomes[f"{scheme}-64"]
        (dlow, dhigh), = loop_bootstrap([_sorted(series.astype(float) - native.astype(float))], stats.N_RESAMPLES)
        assert (r.delta_ci_low, r.delta_ci_high) == pytest.approx((dlow, dhigh), abs=1e-9)
        b, c = int((series & ~native).sum()), int((~series & native).sum())
        assert (r.delta_b, r.delta_c) == (b, c)
        assert r.delta_p == pytest.approx(1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue)
        assert r.top1_delta_vs_native == pytest.approx(r.top1 - by[f"{scheme}-64"].top1, abs=1e-12)  # unrounded

        if scheme == "interp":  # the reference scheme is not tested against itself
            assert r.mcnemar_ref == "" and np.isnan(r.mcnemar_p) and np.isnan(r.scheme_delta)
            continue
        ref = outcomes[f"interp-{size}"]
        b, c = int((series & ~ref).sum()), int((~series & ref).sum())
        assert r.mcnemar_ref == "interp" and (r.mcnemar_b, r.mcnemar_c) == (b, c)
        assert r.mcnemar_p == pytest.approx(1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue)
        assert r.scheme_delta == pytest.approx(100 * (series.mean() - ref.mean()), abs=1e-12)
        (slow, shigh), = loop_bootstrap([_sorted(series.astype(float) - ref.astype(float))], stats.N_RESAMPLES)
        assert (r.scheme_delta_ci_low, r.scheme_delta_ci_high) == pytest.approx((slow, shigh), abs=1e-9)
    # at the native size both schemes are the same model: nothing to test
    assert by["abswin-64"].mcnemar_p == 1.0 and by["abswin-64"].delta_ci_low == 0 == by["abswin-64"].delta_ci_high
    skipped = out[out["status"] == "skipped"].iloc[0]
    assert np.isnan(skipped.top1_ci_low) and np.isnan(skipped.delta_p)


def test_annotate_only_pairs_cells_of_the_same_data_and_checkpoint():
    table, preds, _ = _crafted()
    other = table.assign(data_fingerprint="other", cell_key=table["cell_key"] + "-other", top1=table["top1"] - 1)
    other = other[other["img_size"] != 64]  # this data set has no native cell
    preds_df = preds.to_pandas()
    more = preds_df.assign(cell_key=preds_df["cell_key"] + "-other")
    out = stats.annotate(pd.concat([table, other], ignore_index=True),
                         pa.Table.from_pandas(pd.concat([preds_df, more], ignore_index=True)))
    mine = out[(out["data_fingerprint"] == "other") & (out["status"] == "ok")]
    assert mine["delta_p"].isna().all() and mine["top1_delta_vs_native"].isna().all()
    assert mine["top1_ci_low"].notna().all() and mine["mcnemar_p"].notna().any()
    first = out[out["data_fingerprint"] == "fp"].reset_index(drop=True)
    alone = stats.annotate(table, preds)
    pd.testing.assert_frame_equal(first, alone[alone["data_fingerprint"] == "fp"].reset_index(drop=True))


def test_annotate_without_cell_keys_in_predictions_uses_model_scheme_size():
    table, preds, _ = _crafted()
    with_keys = stats.annotate(table, preds)
    without = stats.annotate(table, preds.drop_columns(["cell_key"]))
    pd.testing.assert_frame_equal(with_keys, without)


def test_annotate_without_predictions_leaves_statistics_empty():
    table, _, _ = _crafted()
    out = stats.annotate(table, None)
    assert out["top1_ci_low"].isna().all() and out["top1_delta_vs_native"].notna().sum() == 6


def test_significance_marks():
    assert [stats.significance_mark(p) for p in (0.2, 0.04, 0.005, 1e-5, float("nan"))] == ["", "*", "**", "***", ""]


@pytest.mark.parametrize("k", [0, 64])
def test_a_cell_at_0_or_100_percent_gets_an_interval_of_nonzero_width(k):
    low, high = stats.binomial_ci(k, 64)
    assert high - low > 4.0 and low <= 100.0 * k / 64 <= high and 0.0 <= low and high <= 100.0
