"""Names, safe checkpoint loading (every supported format) and weight sharing across sizes."""

import json
import os
import pickle
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from hiera_bench.errors import UserError
from hiera_bench.geometry import HieraGeometry
from hiera_bench.models import ALIASES, build_at_size, load_model, resolve_name
from hiera_bench.testing import tiny_hiera


def test_aliases_resolve_to_real_pretrained_tags():
    for alias, target in ALIASES.items():
        arch, tag = resolve_name(alias)
        assert f"{arch}.{tag}" == target
        assert target in timm.list_pretrained("hiera_*")


def test_unknown_names_suggest():
    with pytest.raises(UserError, match="did you mean hiera_small"):
        resolve_name("hiera_smal")
    with pytest.raises(UserError, match="no pretrained tag"):
        resolve_name("hiera_small_224.nope")
    with pytest.raises(UserError, match="unknown Hiera model"):
        resolve_name("resnet50")


@pytest.mark.parametrize("arch", ["hiera_tiny_224", "hiera_huge_224", "hiera_small_abswin_256"])
def test_stride_is_derived_from_config(arch):
    with torch.device("meta"):
        assert HieraGeometry.from_model(timm.create_model(arch)).input_stride == 32
        # a 2-stage-q-pool variant would need a different stride: derived, not hard-coded
        assert HieraGeometry.from_model(timm.create_model(arch, mask_unit_size=(4, 4), q_pool=2)).input_stride == 32


def tiny_weights():
    net = tiny_hiera("hiera_tiny_224", img_size=64, num_classes=1000)
    return net, {k: v.contiguous() for k, v in net.state_dict().items()}


def test_load_safetensors_file_with_model_name(tmp_path):
    net, state = tiny_weights()
    save_file(state, tmp_path / "w.safetensors")
    with pytest.raises(UserError, match="does not fit model hiera_tiny_224"):
        load_model("hiera_tiny_224", tmp_path / "w.safetensors")  # default widths != tiny widths


def test_each_format_loads_the_same_weights(tmp_path, full_ckpt):
    reference = load_model(checkpoint=full_ckpt)
    state = reference.model.state_dict()
    folder_cfg = json.loads((full_ckpt / "config.json").read_text())
    # .pth through weights_only, facebookresearch layout (model_state + original key names)
    original = {k.replace("head.fc.", "head.projection.").replace("head.norm.", "norm."): v for k, v in state.items()}
    torch.save({"model_state": original, "epoch": 3}, tmp_path / "fb.pth")
    (tmp_path / "fb").mkdir()
    (tmp_path / "fb" / "config.json").write_text(json.dumps(folder_cfg))
    os.replace(tmp_path / "fb.pth", tmp_path / "fb" / "model.pth")
    loaded = load_model(checkpoint=tmp_path / "fb")
    for key, value in state.items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    assert loaded.native_size == 64 and loaded.pos_embed_kind == "full"


def test_a_timm_training_checkpoint_loads_its_weights(tmp_path):
    """timm's train.py writes model_best.pth.tar: {epoch, arch, state_dict, optimizer, args (an argparse
    Namespace), state_dict_ema}. The name was an unknown file type, and the Namespace stopped weights_only (adv20)."""
    import argparse

    net = timm.create_model("hiera_tiny_224", num_classes=3).eval()
    state = net.state_dict()
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    torch.save({"epoch": 7, "arch": "hiera_tiny_224", "state_dict": state, "state_dict_ema": ema,
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.001, "params": [0]}]}, "version": 2,
                "args": argparse.Namespace(model="hiera_tiny_224", lr=0.001, amp=True, input_size=None),
                "metric": 71.3}, tmp_path / "model_best.pth.tar")
    loaded = load_model("hiera_tiny_224", tmp_path / "model_best.pth.tar")
    for key, value in state.items():  # the trained weights, not the EMA copy
        assert torch.equal(loaded.model.state_dict()[key], value), key
    # timm selects model_best by the EMA's metric when it keeps one: the EMA left aside is said, not silent (adv26)
    assert len(loaded.notes) == 1 and "state_dict_ema" in loaded.notes[0] and "--use-ema" in loaded.notes[0]


