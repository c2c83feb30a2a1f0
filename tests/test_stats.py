"""Exact and paired CIs and exact McNemar against scipy, published values and brute-force references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings, strategies as st
from scipy.stats import binomtest, norm

from hiera_bench import stats


def bonett_price(b: int, c: int, n: int) -> tuple[float, float]:
    """Bonett and Price (2012), as written in R's contingencytables ``Wald_CI_BonettPrice_paired_2x2``, in points."""
    p12, p21 = (b + 1) / (n + 2), (c + 1) / (n + 2)
    se = np.sqrt((p12 + p21 - (p12 - p21) ** 2) / (n + 2))
    z = norm.ppf(0.975)
    return 100 * max(-1.0, p12 - p21 - z * se), 100 * min(1.0, p12 - p21 + z * se)


def test_paired_interval_equals_the_published_example():
    # statpsych::ci.prop.ps(.05, 12, 4, 26, 6): 26 and 4 discordant pairs of 48 -> LL 0.2548067, UL 0.6251933
    assert stats.paired_difference_ci(26, 4, 48) == pytest.approx((25.48067, 62.51933), abs=1e-5)
    assert stats.paired_difference_ci(4, 26, 48) == pytest.approx((-62.51933, -25.48067), abs=1e-5)


@settings(max_examples=200, deadline=None)
@given(b=st.integers(0, 300), c=st.integers(0, 300), same=st.integers(1, 2000))
def test_paired_interval_equals_the_reference_formula(b, c, same):
    assert stats.paired_difference_ci(b, c, b + c + same) == pytest.approx(bonett_price(b, c, b + c + same), abs=1e-9)


def test_paired_interval_keeps_a_width_and_respects_the_exact_test():
    # no discordant image of 600 is not "exactly +0.00 [+0.00, +0.00]" (what a bootstrap says)
    low, high = stats.paired_difference_ci(0, 0, 600)
    assert low < 0 < high and high == pytest.approx(-low) and high > 0.3
    # 4 images against 0: exact McNemar p = 0.125; a bootstrap over 120 images called it [+0.83, +6.67]
    low, high = stats.paired_difference_ci(4, 0, 120)
    assert stats.mcnemar_exact(4, 0) == pytest.approx(0.125) and low < 0 < high
    # one-sided discordance on many images keeps the width of the unconditional difference
    low, high = stats.paired_difference_ci(100, 0, 1000)
    assert low < 9.0 and high > 11.0
    assert np.isnan(stats.paired_difference_ci(0, 0, 0)).all()


def test_paired_interval_agrees_with_the_exact_test_away_from_the_boundary():
    """Exact McNemar is conservative, so the two may differ only near p = 0.05 (the module says so)."""
    for n in (50, 120, 1000, 50_000):
        for b in range(0, 60):
            for c in range(0, min(60, n - b)):
                low, high = stats.paired_difference_ci(b, c, n)
                p = stats.mcnemar_exact(b, c)
                if p < 0.05:
                    assert low > 0 or high < 0, (n, b, c, p)
                elif p > 0.08:
                    assert low <= 0 <= high, (n, b, c, p)


def test_paired_interval_covers_the_true_difference():
    """Coverage by simulation: correlated outcomes of two cells, as two sizes of one model are."""
    rng = np.random.default_rng(4)
    n, trials, covered = 400, 2000, 0
    p_b, p_c = 0.05, 0.02  # P(only the first right), P(only the second right)
    for _ in range(trials):
        u = rng.random(n)
        b, c = int((u < p_b).sum()), int(((u >= p_b) & (u < p_b + p_c)).sum())
        low, high = stats.paired_difference_ci(b, c, n)
        covered += low <= 100 * (p_b - p_c) <= high
    assert 0.93 <= covered / trials <= 0.975


@settings(max_examples=300, deadline=None)
@given(b=st.integers(0, 400), c=st.integers(0, 400))
def test_exact_mcnemar_equals_scipy_binomtest(b, c):
    expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
    assert stats.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_exact_statistics_are_scipy_stats_bit_for_bit():
    # the sweep calls scipy.special's compiled functions behind scipy.stats (whose import costs a second of start-up):
    # the same bits as scipy.stats' beta.ppf and binom.cdf, every count of small sets and a spread of large ones
    from scipy.stats import beta, binom

    rng = np.random.default_rng(0)
    pairs = [(k, n) for n in range(1, 41) for k in range(n + 1)]
    pairs += [(int(k), n) for n in (1000, 49_999, 50_000, 1_281_167) for k in [0, 1, n - 1, n, *rng.integers(0, n, 40)]]
    for k, n in pairs:
        for level in (0.95, 0.9, 0.99):
            alpha = (1.0 - level) / 2.0
            low = 0.0 if k <= 0 else float(beta.ppf(alpha, k, n - k + 1))
            high = 1.0 if k >= n else float(beta.ppf(1.0 - alpha, k + 1, n - k))
            assert stats.binomial_ci(k, n, level) == (100.0 * low, 100.0 * high)
        b = n - k
        assert stats.mcnemar_exact(k, b) == float(min(1.0, 2.0 * binom.cdf(min(k, b), n, 0.5)))


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
        b, c = int((series & ~native).sum()), int((~series & native).sum())
        expected = (0.0, 0.0) if size == "64" else bonett_price(b, c, len(series))  # the native cell is itself
        assert (r.delta_ci_low, r.delta_ci_high) == pytest.approx(expected, abs=1e-9)
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
        assert (r.scheme_delta_ci_low, r.scheme_delta_ci_high) == pytest.approx(bonett_price(b, c, len(series)), abs=1e-9)
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


def test_annotate_reads_records_in_any_order_and_counts_each_images_first_record_once():
    """Records interleaved across cells, dictionary-encoded (as ``report`` reads them) and repeated with other
    outcomes after the first (as drop_duplicates keeps it): the same statistics as one stretch of plain records a
    cell."""
    table, preds, expected = _crafted()
    alone = stats.annotate(table, preds)
    shuffled = preds.take(np.random.default_rng(3).permutation(preds.num_rows))
    encoded = shuffled.set_column(shuffled.schema.get_field_index("image_id"), "image_id",
                                  shuffled["image_id"].dictionary_encode())
    repeated = pa.concat_tables([encoded, encoded.slice(0, 500).set_column(
        encoded.schema.get_field_index("correct1"), "correct1", pc.invert(encoded.slice(0, 500)["correct1"]))])
    for records in (shuffled, encoded, repeated):
        pd.testing.assert_frame_equal(stats.annotate(table, records), alone)
    found = stats.outcomes(table, repeated)
    assert found.keys() == expected.keys()
    for key, correct in expected.items():
        pd.testing.assert_series_equal(found[key].sort_index(), correct.sort_index(), check_names=False)


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
