import pytest
from hypothesis import given, strategies as st

from hiera_bench.errors import UserError
from hiera_bench.grid import MAX_SIZE, parse_grid


def test_issue_example_range_skips_non_multiples():
    grid = parse_grid("224:320:16", stride=32)
    assert grid.sizes == (224, 256, 288, 320)
    assert [s for s, _ in grid.skipped] == [240, 272, 304]
    assert all("multiple of 32" in reason for _, reason in grid.skipped)


def test_list_and_single():
    assert parse_grid("320, 224,256,224", stride=32).sizes == (224, 256, 320)
    assert parse_grid("256", stride=32).sizes == (256,)


def test_listed_invalid_size_names_nearest_valid():
    with pytest.raises(UserError, match=r"240 px .* use 224 or 256"):
        parse_grid("224,240", stride=32)


@pytest.mark.parametrize("spec", ["abc", "224:", "320:224:16", "224:320:0", "-224", "0", "224:320", "", "1.5",
                                  "224:320:16:8", f"{MAX_SIZE + 32}", "16"])
def test_malformed_specs_raise_user_error(spec):
    with pytest.raises(UserError) as info:
        parse_grid(spec, stride=32)
    assert "\n" not in str(info.value)


@given(start=st.integers(1, 40), span=st.integers(0, 40), step=st.integers(1, 8), stride=st.sampled_from([16, 32, 64]))
def test_range_partitions_into_valid_and_skipped(start, span, step, stride):
    start, stop = start * 8, (start + span) * 8
    expected = list(range(start, stop + 1, step * 8))
    try:
        grid = parse_grid(f"{start}:{stop}:{step * 8}", stride=stride)
    except UserError:
        assert not any(s % stride == 0 and s >= stride for s in expected)
        return
    assert sorted(grid.sizes + tuple(s for s, _ in grid.skipped)) == expected
    assert all(s % stride == 0 and s >= stride for s in grid.sizes)
    assert all(s % stride or s < stride for s, _ in grid.skipped)


@given(sizes=st.lists(st.integers(1, MAX_SIZE // 32), min_size=1, max_size=6))
def test_valid_lists_round_trip(sizes):
    spec = ",".join(str(s * 32) for s in sizes)
    assert parse_grid(spec, stride=32).sizes == tuple(sorted({s * 32 for s in sizes}))


@given(size=st.integers(1, MAX_SIZE).filter(lambda s: s % 32))
def test_invalid_single_size_always_errors_with_valid_suggestion(size):
    with pytest.raises(UserError) as info:
        parse_grid(str(size), stride=32)
    suggested = [int(t) for t in str(info.value).split("use ")[-1].split(" or ")]
    assert all(s % 32 == 0 and s >= 32 for s in suggested)
    assert min(abs(s - size) for s in suggested) < 32


@pytest.mark.parametrize("native,expected", [(224, (192, 224, 256, 288, 320)), (256, (192, 224, 256, 288, 320, 352, 384)),
                                             (64, (64, 96)), (32, (32,))])
def test_default_grid_spans_three_quarters_to_one_and_a_half_native(native, expected):
    from hiera_bench.grid import default_grid

    grid = parse_grid(default_grid(native, 32), stride=32)
    assert grid.sizes == expected and native in grid.sizes and not grid.skipped
