"""``hiera-bench inspect``: structure, window scores and the Figure-1 style plot."""

import json

import pytest
import torch

from hiera_bench.errors import UserError
from hiera_bench.inspect import (
    default_size, inspect_model, parse_channels, top_variance_channels, valid_sizes, window_match, write_inspection,
)
from hiera_bench.posembed import grid_to_tokens, window_periodicity
from hiera_bench.testing import TINY_ARGS, WNIDS, save_checkpoint_folder, tiny_hiera


@pytest.fixture(scope="module")
def window_only_ckpt(tmp_path_factory):
    """An abs-win Hiera whose global embedding is zero: all of its embedding repeats per window."""
    args = dict(TINY_ARGS, global_pos_size=(4, 4))
    net = tiny_hiera("hiera_small_abswin_256", img_size=64, num_classes=3, model_args=args)
    with torch.no_grad():
        net.pos_embed.zero_()
    return save_checkpoint_folder(net, tmp_path_factory.mktemp("winonly") / "ckpt", "hiera_small_abswin_256", args,
                                  label_names=sorted(WNIDS))


def image_panels(fig):
    return [ax for ax in fig.axes if ax.images]


def test_structure_of_an_abswin_checkpoint(abswin_ckpt):
    report, fig = inspect_model(checkpoint=abswin_ckpt, size=96)
    assert report.pos_embed_kind == "abswin"
    assert (report.native_size, report.patch_stride, report.input_stride) == (64, 4, 32)
    assert (report.token_grid, report.mask_grid, report.window_size, report.global_size) == (
        (16, 16), (2, 2), (8, 8), (4, 4))
    assert report.valid_sizes == [32, 64, 96, 128]
    assert report.energy is None and report.explained is None
    assert list(report.views) == ["native", "interp", "abswin"]
    assert report.views["abswin"].token_grid == (24, 24) and report.views["abswin"].mask_grid == (3, 3)
    panels = image_panels(fig)
    assert len(panels) == 3 * 3
    assert [ax.get_title().split("\n")[0] for ax in panels[:3]] == ["native @64 px", "interp @96 px", "abswin @96 px"]
    # window borders: 1 + 1 lines inside the native 2x2 mask-unit grid, 2 + 2 in the 3x3 grid at 96 px
    assert [len(ax.lines) for ax in panels[:3]] == [2, 4, 4]
    assert panels[1].images[0].get_array().shape == (24, 24)


def test_abswin_keeps_the_window_pattern_and_interp_breaks_it(window_only_ckpt):
    report, _ = inspect_model(checkpoint=window_only_ckpt, size=96)
    p = report.periodicity
    assert p["native"] == pytest.approx(1.0, abs=1e-9)
    assert p["abswin"] == pytest.approx(p["native"], abs=1e-9)
    assert p["interp"] < 0.5
    assert report.views["abswin"].mean_window_match == pytest.approx(1.0, abs=1e-6)
    assert report.views["interp"].mean_window_match < 0.5


def test_abswin_periodicity_stays_near_native_with_a_global_part(abswin_ckpt):
    report, _ = inspect_model(checkpoint=abswin_ckpt, size=128)
    p = report.periodicity
    assert abs(p["abswin"] - p["native"]) < 0.1
    assert p["interp"] < 0.5 * p["native"]
    assert report.views["abswin"].mean_window_match > 0.5 > report.views["interp"].mean_window_match


def test_at_the_native_size_every_scheme_is_the_checkpoint(abswin_ckpt):
    report, _ = inspect_model(checkpoint=abswin_ckpt, size=64)
    native = report.views["native"].tokens
    for name in ("interp", "abswin"):
        assert torch.allclose(report.views[name].tokens, native, atol=1e-6)
        assert report.periodicity[name] == pytest.approx(report.periodicity["native"], abs=1e-6)


def test_full_grid_checkpoint_reports_the_least_squares_split(full_ckpt):
    report, fig = inspect_model(checkpoint=full_ckpt, size=128, channels=[0, 5])
    assert report.pos_embed_kind == "full" and report.global_size == (2, 2)
    shares = report.energy
    assert set(shares) == {"global", "window", "residual", "cross"} and sum(shares.values()) == pytest.approx(1.0)
    assert all(0.0 <= shares[k] <= 1.0 for k in ("global", "window", "residual"))
    assert report.explained == pytest.approx(1.0 - shares["residual"], abs=1e-6)
    assert report.channels == [0, 5] and len(image_panels(fig)) == 2 * 3
    wider, _ = inspect_model(checkpoint=full_ckpt, size=128, channels=[0], global_size=4)
    assert wider.global_size == (4, 4) and wider.explained >= report.explained - 1e-9


