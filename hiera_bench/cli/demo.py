"""``hiera-bench demo``: the whole product offline (interim: a tiny random-init Hiera on generated images)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from .app import app, err


@app.command()
def demo(out_dir: Path = typer.Option(Path("results/demo"), "--out", "-o", help="Where to write the results.")) -> None:
    """Run a real sweep on a tiny Hiera and a generated image folder, offline."""
    from ..engine import SweepConfig, run_sweep
    from ..testing import TINY_ARGS, WNIDS, make_class_folder, save_checkpoint_folder, tiny_hiera
    from .sweep import RichProgress, show_result

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint_folder(tiny_hiera(num_classes=3), Path(tmp) / "ckpt", "hiera_tiny_224", TINY_ARGS,
                                      label_names=sorted(WNIDS))
        data = make_class_folder(Path(tmp) / "val", per_class=8)
        err.print("demo: tiny random-init Hiera (64 px) on 24 generated images", markup=False)
        progress = RichProgress()
        try:
            result = run_sweep(SweepConfig(checkpoint=str(ckpt), data=str(data), res="32:128:32",
                                           out=str(out_dir), force=True, command="hiera-bench demo"), progress)
        finally:
            progress.stop()
    show_result(result, as_json=False)
