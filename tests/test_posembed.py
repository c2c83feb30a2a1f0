"""Position-embedding schemes against timm's own code paths."""

import pytest
import timm
import torch
from timm.layers import resample_abs_pos_embed

from hiera_bench.models import build_at_size, load_model
from hiera_bench.posembed import get_scheme, spec_from_model
from hiera_bench.posembed.ops import (abswin_grid, fit_global_window, grid_to_tokens, interp_global, tile_window,
                                      window_periodicity)
from hiera_bench.testing import TINY_ARGS, save_checkpoint_folder, tiny_hiera


def grids(size: int):
    return (size // 4, size // 4), (size // 32, size // 32)


def embed(loaded, scheme, size):
    spec = spec_from_model(loaded.model, loaded.native_size)
    return get_scheme(scheme)(spec, *grids(size))


@pytest.fixture(scope="module")
def abswin_256(tmp_path_factory):
    """Tiny widths, but the real hiera_small_abswin_256 code path and its 16x16 global grid, native 256."""
    args = dict(TINY_ARGS, global_pos_size=(16, 16))
    net = tiny_hiera("hiera_small_abswin_256", img_size=256, num_classes=5, model_args=args)
    folder = save_checkpoint_folder(net, tmp_path_factory.mktemp("aw") / "ckpt", "hiera_small_abswin_256", args,
                                    label_names=[f"c{i}" for i in range(5)])
    return load_model(checkpoint=folder)


@pytest.mark.parametrize("fixture", ["full_ckpt", "abswin_ckpt"])
@pytest.mark.parametrize("scheme", ["interp", "abswin"])
def test_identity_at_native_size(request, fixture, scheme):
    loaded = load_model(checkpoint=request.getfixturevalue(fixture))
    n = loaded.native_size
    x = torch.randn(3, 3, n, n)
    with torch.no_grad():
        reference = loaded.model(x)
        ours = build_at_size(loaded, n, embed(loaded, scheme, n))(x)
    assert (ours - reference).abs().max().item() <= 1e-5


def test_abswin_equals_timm_native_resize_at_every_valid_size(abswin_256):
    weights = abswin_256.model.state_dict()
    for size in range(160, 385, 32):
        timm_net = timm.create_model("hiera_small_abswin_256", img_size=size,
                                     **abswin_256.model_kwargs).eval()
        timm_net.load_state_dict(weights)
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            diff = (build_at_size(abswin_256, size, embed(abswin_256, "abswin", size))(x) - timm_net(x)).abs().max()
        assert diff.item() <= 1e-4, size


def test_interp_equals_manual_resample_and_timm_forward(full_ckpt):
    loaded = load_model(checkpoint=full_ckpt)
    for size in (32, 96, 128):
        manual = timm.create_model("hiera_tiny_224", img_size=size, **loaded.model_kwargs).eval()
        state = dict(loaded.model.state_dict())
        state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], new_size=[size // 4] * 2,
                                                    old_size=[loaded.native_size // 4] * 2, num_prefix_tokens=0)
        manual.load_state_dict(state)
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            diff = (build_at_size(loaded, size, embed(loaded, "interp", size))(x) - manual(x)).abs().max()
        assert diff.item() <= 1e-5


def test_interp_of_abswin_checkpoint_starts_from_timms_full_grid(abswin_256):
    """For abs-win checkpoints interp resamples the full grid exactly as timm's _pos_embed builds it."""
    net = abswin_256.model
    tokens = net.tokens_spatial_shape
    with torch.no_grad():
        timm_full = net._pos_embed(torch.zeros(1, tokens[0] * tokens[1], net.pos_embed.shape[1]))
    spec = spec_from_model(net, 256)
    assert torch.equal(spec.full, timm_full)
    expected = resample_abs_pos_embed(timm_full, new_size=[80, 80], old_size=[64, 64], num_prefix_tokens=0)
    assert torch.equal(get_scheme("interp")(spec, (80, 80), (10, 10)), expected)


def test_schemes_differ_away_from_native(full_ckpt):
    loaded = load_model(checkpoint=full_ckpt)
    assert not torch.allclose(embed(loaded, "interp", 96), embed(loaded, "abswin", 96))


def test_fit_recovers_a_structured_embedding():
    torch.manual_seed(0)
    g = torch.randn(1, 24, 7, 7, dtype=torch.float64)
    w = torch.randn(1, 24, 8, 8, dtype=torch.float64)
    w = w - w.mean(dim=(-2, -1), keepdim=True)  # the fit's convention: constants live in the global part
    full = grid_to_tokens(abswin_grid(g, w, (7, 7))).float()
    g_fit, w_fit, residual = fit_global_window(full, (56, 56), (8, 8), (7, 7))
    explained = 1 - residual.pow(2).sum() / full.double().pow(2).sum()
    assert explained > 0.999
    assert torch.allclose(w_fit, w, atol=1e-4)
    assert torch.allclose(interp_global(g_fit, (56, 56)), interp_global(g, (56, 56)), atol=1e-4)


def test_fit_reconstructs_any_embedding_exactly_at_native():
    torch.manual_seed(1)
    net = tiny_hiera("hiera_tiny_224", img_size=224, num_classes=2)
    spec = spec_from_model(net, 224)
    assert 0.0 <= spec.explained < 0.2  # random noise has little window structure
    rebuilt = get_scheme("abswin")(spec, (56, 56), (7, 7))
    assert torch.equal(rebuilt, net.pos_embed.detach())
    shares = spec.energy_shares()
    assert shares["residual"] == pytest.approx(1 - spec.explained)


def test_energy_shares_say_what_the_global_and_window_parts_share():
    """An abs-win embedding's global and window shares left out their inner product: the demo's 73.6 % + 18.3 %
    + a residual of 0 did not add up to the 100 % explained (adv23)."""
    from hiera_bench.testing import TINY_ARGS

    net = tiny_hiera("hiera_small_abswin_256", img_size=64, num_classes=2,
                     model_args=dict(TINY_ARGS, global_pos_size=(2, 2)))
    with torch.no_grad():
        net.pos_embed_win.add_(0.3)  # a window part that shares a direction with the global part
        net.pos_embed.add_(0.2)
    spec = spec_from_model(net, 64)
    shares = spec.energy_shares()
    g, w = interp_global(spec.global_embed, spec.token_grid), tile_window(spec.window, spec.mask_grid)
    assert shares["residual"] == 0.0 and sum(shares.values()) == pytest.approx(1.0)
    assert shares["cross"] == pytest.approx(2 * float((g * w).sum()) / float(((g + w) ** 2).sum()), rel=1e-4)
    assert shares["cross"] > 0.05


def test_tile_and_periodicity():
    w = torch.randn(1, 4, 8, 8)
    tiled = tile_window(w, (3, 2))
    assert tiled.shape == (1, 4, 24, 16)
    assert torch.equal(tiled[..., 8:16, 8:16], w)
    assert window_periodicity(grid_to_tokens(tiled), (24, 16), (8, 8)) == pytest.approx(1.0)
    noise = grid_to_tokens(torch.randn(1, 4, 64, 64))
    assert window_periodicity(noise, (64, 64), (8, 8)) < 0.1


def test_window_pattern_survives_abswin_but_not_interp():
    """The paper's point, on a full-grid embedding that is purely a tiled window pattern."""
    from hiera_bench.posembed.spec import spec_from_model

    net = tiny_hiera("hiera_tiny_224", img_size=224, num_classes=2)
    torch.manual_seed(3)
    window = torch.randn(1, 16, 8, 8)
    window = window - window.mean(dim=(-2, -1), keepdim=True)
    with torch.no_grad():
        net.pos_embed.copy_(grid_to_tokens(tile_window(window, (7, 7))))
    spec = spec_from_model(net, 224)
    assert spec.explained > 0.999999
    for size in (160, 288, 352):
        tokens, mask_grid = grids(size)
        ours = get_scheme("abswin")(spec, tokens, mask_grid)
        assert torch.allclose(ours, grid_to_tokens(tile_window(window, mask_grid)), atol=1e-5)
        assert window_periodicity(ours, tokens, (8, 8)) == pytest.approx(1.0, abs=1e-6)
        stretched = get_scheme("interp")(spec, tokens, mask_grid)
        assert window_periodicity(stretched, tokens, (8, 8)) < 0.05


def test_only_a_fitting_scheme_on_a_full_grid_checkpoint_reads_the_global_grid():
    """The one answer plan (cell identity), the run store (old rows) and report/check (old tables) ask."""
    from hiera_bench.posembed import reads_global_grid

    assert reads_global_grid("abswin", "full")
    assert not reads_global_grid("abswin", "abswin")  # the checkpoint's own split: no fit, no grid choice
    assert not reads_global_grid("interp", "full") and not reads_global_grid("interp-hf", "full")
    assert not reads_global_grid("no-such-scheme", "full") and not reads_global_grid("abswin", None)
