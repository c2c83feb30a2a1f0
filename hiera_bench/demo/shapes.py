"""A procedural image-classification set: shapes, glyphs and textures on noisy backgrounds.

Every image is a pure function of ``(seed, index)``: its class is ``index % n_classes`` and
everything else (canvas size and aspect, position, scale, rotation, colours, background,
noise, JPEG quality) is drawn from a generator seeded with ``(seed, index)``. Canvases range
over roughly 150-400 px per side so that the eval resize/crop works as it does on photos.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from ..io import dir_mode

#: Bump when the rendering changes: cached sets and baselines are keyed on it.
GENERATOR_VERSION = 1
MIN_SIDE, MAX_SIDE = 150, 400

Mask = np.ndarray  # (H, W) float32 coverage in [0, 1]
Painter = Callable[[np.random.Generator, int, int, float, float, float, float], Mask]

PAINTERS: dict[str, Painter] = {}


def painter(name: str) -> Callable[[Painter], Painter]:
    """Register a class: a function drawing its coverage mask at (cx, cy), radius r, angle a."""

    def add(fn: Painter) -> Painter:
        PAINTERS[name] = fn
        return fn

    return add


def _polygon_mask(w: int, h: int, polygons: list[list[tuple[float, float]]]) -> Mask:
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    for poly in polygons:
        draw.polygon(poly, fill=255)
    return np.asarray(img, dtype=np.float32) / 255.0


def _rotated(points: list[tuple[float, float]], cx: float, cy: float, r: float, a: float) -> list[tuple[float, float]]:
    """Unit-shape points scaled by ``r``, rotated by ``a`` and moved to ``(cx, cy)``."""
    c, s = math.cos(a), math.sin(a)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in points]


def _regular(n: int, inner: float | None = None) -> list[tuple[float, float]]:
    """A regular n-gon (or an n-pointed star with the given inner radius) on the unit circle."""
    pts = []
    for i in range(n * (2 if inner else 1)):
        t = 2 * math.pi * i / (n * (2 if inner else 1)) - math.pi / 2
        rad = inner if inner and i % 2 else 1.0
        pts.append((rad * math.cos(t), rad * math.sin(t)))
    return pts


def _coords(w: int, h: int, cx: float, cy: float, a: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in the shape's rotated frame."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    x, y = xx - cx, yy - cy
    c, s = math.cos(a), math.sin(a)
    return x * c + y * s, -x * s + y * c


def _disc(w: int, h: int, cx: float, cy: float, r: float) -> Mask:
    u, v = _coords(w, h, cx, cy, 0.0)
    return (u * u + v * v <= r * r).astype(np.float32)


@painter("circle")
def _circle(rng, w, h, cx, cy, r, a):
    return _disc(w, h, cx, cy, r)


@painter("ring")
def _ring(rng, w, h, cx, cy, r, a):
    return _disc(w, h, cx, cy, r) * (1.0 - _disc(w, h, cx, cy, r * rng.uniform(0.5, 0.7)))


@painter("square")
def _square(rng, w, h, cx, cy, r, a):
    return _polygon_mask(w, h, [_rotated([(-.8, -.8), (.8, -.8), (.8, .8), (-.8, .8)], cx, cy, r, a)])


@painter("triangle")
def _triangle(rng, w, h, cx, cy, r, a):
    return _polygon_mask(w, h, [_rotated(_regular(3), cx, cy, r, a)])


@painter("star")
def _star(rng, w, h, cx, cy, r, a):
    return _polygon_mask(w, h, [_rotated(_regular(5, inner=0.42), cx, cy, r, a)])


@painter("cross")
def _cross(rng, w, h, cx, cy, r, a):
    t = 0.28
    bars = [[(-1, -t), (1, -t), (1, t), (-1, t)], [(-t, -1), (t, -1), (t, 1), (-t, 1)]]
    return _polygon_mask(w, h, [_rotated(b, cx, cy, r, a) for b in bars])


@painter("crescent")
def _crescent(rng, w, h, cx, cy, r, a):
    off = r * 0.45
    return _disc(w, h, cx, cy, r) * (1.0 - _disc(w, h, cx + off * math.cos(a), cy + off * math.sin(a), r * 0.85))


@painter("glyph_L")
def _glyph_l(rng, w, h, cx, cy, r, a):
    t = 0.3
    parts = [[(-.7, -1), (-.7 + 2 * t, -1), (-.7 + 2 * t, 1), (-.7, 1)], [(-.7, 1 - 2 * t), (.7, 1 - 2 * t), (.7, 1), (-.7, 1)]]
    return _polygon_mask(w, h, [_rotated(p, cx, cy, r, a) for p in parts])


@painter("glyph_T")
def _glyph_t(rng, w, h, cx, cy, r, a):
    t = 0.3
    parts = [[(-1, -1), (1, -1), (1, -1 + 2 * t), (-1, -1 + 2 * t)], [(-t, -1), (t, -1), (t, 1), (-t, 1)]]
    return _polygon_mask(w, h, [_rotated(p, cx, cy, r, a) for p in parts])


@painter("stripes")
def _stripes(rng, w, h, cx, cy, r, a):
    u, _ = _coords(w, h, cx, cy, a)
    period = r * rng.uniform(0.3, 0.45)
    return _disc(w, h, cx, cy, r * 1.1) * (np.mod(u, period) < period / 2)


@painter("checker")
def _checker(rng, w, h, cx, cy, r, a):
    u, v = _coords(w, h, cx, cy, a)
    cell = r * rng.uniform(0.3, 0.45)
    inside = (np.abs(u) <= r) & (np.abs(v) <= r)
    return inside * ((np.floor(u / cell) + np.floor(v / cell)) % 2 == 0)


@painter("dots")
def _dots(rng, w, h, cx, cy, r, a):
    u, v = _coords(w, h, cx, cy, a)
    cell = r * rng.uniform(0.35, 0.5)
    du, dv = np.mod(u, cell) - cell / 2, np.mod(v, cell) - cell / 2
    return _disc(w, h, cx, cy, r * 1.1) * (du * du + dv * dv <= (0.3 * cell) ** 2)


def class_names() -> list[str]:
    """Folder names of the classes (``c00_circle`` ...): sorted order is class order."""
    return [f"c{i:02d}_{name}" for i, name in enumerate(PAINTERS)]


def _contrasting(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A random colour at least 90 grey levels away (mean absolute channel difference) from the background."""
    while True:
        colour = rng.uniform(0, 255, 3)
        if np.abs(colour - background).mean() >= 90:
            return colour


