"""``sweep --config grid.toml``: every sweep option from a file CI jobs and papers commit; the command line wins;
run.json records the file and the resolved options; a key sweep does not have is an error naming it."""

from __future__ import annotations

import json

import pandas as pd
import pytest


def _grid(path, text: str):
    path.write_text(text)
    return path


def test_a_grid_file_sweeps_what_the_same_options_would(cli, full_ckpt, abswin_ckpt, class_folder, tmp_path):
    grid = _grid(tmp_path / "grid.toml", f"""
checkpoint = ["{full_ckpt}", "{abswin_ckpt}"]
label = ["tiny", "small"]
res = [64, 96]
schemes = ["interp", "abswin"]
crop-pct = 0.9
data = {{ val = "{class_folder}" }}
device = "cpu"
batch_size = 4
plots = false
quiet = true
""")
    from_file = cli("sweep", "--config", grid, "-o", tmp_path / "file")
    assert from_file.code == 0, from_file.err
    by_hand = cli("sweep", "-c", full_ckpt, "-c", abswin_ckpt, "--label", "tiny", "--label", "small", "--res", "64,96",
                  "--crop-pct", "0.9", "--data", f"val={class_folder}", "--device", "cpu", "-b", "4", "--no-plots", "-q",
                  "-o", tmp_path / "hand")
    assert by_hand.code == 0, by_hand.err
    for label in ("tiny", "small"):
        run = json.loads((tmp_path / "file" / label / "run.json").read_text())
        hand = json.loads((tmp_path / "hand" / label / "run.json").read_text())
        assert run["cells"] == hand["cells"] and run["label"] == label
        assert run["config"]["config_file"] == str(grid.resolve()) and hand["config"]["config_file"] is None
        assert run["config"]["res"] == "64,96" and run["config"]["crop_pct"] == [0.9] and run["config"]["batch_size"] == 4
        assert not (tmp_path / "file" / label / "plots").exists()
        a = pd.read_csv(tmp_path / "file" / label / "results.csv")
        b = pd.read_csv(tmp_path / "hand" / label / "results.csv")
        assert a["top1"].tolist() == b["top1"].tolist()


def test_the_command_line_wins_over_the_file(cli, full_ckpt, class_folder, tmp_path):
    grid = _grid(tmp_path / "grid.toml", f'checkpoint = ["{full_ckpt}"]\ndata = "{class_folder}"\nres = "64,96"\n'
                                         'device = "cpu"\nschemes = "interp"\nplots = false\n')
    result = cli("sweep", "--config", grid, "--res", "64", "--schemes", "interp,abswin", "-q", "-o", tmp_path / "run")
    assert result.code == 0, result.err
    table = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(table["img_size"]) == {64} and set(table["scheme"]) == {"interp", "abswin"}
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["res"] == "64"


@pytest.mark.parametrize("text, message", [
    ("bogus = 1", "unknown key 'bogus'"),
    ("config = 'other.toml'", "unknown key 'config'"),
    ("res = [64,", "is truncated or corrupt"),
    ("limit = 'many'", "limit = \"many\" is not a valid --limit"),
    ("limit = true", "true/false where a value belongs"),
    ("batch-size = 0", "--batch-size must be at least 1"),
])
def test_a_bad_grid_file_is_one_line_naming_the_key(cli, full_ckpt, class_folder, tmp_path, text, message):
    grid = _grid(tmp_path / "grid.toml", text)
    result = cli("sweep", "--config", grid, "-c", full_ckpt, "--data", class_folder, "-o", tmp_path / "run")
    assert result.code == 2 and result.err.count("\n") == 1 and message in result.err, result.err
    assert "Traceback" not in result.err


def test_a_missing_grid_file_is_one_line(cli, tmp_path):
    result = cli("sweep", "--config", tmp_path / "nowhere.toml")
    assert result.code == 2 and result.err.count("\n") == 1 and "nowhere.toml" in result.err, result.err


def test_the_readme_grid_file_reads(cli, tmp_path):
    """README's example parses and maps to options (the sweep then stops at --limit 0, before any download)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    grid = _grid(tmp_path / "grid.toml", block)
    result = cli("sweep", "--config", grid, "--limit", "0", "-o", tmp_path / "run")
    assert result.code == 2 and "--limit must be at least 1" in result.err, result.err


@pytest.mark.parametrize("line, drawn", [("no-plots = true", False), ("no_plots = false", True),
                                         ("plots = false", False), ("plots = true", True)])
def test_a_negative_flag_in_the_file_means_what_it_says(cli, full_ckpt, class_folder, tmp_path, line, drawn):
    grid = _grid(tmp_path / "grid.toml", f'checkpoint = ["{full_ckpt}"]\ndata = "{class_folder}"\nres = "64"\n'
                                         f'device = "cpu"\nschemes = "interp"\nlimit = 3\n{line}\n')
    result = cli("sweep", "--config", grid, "-q", "-o", tmp_path / "run")
    assert result.code == 0, result.err
    assert (tmp_path / "run" / "plots").is_dir() == drawn


@pytest.mark.parametrize("line", ["data = {}", "res = []"])
def test_an_empty_table_or_list_is_refused_not_the_default(cli, tmp_path, line):
    """``data = {}`` in a config file swept the default data set (ImageNet from the hub) without a word (adv24)."""
    config = tmp_path / "sweep.toml"
    config.write_text(line + "\n")
    result = cli("sweep", "--config", config, "--checkpoint", tmp_path / "none")
    assert result.code == 2 and "is not a valid" in result.err and "empty" in result.err, result.err
