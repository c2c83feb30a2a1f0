"""Train the two demo checkpoints shipped in hiera_bench/demo/checkpoints/ (reproducible by seed).

    .venv/bin/python benchmarks/train_demo.py            # both models, one after the other, CPU, 1 thread
    .venv/bin/python benchmarks/train_demo.py --models hiera-demo-abswin --out /tmp/ckpts

Each model: 24000 generated training images (seed 1), 8 epochs (6000 steps) of timm's train transform at
128 px only (random-resized crop, colour jitter, no flip), AdamW + warm-up + cosine, one CPU thread;
a monitor split (seed 3) is scored every 500 steps. Then its top-1 at 128 px is measured with the
real sweep on the held-out split (seed 2) and written into its MODEL_CARD.md; train.json records
the recipe, the machine, the seconds and the monitor history. Same seed, torch version, thread
count and CPU give the same weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hiera_bench.demo import CHECKPOINTS, VAL_IMAGES, VAL_SEED, class_names, val_folder  # noqa: E402
from hiera_bench.demo.shapes import GENERATOR_VERSION  # noqa: E402
from demo_train import (DEMO_MODELS, MONITOR_SEED, NATIVE, TRAIN_SEED, TrainConfig, render_monitor_set,  # noqa: E402
                        render_train_set, train)

CARD = """# {name}

A tiny timm Hiera trained from scratch by hiera-bench for its offline demo (`hiera-bench demo`).
It is a teaching object, not a useful classifier: it classifies the project's procedural dot-matrix glyphs
({n_classes} classes: {classes}).

| | |
|---|---|
| architecture | timm `{arch}` with `model_args` {model_args} |
| position embedding | {pos_embed} |
| parameters | {params:,} ({mbytes:.2f} MB fp32 safetensors) |
| native size | {native} px (trained only there: no multi-size training) |
| eval preprocessing | timm eval transform, crop_pct {crop_pct}, {interpolation} |
| training data | {n_train} generated images, generator v{gen}, seed {train_seed}; timm train transform (random-resized crop scale {rrc}, no flip, colour jitter {jitter}) |
| recipe | {epochs} epochs ({steps} steps), batch {batch}, AdamW lr {lr} ({warm:.0%} warm-up, cosine), weight decay {wd}, label smoothing {ls}, seed {seed} |
| held-out accuracy | **top-1 {top1:.3f}** at {native} px on {n_val} generated val images (seed {val_seed}); chance is {chance:.3f}; monitor split (seed {monitor_seed}, {n_monitor} images) at the end of training {monitor:.3f} |
| trained on | {device}, torch {torch}, timm {timm}, {seconds:.0f} s |
| sha256 (model.safetensors) | `{sha}` |
| license | Apache-2.0 (same as hiera-bench) |

Reproduce (same seed, torch version and CPU give the same weights):

```
{command}
```
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(DEMO_MODELS), help="comma-separated: " + ", ".join(DEMO_MODELS))
    p.add_argument("--out", type=Path, default=CHECKPOINTS, help="folder for <model>/ checkpoint folders")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--n-train", type=int, default=TrainConfig.n_train)
    p.add_argument("--threads", type=int, default=TrainConfig.threads)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: each model's own)")
    p.add_argument("--device", default="cpu", help="cpu (the shipped weights) or cuda")
    p.add_argument("--no-card", action="store_true", help="train and save only (the card's top-1 needs `datasets`)")
    p.add_argument("--cards-only", action="store_true", help="re-measure top-1 and rewrite MODEL_CARD.md of trained folders")
    return p.parse_args(argv)


def machine(device: str, threads: int) -> str:
    """Where the weights were trained, as train.json records it: the device, CPU model, cores and load."""
    import os
    import platform

    import torch

    if device != "cpu":
        return f"{device} ({torch.cuda.get_device_name(device)})" if torch.cuda.is_available() else device
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        model = names[0] if names else model
    load = ", load average {:.1f} at the end".format(os.getloadavg()[0]) if hasattr(os, "getloadavg") else ""
    return f"cpu, {threads} thread{'s' if threads != 1 else ''} ({model}; {os.cpu_count()} cores{load})"


