"""Look at a Hiera position embedding: its structure, how each scheme rewrites it, and a Figure-1 style plot.

:func:`inspect_model` returns the numbers (:class:`Inspection`) and a matplotlib figure:
for a few channels, the embedding at the native size, after ``interp`` to ``R`` and after
``abswin`` to ``R``, with the mask-unit (window) borders drawn. Plain interpolation stretches
the window pattern across those borders; ``abswin`` keeps one copy per window.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import torch

from .errors import UserError
from .geometry import SizeGeometry
from .grid import invalid_reason
from .io import MARKERS, OwnedFolder, atomic_write_bytes, atomic_write_json
from .models import load_model
from .posembed import PosEmbedSpec, get_scheme, spec_from_model, tokens_to_grid, window_periodicity
from .posembed.ops import Size2

#: Schemes drawn next to the native embedding, in column order.
FIGURE_SCHEMES = ("interp", "abswin")

#: Range of sizes listed as valid, relative to the native size.
VALID_RANGE = (0.5, 2.0)


@dataclass
class SchemeView:
    """One rewritten embedding at one size, with its window scores."""

    name: str
    size: int
    token_grid: Size2
    mask_grid: Size2
    periodicity: float
    window_match: list[list[float]]
    tokens: torch.Tensor = field(repr=False)

    @property
    def mean_window_match(self) -> float:
        values = [v for row in self.window_match for v in row]
        return sum(values) / len(values)

    def summary(self) -> dict[str, Any]:
        return {"size": self.size, "token_grid": list(self.token_grid), "mask_grid": list(self.mask_grid),
                "periodicity": self.periodicity, "mean_window_match": self.mean_window_match,
                "window_match": self.window_match}


@dataclass
class Inspection:
    """What ``hiera-bench inspect`` prints and writes to JSON."""

    model: str
    checkpoint: str
    pos_embed_kind: str
    native_size: int
    patch_stride: int
    input_stride: int
    token_grid: Size2
    mask_grid: Size2
    window_size: Size2
    global_size: Size2
    valid_sizes: list[int]
    size: int
    channels: list[int]
    energy: dict[str, float] | None
    explained: float | None
    views: dict[str, SchemeView]

    @property
    def periodicity(self) -> dict[str, float]:
        return {key: view.periodicity for key, view in self.views.items()}

    def as_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "views"}
        data["views"] = {key: view.summary() for key, view in self.views.items()}
        data["periodicity"] = self.periodicity
        return data


def centered_windows(tokens: torch.Tensor, token_grid: Size2, window_size: Size2) -> torch.Tensor:
    """``(1, H*W, C)`` -> ``(mh, mw, C, wh, ww)``: whole windows, each channel minus its grid mean."""
    grid = tokens_to_grid(tokens.double(), token_grid)
    mh, mw = token_grid[0] // window_size[0], token_grid[1] // window_size[1]
    grid = grid[..., : mh * window_size[0], : mw * window_size[1]]
    grid = grid - grid.mean(dim=(-2, -1), keepdim=True)
    windows = grid.reshape(grid.shape[1], mh, window_size[0], mw, window_size[1])
    return windows.permute(1, 3, 0, 2, 4)


def window_match(tokens: torch.Tensor, token_grid: Size2, reference: torch.Tensor, window_size: Size2) -> list[list[float]]:
    """Per mask unit: cosine between its (centered) embedding and ``reference``, the native mean window.

    1.0 means the window carries exactly the pattern the model was trained with (up to scale).
    """
    windows = centered_windows(tokens, token_grid, window_size)
    flat = windows.flatten(2)
    ref = reference.flatten().double()
    cos = (flat @ ref) / (flat.norm(dim=-1) * ref.norm()).clamp_min(1e-300)
    return [[float(v) for v in row] for row in cos]


def native_mean_window(spec: PosEmbedSpec) -> torch.Tensor:
    """``(C, wh, ww)``: the window pattern every mask unit shares at the native size (on average)."""
    return centered_windows(spec.full, spec.token_grid, spec.window_size).mean(dim=(0, 1))


def valid_sizes(native: int, stride: int, lo: float = VALID_RANGE[0], hi: float = VALID_RANGE[1]) -> list[int]:
    """Sizes from ``lo x native`` to ``hi x native`` that the model can take."""
    start = max(stride, math.ceil(native * lo / stride) * stride)
    return [s for s in range(start, int(native * hi) + 1, stride) if invalid_reason(s, stride, stride) is None]


def default_size(native: int, stride: int) -> int:
    """1.5x native, rounded up to the stride: a size where plain interpolation visibly misaligns."""
    return math.ceil(native * 1.5 / stride) * stride


def top_variance_channels(tokens: torch.Tensor, n: int) -> list[int]:
    """The ``n`` channels whose embedding varies most over the token grid."""
    var = tokens[0].double().var(dim=0)
    return sorted(int(i) for i in torch.topk(var, min(n, var.numel())).indices)


def parse_channels(text: str) -> list[int]:
    """``"0,5,9"`` -> ``[0, 5, 9]`` (the range is checked against the embedding in :func:`inspect_model`)."""
    try:
        chosen = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise UserError(f"--channels {text!r}: give channel numbers separated by commas, e.g. 0,5,9") from None
    if not chosen:
        raise UserError("--channels is empty; give channel numbers separated by commas, e.g. 0,5,9")
    return chosen


def scheme_view(spec: PosEmbedSpec, name: str, at: SizeGeometry, reference: torch.Tensor) -> SchemeView:
    size, token_grid, mask_grid = at.size, at.token_grid, at.mask_grid
    with torch.no_grad():
        tokens = spec.full.float() if name == "native" else get_scheme(name)(spec, token_grid, mask_grid).float()
    return SchemeView(
        name=name, size=size, token_grid=token_grid, mask_grid=mask_grid,
        periodicity=window_periodicity(tokens, token_grid, spec.window_size),
        window_match=window_match(tokens, token_grid, reference, spec.window_size), tokens=tokens,
    )


def inspect_model(
    model: str | None = None,
    checkpoint: str | Path | None = None,
    size: int | None = None,
    channels: Sequence[int] | None = None,
    n_channels: int = 3,
    global_size: int | None = None,
) -> tuple[Inspection, Any]:
    """Load a checkpoint, rewrite its embedding to ``size`` with each scheme; return the numbers and the figure."""
    loaded = load_model(model, checkpoint)
    stride, native = loaded.stride, loaded.native_size
    if size is None:
        size = default_size(native, stride)
    reason = invalid_reason(size, stride, stride)
    if reason:
        raise UserError(f"--res: {size} px is {reason}; use one of {valid_sizes(native, stride)[:8]}")
    gsize = (global_size, global_size) if global_size and loaded.pos_embed_kind == "full" else None
    spec = spec_from_model(loaded.model, native, gsize)
    width = spec.full.shape[-1]
    if channels is None:
        chosen = top_variance_channels(spec.full, n_channels)
    else:
        chosen = list(dict.fromkeys(int(c) for c in channels))
        bad = [c for c in chosen if not 0 <= c < width]
        if not chosen or bad:
            raise UserError(f"--channels: {bad[0] if bad else 'none given'} is out of range; "
                            f"the embedding has channels 0..{width - 1}")
    geometry = loaded.geometry
    reference = native_mean_window(spec)
    views = {"native": scheme_view(spec, "native", geometry.at(native), reference)}
    for name in FIGURE_SCHEMES:
        views[name] = scheme_view(spec, name, geometry.at(size), reference)
    full = spec.kind == "full"
    report = Inspection(
        model=loaded.name, checkpoint=loaded.checkpoint, pos_embed_kind=loaded.pos_embed_kind, native_size=native,
        patch_stride=geometry.patch_stride, input_stride=stride, token_grid=spec.token_grid, mask_grid=spec.mask_grid,
        window_size=spec.window_size, global_size=spec.global_size, valid_sizes=valid_sizes(native, stride),
        size=size, channels=chosen, energy=spec.energy_shares() if full else None,
        explained=spec.explained if full else None, views=views,
    )
    return report, draw(report)


def _panel_title(view: SchemeView) -> str:
    label = "native" if view.name == "native" else view.name
    return f"{label} @{view.size} px\nperiodicity {view.periodicity:.2f}"


def draw(report: Inspection) -> Any:
    """Rows = channels, columns = native | interp@R | abswin@R; window borders as black lines."""
    from matplotlib.figure import Figure

    views = list(report.views.values())
    rows, cols = len(report.channels), len(views)
    fig = Figure(figsize=(3.2 * cols, 3.0 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, channel in enumerate(report.channels):
        images = [tokens_to_grid(v.tokens, v.token_grid)[0, channel].numpy() for v in views]
        limit = max(float(abs(img).max()) for img in images) or 1.0
        for c, (view, img) in enumerate(zip(views, images)):
            ax = axes[r][c]
            shown = ax.imshow(img, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
            _window_borders(ax, view.token_grid, report.window_size)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(_panel_title(view), fontsize=9)
            if c == 0:
                ax.set_ylabel(f"channel {channel}")
        fig.colorbar(shown, ax=list(axes[r]), shrink=0.8)
    fig.suptitle(f"{report.model}: position embedding ({report.pos_embed_kind}), mask units of "
                 f"{report.window_size[0]}x{report.window_size[1]} tokens", fontsize=10)
    return fig


def _window_borders(ax: Any, token_grid: Size2, window_size: Size2) -> None:
    for y in range(window_size[0], token_grid[0], window_size[0]):
        ax.axhline(y - 0.5, color="black", linewidth=1.0)
    for x in range(window_size[1], token_grid[1], window_size[1]):
        ax.axvline(x - 0.5, color="black", linewidth=1.0)


def figure_bytes(fig: Any, fmt: str) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=120)
    return buffer.getvalue()


def _inspections(root: Path) -> bool:
    """An ``inspect`` folder of an older hiera-bench (before its marker): an inspect-<R>.json of ours is in it."""
    for path in Path(root).glob("inspect-*.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and {"pos_embed_kind", "periodicity", "views"} <= data.keys():
            return True
    return False


def inspect_folder(size: int) -> OwnedFolder:
    """The ``-o`` folder of ``inspect`` at ``size``: the figure and the JSON it writes."""
    return OwnedFolder(MARKERS["inspect"], "-o", (f"posembed-{size}.png", f"posembed-{size}.svg", f"inspect-{size}.json"),
                       earlier=_inspections)


def write_inspection(report: Inspection, fig: Any, out: Path) -> list[Path]:
    """``posembed-<R>.png``, ``.svg`` and ``inspect-<R>.json`` under ``out``, each atomically (into a folder the
    caller owns: ``inspect`` claims it with :func:`inspect_folder` first)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"-o {out} is a file, not a folder; choose another -o")
    paths = []
    for fmt in ("png", "svg"):
        path = out / f"posembed-{report.size}.{fmt}"
        atomic_write_bytes(path, figure_bytes(fig, fmt))
        paths.append(path)
    path = out / f"inspect-{report.size}.json"
    atomic_write_json(path, report.as_dict())
    paths.append(path)
    return paths