def test_window_scores_on_handmade_embeddings():
    window = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    tiled = grid_to_tokens(window.tile(3, 3))
    assert window_periodicity(tiled, (6, 6), (2, 2)) == pytest.approx(1.0)
    reference = window[0] - window[0].mean(dim=(-2, -1), keepdim=True)
    match = window_match(tiled, (6, 6), reference, (2, 2))
    assert len(match) == 3 and all(v == pytest.approx(1.0) for row in match for v in row)
    flipped = grid_to_tokens(window.flip(-1).tile(3, 3))
    assert all(v < 0.99 for row in window_match(flipped, (6, 6), reference, (2, 2)) for v in row)


def test_helpers():
    assert valid_sizes(224, 32) == [128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448]
    assert default_size(224, 32) == 352 and default_size(64, 32) == 96
    tokens = torch.zeros(1, 9, 4)
    tokens[0, :, 2] = torch.arange(9.0)
    tokens[0, :, 0] = torch.arange(9.0) * 0.1
    assert top_variance_channels(tokens, 2) == [0, 2]
    assert parse_channels("9, 0,5") == [9, 0, 5]
    for bad in ("", "a,b", ","):
        with pytest.raises(UserError):
            parse_channels(bad)


def test_bad_requests_raise_user_errors(abswin_ckpt):
    with pytest.raises(UserError, match="not a multiple of 32"):
        inspect_model(checkpoint=abswin_ckpt, size=100)
    with pytest.raises(UserError, match="channels 0..15"):
        inspect_model(checkpoint=abswin_ckpt, size=96, channels=[16])


def test_written_files(abswin_ckpt, tmp_path):
    report, fig = inspect_model(checkpoint=abswin_ckpt, size=96)
    paths = write_inspection(report, fig, tmp_path / "out")
    assert sorted(p.name for p in paths) == ["inspect-96.json", "posembed-96.png", "posembed-96.svg"]
    assert (tmp_path / "out" / "posembed-96.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (tmp_path / "out" / "posembed-96.svg").read_text()
    data = json.loads((tmp_path / "out" / "inspect-96.json").read_text())
    assert data["periodicity"] == pytest.approx(report.periodicity)
    assert data["views"]["abswin"]["mask_grid"] == [3, 3] and len(data["views"]["abswin"]["window_match"]) == 3
    assert data["token_grid"] == [16, 16] and data["pos_embed_kind"] == "abswin"


def test_cli_prints_the_structure_and_writes_the_figure(cli, full_ckpt, tmp_path):
    result = cli("inspect", "--checkpoint", full_ckpt, "--res", "96", "--channels", "1,2", "-o", tmp_path)
    assert result.code == 0, result.err
    for text in ("native size      64 px", "token grid       16x16", "mask-unit grid   2x2",
                 "window size      8x8 tokens (32 px)", "global size      2x2 (least-squares fit)",
                 "valid sizes      32, 64, 96, 128", "energy split     global", "channels drawn   1, 2"):
        assert text in result.out
    assert "interp  @96" in result.out and "abswin  @96" in result.out
    assert (tmp_path / "posembed-96.png").is_file() and (tmp_path / "inspect-96.json").is_file()


@pytest.mark.parametrize("args, message", [
    (("--res", "100"), "not a multiple of 32"),
    (("--channels", "x"), "--channels 'x'"),
    (("--channels", "99"), "out of range"),
])
def test_cli_errors_are_one_line(cli, abswin_ckpt, tmp_path, args, message):
    result = cli("inspect", "--checkpoint", abswin_ckpt, *args, "-o", tmp_path / "x")
    assert result.code == 2
    assert result.err.startswith("error: ") and message in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_inspect_and_export_say_global_size_does_not_apply_and_refuse_a_file_as_out(cli, abswin_ckpt, tmp_path):
    result = cli("inspect", "-c", abswin_ckpt, "--res", "96", "--global-size", "3", "-o", tmp_path / "insp")
    assert result.code == 0 and "--global-size only applies to full-grid checkpoints" in result.err, result.err
    result = cli("export", "-c", abswin_ckpt, "--res", "96", "-s", "interp", "--global-size", "3", "-o", tmp_path / "x")
    assert result.code == 0 and "--global-size only applies to full-grid checkpoints" in result.err, result.err
    (tmp_path / "afile").write_text("mine")
    result = cli("inspect", "-c", abswin_ckpt, "--res", "96", "-o", tmp_path / "afile")
    assert result.code == 2 and "is a file, not a folder" in result.err and (tmp_path / "afile").read_text() == "mine"
