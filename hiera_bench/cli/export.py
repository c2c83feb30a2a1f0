"""``hiera-bench export``: write a model rewritten for one input size as a plain timm checkpoint folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import MODEL_HELP, app, one_model, err, out


@app.command()
def export(
    model_arg: Optional[str] = typer.Argument(None, metavar="[MODEL]", help="The model, as --model (kept for older scripts)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", metavar="MODEL", help=MODEL_HELP),
    res: str = typer.Option(..., "--res", "-r", metavar="PX", help="The one input size (px) to export for, e.g. 320."),
    scheme: str = typer.Option(..., "--scheme", "-s", metavar="SCHEME", help="Position-embedding scheme: abswin or interp."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", metavar="PATH", help="Local weights: .safetensors, .pth/.pt/.bin, or a hub-style folder."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", metavar="DIR", help="Export folder. Default: exports/<model>-<res>-<scheme>/."),
    global_size: Optional[int] = typer.Option(None, "--global-size", metavar="SIDE", help="Global grid side for the abswin fit of full-grid checkpoints (as in sweep)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing, non-empty export folder."),
) -> None:
    """Write model.safetensors + config.json for MODEL rewritten to --res with --scheme, loadable with plain timm."""
    from ..export import export_model

    result = export_model(one_model(model_arg, model), res, scheme, checkpoint=checkpoint, out=out_dir, force=force,
                          global_size=global_size)
    if global_size is not None and result.pos_embed_kind == "abswin":
        err.print("note: --global-size only applies to full-grid checkpoints; this one learned its own split",
                  markup=False)
    if result.size_change_only:
        err.print(f"note: {result.name} learned an abs-win embedding; --scheme abswin at {result.size} px is only a "
                  f"size change (plain timm does the same with img_size={result.size}); written anyway as a "
                  "full-grid checkpoint", markup=False, soft_wrap=True)
    out.print(f"wrote {result.out}/model.safetensors and config.json: {result.name} at {result.size} px "
              f"(native {result.native_size}), scheme {result.scheme}", markup=False)
    out.print(f"load with plain timm: {result.timm_call()}", markup=False)
