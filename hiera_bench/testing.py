"""Small, real fixtures for tests and examples: tiny timm Hiera checkpoints and generated image folders.

Everything here is built from real timm models and real files on disk; nothing is mocked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

#: A few real ImageNet wnids, deliberately not the first ones (their devkit ids differ from their sorted index).
WNIDS = ("n01751748", "n02119789", "n04596742")

TINY_ARGS: dict[str, Any] = {"embed_dim": 16, "num_heads": 1, "stages": (1, 1, 1, 1)}


def tiny_hiera(arch: str = "hiera_tiny_224", img_size: int = 64, num_classes: int = 3, seed: int = 0,
               model_args: dict[str, Any] | None = None, pos_std: float = 0.5) -> torch.nn.Module:
    """A small random-init timm Hiera (any architecture's code path, tiny widths and depths).

    The position embedding gets a larger scale than timm's init so that schemes visibly differ.
    """
    import timm

    torch.manual_seed(seed)
    args = dict(TINY_ARGS, **(model_args or {}))
    if "abswin" in arch:
        args.setdefault("global_pos_size", (img_size // 32, img_size // 32))
    net = timm.create_model(arch, pretrained=False, img_size=img_size, num_classes=num_classes, **args).eval()
    with torch.no_grad():
        net.pos_embed.normal_(std=pos_std)
        if getattr(net, "pos_embed_win", None) is not None:
            net.pos_embed_win.normal_(std=pos_std)
    return net


def save_checkpoint_folder(net: torch.nn.Module, folder: Path, arch: str, model_args: dict[str, Any],
                           label_names: Sequence[str] | None = None, **cfg: Any) -> Path:
    """Write ``config.json`` + ``model.safetensors`` in timm's hub layout."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"))
    size = net.tokens_spatial_shape[0] * net.patch_stride[0]
    pretrained_cfg = {"input_size": [3, size, size], "crop_pct": 0.875, "interpolation": "bicubic",
                      "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], **cfg}
    config = {"architecture": arch, "num_classes": net.num_classes, "model_args": _jsonable(model_args),
              "pretrained_cfg": pretrained_cfg}
    if label_names is not None:
        config["label_names"] = list(label_names)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def _jsonable(args: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}


def make_image(rng: np.random.Generator, size: tuple[int, int], label: int) -> Image.Image:
    """A noisy image whose mean colour depends on the label (so tiny models can separate classes)."""
    base = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]])[label % 3]
    arr = np.clip(base + rng.normal(0, 40, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def make_class_folder(root: Path, wnids: Sequence[str] = WNIDS, per_class: int = 4, seed: int = 0,
                      sizes: Sequence[tuple[int, int]] = ((96, 72), (64, 80), (120, 90), (70, 70))) -> Path:
    """``root/<wnid>/ILSVRC2012_val_XXXXXXXX.JPEG`` with generated images of varied size and aspect."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    n = 0
    for c, wnid in enumerate(wnids):
        (root / wnid).mkdir(parents=True, exist_ok=True)
        for _ in range(per_class):
            n += 1
            img = make_image(rng, sizes[n % len(sizes)], c)
            img.save(root / wnid / f"ILSVRC2012_val_{n:08d}.JPEG", quality=90)
    return root
