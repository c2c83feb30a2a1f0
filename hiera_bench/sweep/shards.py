"""Which images each rank evaluates: position ranges of the data, shared out by the work still missing.

A cell's committed parts cover ranges of positions; what it lacks is their complement. The job's positions
are cut into one contiguous *share* per rank, balanced by the forwards each position still needs: a fresh
run splits the data evenly, a resume with any world size spreads only what is missing. Inside its share a
rank walks *segments*, maximal ranges over which the same cells are missing, so a batch never spans two
segments and every cell commits contiguous ranges of exactly the positions it lacked. Every image is
evaluated once: shares are disjoint and nothing is padded (unlike ``DistributedSampler``).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Iterable, Sequence

Span = tuple[int, int]  # positions [start, end)


def merge(spans: Iterable[Span]) -> list[Span]:
    """Sorted, disjoint, non-empty spans covering the same positions (touching spans joined)."""
    out: list[Span] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def complement(spans: Iterable[Span], n: int) -> list[Span]:
    """The positions of ``[0, n)`` that ``spans`` do not cover."""
    out, at = [], 0
    for start, end in merge(spans):
        if start > at:
            out.append((at, min(start, n)))
        at = max(at, end)
    if at < n:
        out.append((at, n))
    return [s for s in out if s[1] > s[0]]


def length(spans: Iterable[Span]) -> int:
    return sum(end - start for start, end in spans)


@dataclass(frozen=True)
class Segment:
    """Positions ``[start, end)`` that exactly the cells ``keys`` still lack."""

    start: int
    end: int
    keys: frozenset[str]


def segments(missing: dict[str, list[Span]], lo: int, hi: int) -> list[Segment]:
    """The segments of ``[lo, hi)`` where at least one cell lacks records, in order."""
    cuts = {lo, hi} | {p for spans in missing.values() for s in spans for p in s if lo < p < hi}
    bounds = sorted(cuts)
    starts = {k: [a for a, _ in spans] for k, spans in missing.items()}

    def lacks(key: str, start: int, end: int) -> bool:  # spans are merged: one of them holds all or none
        i = bisect_right(starts[key], start) - 1
        return i >= 0 and missing[key][i][1] >= end

    out: list[Segment] = []
    for start, end in zip(bounds, bounds[1:]):
        keys = frozenset(k for k in missing if lacks(k, start, end))
        if not keys:
            continue
        if out and out[-1].end == start and out[-1].keys == keys:
            out[-1] = Segment(out[-1].start, end, keys)
        else:
            out.append(Segment(start, end, keys))
    return out


def units(segs: Iterable[Segment], forwards: Sequence[frozenset[str]]) -> int:
    """(image, forward) pairs to evaluate: a forward runs on a segment where any of its cells lacks records."""
    return sum((s.end - s.start) * sum(1 for f in forwards if f & s.keys) for s in segs)


@dataclass(frozen=True)
class Assignment:
    """The job's work, the same on every rank (rank 0 computes it from the run folder and sends it):
    each pending cell's missing positions, each forward's cells, and each rank's share of ``[0, n)``."""

    missing: dict[str, list[Span]]
    forwards: list[frozenset[str]]
    shares: list[Span]

    @property
    def total(self) -> int:
        """(image, forward) pairs of every rank: what the progress bar counts."""
        return units(segments(self.missing, 0, self.shares[-1][1]), self.forwards)

    def segments_of(self, rank: int) -> list[Segment]:
        return segments(self.missing, *self.shares[rank])

    def images_per_rank(self) -> list[int]:
        return [end - start for start, end in self.shares]


def assign(missing: dict[str, list[Span]], forwards: Sequence[frozenset[str]], n: int, world_size: int) -> Assignment:
    """Cut ``[0, n)`` into ``world_size`` contiguous shares holding equal (image, forward) work; with nothing
    missing, equal numbers of images."""
    missing = {k: merge(v) for k, v in missing.items() if v}
    segs = segments(missing, 0, n)
    weights = [(s.start, s.end, sum(1 for f in forwards if f & s.keys)) for s in segs]
    total = sum((end - start) * w for start, end, w in weights)
    cuts = [0]
    for r in range(1, world_size):
        cut = _cut(weights, total * r, world_size) if total else r * n // world_size
        cuts.append(max(cuts[-1], cut))
    cuts.append(n)
    return Assignment(missing, list(forwards), list(zip(cuts, cuts[1:])))


def _cut(weights: list[tuple[int, int, int]], numerator: int, denominator: int) -> int:
    """The first position before which ``numerator / denominator`` of the work lies (integers: no float
    rounding moves an image between ranks); positions no cell lacks weigh nothing."""
    done = 0
    for start, end, w in weights:
        if w and (done + (end - start) * w) * denominator >= numerator:
            return start + -(-(numerator - done * denominator) // (w * denominator))  # ceil
        done += (end - start) * w
    return weights[-1][1] if weights else 0


def batches(segs: Sequence[Segment], batch_size: int) -> list[list[int]]:
    """Positions in batches of at most ``batch_size``; a batch never crosses a segment."""
    return [list(range(p, min(p + batch_size, s.end))) for s in segs for p in range(s.start, s.end, batch_size)]
