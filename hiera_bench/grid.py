"""Resolution grids: parse ``224:320:16`` / ``224,256,320`` / ``224`` against a model's input stride."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import UserError

#: Above this side length a Hiera forward of one image needs tens of GB of activations.
MAX_SIZE = 2048

_INT = re.compile(r"^\s*\d+\s*$")


@dataclass(frozen=True)
class Grid:
    """Sizes to evaluate and sizes from a range that the model cannot take, with the reason."""

    sizes: tuple[int, ...]
    skipped: tuple[tuple[int, str], ...] = field(default_factory=tuple)


def nearest_valid(size: int, stride: int, min_size: int, max_size: int = MAX_SIZE) -> tuple[int, ...]:
    """The valid sizes just below and above ``size`` (one at the ends of the valid range)."""
    lo = (min(size, max_size) // stride) * stride
    return tuple(s for s in (lo, lo + stride) if min_size <= s <= max_size) or (max(min_size, lo),)


def invalid_reason(size: int, stride: int, min_size: int, max_size: int = MAX_SIZE) -> str | None:
    """Why the model cannot take ``size`` pixels, or None when it can."""
    if size < min_size:
        return f"smaller than the smallest input ({min_size} px, one mask unit)"
    if size > max_size:
        return f"larger than the largest supported input ({max_size} px)"
    if size % stride:
        return f"not a multiple of {stride} (the model's input stride)"
    return None


def _int(text: str, spec: str, what: str) -> int:
    if not _INT.match(text):
        raise UserError(
            f"--res {spec!r}: {what} {text.strip()!r} is not a positive whole number of pixels; "
            "use e.g. '224:320:32', '224,256,320' or '256'"
        )
    value = int(text)
    if value <= 0:
        raise UserError(f"--res {spec!r}: {what} must be positive, got {value}")
    return value


@dataclass(frozen=True)
class GridSpec:
    """What ``--res`` says before any model is known: a range ``start:stop:step`` or a list of sizes."""

    text: str
    sizes: tuple[int, ...] = ()
    span: tuple[int, int, int] | None = None  # start, stop, step


def parse_spec(spec: str) -> GridSpec:
    """The syntax of ``--res`` (numbers, range shape, order); sizes are checked against the model later,
    with its real stride, so that a size it cannot take is named with sizes it can."""
    spec = spec.strip()
    if not spec:
        raise UserError("--res is empty; give sizes like '224:320:32', '224,256,320' or '256'")
    if ":" in spec:
        parts = spec.split(":")
        if len(parts) != 3:
            raise UserError(f"--res {spec!r}: a range needs start:stop:step, e.g. '224:320:32'")
        start, stop, step = (_int(p, spec, w) for p, w in zip(parts, ("start", "stop", "step")))
        if start > stop:
            raise UserError(f"--res {spec!r}: start {start} is larger than stop {stop}; swap them")
        return GridSpec(spec, span=(start, stop, step))
    return GridSpec(spec, sizes=tuple(sorted({_int(p, spec, "size") for p in spec.split(",")})))


def parse_grid(spec: str, stride: int, min_size: int | None = None, max_size: int = MAX_SIZE) -> Grid:
    """Parse a resolution grid and check it against the model's input ``stride``.

    ``a:b:s`` is inclusive of ``b``; sizes inside a range that the model cannot take are
    skipped and reported. A listed or single size the model cannot take is an error that
    names the nearest valid sizes.
    """
    min_size = stride if min_size is None else min_size
    parsed = parse_spec(spec)
    spec = parsed.text
    if parsed.span is not None:
        start, stop, step = parsed.span
        if stop > max_size:
            top = nearest_valid(max_size, stride, min_size, max_size)[0]
            raise UserError(f"--res {spec!r}: {stop} px is larger than the largest supported input ({max_size} px); "
                            f"stop at {top}")
        sizes, skipped = [], []
        for size in range(start, stop + 1, step):
            reason = invalid_reason(size, stride, min_size, max_size)
            (skipped.append((size, reason)) if reason else sizes.append(size))
        if not sizes:
            near = nearest_valid(start, stride, min_size, max_size)
            raise UserError(
                f"--res {spec!r} holds no size the model can take (multiples of {stride}); "
                f"try e.g. {near[-1]}:{max(stop, near[-1])}:{stride}"
            )
        return Grid(tuple(sizes), tuple(skipped))
    for size in parsed.sizes:
        reason = invalid_reason(size, stride, min_size, max_size)
        if reason:
            near = " or ".join(str(s) for s in nearest_valid(size, stride, min_size, max_size))
            raise UserError(f"--res: {size} px is {reason}; use {near}")
    return Grid(parsed.sizes)


def default_grid(native: int, stride: int, low: float = 0.75, high: float = 1.5) -> str:
    """The grid used when ``--res`` is not given: every valid size from ``low`` to ``high`` x native."""
    start = max(stride, -(-int(native * low) // stride) * stride)
    stop = max(start, int(native * high) // stride * stride)
    return f"{start}:{stop}:{stride}"
