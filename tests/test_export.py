"""``hiera-bench export``: plain timm loads the export and computes the sweep's logits at that size."""

import json

import pandas as pd
import pytest
import timm
import torch
from safetensors.torch import load_file

from hiera_bench.errors import UserError
from hiera_bench.export import export_model
from hiera_bench.models import build_at_size, load_model
from hiera_bench.posembed import get_scheme, spec_from_model
from hiera_bench.testing import TINY_ARGS, WNIDS, save_checkpoint_folder, tiny_hiera

SIZE = 96


@pytest.fixture(scope="module")
def live_ckpts(tmp_path_factory):
    """Tiny full-grid and abs-win checkpoints with a random classifier (timm's init zeroes it: all logits 0)."""
    folders = {}
    for kind, arch, args in (("full", "hiera_tiny_224", dict(TINY_ARGS)),
                             ("abswin", "hiera_small_abswin_256", dict(TINY_ARGS, global_pos_size=(4, 4)))):
        net = tiny_hiera(arch, img_size=64, num_classes=3, model_args=args)
        with torch.no_grad():
            net.head.fc.weight.normal_(std=1.0)
        folders[kind] = save_checkpoint_folder(net, tmp_path_factory.mktemp(kind) / "ckpt", arch, args,
                                               label_names=sorted(WNIDS))
    return folders


