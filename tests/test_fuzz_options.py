"""Random values for every option of every command, through the real CLI (in-process): exit 0 with correct
output, or one ``error:`` line, exit 2, no traceback.

Each option belongs to a class (:data:`CLASSES`: counts, sizes, shares, choices, paths, flags ...) whose
strategy mixes valid values, edge values and junk. CI draws :data:`fuzzing.EXAMPLES` option sets per command;
``HIERA_BENCH_FUZZ_EXAMPLES=500`` runs a longer search locally. ``--compile`` is left out (minutes per draw).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from hiera_bench.grid import parse_grid
from hiera_bench.errors import UserError

from fuzzing import EXAMPLES, assert_promise

JUNK = ["", " ", "abc", "-1", "1.5", "1e3", "nan", "inf", "99999999999999999999", "☃", "--", "0x10"]
#: the grid a successful draw may sweep: every size at most this (larger valid sizes take minutes on a CPU)
LARGEST = 128


def _small_or_invalid(spec: str) -> bool:
    try:
        grid = parse_grid(spec, 32)
    except UserError:
        return True
    return max(grid.sizes) <= LARGEST and len(grid.skipped) < 64


def _new_folder(prefix: str) -> str:
    """A new folder inside the session's temp folder (conftest removes it at the end, with every draw's)."""
    return tempfile.mkdtemp(prefix=prefix, dir=os.environ["HIERA_BENCH_TESTS_TMP"])


def _values(*valid: str) -> st.SearchStrategy[str]:
    return st.sampled_from([*valid, *JUNK])


@st.composite
def _paths(draw, kinds: tuple[str, ...], empty: bool = True) -> str:
    """A path of one of ``kinds``, or a wrong one made in a new temp folder each draw (``empty``: also "", which
    the shell passes as the current folder: not drawn where the command would write there)."""
    kind = draw(st.sampled_from(kinds + ("missing", "a file", "a folder") + (("empty",) if empty else ())))
    root = Path(_new_folder("hiera-bench-fuzz-"))
    if kind == "missing":
        return str(root / "missing")
    if kind == "a file":
        (root / "file.txt").write_text("not what was asked for\n")
        return str(root / "file.txt")
    if kind == "a folder":
        return str(root)
    if kind == "empty":
        return ""
    return kind  # a valid value, filled in by the test (see _fill)


#: ``--config`` files: valid ones that leave the images a draw selects as they are, and broken ones.
CONFIG_FILES = ['schemes = "interp"', 'res = "64"', 'schemes = ["interp", "abswin"]\nplots = false', "crop-pct = [0.875, 1.0]",
                "", "bogus = 1", "res = [64,", 'batch_size = "x"', "limit = true", "data = {a = 1, b = 2}",
                'model = ["hiera_gigantic"]', "\x00\xff", "global-size = -3", 'config = "loop.toml"']


@st.composite
def _config_files(draw) -> str:
    kind = draw(st.sampled_from(["text", "missing", "a folder"]))
    root = Path(_new_folder("hiera-bench-fuzz-"))
    if kind == "missing":
        return str(root / "missing.toml")
    if kind == "a folder":
        return str(root)
    path = root / "grid.toml"
    path.write_bytes(draw(st.sampled_from(CONFIG_FILES)).encode("latin-1"))
    return str(path)


#: Every class of option value: name -> strategy of the option's value (a string; "" for flags is "absent").
CLASSES: dict[str, Callable[[], st.SearchStrategy[str]]] = {
    "count": lambda: st.one_of(st.integers(-3, 20).map(str), st.sampled_from(JUNK)),
    "batch size": lambda: st.one_of(st.integers(-2, 40).map(str), _values("auto", "AUTO")),
    "workers": lambda: st.one_of(st.integers(-2, 1).map(str), st.sampled_from(JUNK)),
    "share": lambda: st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.floats(0, 1).map(repr),
                               st.sampled_from(JUNK)),
    "points": lambda: st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.floats(0, 5).map(repr),
                                st.sampled_from(JUNK)),
    "sizes": lambda: st.one_of(
        _values("32", "64", "96", "32,64", "32:128:32", "48:128:16", "2080", "2048:2080:32", "64:32:8", "64:"),
        st.text("0123456789:,- ", max_size=10)).filter(_small_or_invalid),
    "single size": lambda: st.one_of(st.integers(-40, 200).map(str), _values("64", "96", "2080", "2049")).filter(
        _small_or_invalid),
    "schemes": lambda: _values("interp", "abswin", "interp,abswin", "abswin,interp", ",", "interp,", "bogus"),
    "scheme": lambda: _values("interp", "abswin", "bogus"),
    "device": lambda: _values("auto", "cpu", "cpu:0", "cpu:1", "cuda", "cuda:0", "cuda:x", "mps", "meta", "xla"),
    "amp": lambda: _values("none", "bf16", "fp16", "auto", "int8"),
    "amp dtype": lambda: _values("bfloat16", "float16", "bf16", "half", "int8"),
    "class subset": lambda: _values("imagenet-r", "imagenet-a", "imagenet-z"),
    "label": lambda: _values("tiny", "ft-320", "a b", "a/b", "..", ".", "☃", "x\ty"),
    "decode": lambda: _values("pil", "device", "nvjpeg"),
    "interpolation": lambda: _values("bicubic", "bilinear", "nearest", "lanczos", "random", "bogus"),
    "data format": lambda: _values("folder", "parquet", "webdataset", "flatval", "saved", "hub", "tfrecord"),
    "metric": lambda: _values("top1", "top5", "nll", "ece", "top3"),
    "channels": lambda: _values("0", "0,1", "1,0", "15", "16", "0,0", "-1", "a,b", "0,,1"),
    "model": lambda: _values("hiera_tiny_224", "hiera_small", "hiera_gigantic", "resnet50", "hiera_tiny_224.bogus"),
    "checkpoint": lambda: _paths(("<ckpt>",)),
    "data": lambda: _paths(("<data>", "hf:nobody/nothing")),
    "run folder": lambda: _paths(("<run>",)),
    "out folder": lambda: _paths(("<new>",), empty=False),
    "labels file": lambda: _paths(("timm",)),
    "flag": lambda: st.sampled_from(["", "on"]),
    "config file": lambda: _config_files(),
}

#: Each command's options and their class (``--compile`` left out: minutes per draw).
COMMANDS: dict[str, dict[str, str]] = {
    "sweep": {"--model": "model", "--res": "sizes", "--schemes": "schemes", "--limit": "count", "--per-class": "count",
              "--batch-size": "batch size", "--workers": "workers", "--save-every": "count", "--global-size": "count",
              "--crop-pct": "share", "--max-failed": "points", "--interpolation": "interpolation", "--device": "device",
              "--amp": "amp", "--decode": "decode", "--data-format": "data format", "--real-labels": "labels file",
              "--checkpoint": "checkpoint", "--data": "data", "--out": "out folder", "--channels-last": "flag",
              "--force": "flag", "--strict": "flag", "--json": "flag", "--label": "label", "--img-size": "single size",
              "--amp-dtype": "amp dtype", "--progress-every": "points", "--plots": "flag",
              "--class-subset": "class subset", "--config": "config file"},
    "inspect": {"--model": "model", "--res": "single size", "--channels": "channels", "--global-size": "count",
                "--checkpoint": "checkpoint", "--out": "out folder"},
    "export": {"--model": "model", "--res": "single size", "--scheme": "scheme", "--global-size": "count", "--checkpoint": "checkpoint",
               "--out": "out folder", "--force": "flag"},
    "check": {"--tol": "points", "--metric": "metric", "--ci": "flag", "--baseline": "run folder",
              "--allow-missing-provenance": "flag", "--json": "flag"},
    "report": {"--out": "out folder", "--label": "label"},
    "compare": {"--at": "single size", "--scheme": "scheme", "--label-a": "label", "--label-b": "label",
                "--json": "flag", "--markdown": "flag"},
}
#: Options every draw of a command sets (to a drawn value): without them the command would reach for the hub.
REQUIRED = {"sweep": ("--checkpoint", "--data", "--out"), "inspect": ("--checkpoint", "--out"),
            "export": ("--checkpoint", "--out", "--res", "--scheme"), "check": ("--baseline",), "report": ("--out",),
            "compare": ()}
#: A draw picks the valid value of a required option this often, so that most draws get past it.
VALID_REQUIRED = 0.8


def _options(command: str) -> st.SearchStrategy[dict[str, str]]:
    @st.composite
    def draw_options(draw) -> dict[str, str]:
        chosen = {}
        for option, kind in COMMANDS[command].items():
            required = option in REQUIRED[command]
            if not required and not draw(st.booleans()):
                continue
            value = draw(CLASSES[kind]())
            if required and draw(st.floats(0, 1)) < VALID_REQUIRED:
                value = {"checkpoint": "<ckpt>", "data": "<data>", "run folder": "<run>", "out folder": "<new>"}.get(
                    kind, value)
            chosen[option] = value
        return chosen

    return draw_options()


def _fill(value: str, places: dict[str, str]) -> str:
    if value == "<new>":
        return _new_folder("hiera-bench-fuzz-out-") + "/out"
    return places.get(value, value)


def _argv(command: str, options: dict[str, str], places: dict[str, str], positional: list[str]) -> list[str]:
    argv = [command, *positional]
    for option, value in options.items():
        if COMMANDS[command][option] == "flag":
            argv += [option] if value else []
        else:
            argv.append(f"{option}={_fill(value, places)}")  # "=": a value may start with "-"
    return argv


@pytest.fixture(scope="module")
def places(tmp_path_factory, full_ckpt, class_folder) -> dict[str, str]:
    """The valid paths a draw may use: the tiny checkpoint, 12 images, and a finished run folder."""
    from fuzzing import run_cli

    run = tmp_path_factory.mktemp("fuzz-options") / "run"
    assert run_cli("sweep", "--checkpoint", full_ckpt, "--data", class_folder, "--out", run, "--res", "64", "-q") == 0
    return {"<ckpt>": str(full_ckpt), "<data>": str(class_folder), "<run>": str(run)}


def _expected_images(options: dict[str, str], total: int = 12, per_class_in_data: int = 4) -> int:
    n = total
    if "--per-class" in options:
        n = 3 * min(int(options["--per-class"]), per_class_in_data)
    if "--limit" in options:
        n = min(n, int(options["--limit"]))
    return n


def _check_sweep(options: dict[str, str], argv: list[str], result) -> None:
    """A sweep that exits 0 measured what its options asked for, on the images they select."""
    out = Path(next(a.split("=", 1)[1] for a in argv if a.startswith("--out=")))
    table = pd.read_csv(out / "results.csv")
    ok = table[table["status"].eq("ok")]
    assert len(ok) and ok["top1"].between(0, 100).all()
    assert ((ok["n_images"] + ok["n_failed"]) == _expected_images(options)).all(), (options, ok)
    if options.get("--json"):
        assert isinstance(json.loads(result.out), list)


SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.filter_too_much])


@SETTINGS
@given(options=_options("sweep"))
def test_random_sweep_options_keep_the_promise(cli, places, options):
    argv = _argv("sweep", options, places, []) + ["-q"]
    result = cli(*argv)
    assert_promise(result, str(options))
    if result.code == 0:
        _check_sweep(options, argv, result)


@SETTINGS
@given(command=st.sampled_from(["inspect", "export", "check", "report", "compare"]), data=st.data())
def test_random_options_of_the_other_commands_keep_the_promise(cli, places, command, data):
    options = data.draw(_options(command))
    positional = {"check": [places["<run>"]], "report": [places["<run>"]],
                  "compare": [places["<run>"], places["<run>"]]}.get(command, [])
    result = cli(*_argv(command, options, places, positional))
    assert_promise(result, f"{command} {options}")
    if result.code == 0:
        assert ("wrote" in result.out or "ok: all" in result.out or options.get("--json")
                or (command == "compare" and "on the same images" in result.out)), result.out


def test_the_classes_cover_every_option_of_every_command():
    """A new option must get a class here, or the fuzz suite would not try it."""
    import typer.main

    from hiera_bench.cli import app
    from hiera_bench.cli import commands  # noqa: F401  (registers the commands)

    group = typer.main.get_command(app)
    for name, options in COMMANDS.items():
        declared = {opt for p in group.commands[name].params for opt in p.opts if opt.startswith("--")}
        assert declared - {"--help", "--compile", "--torchcompile", "--quiet"} - set(options) == set(), name
        assert {kind for kind in options.values()} <= set(CLASSES)
