"""``hiera-bench inspect``: a checkpoint's position-embedding structure and a Figure-1 style plot of the schemes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import MODEL_HELP, app, err, one_model, out


@app.command()
def inspect(
    model_arg: Optional[str] = typer.Argument(None, metavar="[MODEL]", help="The model, as --model (kept for older scripts)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", metavar="MODEL", help=MODEL_HELP),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", metavar="PATH", help="Local weights: .safetensors, .pth/.pt/.bin, or a hub-style folder."),
    res: Optional[int] = typer.Option(None, "--res", "-r", metavar="PX", help="Size (px) to rewrite the embedding to. Default: 1.5x native, rounded up to the stride."),
    channels: Optional[str] = typer.Option(None, "--channels", metavar="I,J,K", help="Channels to draw, e.g. 0,5,9. Default: the 3 of largest variance."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", metavar="DIR", help="Folder for the PNG, SVG and JSON. Default: results/<model>/inspect/."),
    global_size: Optional[int] = typer.Option(None, "--global-size", metavar="SIDE", help="Global grid side for the abswin fit of full-grid checkpoints (as in sweep)."),
) -> None:
    """Print MODEL's position-embedding structure; draw it at native size, after interp and after abswin to --res."""
    from ..inspect import inspect_folder, inspect_model, parse_channels, write_inspection

    if out_dir is not None and res is not None:
        inspect_folder(res).refuse_foreign(out_dir)  # before the model loads: the user's files decide in a second
    chosen = parse_channels(channels) if channels is not None else None
    report, fig = inspect_model(one_model(model_arg, model), checkpoint, res, chosen, global_size=global_size)
    if global_size is not None and report.pos_embed_kind == "abswin":
        err.print("note: --global-size only applies to full-grid checkpoints; this one learned its own split",
                  markup=False)
    target = out_dir or Path("results") / report.model / "inspect"
    paths = write_inspection(report, fig, inspect_folder(report.size).claim(target))
    for line in summary_lines(report):
        out.print(line, markup=False, soft_wrap=True)
    out.print(f"wrote {', '.join(str(p) for p in paths)}", markup=False, soft_wrap=True)


def _xy(pair) -> str:
    return f"{pair[0]}x{pair[1]}"


def summary_lines(report) -> list[str]:
    """The printed report, one fact a line."""
    kind = {"full": "full token grid (one learned embedding per token)",
            "abswin": "abs-win (learned global + window embeddings)"}[report.pos_embed_kind]
    px = report.patch_stride
    lines = [
        f"model            {report.model}",
        f"embedding        {kind}",
        f"native size      {report.native_size} px (patch stride {px}, input stride {report.input_stride})",
        f"token grid       {_xy(report.token_grid)}",
        f"mask-unit grid   {_xy(report.mask_grid)}",
        f"window size      {_xy(report.window_size)} tokens ({report.window_size[0] * px} px)",
        f"global size      {_xy(report.global_size)}" + ("" if report.pos_embed_kind == "abswin" else " (least-squares fit)"),
        f"valid sizes      {', '.join(map(str, report.valid_sizes))} (0.5x..2x native)",
    ]
    if report.energy is not None:
        e = report.energy
        lines.append(f"energy split     global {e['global']:.1%}, window {e['window']:.1%}, shared {e['cross']:.1%}, "
                     f"residual {e['residual']:.1%} (explained {report.explained:.1%})")
    lines.append(f"channels drawn   {', '.join(map(str, report.channels))}")
    lines.append("window periodicity (share of energy repeating with the window period; mean window match = "
                 "cosine of each window to the native window pattern):")
    for view in report.views.values():
        lines.append(f"  {view.name:<7} @{view.size:<5} periodicity {view.periodicity:.3f}   "
                     f"mean window match {view.mean_window_match:.3f}")
    return lines