@pytest.mark.parametrize("args", [{"img_size": 224, "input_size": None}, {"img_size": None, "input_size": [3, 224, 224]},
                                  {"img_size": [224, 224], "input_size": None}])
def test_an_abswin_training_checkpoint_is_native_at_the_size_it_was_trained_at(tmp_path, args):
    """hiera_small_abswin_256 fine-tuned at 224 px with timm's train.py: its embeddings (a fixed global grid and one
    window) do not say the size, so timm's default (256) was taken as native without a word, every Δ against it and
    interp resampled from its grid (adv26). The training arguments say it, and a note says where it came from."""
    import argparse

    net = timm.create_model("hiera_small_abswin_256", img_size=224, num_classes=3).eval()
    torch.save({"epoch": 3, "arch": "hiera_small_abswin_256", "state_dict": net.state_dict(), "model_ema": {"decay": 0.9},
                "args": argparse.Namespace(model="hiera_small_abswin_256", **args)}, tmp_path / "model_best.pth.tar")
    loaded = load_model("hiera_small_abswin_256", tmp_path / "model_best.pth.tar")
    assert loaded.native_size == 224 and loaded.pos_embed_kind == "abswin"
    assert len(loaded.notes) == 1 and "native size 224 px from model_best.pth.tar's training arguments" in loaded.notes[0]


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_keys_of_a_wrapped_model_load_as_timms(tmp_path, prefix):
    """A state dict saved from DistributedDataParallel (module.) or a torch.compile'd model (_orig_mod.): timm's
    load_checkpoint strips module., so validate.py loads it; it was refused as not fitting the model (adv26)."""
    net = timm.create_model("hiera_tiny_224", num_classes=3).eval()
    state = net.state_dict()
    torch.save({"state_dict": {prefix + k: v for k, v in state.items()}, "epoch": 1}, tmp_path / "ddp.pth.tar")
    loaded = load_model("hiera_tiny_224", tmp_path / "ddp.pth.tar")
    assert loaded.notes == []
    for key, value in state.items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


def test_pickle_with_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "evil.pth", "wb") as fh:
        pickle.dump({"pos_embed": Evil()}, fh)
    with pytest.raises(UserError, match="never unpickles code"):
        load_model("hiera_tiny_224", tmp_path / "evil.pth")
    assert not marker.exists()


def test_mismatched_checkpoint_names_keys(tmp_path, abswin_ckpt):
    with pytest.raises(UserError, match=r"does not fit model hiera_tiny_224: missing .*; unexpected .*shape mismatch pos_embed"):
        load_model("hiera_tiny_224", abswin_ckpt / "model.safetensors")


@pytest.mark.parametrize("bad", ["missing.safetensors", "w.txt"])
def test_bad_paths(tmp_path, bad):
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(UserError):
        load_model("hiera_tiny_224", tmp_path / bad)


