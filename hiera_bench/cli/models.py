"""``hiera-bench models``: the Hiera checkpoints timm knows, with what matters for a size sweep."""

from __future__ import annotations

import typer

from .app import app, out


@app.command()
def models(
    all_tags: bool = typer.Option(False, "--all", help="Also list MAE pre-training checkpoints without a classifier."),
) -> None:
    """List Hiera names, aliases, native size, crop_pct, position-embedding kind and license."""
    import timm
    import torch
    from rich.table import Table

    from ..models import ALIASES
    from ..published import SOURCE, TOLERANCE, published

    by_target = {v: k for k, v in ALIASES.items()}
    table = Table(title="Hiera checkpoints (timm)", title_justify="left")
    for col in ("name", "alias", "native", "crop_pct", "pos-embed", "classes", "published top-1", "license"):
        table.add_column(col, justify="right" if col == "published top-1" else "left")
    for name in sorted(timm.list_pretrained("hiera_*")):
        if name.startswith("hieradet"):
            continue
        cfg = timm.models.get_pretrained_cfg(name)
        if cfg.num_classes == 0 and not all_tags:
            continue
        with torch.device("meta"):
            net = timm.create_model(name, pretrained=False)
        kind = "abswin (global+window)" if getattr(net, "pos_embed_win", None) is not None else "full grid"
        license_ = cfg.license or ""
        style = "yellow" if "nc" in license_.lower() else ""
        pub = published(name)
        top1 = "" if pub is None else f"{pub['top1']:.3f} @{int(pub['img_size'])} crop {pub['crop_pct']:g}"
        table.add_row(name, by_target.get(name, ""), str(cfg.input_size[-1]), f"{cfg.crop_pct:g}", kind,
                      str(cfg.num_classes), top1, f"[{style}]{license_}[/{style}]" if style else license_)
    out.print(table)
    out.print(f"published top-1: ImageNet-1k val as timm measured it ({SOURCE}); a sweep at that size and crop "
              f"on all 50,000 images is held against it (within {TOLERANCE:g} points).", markup=False)
    out.print("cc-by-nc-4.0: non-commercial use only (the MAE weights from Meta).", markup=False)
