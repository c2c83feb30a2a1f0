"""Position-embedding schemes: rewrite a Hiera embedding from its native size to a token grid.

Each scheme is a pure function ``(spec, token_grid, mask_grid) -> (1, H*W, C) float32`` and
registers itself with :func:`register_scheme`.

``interp``
    Plain interpolation as timm's ``resample_abs_pos_embed`` does it: the full token-grid
    embedding at the native size, resampled bicubic with antialias. It stretches the window
    pattern so that windows no longer see the embedding they were trained with (arXiv
    2311.05613). transformers' ``interpolate_pos_encoding`` resamples without antialias (a
    slightly different embedding); timm 1.0.31 does not resample Hiera checkpoints at all.

``interp-hf``
    Plain interpolation as transformers' ``HieraModel(interpolate_pos_encoding=True)`` does it:
    ``F.interpolate(bicubic, align_corners=False)`` *without* antialias, in float32. Torch's
    antialiased bicubic is a different kernel (a = -0.5, PIL's) from the plain one (a = -0.75), so
    the two plain interpolations differ even when upsampling; this scheme shows which one a
    number came from. For abs-win checkpoints (which transformers does not implement) it starts
    from the same materialised full grid as ``interp``.

``abswin``
    Window-aware: the window embedding is tiled once per mask unit of the new grid and the
    global embedding is resized (bicubic, antialias) to the token grid, exactly as timm's
    ``Hiera._pos_embed``. Abs-win checkpoints use their learned pair. Full-grid checkpoints
    (the MAE family) use the least-squares split of :func:`~.ops.fit_global_window`; what the
    split does not explain (the residual) is resampled like ``interp``, so at the native size
    the embedding is the checkpoint's own.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import torch
from timm.layers import resample_abs_pos_embed

from ..errors import UserError
from .ops import Size2, abswin_grid, grid_to_tokens
from .spec import PosEmbedSpec

SchemeFn = Callable[[PosEmbedSpec, Size2, Size2], torch.Tensor]


@dataclass(frozen=True)
class Scheme:
    name: str
    description: str
    fn: SchemeFn
    #: reads the global + window split, which for a full-grid checkpoint is a fit whose global grid
    #: (``--global-size``) changes the embedding: part of such a cell's identity
    uses_fit: bool = False
    #: defined in hiera-bench, so its code is versioned with it; a scheme registered elsewhere may change under
    #: the same name, so its cells are told apart by the embedding they use (see :func:`embedding_digest`)
    versioned: bool = False

    def __call__(self, spec: PosEmbedSpec, token_grid: Size2, mask_grid: Size2) -> torch.Tensor:
        return self.fn(spec, token_grid, mask_grid)


_SCHEMES: dict[str, Scheme] = {}


def register_scheme(name: str, description: str, uses_fit: bool = False) -> Callable[[SchemeFn], SchemeFn]:
    """Register a scheme under ``name`` (decorator)."""

    def wrap(fn: SchemeFn) -> SchemeFn:
        _SCHEMES[name] = Scheme(name, description, fn, uses_fit, fn.__module__.split(".")[0] == __name__.split(".")[0])
        return fn

    return wrap


def embedding_digest(embedding: torch.Tensor) -> str:
    """A short hash of an embedding's values and shape (float32): what a cell of an unversioned scheme used."""
    values = embedding.detach().to("cpu", torch.float32).contiguous()
    blob = repr(tuple(values.shape)).encode() + values.numpy().tobytes()
    return hashlib.sha256(blob).hexdigest()[:16]


def list_schemes() -> list[str]:
    return list(_SCHEMES)


def get_scheme(name: str) -> Scheme:
    try:
        return _SCHEMES[name]
    except KeyError:
        raise UserError(f"unknown scheme {name!r}; choose from {', '.join(_SCHEMES)}") from None


def reads_global_grid(scheme: str, pos_embed_kind: str | None) -> bool:
    """Whether ``scheme``'s embedding for a checkpoint of ``pos_embed_kind`` depends on the abswin fit's global
    grid (a fitting scheme on a full-grid checkpoint); a scheme this version does not have: False."""
    known = _SCHEMES.get(scheme)
    return pos_embed_kind == "full" and known is not None and known.uses_fit


def parse_schemes(text: str) -> list[Scheme]:
    """``"interp,abswin"`` -> schemes, in the given order, without repeats."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError(f"--schemes is empty; choose one or more of {', '.join(_SCHEMES)}")
    return [get_scheme(n) for n in dict.fromkeys(names)]


def _resample(tokens: torch.Tensor, old: Size2, new: Size2) -> torch.Tensor:
    return resample_abs_pos_embed(tokens, new_size=list(new), old_size=list(old), num_prefix_tokens=0)


@register_scheme("interp", "full-grid embedding resampled bicubic to the new token grid (timm resample_abs_pos_embed)")
def interp(spec: PosEmbedSpec, token_grid: Size2, mask_grid: Size2) -> torch.Tensor:
    return _resample(spec.full, spec.token_grid, token_grid)


@register_scheme("interp-hf", "full-grid embedding resampled bicubic without antialias (transformers' "
                 "interpolate_pos_encoding)")
def interp_hf(spec: PosEmbedSpec, token_grid: Size2, mask_grid: Size2) -> torch.Tensor:
    full = spec.full.float()
    if tuple(token_grid) == tuple(spec.token_grid):  # transformers returns the table itself at its own size
        return full
    channels = full.shape[-1]
    grid = full.reshape(1, *spec.token_grid, channels).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(grid, size=tuple(token_grid), mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1).reshape(1, -1, channels)


@register_scheme("abswin", "window embedding tiled per mask unit + global embedding resized (window-aware)",
                 uses_fit=True)
def abswin(spec: PosEmbedSpec, token_grid: Size2, mask_grid: Size2) -> torch.Tensor:
    structured = grid_to_tokens(abswin_grid(spec.global_embed, spec.window, mask_grid))
    if spec.residual is None:
        return structured.float()
    return (structured + _resample(spec.residual, spec.token_grid, token_grid).double()).float()
