"""Planning a sweep: one forward per distinct embedding per size and crop_pct, and the cells each forward serves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from ..cells import CellIdentity, global_size_text
from ..geometry import HieraGeometry
from ..posembed import PosEmbedSpec, Scheme, embedding_digest, reads_global_grid
from .shards import Span

if TYPE_CHECKING:
    from .store import RunDir


@dataclass
class Forward:
    """One distinct embedding at one size, on the crops of one crop_pct, and the cells (one per scheme) it serves."""

    size: int
    embedding: torch.Tensor
    schemes: list[str]
    crop_pct: float | None = None  # None: the preprocessing's own (callers outside a sweep)
    cells: dict[str, CellIdentity] = field(default_factory=dict)  # scheme -> identity

    @property
    def view(self) -> tuple[int, float | None]:
        return self.size, self.crop_pct

    @property
    def keys(self) -> dict[str, str]:
        return {scheme: cell.key for scheme, cell in self.cells.items()}


def plan_forwards(spec: PosEmbedSpec, schemes: list[Scheme], sizes: list[int], geometry: HieraGeometry,
                  crops: Sequence[float | None] = (None,)) -> list[Forward]:
    """One :class:`Forward` per distinct embedding at each size (identical ones are merged), for each crop_pct."""
    forwards = []
    for size in sizes:
        distinct: list[tuple[torch.Tensor, list[str]]] = []
        for scheme in schemes:
            embedding = scheme_embedding(scheme, spec, geometry, size)
            same = next((names for e, names in distinct if torch.equal(e, embedding)), None)
            if same is None:
                distinct.append((embedding, [scheme.name]))
            else:
                same.append(scheme.name)
        forwards.extend(Forward(size, e, list(names), crop) for crop in crops for e, names in distinct)
    return forwards


def identify(forwards: list[Forward], schemes: list[Scheme], spec: PosEmbedSpec,
             cell: Callable[..., CellIdentity]) -> None:
    """Give every forward's cells their identity: ``cell(scheme=..., img_size=..., global_size=...)`` with the
    abswin fit's global grid only where it changes the numbers (a full-grid checkpoint, a scheme that reads it),
    and the embedding's digest for a scheme registered outside hiera-bench (its code may change, its name not)."""
    by_name = {s.name: s for s in schemes}
    for fwd in forwards:
        for name in fwd.schemes:
            scheme = by_name[name]
            fwd.cells[name] = cell(scheme=name, img_size=fwd.size, crop_pct=fwd.crop_pct,
                                   global_size=fitted_global_size(scheme, spec),
                                   **({} if scheme.versioned else {"embedding": embedding_digest(fwd.embedding)}))


def scheme_embedding(scheme: Scheme, spec: PosEmbedSpec, geometry: HieraGeometry, size: int) -> torch.Tensor:
    """``scheme``'s embedding at ``size`` (float32, contiguous): what a forward at that size adds."""
    at = geometry.at(size)
    with torch.no_grad():
        return scheme(spec, at.token_grid, at.mask_grid).float().contiguous()


def scheme_digest(scheme: Scheme, spec: PosEmbedSpec, geometry: HieraGeometry, size: int) -> str:
    """The digest of ``scheme``'s embedding at ``size``, as :func:`identify` names a cell of an unversioned scheme."""
    return embedding_digest(scheme_embedding(scheme, spec, geometry, size))


def fitted_global_size(scheme: Scheme, spec: PosEmbedSpec) -> str | None:
    """The abswin fit's global grid as a cell names it: only where it changes the numbers (a full-grid
    checkpoint, a scheme that reads the fit), evaluated or skipped alike."""
    return global_size_text(spec.global_size) if reads_global_grid(scheme.name, spec.kind) else None


def missing_records(forwards: list[Forward], run_dir: "RunDir", force: bool, n: int) -> dict[str, list[Span]]:
    """Every unfinished cell and the positions of ``[0, n)`` it has no records of (with ``force``, every
    cell's records are dropped first). A cell with nothing missing but no row yet only needs its row built."""
    out = {}
    for fwd in forwards:
        for key in fwd.keys.values():
            store = run_dir.cell(key)
            if force:
                store.clear()
            if not store.is_done():
                out[key] = store.missing(n)
    return out


def forward_cells(forwards: list[Forward]) -> list[frozenset[str]]:
    """Each forward's cells by key: a forward runs wherever one of them lacks records."""
    return [frozenset(f.keys.values()) for f in forwards]