def sweep_model(ckpt, scheme, size):
    """The model the sweep evaluates for ``scheme`` at ``size``, built independently of export.py."""
    loaded = load_model(checkpoint=ckpt)
    spec = spec_from_model(loaded.model, loaded.native_size)
    tokens = (size // 4, size // 4)
    embedding = get_scheme(scheme)(spec, tokens, (tokens[0] // 8, tokens[1] // 8))
    return build_at_size(loaded, size, embedding)


def images(size, n=3):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("kind", ["full", "abswin"])
@pytest.mark.parametrize("scheme", ["interp", "abswin"])
def test_plain_timm_loads_the_export_with_the_sweeps_logits(kind, scheme, live_ckpts, tmp_path):
    ckpt = live_ckpts[kind]
    result = export_model(None, str(SIZE), scheme, checkpoint=ckpt, out=tmp_path / "export")
    assert sorted(p.name for p in result.out.iterdir()) == [".hiera-bench-export", "config.json", "model.safetensors"]
    net = timm.create_model(f"local-dir:{result.out}", pretrained=True).eval()
    x = images(SIZE)
    with torch.no_grad():
        got, want = net(x), sweep_model(ckpt, scheme, SIZE)(x)
    assert got.shape == (3, 3) and got.std().item() > 0.1
    assert (got - want).abs().max().item() <= 1e-5
    other = "interp" if scheme == "abswin" else "abswin"
    with torch.no_grad():
        assert (got - sweep_model(ckpt, other, SIZE)(x)).abs().max().item() > 1e-3  # the scheme matters here
    assert net.pretrained_cfg["input_size"] == (3, SIZE, SIZE)
    assert result.size_change_only == (kind == "abswin" and scheme == "abswin")


def test_the_explicit_file_overlay_call_loads_the_same_model(live_ckpts, tmp_path):
    result = export_model(None, str(SIZE), "abswin", checkpoint=live_ckpts["full"], out=tmp_path / "export")
    cfg = json.loads((result.out / "config.json").read_text())
    args = {k: v for k, v in cfg["model_args"].items() if k not in ("img_size", "abs_win_pos_embed")}
    assert args == {k: list(v) if isinstance(v, tuple) else v for k, v in TINY_ARGS.items()}
    net = timm.create_model(cfg["architecture"], pretrained=True, img_size=SIZE, abs_win_pos_embed=False,
                            num_classes=cfg["num_classes"],
                            pretrained_cfg_overlay=dict(file=str(result.out / "model.safetensors"),
                                                        num_classes=cfg["num_classes"]), **args).eval()
    reference = timm.create_model(f"local-dir:{result.out}", pretrained=True).eval()
    x = images(SIZE)
    with torch.no_grad():
        logits = net(x)
        assert logits.std().item() > 0.1 and torch.equal(logits, reference(x))


def test_config_describes_the_rewritten_model(abswin_ckpt, tmp_path):
    result = export_model(None, "128", "interp", checkpoint=abswin_ckpt, out=tmp_path / "export")
    cfg = json.loads((result.out / "config.json").read_text())
    source = json.loads((abswin_ckpt / "config.json").read_text())
    assert cfg["architecture"] == "hiera_small_abswin_256"
    assert cfg["model_args"]["img_size"] == 128 and cfg["model_args"]["abs_win_pos_embed"] is False
    pre = cfg["pretrained_cfg"]
    assert pre["input_size"] == [3, 128, 128]
    assert pre["crop_pct"] == 0.95  # the source's own crop, not timm's default
    assert (pre["interpolation"], pre["mean"], pre["std"]) == ("bicubic", source["pretrained_cfg"]["mean"],
                                                               source["pretrained_cfg"]["std"])
    assert pre["label_names"] == cfg["label_names"] == source["label_names"]
    assert not {"file", "hf_hub_id", "url", "source"} & set(pre)
    assert cfg["hiera_bench"]["scheme"] == "interp" and cfg["hiera_bench"]["native_size"] == 64
    state = load_file(result.out / "model.safetensors")
    assert state["pos_embed"].shape == (1, 32 * 32, 16) and "pos_embed_win" not in state


def test_schemes_write_different_embeddings_for_a_full_grid_checkpoint(full_ckpt, tmp_path):
    a = export_model(None, str(SIZE), "abswin", checkpoint=full_ckpt, out=tmp_path / "a")
    b = export_model(None, str(SIZE), "interp", checkpoint=full_ckpt, out=tmp_path / "b")
    sa, sb = load_file(a.out / "model.safetensors"), load_file(b.out / "model.safetensors")
    assert not torch.allclose(sa["pos_embed"], sb["pos_embed"])
    assert all(torch.equal(sa[k], sb[k]) for k in sa if k != "pos_embed")


def test_export_of_the_native_size_keeps_the_checkpoint(full_ckpt, tmp_path):
    result = export_model(None, "64", "abswin", checkpoint=full_ckpt, out=tmp_path / "native")
    exported, source = load_file(result.out / "model.safetensors"), load_file(full_ckpt / "model.safetensors")
    assert set(exported) == set(source)
    assert torch.allclose(exported["pos_embed"], source["pos_embed"], atol=1e-6)
    assert all(torch.equal(exported[k], source[k]) for k in source if k != "pos_embed")


def test_sweep_loads_the_export_at_its_new_native_size(cli, full_ckpt, class_folder, tmp_path):
    result = export_model(None, str(SIZE), "abswin", checkpoint=full_ckpt, out=tmp_path / "export")
    loaded = load_model(checkpoint=result.out)
    assert (loaded.native_size, loaded.pos_embed_kind, loaded.num_classes) == (SIZE, "full", 3)
    run = cli("sweep", "--checkpoint", result.out, "--data", class_folder, "--res", str(SIZE),
              "--schemes", "interp", "--out", tmp_path / "run", "-q")
    assert run.code == 0, run.err
    table = pd.read_csv(tmp_path / "run" / "results.csv")
    assert table["native_size"].tolist() == [SIZE] and table["status"].tolist() == ["ok"]


def test_never_clobbers_without_force(full_ckpt, tmp_path):
    out = tmp_path / "export"
    export_model(None, str(SIZE), "interp", checkpoint=full_ckpt, out=out)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(UserError, match="--force"):
        export_model(None, "128", "interp", checkpoint=full_ckpt, out=out)
    assert (out / "model.safetensors").read_bytes() == before
    export_model(None, "128", "interp", checkpoint=full_ckpt, out=out, force=True)
    assert json.loads((out / "config.json").read_text())["model_args"]["img_size"] == 128
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no staging or old copies left


def test_an_empty_target_folder_is_used(full_ckpt, tmp_path):
    (tmp_path / "empty").mkdir()
    result = export_model(None, str(SIZE), "interp", checkpoint=full_ckpt, out=tmp_path / "empty")
    assert (result.out / "model.safetensors").is_file()


@pytest.mark.parametrize("res, message", [
    ("100", "--res: 100 px is not a multiple of 32 (the model's input stride); use 96 or 128"),
    ("64:128:32", "export writes one size"),
    ("abc", "not a positive whole number"),
])
def test_invalid_size_is_a_one_line_error(cli, full_ckpt, tmp_path, res, message):
    result = cli("export", "--checkpoint", full_ckpt, "--res", res, "--scheme", "interp", "-o", tmp_path / "x")
    assert result.code == 2
    assert result.err.startswith("error: ") and message in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_cli_unknown_scheme_and_existing_folder(cli, full_ckpt, tmp_path):
    bad = cli("export", "--checkpoint", full_ckpt, "--res", "96", "--scheme", "bilinear", "-o", tmp_path / "x")
    assert bad.code == 2 and "unknown scheme 'bilinear'" in bad.err
    ok = cli("export", "--checkpoint", full_ckpt, "--res", "96", "--scheme", "interp", "-o", tmp_path / "x")
    assert ok.code == 0, ok.err
    assert f'timm.create_model("local-dir:{(tmp_path / "x").resolve()}", pretrained=True)' in ok.out
    again = cli("export", "--checkpoint", full_ckpt, "--res", "96", "--scheme", "interp", "-o", tmp_path / "x")
    assert again.code == 2 and "already exists" in again.err and "--force" in again.err


def test_abswin_checkpoint_under_abswin_says_it_is_only_a_size_change(cli, abswin_ckpt, full_ckpt, tmp_path):
    run = cli("export", "--checkpoint", abswin_ckpt, "--res", "128", "--scheme", "abswin", "-o", tmp_path / "a")
    assert run.code == 0, run.err
    assert "only a size change" in run.err and "img_size=128" in run.err
    assert (tmp_path / "a" / "model.safetensors").is_file()
    other = cli("export", "--checkpoint", full_ckpt, "--res", "128", "--scheme", "abswin", "-o", tmp_path / "b")
    assert other.code == 0 and "size change" not in other.err


def test_force_replaces_only_an_earlier_export(cli, full_ckpt, tmp_path):
    """``--force`` deleted whatever the folder held (a user's thesis.tex); now it replaces only hiera-bench's own export."""
    export = ["export", "--checkpoint", full_ckpt, "--scheme", "interp", "--force", "-o"]
    paper = tmp_path / "paper"
    paper.mkdir()
    (paper / "thesis.tex").write_text("\\documentclass{article}\n")
    (paper / "model.safetensors").write_bytes(b"someone else's weights")
    refused = cli(*export, paper, "--res", "96")
    lines = refused.err.strip().splitlines()
    assert refused.code == 2 and len(lines) == 1 and "not an export of hiera-bench" in lines[0], refused.err
    assert "thesis.tex" in lines[0]
    assert sorted(p.name for p in paper.iterdir()) == ["model.safetensors", "thesis.tex"]

    ours = tmp_path / "ours"
    assert cli(*export, ours, "--res", "96").code == 0
    assert (ours / ".hiera-bench-export").is_file()
    again = cli(*export, ours, "--res", "128")
    assert again.code == 0, again.err
    assert json.loads((ours / "config.json").read_text())["model_args"]["img_size"] == 128
    assert sorted(p.name for p in ours.iterdir()) == [".hiera-bench-export", "config.json", "model.safetensors"]

    (ours / "notes.md").write_text("results of the 128 px export\n")  # an export the user has written into
    kept = cli(*export, ours, "--res", "96")
    assert kept.code == 2 and "notes.md" in kept.err and (ours / "notes.md").is_file()

    unmarked = tmp_path / "unmarked"  # weights and config alone are no proof of who wrote them
    unmarked.mkdir()
    for name in ("config.json", "model.safetensors"):
        (unmarked / name).write_bytes((ours / name).read_bytes())
    plain = cli(*export, unmarked, "--res", "96")
    assert plain.code == 2 and ".hiera-bench-export" in plain.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours", "paper", "unmarked"]  # no staging left
