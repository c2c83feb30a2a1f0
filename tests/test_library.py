"""hiera-bench used from Python, as a notebook or a script does: natural argument types, numbers that follow
the code that made them, and the caller's process state (torch, datasets, warnings, logging) left as it was."""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from hiera_bench.errors import UserError
from hiera_bench.posembed import get_scheme, register_scheme
from hiera_bench.posembed.schemes import _SCHEMES
from hiera_bench.sweep import Quiet, SweepConfig, run_sweep


def _config(ckpt: Path, data: Path, out: Path, **kw) -> SweepConfig:
    return SweepConfig(**{"checkpoint": str(ckpt), "data": str(data), "out": str(out), "res": "64,96", "batch_size": 4,
                          "workers": 0, "device": "cpu", "plots": False, **kw})


def _cell_fields(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*/cell.json"))]


@pytest.fixture
def own_scheme():
    """A scheme registered outside hiera-bench (a researcher's), removed again after the test."""
    yield "mine"
    _SCHEMES.pop("mine", None)


def test_a_scheme_of_ones_own_changed_under_the_same_name_is_measured_again(full_ckpt, class_folder, tmp_path,
                                                                           own_scheme):
    interp = get_scheme("interp").fn

    @register_scheme(own_scheme, "interp, as a researcher first wrote it")
    def first(spec, token_grid, mask_grid):
        return interp(spec, token_grid, mask_grid)

    cfg = _config(full_ckpt, class_folder, tmp_path / "run", schemes=f"interp,{own_scheme}")
    before = run_sweep(cfg).table.set_index(["scheme", "img_size"])
    assert before.loc[(own_scheme, 96), "nll"] == pytest.approx(before.loc[("interp", 96), "nll"], abs=1e-6)

    @register_scheme(own_scheme, "edited: the embedding left out")
    def edited(spec, token_grid, mask_grid):
        return interp(spec, token_grid, mask_grid) * 0

    again = run_sweep(cfg)
    assert again.run["ranks"][0]["evaluated_images"] > 0
    after = again.table.set_index(["scheme", "img_size"])
    assert after.loc[(own_scheme, 96), "nll"] != pytest.approx(before.loc[(own_scheme, 96), "nll"], abs=1e-3)
    # the built-in scheme's cells are found again, their keys as before (hiera-bench versions its own code)
    assert (after.loc[("interp", 96), "cell_key"] == before.loc[("interp", 96), "cell_key"])
    shown = pd.read_csv(tmp_path / "run" / "results.csv").set_index(["scheme", "img_size"])
    assert shown.loc[(own_scheme, 96), "nll"] == pytest.approx(after.loc[(own_scheme, 96), "nll"], abs=1e-9)
    fields = _cell_fields(tmp_path / "run")
    assert all("embedding" not in f for f in fields if f["scheme"] == "interp")
    assert len({f["embedding"] for f in fields if f["scheme"] == own_scheme and f["img_size"] == 96}) == 2


def test_cells_of_an_earlier_version_of_ones_own_scheme_leave_the_views(full_ckpt, class_folder, tmp_path,
                                                                           own_scheme):
    """The scheme edited, then swept at some of the sizes only: the old code's cell at the other size stood in the
    views in one series with the new code's cells, its Δ paired with the new native cell, and check held it (adv28)."""
    interp = get_scheme("interp").fn

    @register_scheme(own_scheme, "interp, as first written")
    def first(spec, token_grid, mask_grid):
        return interp(spec, token_grid, mask_grid)

    run_sweep(_config(full_ckpt, class_folder, tmp_path / "run", schemes=f"interp,{own_scheme}", res="64,96,128"))

    @register_scheme(own_scheme, "edited: the embedding left out")
    def edited(spec, token_grid, mask_grid):
        return interp(spec, token_grid, mask_grid) * 0

    again = run_sweep(_config(full_ckpt, class_folder, tmp_path / "run", schemes=f"interp,{own_scheme}", res="64,96"))
    assert again.run["cells_of_other_scheme_code"] == 1
    shown = pd.read_csv(tmp_path / "run" / "results.csv")
    assert sorted(shown.loc[shown["scheme"] == own_scheme, "img_size"]) == [64, 96]  # 128 px of the old code: out
    assert sorted(shown.loc[shown["scheme"] == "interp", "img_size"]) == [64, 96, 128]  # hiera-bench's own: kept
    assert len(list((tmp_path / "run" / "cells").glob("*/row.json"))) == 6 + 2  # and every measurement kept

    @register_scheme(own_scheme, "the first code again")
    def restored(spec, token_grid, mask_grid):
        return interp(spec, token_grid, mask_grid)

    back = run_sweep(_config(full_ckpt, class_folder, tmp_path / "run", schemes=f"interp,{own_scheme}", res="96"))
    assert back.run["ranks"][0]["evaluated_images"] == 0  # its cells were kept: found again
    shown = pd.read_csv(tmp_path / "run" / "results.csv")
    assert sorted(shown.loc[shown["scheme"] == own_scheme, "img_size"]) == [64, 96, 128]

    @register_scheme(own_scheme, "refuses sizes above 96 px now")
    def narrower(spec, token_grid, mask_grid):
        if token_grid[0] > 24:
            raise ValueError("not above 96 px")
        return interp(spec, token_grid, mask_grid)

    # asked for its embedding at 128 px, where its old cells are, it raises: they are not of this code (the sweep
    # ended there in a traceback, after its whole evaluation; adv30)
    narrow = run_sweep(_config(full_ckpt, class_folder, tmp_path / "run", schemes=f"interp,{own_scheme}", res="64,96"))
    assert narrow.run["cells_of_other_scheme_code"] >= 1
    shown = pd.read_csv(tmp_path / "run" / "results.csv")
    assert sorted(shown.loc[shown["scheme"] == own_scheme, "img_size"]) == [64, 96]


def test_python_values_a_caller_naturally_gives_are_taken_and_the_callers_config_is_left_alone(
        full_ckpt, class_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = SweepConfig(checkpoint=full_ckpt, data=Path(class_folder), out="~/run", res=[64, 96], schemes=["interp"],
                      batch_size="4", amp="auto", crop_pct=[0.875], workers=0, device="cpu", plots=False)
    kept = repr(cfg)
    result = run_sweep(cfg)
    assert repr(cfg) == kept  # not filled in by the sweep (a replace(cfg, device="cuda") must not keep fp32)
    assert result.out == tmp_path / "home" / "run" and (tmp_path / "home" / "run" / "results.csv").is_file()
    assert not (Path.cwd() / "~").exists()
    assert sorted(result.table["img_size"]) == [64, 96]
    assert run_sweep(replace(cfg, res=96)).run["ranks"][0]["evaluated_images"] == 0  # found again, through ~
    for field, value in (("limit", 2.5), ("batch_size", 2.5), ("workers", True)):
        with pytest.raises(UserError, match=f"--{field.replace('_', '-')} must be"):
            run_sweep(replace(cfg, **{field: value}))


def test_a_sweep_leaves_the_callers_torch_state_as_it_was(full_ckpt, class_folder, tmp_path):
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        expected = torch.rand(3)
        torch.manual_seed(0)
        result = run_sweep(_config(full_ckpt, class_folder, tmp_path / "run"))
        assert torch.get_default_dtype() == torch.float64
        assert torch.equal(torch.rand(3), expected)
    finally:
        torch.set_default_dtype(torch.float32)
    reference = run_sweep(_config(full_ckpt, class_folder, tmp_path / "fp32-default"))
    assert result.table["top1"].tolist() == reference.table["top1"].tolist()


def test_importing_and_sweeping_leave_datasets_and_warnings_as_the_caller_set_them(full_ckpt, class_folder,
                                                                                    tmp_path):
    import subprocess
    import sys

    import datasets
    from PIL import Image

    imported = subprocess.run([sys.executable, "-c", (
        "import warnings, datasets\n"
        "before = (datasets.logging.get_verbosity(), datasets.utils.are_progress_bars_disabled())\n"
        "import hiera_bench.data, hiera_bench.sweep\n"
        "from PIL import Image\n"
        "assert (datasets.logging.get_verbosity(), datasets.utils.are_progress_bars_disabled()) == before\n"
        "assert not any(f[2] in (Image.DecompressionBombWarning, FutureWarning) for f in warnings.filters), warnings.filters\n"
    )], capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    level, bars = datasets.logging.get_verbosity(), datasets.utils.are_progress_bars_disabled()
    filters = list(warnings.filters)
    run_sweep(_config(full_ckpt, class_folder, tmp_path / "run"))
    assert (datasets.logging.get_verbosity(), datasets.utils.are_progress_bars_disabled()) == (level, bars)
    assert set(warnings.filters) == set(filters)  # a filter the caller had (pytest's own here) is kept
    assert not any(f[2] is Image.DecompressionBombWarning for f in warnings.filters)


def test_the_library_says_what_the_cli_would_through_logging_unless_told_to_be_quiet(abswin_ckpt, class_folder,
                                                                                      tmp_path, caplog):
    cfg = _config(abswin_ckpt, class_folder, tmp_path / "run", global_size=2)
    with caplog.at_level(logging.WARNING, logger="hiera_bench"):
        run_sweep(cfg)
    assert any("--global-size only applies to full-grid checkpoints" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hiera_bench"):
        run_sweep(cfg, Quiet())
    assert not caplog.records


def test_every_sweep_keeps_its_history_file_even_several_in_one_second(full_ckpt, class_folder, tmp_path,
                                                                       monkeypatch):
    cfg = _config(full_ckpt, class_folder, tmp_path / "run", res="64")
    run_sweep(cfg)
    real = time.strftime
    monkeypatch.setattr(time, "strftime", lambda fmt, *t: real(fmt, time.localtime(0)))  # the same second, always
    for label in ("a", "b", "c"):
        run_sweep(replace(cfg, label=label))
    history = [p for p in (tmp_path / "run" / "runs").glob("*.json") if not p.name.endswith(".unfinished.json")]
    assert sorted(json.loads(p.read_text())["label"] for p in history) == ["a", "b", "c", "hiera_tiny_224"]


def test_the_plots_of_a_sweep_show_every_cell_of_its_folder_as_results_csv_does(full_ckpt, class_folder, tmp_path,
                                                                                 monkeypatch):
    import hiera_bench.plots as plots

    drawn = []
    real = plots.write_plots
    monkeypatch.setattr(plots, "write_plots", lambda table, *a, **k: drawn.append(table) or real(table, *a, **k))
    cfg = _config(full_ckpt, class_folder, tmp_path / "run", plots=True)
    run_sweep(cfg)
    run_sweep(replace(cfg, res="128"))
    assert sorted(set(drawn[-1]["img_size"])) == [64, 96, 128]
    shown = pd.read_csv(tmp_path / "run" / "results.csv")
    assert sorted(set(shown["img_size"])) == [64, 96, 128]
    assert (tmp_path / "run" / "plots" / "top1-vs-size.png").is_file()
    run_sweep(replace(cfg, res="96", plots=False, label="no-plots"))
    assert len(drawn) == 2
    assert os.path.getsize(tmp_path / "run" / "plots" / "top1-vs-gflops.png") > 0


def test_a_figure_that_cannot_be_drawn_is_said_and_the_finished_sweep_stands(full_ckpt, class_folder, tmp_path,
                                                                              caplog):
    out = tmp_path / "run"
    run_sweep(_config(full_ckpt, class_folder, out, res="64", plots=True))
    for png in (out / "plots").iterdir():
        png.unlink()
    (out / "plots").rmdir()
    (out / "plots").write_text("not a folder")  # every figure's write fails
    with caplog.at_level(logging.WARNING, logger="hiera_bench"):
        result = run_sweep(_config(full_ckpt, class_folder, out, plots=True))
    assert result.ok and sorted(pd.read_csv(out / "results.csv")["img_size"].unique()) == [64, 96]
    assert any(r.getMessage().startswith("plots/ not drawn (") for r in caplog.records)
    assert not list((out / "runs").glob("*.unfinished.json"))


def test_sweeps_overlapping_in_threads_keep_their_settings_and_give_the_callers_back(full_ckpt, class_folder):
    """Sweep A starts, sweep B starts, A ends while B still runs: B keeps float32 and quiet datasets; the
    caller gets its own settings once both ended (each sweep restoring what it found mixed them up)."""
    from contextlib import ExitStack

    import datasets

    from hiera_bench.sweep.run import state_of_a_sweep

    torch.set_default_dtype(torch.float64)
    try:
        level, filters = datasets.logging.get_verbosity(), list(warnings.filters)
        a, b = ExitStack(), ExitStack()
        a.enter_context(state_of_a_sweep())
        b.enter_context(state_of_a_sweep())
        a.close()
        assert torch.get_default_dtype() == torch.float32
        assert datasets.logging.get_verbosity() == datasets.logging.CRITICAL
        b.close()
        assert torch.get_default_dtype() == torch.float64
        assert (datasets.logging.get_verbosity(), set(warnings.filters)) == (level, set(filters))
    finally:
        torch.set_default_dtype(torch.float32)


def test_validate_config_takes_what_the_sweep_takes(full_ckpt, class_folder):
    import numpy as np

    from hiera_bench.sweep import validate_config

    cfg = SweepConfig(res=range(64, 129, 32), schemes=["interp"], data=Path(class_folder), checkpoint=full_ckpt,
                      batch_size=np.int64(4), device="cpu")
    schemes, device = validate_config(cfg)
    assert (cfg.res, cfg.batch_size, cfg.data, [s.name for s in schemes]) == ("64,96,128", 4, str(class_folder),
                                                                             ["interp"])
    for field, value in (("batch_size", np.float32(2.5)), ("batch_size", np.bool_(True)), ("res", [64.5]),
                         ("limit", np.float64(3.5))):
        with pytest.raises(UserError, match=f"--{field.replace('_', '-')} "):
            validate_config(replace(cfg, **{field: value}))
