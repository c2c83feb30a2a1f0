"""Training the demo checkpoints: two tiny timm Hiera models at a native 128 px, on CPU, by seed.

The set is :mod:`hiera_bench.demo.shapes`. Training is the ImageNet recipe in miniature: timm's own
train transform at the native size only (random-resized crop, colour jitter; no flip, which would
mirror the glyphs), AdamW with warm-up and cosine decay, label smoothing. A small monitor
split (seed 3) is scored with timm's eval transform while training; the held-out accuracy in the
model card comes from the benchmark's sweep on the demo's own split (seed 2).
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from hiera_bench.demo.shapes import class_names, render_jpeg

NATIVE = 128
TRAIN_SEED = 1  # the held-out split is VAL_SEED in the package
MONITOR_SEED = 3  # scored during training only
BASE_ARGS: dict[str, Any] = {"embed_dim": 32, "num_heads": 1, "stages": (1, 1, 2, 1)}


@dataclass(frozen=True)
class DemoModel:
    """One shipped demo checkpoint: which timm architecture, and the small arguments that shrink it."""

    name: str
    arch: str
    model_args: dict[str, Any]
    pos_embed: str
    lr: float
    pretrained_cfg: dict[str, Any] = field(default_factory=lambda: {"crop_pct": 0.875, "interpolation": "bicubic"})


DEMO_MODELS: dict[str, DemoModel] = {
    m.name: m for m in (
        # layer scale + jax init (timm's abs-win defaults) let a from-scratch full-grid model train at all
        DemoModel("hiera-demo-full", "hiera_tiny_224", dict(BASE_ARGS, init_values=1e-5, weight_init="jax"),
                  "full-grid learned pos_embed (MAE-style)", lr=2e-3),
        DemoModel("hiera-demo-abswin", "hiera_small_abswin_256", dict(BASE_ARGS, global_pos_size=(4, 4)),
                  "abs-win: 8x8 window embedding tiled per mask unit + 4x4 global embedding", lr=3e-3),
    )
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights (with the torch version and the CPU)."""

    seed: int = 0
    n_train: int = 24000
    epochs: int = 8
    batch_size: int = 32
    lr: float | None = None  # None: the model's own (DemoModel.lr)
    weight_decay: float = 0.05
    warmup_frac: float = 0.05
    label_smoothing: float = 0.1
    rrc_scale: tuple[float, float] = (0.25, 1.0)
    color_jitter: float = 0.4
    hflip: float = 0.0  # a flipped glyph is another character (or none): it would be label noise here
    threads: int = 1
    n_monitor: int = 400
    monitor_every: int = 500  # steps


def _render_train(index: int) -> tuple[bytes, int]:
    return render_jpeg(TRAIN_SEED, index)


def render_monitor_set(cfg: TrainConfig, spec: "DemoModel") -> tuple[torch.Tensor, torch.Tensor]:
    """The monitor split through timm's eval transform at the native size: (images, labels)."""
    from timm.data import create_transform

    tf = create_transform(input_size=(3, NATIVE, NATIVE), crop_pct=spec.pretrained_cfg["crop_pct"],
                          interpolation=spec.pretrained_cfg["interpolation"])
    xs, ys = [], []
    for index in range(cfg.n_monitor):
        data, label = render_jpeg(MONITOR_SEED, index)
        with Image.open(io.BytesIO(data)) as img:
            xs.append(tf(img.convert("RGB")))
        ys.append(label)
    return torch.stack(xs), torch.tensor(ys)


@torch.no_grad()
def top1(net: torch.nn.Module, monitor: tuple[torch.Tensor, torch.Tensor], device: str = "cpu") -> float:
    net.eval()
    x, y = monitor
    correct = sum(int((net(x[i:i + 100].to(device)).argmax(1).cpu() == y[i:i + 100]).sum()) for i in range(0, len(y), 100))
    return correct / len(y)