def native_top1(folder: Path, data: Path) -> float:
    """Top-1 at the native size, measured by the benchmark's own sweep (timm eval preprocessing)."""
    from hiera_bench.sweep import SweepConfig, run_sweep

    with tempfile.TemporaryDirectory() as tmp:
        result = run_sweep(SweepConfig(checkpoint=str(folder), data=str(data), res=str(NATIVE), schemes="interp",
                                       out=tmp, device="cpu", workers=0, command="train_demo native check",
                                       plots=False))
    return float(result.table["top1"].iloc[0])


def main(argv: list[str] | None = None) -> None:
    import timm
    import torch

    from hiera_bench.testing import save_checkpoint_folder

    args = parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in DEMO_MODELS]
    if unknown:
        sys.exit(f"unknown demo model(s) {unknown}; choose from {list(DEMO_MODELS)}")
    if args.cards_only:
        data = val_folder()
        for name in names:
            write_card(args.out / name, data)
        return
    cfg = TrainConfig(seed=args.seed, epochs=args.epochs, n_train=args.n_train, threads=args.threads, lr=args.lr)
    t0 = time.time()
    items = render_train_set(cfg, processes=args.threads)
    print(f"rendered {len(items)} training images in {time.time() - t0:.0f} s", flush=True)
    data = None if args.no_card else val_folder()
    command = "python benchmarks/train_demo.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    for name in names:
        spec = DEMO_MODELS[name]
        history: list[dict] = []
        monitor = render_monitor_set(cfg, spec)
        t1 = time.time()
        net = train(spec, cfg, items, device=args.device, monitor=monitor, history=history).cpu()
        folder = save_checkpoint_folder(net, args.out / name, spec.arch, spec.model_args, label_names=class_names(),
                                        model_name=name, license="Apache-2.0", **spec.pretrained_cfg)
        provenance = {
            "name": name, "seconds": round(time.time() - t1, 1), "command": command.strip(),
            "device": machine(args.device, args.threads),
            "torch": torch.__version__, "timm": timm.__version__, "params": sum(p.numel() for p in net.parameters()),
            "train_config": dataclasses.asdict(cfg), "lr": cfg.lr or spec.lr,
            "steps": history[-1]["step"], "monitor_seed": MONITOR_SEED, "history": history,
        }
        (folder / "train.json").write_text(json.dumps(provenance, indent=1) + "\n")
        print(f"{name}: trained in {provenance['seconds']:.0f} s -> {folder}", flush=True)
        if not args.no_card:
            write_card(folder, data)


def write_card(folder: Path, data: Path) -> None:
    """MODEL_CARD.md from the folder's train.json and top-1 measured now by the real sweep."""
    meta = json.loads((folder / "train.json").read_text())
    spec, tc = DEMO_MODELS[meta["name"]], meta["train_config"]
    weights = folder / "model.safetensors"
    top1 = native_top1(folder, data)
    card = CARD.format(
        name=meta["name"], n_classes=len(class_names()), classes=", ".join(class_names()), arch=spec.arch,
        model_args=dict(spec.model_args), pos_embed=spec.pos_embed, params=meta["params"],
        mbytes=weights.stat().st_size / 1e6, native=NATIVE, crop_pct=spec.pretrained_cfg["crop_pct"],
        interpolation=spec.pretrained_cfg["interpolation"], n_train=tc["n_train"], gen=GENERATOR_VERSION,
        train_seed=TRAIN_SEED, rrc=tuple(tc["rrc_scale"]), jitter=tc["color_jitter"], epochs=tc["epochs"],
        steps=meta["steps"], warm=tc["warmup_frac"], batch=tc["batch_size"], lr=meta["lr"],
        monitor_seed=meta["monitor_seed"], n_monitor=tc["n_monitor"], monitor=meta["history"][-1]["monitor_top1"],
        wd=tc["weight_decay"], ls=tc["label_smoothing"], seed=tc["seed"], top1=top1 / 100.0, n_val=VAL_IMAGES,
        val_seed=VAL_SEED, chance=1 / len(class_names()), device=meta["device"], torch=meta["torch"],
        timm=meta["timm"], seconds=meta["seconds"], sha=hashlib.sha256(weights.read_bytes()).hexdigest(),
        command=meta["command"],
    )
    (folder / "MODEL_CARD.md").write_text(card)
    print(f"{meta['name']}: top-1 {top1:.1f} % at {NATIVE} px (chance {100 / len(class_names()):.1f} %), "
          f"{weights.stat().st_size / 1e6:.2f} MB", flush=True)

if __name__ == "__main__":
    main()
