"""``hiera-bench demo``: the real sweep on the two shipped checkpoints and the generated val split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from . import DEMO_RES, checkpoint_dirs, val_folder

@dataclass
class DemoResult:
    table: pd.DataFrame  # every model's tidy rows
    out: Path
    runs: dict[str, Path]
    plots: list[Path]


def run_demo(out: Path, device: str = "cpu", progress_factory: Callable[[], Any] | None = None,
             log: Callable[[str], None] = print, data_root: Path | None = None,
             checkpoints: dict[str, Path] | None = None) -> DemoResult:
    """Sweep every shipped checkpoint over :data:`DEMO_RES` x both schemes into ``out/<checkpoint>/``.

    Writes the combined ``results.csv``, ``summary.md`` and ``plots/`` into ``out``.
    """
    from ..sweep import SweepConfig, run_sweep
    from ..errors import UserError
    from ..io import atomic_write_text

    ckpts = checkpoints if checkpoints is not None else checkpoint_dirs()
    if not ckpts:
        raise UserError("the demo checkpoints are missing from the installed package; reinstall hiera-bench "
                        "or train them with benchmarks/train_demo.py")
    data = val_folder(data_root)
    log(f"demo: held-out generated set at {data}")
    tables, runs = [], {}
    for name, folder in ckpts.items():
        progress = progress_factory() if progress_factory else None
        cfg = SweepConfig(checkpoint=str(folder), data=str(data), res=DEMO_RES, schemes="interp,abswin",
                          out=str(Path(out) / name), device=device, force=True, command="hiera-bench demo")
        try:
            result = run_sweep(cfg, progress)
        finally:
            if progress is not None and hasattr(progress, "stop"):
                progress.stop()
        table = result.table.copy()
        table.insert(0, "demo_checkpoint", name)
        tables.append(table)
        runs[name] = result.out
    combined = pd.concat(tables, ignore_index=True)
    out = Path(out)
    atomic_write_text(out / "results.csv", combined.to_csv(index=False))
    atomic_write_text(out / "summary.md", summary_markdown(combined))
    plots = _plot(list(runs.values()), out, log)
    return DemoResult(table=combined, out=out, runs=runs, plots=plots)


def summary_markdown(table: pd.DataFrame) -> str:
    """Both checkpoints' pivots (top-1 by size and scheme) with a short how-to-read."""
    from ..pivot import markdown, pivot

    parts = ["# hiera-bench demo\n",
             "Two tiny Hiera models trained at 128 px on generated shapes (12 classes, chance 0.083), "
             "evaluated on a held-out generated split at sizes around their native one. "
             "`interp` resamples the whole position-embedding grid; `abswin` tiles the window embedding "
             "per mask unit and resizes only the global part.\n"]
    for name, part in table.groupby("demo_checkpoint", sort=False):
        parts.append(f"## {name}\n")
        parts.append(markdown(pivot(part.drop(columns=["demo_checkpoint"]))))
    return "\n".join(parts)


def _plot(runs: list[Path], out: Path, log: Callable[[str], None]) -> list[Path]:
    """The report's figures (top-1 vs size with abswin − interp, top-1 vs GFLOPs), both checkpoints overlaid,
    under ``out/plots``."""
    try:
        from ..plots import write_plots
        from ..report import build
    except ImportError:  # an installation without the report module still gets its tables
        return []
    return [p for p in write_plots(build(runs), out / "plots") if p.suffix == ".png"]