def test_corrupt_safetensors(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(UserError, match="w.safetensors is truncated or corrupt"):
        load_model("hiera_tiny_224", tmp_path / "w.safetensors")


def test_a_safetensors_file_named_pth_loads_as_safetensors(tmp_path, full_ckpt):
    """A safetensors file saved under a torch name was refused as "truncated or corrupt; re-download" (adv26): its
    header says what it is. Cut short, it is still named as damaged."""
    data = (full_ckpt / "model.safetensors").read_bytes()
    reference = load_model(checkpoint=full_ckpt).model.state_dict()
    for name in ("model.pth", "pytorch_model.bin"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_bytes((full_ckpt / "config.json").read_bytes())
        (tmp_path / name / name).write_bytes(data)
        loaded = load_model(checkpoint=tmp_path / name)
        for key, value in reference.items():
            assert torch.equal(loaded.model.state_dict()[key], value), key
    (tmp_path / "model.pth" / "model.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="model.pth is truncated or corrupt"):
        load_model(checkpoint=tmp_path / "model.pth")


def _hub_cache_entry(repo: str, filename: str, content: dict) -> Path:
    from huggingface_hub.constants import HF_HUB_CACHE

    root = Path(HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    save_file(content, snap / filename)
    return snap / filename


def test_hub_weights_that_do_not_load_say_so():
    """Cached weights that do not fit the model said "put them in the HF cache and set HF_HUB_OFFLINE=1", which
    the user had done (adv20)."""
    other = timm.create_model("hiera_tiny_224", num_classes=1000, embed_dim=48)
    _hub_cache_entry("timm/hiera_tiny_224.mae_in1k_ft_in1k", "model.safetensors",
                     {k: v.contiguous() for k, v in other.state_dict().items()})
    with pytest.raises(UserError, match=r"the weights of hiera_tiny_224\.mae_in1k_ft_in1k in the HF cache \(.*\) do not "
                                        r"load into it \(.*\); delete its cache entry and download it again"):
        load_model("hiera_tiny_224.mae_in1k_ft_in1k")


def test_hub_path_reads_the_hf_cache_offline():
    net = timm.create_model("hiera_tiny_224", num_classes=1000)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    path = _hub_cache_entry("timm/hiera_tiny_224.mae_in1k_ft_in1k", "model.safetensors", state)
    loaded = load_model("hiera_tiny")
    assert loaded.name == "hiera_tiny_224.mae_in1k_ft_in1k" and loaded.native_size == 224
    assert loaded.license == "cc-by-nc-4.0" and len(loaded.label_names) == 1000
    from hiera_bench.models import file_sha256

    assert loaded.sha256 == file_sha256(path)
    assert torch.equal(loaded.model.pos_embed, state["pos_embed"])


def test_hub_path_not_cached_names_checkpoint_option():
    with pytest.raises(UserError, match="--checkpoint") as info:
        load_model("hiera_base_plus")
    assert "HF cache" in str(info.value)


def test_build_at_size_shares_weights(full_ckpt):
    loaded = load_model(checkpoint=full_ckpt)
    net = build_at_size(loaded, 128, torch.zeros(1, 32 * 32, 16))
    assert net.blocks is loaded.model.blocks and net.head is loaded.model.head
    assert net.patch_embed.proj.weight.data_ptr() == loaded.model.patch_embed.proj.weight.data_ptr()
    own = {p.data_ptr() for p in loaded.model.parameters()}
    new = [n for n, p in net.named_parameters() if p.data_ptr() not in own]
    assert new == ["pos_embed"]
    with pytest.raises(ValueError):
        build_at_size(loaded, 128, torch.zeros(1, 16 * 16, 16))


def _write_checkpoint(folder: Path, source: Path, state: dict[str, torch.Tensor], fmt: str) -> Path:
    """``state`` as a checkpoint folder in one of the local formats, with ``source``'s config.json."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text((source / "config.json").read_text())
    if fmt == "safetensors":
        save_file(state, folder / "model.safetensors")
    elif fmt == "bin":
        torch.save(state, folder / "pytorch_model.bin")
    else:  # facebookresearch: model_state with the original key names, mapped by timm's checkpoint_filter_fn
        original = {k.replace("head.fc.", "head.projection.").replace("head.norm.", "norm."): v
                    for k, v in state.items()}
        torch.save({"model_state": original, "epoch": 3}, folder / "model.pth")
    return folder


def _spoiled(full_ckpt: Path, **changes) -> dict[str, torch.Tensor]:
    """The fixture checkpoint's tensors, with ``changes`` (name -> function of the tensor) applied."""
    from safetensors.torch import load_file

    state = load_file(full_ckpt / "model.safetensors")
    for name, change in changes.items():
        state[name.replace("__", ".")] = change(state[name.replace("__", ".")].clone())
    return state


def _with_nan(count: int):
    def change(t: torch.Tensor) -> torch.Tensor:
        t.view(-1)[:count] = float("nan")
        return t
    return change


def _with_inf(t: torch.Tensor) -> torch.Tensor:
    t.view(-1)[0] = float("-inf")
    return t


@pytest.mark.parametrize("fmt", ["safetensors", "bin", "facebookresearch"])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, full_ckpt, fmt):
    """NaN in the classifier scored a plausible top-1; every local format is checked after loading."""
    state = _spoiled(full_ckpt, head__fc__weight=_with_nan(3), head__fc__bias=_with_inf)
    folder = _write_checkpoint(tmp_path / fmt, full_ckpt, state, fmt)
    with pytest.raises(UserError, match=r"head\.fc\.weight has 3 NaN values.*head\.fc\.bias has 1 inf value") as info:
        load_model(checkpoint=folder)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_integer_weights_are_refused_not_cast(tmp_path, full_ckpt, fmt):
    state = _spoiled(full_ckpt, pos_embed=lambda t: t.round().to(torch.int64),
                     head__fc__bias=lambda t: t > 0)
    folder = _write_checkpoint(tmp_path / fmt, full_ckpt, state, fmt)
    with pytest.raises(UserError, match=r"pos_embed is int64.*float32.*head\.fc\.bias is bool"):
        load_model(checkpoint=folder)


def test_hub_weights_with_nan_are_refused():
    net = timm.create_model("hiera_tiny_224", num_classes=0)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    state["pos_embed"].view(-1)[:2] = float("nan")
    _hub_cache_entry("timm/hiera_tiny_224.mae", "model.safetensors", state)
    with pytest.raises(UserError, match=r"hiera_tiny_224\.mae.*pos_embed has 2 NaN values"):
        load_model("hiera_tiny_224.mae")


def test_hub_weights_of_integers_are_refused_not_cast():
    """timm casts an integer tensor of a hub file into the float model; the loaded net cannot tell (adv20)."""
    net = timm.create_model("hiera_tiny_224", num_classes=0)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    state["pos_embed"] = state["pos_embed"].round().to(torch.int64)
    _hub_cache_entry("timm/hiera_tiny_224.mae", "model.safetensors", state)
    with pytest.raises(UserError, match=r"hiera_tiny_224\.mae.*non-float weights: pos_embed is i64 where the model's "
                                        r"is float32"):
        load_model("hiera_tiny_224.mae")


def test_weights_written_while_being_read_are_refused(tmp_path, full_ckpt, monkeypatch):
    """The cells are keyed by the file's hash, taken after the weights are read: a training job that rewrote the
    file in between would key the old weights' numbers by the new file (adv20)."""
    import hiera_bench.models as models

    read = models._read_state_dict

    def read_then_rewrite(path):
        weights = read(path)
        found = path.stat()
        os.utime(path, ns=(found.st_atime_ns, found.st_mtime_ns + 10**9))  # the job's next save
        return weights

    folder = Path(__import__("shutil").copytree(full_ckpt, tmp_path / "ckpt"))
    monkeypatch.setattr(models, "_read_state_dict", read_then_rewrite)
    with pytest.raises(UserError, match="changed while it was being read"):
        load_model(checkpoint=folder)


@pytest.mark.parametrize("command", ["sweep", "inspect", "export"])
def test_cli_refuses_nan_pos_embed_in_one_line(cli, tmp_path, full_ckpt, class_folder, command):
    """NaN in pos_embed used to crash inside torch.linalg.lstsq (the abswin fit) with a traceback."""
    folder = _write_checkpoint(tmp_path / "ckpt", full_ckpt, _spoiled(full_ckpt, pos_embed=_with_nan(5)), "safetensors")
    args = {
        "sweep": ["--data", class_folder, "--res", "64:96:32", "--device", "cpu", "--quiet", "--out", tmp_path / "run"],
        "inspect": ["--res", "96", "--out", tmp_path / "inspect"],
        "export": ["--res", "96", "--scheme", "abswin", "--out", tmp_path / "export"],
    }[command]
    result = cli(command, "--checkpoint", folder, *args)
    lines = result.err.strip().splitlines()
    assert result.code == 2 and len(lines) == 1, result.err
    assert lines[0].startswith("error: ") and "pos_embed has 5 NaN values" in lines[0], lines[0]


def test_an_abswin_folders_model_args_img_size_is_its_native_size(tmp_path, abswin_ckpt):
    """timm's own export of an abs-win net built at 64 px writes model_args img_size 64 and leaves
    pretrained_cfg.input_size at the architecture's 256, and timm's local-dir builds it at 64. The img_size was
    dropped: native 256, every Δ measured against it and interp@64 resampled from the 256 grid (adv20)."""
    import shutil

    folder = Path(shutil.copytree(abswin_ckpt, tmp_path / "ckpt"))
    config = json.loads((folder / "config.json").read_text())
    config["model_args"]["img_size"] = 64
    config["pretrained_cfg"]["input_size"] = [3, 256, 256]
    (folder / "config.json").write_text(json.dumps(config))
    loaded = load_model(checkpoint=folder)
    assert loaded.native_size == 64 and loaded.model.tokens_spatial_shape == [16, 16]
    del config["model_args"]["img_size"]  # without it, the config's input_size says it
    (folder / "config.json").write_text(json.dumps(config))
    assert load_model(checkpoint=folder).native_size == 256


def _folder_with_config(full_ckpt: Path, to: Path, change) -> Path:
    import shutil

    folder = Path(shutil.copytree(full_ckpt, to))
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


CONFIG_CASES = {  # a config.json value -> what the one-line error names (None: it loads, null is as absent)
    "model_args null": (lambda c: c.update(model_args=None), "does not fit model hiera_tiny_224"),  # the tiny widths gone
    "pretrained_cfg null": (lambda c: c.update(pretrained_cfg=None), None),
    "label_names of ints": (lambda c: c.update(label_names=[0, 1, 2]), "label_names that are not a list of class names"),
    "pretrained_cfg.label_names of ints": (lambda c: c["pretrained_cfg"].update(label_names=[0, 1, 2]),
                                           "pretrained_cfg.label_names that are not"),
    "float input_size": (lambda c: c["pretrained_cfg"].update(input_size=[3, 64.0, 64.0]), "in whole pixels"),
    "zero std": (lambda c: c["pretrained_cfg"].update(std=[0, 0, 0]), "std [0, 0, 0]; it must be 3 numbers above 0"),
    "crop_pct 2": (lambda c: c["pretrained_cfg"].update(crop_pct=2), "crop_pct 2; it must be a number in (0, 1]"),
    "model_name with slashes": (lambda c: c.update(model_name="../../evil"), "model_name '../../evil', which is not a plain name"),
    "absolute model_name": (lambda c: c.update(model_name="/tmp/elsewhere"), "which is not a plain name"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_config_values_are_checked_in_one_line(tmp_path, full_ckpt, case):
    """Each was a traceback (null model_args/pretrained_cfg, label_names of ints, a float input_size), a NaN forward
    (std 0), or a model_name that placed the run folder, exports and figures outside results/ (adv20)."""
    change, error = CONFIG_CASES[case]
    folder = _folder_with_config(full_ckpt, tmp_path / "ckpt", change)
    if error is None:
        assert load_model(checkpoint=folder).native_size == 64
        return
    with pytest.raises(UserError, match=__import__("re").escape(error)) as info:
        load_model(checkpoint=folder)
    assert "\n" not in str(info.value) and ("fit" in error or str(folder / "config.json") in str(info.value))


def test_two_tensors_timm_reads_as_one_are_refused(tmp_path, full_ckpt):
    """timm renames norm.* to head.norm.*: with both in a checkpoint the later won without a word (adv20)."""
    state = load_model(checkpoint=full_ckpt).model.state_dict()
    state["norm.weight"] = torch.zeros_like(state["head.norm.weight"])
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    with pytest.raises(UserError, match="holds both head.norm.weight and norm.weight, which timm reads as one tensor"):
        load_model("hiera_tiny_224", tmp_path / "w.safetensors")


def test_a_folder_timm_itself_saved_loads(tmp_path):
    """timm's save_for_hf writes model_args with num_classes and img_size (num_classes was passed twice: refused
    with advice to re-export, which writes the same file), and label_names by index as a dict (adv21)."""
    from timm.models import save_for_hf

    from hiera_bench.testing import TINY_ARGS

    args = dict(TINY_ARGS, global_pos_size=(2, 2))
    net = timm.create_model("hiera_small_abswin_256", pretrained=False, img_size=64, num_classes=3, **args).eval()
    names = ["n01440764", "n01443537", "n01484850"]
    save_for_hf(net, str(tmp_path / "timm"), model_config={"label_names": {str(i): n for i, n in enumerate(names)}},
                safe_serialization=True)
    written = json.loads((tmp_path / "timm" / "config.json").read_text())
    assert written["model_args"]["num_classes"] == 3 and isinstance(written["label_names"], dict)
    loaded = load_model(checkpoint=tmp_path / "timm")
    assert loaded.native_size == 64 and loaded.num_classes == 3 and loaded.label_names == names
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    written["label_names"] = {"0": names[0], "2": names[2], "5": names[1]}  # indices with gaps: no name per index
    (tmp_path / "timm" / "config.json").write_text(json.dumps(written))
    with pytest.raises(UserError, match="label_names by class index with gaps"):
        load_model(checkpoint=tmp_path / "timm")


def test_a_hub_cache_entry_folder_reads_the_snapshot_refs_main_names(tmp_path, full_ckpt):
    """``-c .../hub/models--timm--NAME`` (refs/, snapshots/<rev>/, blobs/) was refused as a folder without config.json,
    telling the user to pass the weights file (adv26): it reads refs/main's snapshot, else the only one."""
    import shutil

    entry = tmp_path / "models--timm--hiera_tiny_224.mae_in1k_ft_in1k"
    old, new = "1" * 40, "2" * 40
    for rev in (old, new):
        shutil.copytree(full_ckpt, entry / "snapshots" / rev)
    (entry / "blobs").mkdir()
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(new)
    loaded = load_model(checkpoint=entry)
    assert loaded.checkpoint == str(entry / "snapshots" / new / "model.safetensors")
    assert loaded.sha256 == load_model(checkpoint=full_ckpt).sha256
    (entry / "refs" / "main").unlink()
    with pytest.raises(UserError, match=rf"cache entry of 2 snapshots and no refs/main names one; give --checkpoint "
                                        rf"{entry / 'snapshots'}/<revision>"):
        load_model(checkpoint=entry)
    shutil.rmtree(entry / "snapshots" / new)
    assert load_model(checkpoint=entry).checkpoint == str(entry / "snapshots" / old / "model.safetensors")


def test_a_checkpoint_without_a_classifier_names_the_fine_tune_to_use(cli, tmp_path, class_folder):
    """An MAE pretraining checkpoint (0 classes) was told to give a config.json with label_names (adv26): it has no
    classifier to score with. inspect and export, which only rewrite its embedding, still load it."""
    from hiera_bench.testing import TINY_ARGS, save_checkpoint_folder

    net = timm.create_model("hiera_tiny_224", num_classes=0)
    _hub_cache_entry("timm/hiera_tiny_224.mae", "model.safetensors",
                     {k: v.contiguous() for k, v in net.state_dict().items()})
    result = cli("sweep", "-m", "hiera_tiny_224.mae", "--data", class_folder, "--out", tmp_path / "o", "--res", "224")
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert result.err.startswith("error: hiera_tiny_224.mae is a pretraining checkpoint without a classifier (0 "
                                 "classes), so it can score no image; use hiera_tiny_224.mae_in1k_ft_in1k"), result.err
    assert load_model("hiera_tiny_224.mae").num_classes == 0
    headless = timm.create_model("hiera_tiny_224", num_classes=0, img_size=64, **TINY_ARGS)
    folder = save_checkpoint_folder(headless, tmp_path / "mae", "hiera_tiny_224", TINY_ARGS)
    result = cli("sweep", "-c", folder, "--data", class_folder, "--out", tmp_path / "o2")
    assert result.code == 2 and "model.safetensors has no classifier (0 classes: a pretraining checkpoint?)" in \
        result.err and "give a fine-tuned checkpoint" in result.err, result.err
    assert cli("inspect", "-c", folder, "--res", "96", "--out", tmp_path / "i.png").code == 0