def render(seed: int, index: int) -> tuple[Image.Image, int, int]:
    """Image ``index`` of the set with ``seed``: ``(RGB image, class index, JPEG quality)``."""
    names = list(PAINTERS)
    label = index % len(names)
    rng = np.random.default_rng([GENERATOR_VERSION, seed, index])
    w, h = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, 2))
    side = min(w, h)
    # keep the shape inside the central square that an eval centre crop sees
    r = side * rng.uniform(0.2, 0.32)
    room = max(0.0, 0.42 * side - r)
    cx, cy = w / 2 + rng.uniform(-room, room), h / 2 + rng.uniform(-room, room)
    angle = rng.uniform(0, 2 * math.pi)
    bg0, bg1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    fg = _contrasting(rng, (bg0 + bg1) / 2)
    # a linear gradient between two colours along a random direction
    t = _coords(w, h, w / 2, h / 2, rng.uniform(0, 2 * math.pi))[0] / max(w, h) + 0.5
    background = bg0 + np.clip(t, 0, 1)[..., None] * (bg1 - bg0) * 0.5
    mask = PAINTERS[names[label]](rng, w, h, cx, cy, r, angle)[..., None]
    pixels = background * (1 - mask) + fg * mask
    pixels += rng.uniform(3, 15) * rng.standard_normal(pixels.shape, dtype=np.float32)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image, label, int(rng.integers(80, 96))


def jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def render_jpeg(seed: int, index: int) -> tuple[bytes, int]:
    """The JPEG file of image ``index`` and its class index."""
    image, label, quality = render(seed, index)
    return jpeg_bytes(image, quality), label


def write_class_folders(root: Path, seed: int, n_images: int) -> Path:
    """``root/<class>/<seed>_<index>.JPEG`` for ``index < n_images``, written atomically as a whole.

    An existing complete folder (same generator version, seed and count) is reused as it is.
    """
    root = Path(root)
    stamp = f"v{GENERATOR_VERSION} seed={seed} n={n_images}\n"
    if (root / "COMPLETE").is_file() and (root / "COMPLETE").read_text() == stamp:
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}."))
    tmp.chmod(dir_mode())  # mkdtemp's folder is private; the finished one is shared like any other
    try:
        names = class_names()
        for name in names:
            (tmp / name).mkdir()
        for index in range(n_images):
            data, label = render_jpeg(seed, index)
            (tmp / names[label] / f"demo_s{seed}_{index:06d}.JPEG").write_bytes(data)
        (tmp / "COMPLETE").write_text(stamp)
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