def render_train_set(cfg: TrainConfig, processes: int = 1) -> list[tuple[bytes, int]]:
    """The training images as JPEG bytes (decoded again at every epoch, as files on disk would be)."""
    if processes <= 1:
        return [_render_train(i) for i in range(cfg.n_train)]
    from multiprocessing import Pool

    with Pool(processes) as pool:
        return pool.map(_render_train, range(cfg.n_train), chunksize=64)


class JpegDataset(torch.utils.data.Dataset):
    def __init__(self, items: list[tuple[bytes, int]], transform: Callable) -> None:
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        data, label = self.items[i]
        with Image.open(io.BytesIO(data)) as img:
            return self.transform(img.convert("RGB")), label


def train_transform(cfg: TrainConfig, spec: DemoModel):
    from timm.data import create_transform

    return create_transform(input_size=(3, NATIVE, NATIVE), is_training=True, scale=cfg.rrc_scale,
                            hflip=cfg.hflip, color_jitter=cfg.color_jitter,
                            interpolation=spec.pretrained_cfg["interpolation"])


def build(spec: DemoModel, seed: int) -> torch.nn.Module:
    import timm

    torch.manual_seed(seed)
    return timm.create_model(spec.arch, pretrained=False, img_size=NATIVE, num_classes=len(class_names()),
                             **spec.model_args)


def lr_at(step: int, total: int, cfg: TrainConfig, peak: float) -> float:
    """Linear warm-up, then cosine decay to zero."""
    warm = max(1, int(cfg.warmup_frac * total))
    if step < warm:
        return peak * (step + 1) / warm
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def train(spec: DemoModel, cfg: TrainConfig, items: list[tuple[bytes, int]], log: Callable[[str], None] = print,
          device: str = "cpu", workers: int = 0, on_epoch: Callable[[int, torch.nn.Module], None] | None = None,
          monitor: tuple[torch.Tensor, torch.Tensor] | None = None, history: list[dict] | None = None) -> torch.nn.Module:
    """Train one demo model from scratch; deterministic for a seed, torch version and CPU.

    With ``monitor`` (see :func:`render_monitor_set`), its top-1 is logged every ``cfg.monitor_every``
    steps and at the end, and appended to ``history``.
    """
    torch.set_num_threads(cfg.threads)
    net = build(spec, cfg.seed).to(device)
    peak = cfg.lr if cfg.lr is not None else spec.lr
    # decay only matrices: norms, biases and position embeddings stay free
    decay = [p for n, p in net.named_parameters() if p.ndim >= 2 and "pos_embed" not in n]
    rest = [p for n, p in net.named_parameters() if not (p.ndim >= 2 and "pos_embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=peak)
    loader = torch.utils.data.DataLoader(
        JpegDataset(items, train_transform(cfg, spec)), batch_size=cfg.batch_size, shuffle=True, drop_last=True,
        num_workers=workers, generator=torch.Generator().manual_seed(cfg.seed),
    )
    import random

    random.seed(cfg.seed)  # timm's random-resized crop draws from python's random
    total = cfg.epochs * len(loader)
    step, t0 = 0, time.time()
    net.train()
    for epoch in range(cfg.epochs):
        losses, correct, seen = [], 0, 0
        for x, y in loader:
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, cfg, peak)
            x, y = x.to(device), y.to(device)
            logits = net(x)
            loss = torch.nn.functional.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            step += 1
            if monitor is not None and (step % cfg.monitor_every == 0 or step == total):
                acc = top1(net, monitor, device)
                net.train()
                log(f"{spec.name} step {step}/{total} (epoch {epoch + 1}): loss {np.mean(losses[-cfg.monitor_every:]):.3f}, "
                    f"monitor top-1 {acc:.3f}, {time.time() - t0:.0f} s")
                if history is not None:
                    history.append({"step": step, "loss": float(np.mean(losses[-cfg.monitor_every:])),
                                    "monitor_top1": acc, "seconds": round(time.time() - t0, 1)})
        log(f"{spec.name} epoch {epoch + 1}/{cfg.epochs}: loss {np.mean(losses):.3f}, "
            f"train top-1 {correct / seen:.3f}, {time.time() - t0:.0f} s")
        if on_epoch is not None:
            on_epoch(epoch, net)
            net.train()
    return net.eval()
