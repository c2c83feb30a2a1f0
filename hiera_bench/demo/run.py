"""``hiera-bench demo``: the real sweep on the two shipped checkpoints and the generated val split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..sweep.config import Quiet
from . import DEMO_INSPECT, DEMO_RES, checkpoint_dirs, val_folder

#: The checkpoint whose position embedding the demo draws: the abs-win one, whose window embedding is its own.
INSPECTED = "hiera-demo-abswin"


@dataclass
class DemoResult:
    table: pd.DataFrame  # every model's tidy rows
    out: Path
    runs: dict[str, Path]
    plots: list[Path]
    report: pd.DataFrame | None = None  # the runs merged and annotated as `hiera-bench report` does (one pivot)
    inspection: Any = None  # hiera_bench.inspect.Inspection of INSPECTED at DEMO_INSPECT px


class Said(Quiet):
    """No bar; a sweep's messages through the demo's own ``log``."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log  # type: ignore[method-assign]


def run_demo(out: Path, device: str = "cpu", progress_factory: Callable[[], Any] | None = None,
             log: Callable[[str], None] = print, data_root: Path | None = None,
             checkpoints: dict[str, Path] | None = None) -> DemoResult:
    """Sweep every shipped checkpoint over :data:`DEMO_RES` x both schemes into ``out/<checkpoint>/``.

    Writes the combined ``results.csv``, ``summary.md`` and ``plots/`` into ``out``: the report's figures, the
    inspect figure of :data:`INSPECTED` at :data:`DEMO_INSPECT` px (``posembed-<R>.png``) and both side by side
    (``demo.png``).
    """
    from ..data.shared import SharedDecodes
    from ..sweep import SweepConfig, run_sweep
    from ..errors import UserError
    from ..io import atomic_write_text

    out = demo_folder().claim(Path(out))
    ckpts = checkpoints if checkpoints is not None else checkpoint_dirs()
    if not ckpts:
        raise UserError("the demo checkpoints are missing from the installed package; reinstall hiera-bench "
                        "or train them with benchmarks/train_demo.py")
    data = val_folder(data_root)
    log(f"demo: held-out generated set at {data}")
    tables, runs = [], {}
    with SharedDecodes(len(ckpts), log=log) as shared:  # the checkpoints share their preprocessing: one decode
        for name, folder in ckpts.items():
            progress = progress_factory() if progress_factory else Said(log)
            cfg = SweepConfig(checkpoint=str(folder), data=str(data), res=DEMO_RES, schemes="interp,abswin",
                              out=str(Path(out) / name), device=device, force=True, command="hiera-bench demo",
                              plots=False)  # the demo draws its own figures of both
            try:
                result = run_sweep(cfg, progress, shared)
            finally:
                if progress is not None and hasattr(progress, "stop"):
                    progress.stop()
            table = result.table.copy()
            table.insert(0, "demo_checkpoint", name)
            tables.append(table)
            runs[name] = result.out
    combined = pd.concat(tables, ignore_index=True)
    atomic_write_text(out / "results.csv", combined.to_csv(index=False))
    report = _report(list(runs.values()))
    inspection, inspect_paths = _inspect(ckpts, out / "plots")
    atomic_write_text(out / "summary.md", summary_markdown(combined, report, inspection))
    plots = _plot(report, out, log) + inspect_paths
    plots += _side_by_side(plots, out / "plots" / "demo.png")
    return DemoResult(table=combined, out=out, runs=runs, plots=plots, report=report, inspection=inspection)


#: The demo summary's first line, which also tells a demo folder of an older hiera-bench (before its marker).
SUMMARY_HEADING = "# hiera-bench demo"


def demo_folder():
    """The demo's ``--out``: its combined table, summary and figures (each checkpoint's run folder is its own)."""
    from ..io import MARKERS, OwnedFolder, first_line_is
    from ..plots import figure_files

    figures = figure_files() + (f"posembed-{DEMO_INSPECT}.png", f"posembed-{DEMO_INSPECT}.svg",
                                f"inspect-{DEMO_INSPECT}.json", "demo.png")
    return OwnedFolder(MARKERS["demo"], "--out", ("results.csv", "summary.md") + tuple(f"plots/{f}" for f in figures),
                       earlier=first_line_is("summary.md", SUMMARY_HEADING))


