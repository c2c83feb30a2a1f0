"""What a checkpoint's position embedding is made of, in one structure every scheme reads."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UserError
from ..geometry import HieraGeometry
from .ops import Size2, abswin_grid, energy, fit_global_window, grid_to_tokens


@dataclass(frozen=True)
class PosEmbedSpec:
    """A Hiera position embedding at its native size, split into global + window (+ residual).

    ``kind`` is ``"abswin"`` when the checkpoint learned the split (``global_embed`` and
    ``window`` are its own parameters, ``residual`` is None) and ``"full"`` when it learned one
    full-grid embedding that was split here by least squares. ``full`` is the embedding the
    model adds to its tokens at the native size, ``(1, H*W, C)``.
    """

    kind: str
    native_size: int
    token_grid: Size2
    window_size: Size2
    full: torch.Tensor
    global_embed: torch.Tensor
    window: torch.Tensor
    residual: torch.Tensor | None
    explained: float

    @property
    def mask_grid(self) -> Size2:
        return (self.token_grid[0] // self.window_size[0], self.token_grid[1] // self.window_size[1])

    @property
    def global_size(self) -> Size2:
        return tuple(self.global_embed.shape[-2:])  # type: ignore[return-value]

    def energy_shares(self) -> dict[str, float]:
        """Share of the native embedding's energy in the tiled window, the global part and the residual, and in
        ``cross``, what the parts share (twice their inner products, which may be negative): the four add up to 1."""
        from .ops import interp_global, tile_window

        total = energy(self.full)
        window = energy(tile_window(self.window, self.mask_grid))
        glob = energy(interp_global(self.global_embed, self.token_grid))
        resid = energy(self.residual) if self.residual is not None else 0.0
        return {"global": glob / total, "window": window / total, "residual": resid / total,
                "cross": (total - glob - window - resid) / total}


def spec_from_model(model: torch.nn.Module, native_size: int, global_size: Size2 | None = None) -> PosEmbedSpec:
    """Read the position embedding of a timm Hiera built at its native size."""
    if len(model.tokens_spatial_shape) != 2 or getattr(model, "pos_embed", None) is None:
        raise UserError("only 2-D image Hiera models with an absolute position embedding are supported")
    geometry = HieraGeometry.from_model(model)
    native = geometry.at(native_size)
    window_size, token_grid, mask_grid = geometry.window, native.token_grid, native.mask_grid
    with torch.no_grad():
        if getattr(model, "pos_embed_win", None) is not None:
            global_embed = model.pos_embed.detach().float()
            window = model.pos_embed_win.detach().float()
            full = grid_to_tokens(abswin_grid(global_embed, window, mask_grid))
            return PosEmbedSpec("abswin", native_size, token_grid, window_size, full, global_embed, window, None, 1.0)
        full = model.pos_embed.detach().float()
        gsize = tuple(global_size) if global_size else mask_grid
        if gsize[0] > token_grid[0] or gsize[1] > token_grid[1] or min(gsize) < 1:
            raise UserError(
                f"--global-size {gsize[0]}x{gsize[1]} does not fit the {token_grid[0]}x{token_grid[1]} token grid; "
                f"use at most {token_grid[0]}"
            )
        g, w, residual = fit_global_window(full, token_grid, window_size, gsize)
        explained = 1.0 - energy(residual) / max(energy(full), 1e-300)
        return PosEmbedSpec("full", native_size, token_grid, window_size, full, g, w, residual, explained)
