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

    The position embedding gets a larger scale than timm's init so that schemes visibly differ, and
    the classifier gets random weights: timm initialises Hiera's head to (near) zero, which would make
    every logit 0 and every comparison of logits pass whatever the embedding.
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
        net.head.fc.weight.normal_(std=1.0)
        net.head.fc.bias.normal_(std=0.1)
    return net


def save_checkpoint_folder(net: torch.nn.Module, folder: Path, arch: str, model_args: dict[str, Any],
                           label_names: Sequence[str] | None = None, model_name: str | None = None,
                           **cfg: Any) -> Path:
    """Write ``config.json`` + ``model.safetensors`` in timm's hub layout (``model_name`` names it in results)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"))
    size = net.tokens_spatial_shape[0] * net.patch_stride[0]
    pretrained_cfg = {"input_size": [3, size, size], "crop_pct": 0.875, "interpolation": "bicubic",
                      "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], **cfg}
    config = {"architecture": arch, "num_classes": net.num_classes, "model_args": _jsonable(model_args),
              "pretrained_cfg": pretrained_cfg}
    if model_name:
        config = {"architecture": arch, "model_name": model_name, **config}
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


_CLI_BATCH = """
import contextlib, io, json, sys
from hiera_bench.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err, code = io.StringIO(), 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    results.append({"code": code, "stderr": err.getvalue()})
print(json.dumps(results))
"""


def run_cli_batch(commands: Sequence[Sequence[str]], timeout: float = 600) -> list[dict[str, Any]]:
    """Run ``hiera-bench`` argv lists one after another in ONE fresh interpreter (torch is imported once).

    Returns ``{"code": exit status, "stderr": text}`` per command, in order.
    """
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _CLI_BATCH, json.dumps([list(map(str, c)) for c in commands])],
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"CLI batch crashed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_devkit_meta(path: Path, ids: dict[str, int]) -> None:
    """The devkit's meta.mat: a (N, 1) struct array 'synsets'; non-leaf synsets (num_children > 0) follow the leaves."""
    from scipy.io import savemat

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    entries = [(i, w, 0) for w, i in sorted(ids.items(), key=lambda kv: kv[1])] + [(1001, "n00001740", 2)]
    synsets = np.zeros((len(entries), 1), dtype=[(f, object) for f in fields])
    for row, (devkit_id, wnid, children) in enumerate(entries):
        synsets[row, 0] = (np.array([[devkit_id]], dtype=np.uint16), wnid, "words", "gloss",
                           np.array([[children]], dtype=np.uint16), np.arange(1, children + 1, dtype=np.uint16)[None],
                           np.array([[0]], dtype=np.uint16), np.array([[1300]], dtype=np.uint16))
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), {"synsets": synsets})
