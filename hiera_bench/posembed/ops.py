"""Pure tensor functions on Hiera position embeddings.

Layouts: a *token* embedding is ``(1, H*W, C)`` (what the model adds to the patch tokens, row
major); a *grid* is ``(1, C, H, W)``. A Hiera token grid of ``H x W`` is cut into mask units
(windows) of ``wh x ww`` tokens, giving a mask-unit grid of ``H/wh x W/ww``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Size2 = tuple[int, int]


def tokens_to_grid(tokens: torch.Tensor, size: Size2) -> torch.Tensor:
    """``(1, H*W, C)`` -> ``(1, C, H, W)``."""
    return tokens.reshape(1, size[0], size[1], -1).permute(0, 3, 1, 2)


def grid_to_tokens(grid: torch.Tensor) -> torch.Tensor:
    """``(1, C, H, W)`` -> ``(1, H*W, C)``, as timm's Hiera flattens it."""
    return grid.flatten(2).transpose(1, 2)


def tile_window(window: torch.Tensor, mask_grid: Size2) -> torch.Tensor:
    """Repeat the window embedding ``(1, C, wh, ww)`` once per mask unit."""
    return window.tile(mask_grid)


def interp_global(global_embed: torch.Tensor, size: Size2) -> torch.Tensor:
    """Resize the global embedding ``(1, C, gh, gw)`` to ``size``: bicubic with antialias, as timm's Hiera."""
    return F.interpolate(global_embed, size=size, mode="bicubic", antialias=True)


def abswin_grid(global_embed: torch.Tensor, window: torch.Tensor, mask_grid: Size2) -> torch.Tensor:
    """The absolute-win embedding on a mask-unit grid, computed as timm's ``Hiera._pos_embed``."""
    tiled = tile_window(window, mask_grid)
    return interp_global(global_embed, tiled.shape[-2:]) + tiled


def interp_operator(global_size: Size2, size: Size2, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The matrix ``(H*W, gh*gw)`` of :func:`interp_global` (it is linear in the embedding)."""
    n = global_size[0] * global_size[1]
    basis = torch.eye(n, dtype=dtype).reshape(n, 1, *global_size)
    return interp_global(basis, size).reshape(n, -1).T


def tile_operator(window_size: Size2, mask_grid: Size2, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The matrix ``(H*W, wh*ww)`` of :func:`tile_window`."""
    n = window_size[0] * window_size[1]
    basis = torch.eye(n, dtype=dtype).reshape(n, 1, *window_size)
    return tile_window(basis, mask_grid).reshape(n, -1).T


def fit_global_window(
    tokens: torch.Tensor, token_grid: Size2, window_size: Size2, global_size: Size2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Least-squares split of a full-grid embedding into global + tiled window + residual.

    Solves ``min || interp(G -> token grid) + tile(W) - E ||`` over all channels at once in
    float64. A per-channel constant can sit in either part; it is moved into ``G`` so that ``W``
    holds only what repeats with the window period (zero mean). Returns ``(G, W, residual)`` as
    float64 ``(1, C, gh, gw)``, ``(1, C, wh, ww)`` and ``(1, H*W, C)``; ``G``, ``W`` and the
    residual add up to ``E`` exactly (to float64 rounding).
    """
    mask_grid = (token_grid[0] // window_size[0], token_grid[1] // window_size[1])
    target = tokens.reshape(-1, tokens.shape[-1]).double()
    a = interp_operator(global_size, token_grid)
    b = tile_operator(window_size, mask_grid)
    design = torch.cat([a, b], dim=1)
    solution = torch.linalg.lstsq(design, target, driver="gelsd").solution
    n_global = a.shape[1]
    g, w = solution[:n_global], solution[n_global:]
    shift = w.mean(dim=0, keepdim=True)
    g, w = g + shift, w - shift
    residual = target - (a @ g + b @ w)
    channels = tokens.shape[-1]
    g_grid = g.T.reshape(1, channels, *global_size)
    w_grid = w.T.reshape(1, channels, *window_size)
    return g_grid, w_grid, residual.reshape(1, -1, channels)


def energy(x: torch.Tensor) -> float:
    """Sum of squares, in float64."""
    return float(x.double().pow(2).sum())


def window_periodicity(tokens: torch.Tensor, token_grid: Size2, window_size: Size2) -> float:
    """Share of the embedding's energy (about its channel means) that repeats with the window period.

    1.0 when every mask unit carries the same embedding, about ``1 / #windows`` for noise.
    Only whole windows from the top-left corner are scored.
    """
    grid = tokens_to_grid(tokens.double(), token_grid)
    mh, mw = token_grid[0] // window_size[0], token_grid[1] // window_size[1]
    grid = grid[..., : mh * window_size[0], : mw * window_size[1]]
    grid = grid - grid.mean(dim=(-2, -1), keepdim=True)
    c = grid.shape[1]
    windows = grid.reshape(c, mh, window_size[0], mw, window_size[1])
    mean_window = windows.mean(dim=(1, 3), keepdim=True)
    total = energy(grid)
    return energy(mean_window.expand_as(windows)) / total if total > 0 else 0.0
