"""Hiera's geometry, read once from a timm model: patch stride, mask units (windows), pooling strides.

Everything that depends on the input side asks :meth:`HieraGeometry.at`: the token grid (side / patch
stride), the grid of mask units (tokens / window), and which sides the model can take at all (multiples of
:attr:`HieraGeometry.input_stride`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Size2 = tuple[int, int]


@dataclass(frozen=True)
class SizeGeometry:
    """The grids of one input side."""

    size: int
    token_grid: Size2
    mask_grid: Size2

    @property
    def n_tokens(self) -> int:
        return self.token_grid[0] * self.token_grid[1]


@dataclass(frozen=True)
class HieraGeometry:
    """What fixes Hiera's grids: ``patch_stride`` px per token, ``window`` tokens per mask unit, the
    product of all q-pool strides along a side (``unroll``), the tokens one q-pool merges
    (``q_pool_factor``), and stage 1's channels (its activations are the widest)."""

    patch_stride: int
    window: Size2
    unroll: int
    q_pool_factor: int
    channels: int

    @classmethod
    def from_model(cls, model: torch.nn.Module) -> "HieraGeometry":
        return cls(
            patch_stride=int(model.patch_stride[0]),
            window=(int(model.mask_unit_size[0]), int(model.mask_unit_size[1])),
            unroll=math.prod(int(s[0]) for s in model.unroll.schedule),
            q_pool_factor=math.prod(int(s) for s in model.q_stride),
            channels=int(model.patch_embed.proj.out_channels),
        )

    @property
    def input_stride(self) -> int:
        """Pixels the input side must be a multiple of: whole mask units that survive every q-pool."""
        return self.patch_stride * math.lcm(self.window[0], self.unroll)

    def at(self, size: int) -> SizeGeometry:
        tokens = size // self.patch_stride
        return SizeGeometry(size, (tokens, tokens), (tokens // self.window[0], tokens // self.window[1]))

    def stage1_shape(self, size: int) -> tuple[int, int]:
        """(tokens, channels) per image in stage 1 at ``size``: the widest activations of a forward."""
        return self.at(size).n_tokens, self.channels

    def global_stage_tokens(self, size: int) -> int:
        """Tokens per image in the first global-attention stage (after two q-pools in every timm Hiera)."""
        return self.at(size).n_tokens // (self.q_pool_factor ** 2)