def summary_markdown(table: pd.DataFrame, report: pd.DataFrame | None = None, inspection: Any = None) -> str:
    """One pivot of both checkpoints (each scheme's top-1 by size, abswin − interp per size), the headlines,
    the inspected window periodicity, and a short how-to-read."""
    from ..pivot import markdown, pivot

    from .shapes import class_names

    n = len(class_names())
    parts = [SUMMARY_HEADING + "\n",
             f"Two tiny Hiera models trained at 128 px only (random-resized crops) on generated dot-matrix glyphs "
             f"({n} classes, chance {1 / n:.4f}), evaluated on a held-out generated split at sizes around their native "
             "one. `interp` resamples the whole position-embedding grid (stretching the window pattern); `abswin` "
             "tiles the window embedding per mask unit and resizes only the global part.\n"]
    if report is not None:
        parts.append(markdown(pivot(report)))
        parts.append("\n".join(f"- {line}" for line in contrast_lines(report)) + "\n")
    else:
        for name, part in table.groupby("demo_checkpoint", sort=False):
            parts.append(f"## {name}\n")
            parts.append(markdown(pivot(part.drop(columns=["demo_checkpoint"]))))
    if inspection is not None:
        parts.append(f"\n## Position embedding of {inspection.model} (`hiera-bench inspect`)\n")
        parts.append("```\n" + "\n".join(inspect_lines(inspection)) + "\n```\n")
    return "\n".join(parts)


def contrast_lines(report: pd.DataFrame, size: int = DEMO_INSPECT) -> list[str]:
    """Per checkpoint, at ``size``: each scheme's top-1 and change vs native, and abswin − interp with its paired
    95 % CI and exact McNemar p (the numbers of the pivot's row, spelled out)."""
    from ..pivot import fmt

    lines = []
    for label, part in report[(report["img_size"] == size) & (report["status"] == "ok")].groupby("label", sort=False):
        rows = {r["scheme"]: r for _, r in part.iterrows()}
        if not {"abswin", "interp"} <= set(rows):
            continue
        a, i = rows["abswin"], rows["interp"]
        rel = 100.0 * (size / a["native_size"] - 1.0)
        lines.append(
            f"{label} @{size} ({rel:+.0f} %): abswin {a['top1']:.3f} ({a['top1_delta_vs_native']:+.3f} vs native), "
            f"interp {i['top1']:.3f} ({i['top1_delta_vs_native']:+.3f}); abswin − interp {a['scheme_delta']:+.3f}, "
            f"95 % CI [{fmt(a['scheme_delta_ci_low'], '+.2f')}, {fmt(a['scheme_delta_ci_high'], '+.2f')}], "
            f"McNemar p={fmt(a['mcnemar_p'], '.2g')} ({int(a['mcnemar_b'])} images right only under abswin, "
            f"{int(a['mcnemar_c'])} only under interp)")
    return lines


def inspect_lines(inspection: Any) -> list[str]:
    from ..cli.inspect import summary_lines

    return summary_lines(inspection)


def _report(runs: list[Path]) -> pd.DataFrame | None:
    try:
        from ..report import build
    except ImportError:  # an installation without the report module still gets its tables
        return None
    return build(runs)


def _inspect(ckpts: dict[str, Path], out: Path) -> tuple[Any, list[Path]]:
    """``hiera-bench inspect`` of the abs-win checkpoint at :data:`DEMO_INSPECT` px into ``out``."""
    if INSPECTED not in ckpts:
        return None, []
    from ..inspect import inspect_model, write_inspection

    report, fig = inspect_model(checkpoint=ckpts[INSPECTED], size=DEMO_INSPECT)
    return report, [p for p in write_inspection(report, fig, out) if p.suffix in (".png", ".json")]


def _plot(report: pd.DataFrame | None, out: Path, log: Callable[[str], None]) -> list[Path]:
    """The report's figures (top-1 vs size with abswin − interp, top-1 vs GFLOPs), both checkpoints overlaid,
    under ``out/plots``."""
    if report is None:
        return []
    from ..plots import write_plots

    return [p for p in write_plots(report, out / "plots") if p.suffix == ".png"]


def _side_by_side(plots: list[Path], target: Path) -> list[Path]:
    """The accuracy plot and the inspect figure next to each other in one PNG."""
    size = next((p for p in plots if p.name == "top1-vs-size.png"), None)
    embed = next((p for p in plots if p.name.startswith("posembed-") and p.suffix == ".png"), None)
    if size is None or embed is None:
        return []
    import matplotlib.image as mpimg
    from matplotlib.figure import Figure

    from ..inspect import figure_bytes
    from ..io import atomic_write_bytes

    images = [mpimg.imread(str(size)), mpimg.imread(str(embed))]
    height = 7.0
    widths = [img.shape[1] / img.shape[0] * height for img in images]
    fig = Figure(figsize=(sum(widths), height), layout="constrained")
    axes = fig.subplots(1, 2, width_ratios=widths)
    for ax, img in zip(axes, images):
        ax.imshow(img)
        ax.set_axis_off()
    atomic_write_bytes(target, figure_bytes(fig, "png"))
    return [target]
