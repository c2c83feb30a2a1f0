"""A procedural image-classification set: dot-matrix glyphs on noisy backgrounds.

Each class is one character of a 5x7 dot-matrix font (digits and a few letters: 16 classes), drawn as
square blocks of dark ink on a light two-colour gradient with noise. Every glyph is made of the same
blocks, so what tells the classes apart is where the blocks sit relative to each other (``6``/``9``,
``E``/``F``/``P``, ``H``/``A``/``U``). A block cell is 5-7 % of the shorter side, 7-10 px once the eval
crop is 128 px, so a glyph spans 37-72 px: one to two 32 px Hiera mask units, and a 7x7 patch embedding
sees one or two blocks of it.

Every image is a pure function of ``(seed, index)``: its class is ``index % n_classes`` and
everything else (canvas size and aspect, the glyph's position, scale and small rotation, colours,
background, noise, JPEG quality) is drawn from a generator seeded with ``(GENERATOR_VERSION, seed,
index)``. Canvases range over roughly 150-400 px per side so that the eval resize/crop works as it does
on photos; the glyph sits inside the central square that an eval centre crop keeps.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..io import dir_mode

#: Bump when the rendering changes: cached sets and baselines are keyed on it.
#: v1: 12 classes of shapes, glyphs and textures; v2: 16 dot-matrix glyphs.
GENERATOR_VERSION = 2
MIN_SIDE, MAX_SIDE = 150, 400
ASPECT = (3 / 4, 4 / 3)  # width / height, as photos

#: 5x7 pixel-font glyphs (rows top to bottom); the class order is this dict's order.
FONT: dict[str, tuple[str, ...]] = {
    "0": ("01110", "10001", "10011", "10101", "11001", "10001", "01110"),
    "1": ("00100", "01100", "00100", "00100", "00100", "00100", "01110"),
    "2": ("01110", "10001", "00001", "00010", "00100", "01000", "11111"),
    "3": ("11111", "00010", "00100", "00010", "00001", "10001", "01110"),
    "4": ("00010", "00110", "01010", "10010", "11111", "00010", "00010"),
    "5": ("11111", "10000", "11110", "00001", "00001", "10001", "01110"),
    "6": ("00110", "01000", "10000", "11110", "10001", "10001", "01110"),
    "7": ("11111", "00001", "00010", "00100", "01000", "01000", "01000"),
    "8": ("01110", "10001", "10001", "01110", "10001", "10001", "01110"),
    "9": ("01110", "10001", "10001", "01111", "00001", "00010", "01100"),
    "A": ("01110", "10001", "10001", "11111", "10001", "10001", "10001"),
    "E": ("11111", "10000", "10000", "11110", "10000", "10000", "11111"),
    "F": ("11111", "10000", "10000", "11110", "10000", "10000", "10000"),
    "H": ("10001", "10001", "10001", "11111", "10001", "10001", "10001"),
    "P": ("11110", "10001", "10001", "11110", "10000", "10000", "10000"),
    "U": ("10001", "10001", "10001", "10001", "10001", "10001", "01110"),
}
GLYPHS = list(FONT)
SUPERSAMPLE = 2  # drawn at 2x and box-filtered down: anti-aliased edges
PITCH = (0.05, 0.07)  # font cell size as a share of the shorter side (7-10 px once the eval crop is 128 px)
BLOCK = (0.75, 1.0)  # a lit cell's square side, as a share of the cell
COPIES = (1, 1)  # copies of the glyph per image (inclusive; a copy that finds no room is left out)
ROTATE = 0.25  # radians, +- per copy
POLARITY = "dark"  # or "any": dark ink on a light background


def class_names() -> list[str]:
    """Folder names of the classes (``c00_0`` ... ``c15_U``): sorted order is class order."""
    return [f"c{i:02d}_{name}" for i, name in enumerate(GLYPHS)]


def _contrasting(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A random colour at least 90 grey levels away (mean absolute channel difference) from the background."""
    while True:
        colour = rng.uniform(0, 255, 3)
        if np.abs(colour - background).mean() >= 90:
            return colour


def _darker(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A random colour whose every channel is at least 90 grey levels below the background's mean."""
    top = max(0.0, float(background.mean()) - 90)
    return rng.uniform(0, top, 3) if top > 0 else np.zeros(3)


def _glyph_mask(rng: np.random.Generator, w: int, h: int, label: int) -> np.ndarray:
    """Coverage in [0, 1] of :data:`COPIES` non-overlapping copies of the class's glyph."""
    side = min(w, h)
    ss = SUPERSAMPLE
    mask = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(mask)
    bitmap = FONT[GLYPHS[label]]
    pitch0 = side * rng.uniform(*PITCH)
    half = 0.42 * side  # the central square an eval centre crop (crop_pct 0.875) keeps
    placed: list[tuple[float, float, float]] = []
    for _ in range(int(rng.integers(COPIES[0], COPIES[1] + 1))):
        pitch = pitch0 * rng.uniform(0.9, 1.1)
        block = pitch * rng.uniform(*BLOCK) / 2
        angle = rng.uniform(-ROTATE, ROTATE)
        radius = math.hypot(2.5, 3.5) * pitch  # the glyph's bounding circle
        room = max(0.0, half - radius)
        for _try in range(20):
            cx, cy = w / 2 + rng.uniform(-room, room), h / 2 + rng.uniform(-room, room)
            if all(math.hypot(cx - x, cy - y) > radius + r for x, y, r in placed):
                break
        else:
            continue
        placed.append((cx, cy, radius))
        c, s = math.cos(angle), math.sin(angle)
        corners = [(-block, -block), (block, -block), (block, block), (-block, block)]
        for row, bits in enumerate(bitmap):
            for col, bit in enumerate(bits):
                if bit == "1":
                    x0, y0 = (col - 2) * pitch, (row - 3) * pitch
                    poly = [(cx + (x0 + u) * c - (y0 + v) * s, cy + (x0 + u) * s + (y0 + v) * c) for u, v in corners]
                    draw.polygon([(x * ss, y * ss) for x, y in poly], fill=255)
    mask = mask.resize((w, h), Image.BOX)
    return np.asarray(mask, dtype=np.float32) / 255.0


def render(seed: int, index: int) -> tuple[Image.Image, int, int]:
    """Image ``index`` of the set with ``seed``: ``(RGB image, class index, JPEG quality)``."""
    label = index % len(class_names())
    rng = np.random.default_rng([GENERATOR_VERSION, seed, index])
    w = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    h = int(np.clip(round(w / rng.uniform(*ASPECT)), MIN_SIDE, MAX_SIDE))
    mask = _glyph_mask(rng, w, h, label)[..., None]
    if POLARITY == "dark":  # ink darker than the paper, hues free
        bg0, bg1 = rng.uniform(110, 255, 3), rng.uniform(110, 255, 3)
        fg = _darker(rng, (bg0 + bg1) / 2)
    else:
        bg0, bg1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        fg = _contrasting(rng, (bg0 + bg1) / 2)
    # a linear gradient between two colours along a random direction
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, 2 * math.pi)
    t = ((xx - w / 2) * math.cos(theta) + (yy - h / 2) * math.sin(theta)) / max(w, h) + 0.5
    background = bg0 + np.clip(t, 0, 1)[..., None] * (bg1 - bg0) * 0.5
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
