"""Hiera models: names and aliases, safe checkpoint loading, and rebuilding a model at any size.

Weights stay in one place: :func:`build_at_size` makes a timm Hiera for ``img_size=R`` on the
meta device and grafts the loaded model's sub-modules into it, so every size shares them and
only the position embedding is new.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from .errors import UserError, listed
from .geometry import HieraGeometry
from .untrusted import (REDOWNLOAD, first_line, is_safetensors, load_safetensors, load_torch_weights, plain_name,
                        read_json, reading, wrong)

#: Short names users type, mapped to the checkpoints they mean.
ALIASES: dict[str, str] = {
    "hiera_tiny": "hiera_tiny_224.mae_in1k_ft_in1k",
    "hiera_small": "hiera_small_224.mae_in1k_ft_in1k",
    "hiera_base": "hiera_base_224.mae_in1k_ft_in1k",
    "hiera_base_plus": "hiera_base_plus_224.mae_in1k_ft_in1k",
    "hiera_large": "hiera_large_224.mae_in1k_ft_in1k",
    "hiera_huge": "hiera_huge_224.mae_in1k_ft_in1k",
    "hiera_small_abswin": "hiera_small_abswin_256.sbb2_e200_in12k_ft_in1k",
}

_DATA_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")
_PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def hiera_architectures() -> list[str]:
    import timm

    return [m for m in timm.list_models("hiera_*") if not m.startswith("hieradet")]


def resolve_name(name: str) -> tuple[str, str | None]:
    """``alias | arch | arch.tag`` -> ``(arch, tag)``; unknown names raise with close matches."""
    import timm

    name = ALIASES.get(name.strip(), name.strip())
    arch, _, tag = name.partition(".")
    archs = hiera_architectures()
    if arch not in archs:
        known = archs + list(ALIASES)
        close = difflib.get_close_matches(arch, known, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "run 'hiera-bench models' to list them"
        raise UserError(f"unknown Hiera model {name!r}; {hint}")
    if tag and name not in timm.list_pretrained(f"{arch}.*"):
        tags = [p.partition(".")[2] for p in timm.list_pretrained(f"{arch}.*")]
        raise UserError(f"model {arch!r} has no pretrained tag {tag!r}; known tags: {', '.join(tags) or 'none'}")
    return arch, tag or None


#: Architecture arguments that change nothing at evaluation (dropout and stochastic depth are off in eval mode).
TRAINING_ONLY_ARGS = frozenset({"drop_path_rate", "drop_rate", "proj_drop_rate", "attn_drop_rate"})


def architecture_digest(model_args: dict[str, Any]) -> str | None:
    """A checkpoint folder's ``model_args`` as part of its cells' identity: None where none changes the net
    evaluated (no arguments, or only training-time ones), so that the same weights as a bare file or a hub model
    are the same cells."""
    relevant = {k: v for k, v in model_args.items() if k not in TRAINING_ONLY_ARGS}
    return args_digest(relevant) if relevant else None


def args_digest(args: dict[str, Any]) -> str:
    """A short stable name of architecture arguments: equal arguments, equal names (lists and tuples alike)."""
    blob = json.dumps(args, sort_keys=True, default=lambda v: list(v) if isinstance(v, (tuple, set)) else str(v))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """Content hash of a state dict (for weights that came without a file we can see)."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


@dataclass
class LoadedModel:
    """A Hiera checkpoint loaded at its native size, with what the benchmark needs to know of it."""

    arch: str
    tag: str | None
    model: nn.Module
    model_kwargs: dict[str, Any]
    pretrained_cfg: dict[str, Any]
    native_size: int
    checkpoint: str
    sha256: str
    label_names: list[str] | None = None
    license: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    display_name: str | None = None
    #: the checkpoint folder's ``model_args`` as :func:`args_digest` names them (they build the net the weights
    #: go into); None: the architecture is timm's for the name (a hub model, a bare weights file)
    model_args: str | None = None
    #: what loading chose that the user should hear (EMA weights left aside)
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The checkpoint folder's ``model_name`` when it has one, else ``arch[.tag]``."""
        if self.display_name:
            return self.display_name
        return f"{self.arch}.{self.tag}" if self.tag else self.arch

    @property
    def geometry(self) -> HieraGeometry:
        return HieraGeometry.from_model(self.model)

    @property
    def stride(self) -> int:
        """Pixels every input side must be a multiple of."""
        return self.geometry.input_stride

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def pos_embed_kind(self) -> str:
        return "abswin" if getattr(self.model, "pos_embed_win", None) is not None else "full"

    def data_config(self) -> dict[str, Any]:
        return {k: self.pretrained_cfg[k] for k in _DATA_KEYS if k in self.pretrained_cfg}


@dataclass(frozen=True)
class TrainedWith:
    """What a training checkpoint says beside its weights: the key of EMA weights it holds beside the ``state_dict``
    read, and the input size its net was built with (timm train.py's ``args.img_size`` / ``args.input_size``)."""

    ema: str | None = None
    img_size: int | None = None


def _trained_size(args: Any) -> int | None:
    """The square input size of a training run's arguments (an argparse Namespace or a dict), if they give one."""
    get = args.get if isinstance(args, dict) else lambda key: getattr(args, key, None)
    size, shape = get("img_size"), get("input_size")
    if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if size is None and isinstance(shape, (list, tuple)) and len(shape) >= 2 and shape[-1] == shape[-2]:
        size = shape[-1]
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def _read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], TrainedWith]:
    """Tensors from a safetensors or weights-only torch file (never runs pickled code), and what a training
    checkpoint says beside them."""
    if path.suffix == ".safetensors" or is_safetensors(path):  # a safetensors file named .pth was "corrupt"
        return _unwrapped(load_safetensors(path)), TrainedWith()
    if path.suffix in _PICKLE_SUFFIXES or path.name.endswith(".pth.tar"):  # timm's train.py: model_best.pth.tar
        obj = whole = load_torch_weights(path)
        for key in ("model_state", "state_dict", "model", "module"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise UserError(f"checkpoint {path} holds no state dict of tensors")
        if not isinstance(whole, dict):
            return _unwrapped(obj), TrainedWith()
        ema = next((key for key in EMA_KEYS if isinstance(whole.get(key), dict) and whole[key] and whole[key] is not obj
                    and all(isinstance(v, torch.Tensor) for v in whole[key].values())), None)
        return _unwrapped(obj), TrainedWith(ema, _trained_size(whole.get("args")))
    raise UserError(
        f"checkpoint {path} has an unknown file type {path.suffix!r}; "
        "use .safetensors, .pth/.pt/.bin/.pth.tar, or a folder with config.json + model.safetensors"
    )


#: Prefixes every key of a state dict saved from a wrapped model carries: DistributedDataParallel's and torch.compile's.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: Where timm's train.py (and others) keep a checkpoint's EMA weights beside ``state_dict``.
EMA_KEYS = ("state_dict_ema", "model_ema", "ema_state_dict", "ema")


def _unwrapped(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` without the :data:`WRAPPER_PREFIXES` all its keys share (as timm's ``clean_state_dict``)."""
    while state_dict:
        prefix = next((p for p in WRAPPER_PREFIXES if all(key.startswith(p) for key in state_dict)), None)
        if prefix is None:
            return state_dict
        state_dict = {key[len(prefix):]: value for key, value in state_dict.items()}
    return state_dict


#: The keys of a checkpoint folder's config.json that hiera-bench reads, and the JSON type each must have.
CONFIG_TYPES: dict[str, type | tuple[type, ...]] = {
    "architecture": str, "model_name": str, "num_classes": int, "model_args": dict, "pretrained_cfg": dict,
    "label_names": (list, dict), "model_card": (dict, str),
}
CONFIG_FIX = "fix it, or re-export the checkpoint folder"


def read_folder_config(cfg_file: Path) -> dict[str, Any]:
    """A checkpoint folder's config.json, its keys checked against :data:`CONFIG_TYPES` (``null`` is as absent)
    and the values hiera-bench uses checked further: a config is untrusted input, like the weights."""
    config = {k: v for k, v in read_json(cfg_file, "checkpoint config", CONFIG_FIX).items() if v is not None}
    for key, kind in CONFIG_TYPES.items():
        if key in config and not isinstance(config[key], kind):
            raise wrong(cfg_file, "checkpoint config", f"has a {type(config[key]).__name__} as {key!r}", CONFIG_FIX)
    pretrained = {k: v for k, v in config.get("pretrained_cfg", {}).items() if v is not None}
    if "pretrained_cfg" in config:
        config["pretrained_cfg"] = pretrained
    for holder in (config, pretrained):  # timm's {class index: name}, written where the indices have gaps
        if isinstance(holder.get("label_names"), dict):
            holder["label_names"] = _names_by_index(holder["label_names"])
    problem = _config_problem(config, pretrained)
    if problem:
        raise wrong(cfg_file, "checkpoint config", problem, CONFIG_FIX)
    return config


def _names_by_index(names: dict[str, Any]) -> list[Any] | None:
    """``{"0": name, "1": name, ...}`` as a list; None unless the keys are exactly the indices 0..n-1."""
    if not all(isinstance(k, str) and k.isdigit() for k in names):
        return None
    by_index = {int(k): v for k, v in names.items()}
    return [by_index[i] for i in range(len(by_index))] if set(by_index) == set(range(len(by_index))) else None


def _config_problem(config: dict[str, Any], pretrained: dict[str, Any]) -> str | None:
    """What is wrong with the values of a checkpoint folder's config.json that hiera-bench uses (None: nothing)."""
    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    name = config.get("model_name")
    if name is not None and not plain_name(name):  # it names the default run folder, exports and figures
        return f"gives model_name {name!r}, which is not a plain name (no slashes, not . or ..)"
    for where, holder in (("label_names", config), ("pretrained_cfg.label_names", pretrained)):
        if "label_names" not in holder:
            continue
        names = holder["label_names"]
        if names is None:  # a dict :func:`_names_by_index` could not read
            return f"has {where} by class index with gaps or non-index keys; it needs a name for every index 0..n-1"
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return f"has {where} that are not a list of class names (strings)"
    size = pretrained.get("input_size")
    if size is not None and not (isinstance(size, list) and len(size) == 3 and all(whole(v) for v in size)):
        return f"has pretrained_cfg.input_size {size!r}; it must be [3, height, width] in whole pixels"
    crop = pretrained.get("crop_pct")
    if crop is not None and not (number(crop) and 0 < crop <= 1):
        return f"has pretrained_cfg.crop_pct {crop!r}; it must be a number in (0, 1]"
    for key in ("mean", "std"):
        values = pretrained.get(key)
        if values is not None and not (isinstance(values, list) and len(values) == 3 and all(number(v) for v in values)
                                       and (key == "mean" or all(v > 0 for v in values))):
            return f"has pretrained_cfg.{key} {values!r}; it must be 3 numbers{' above 0' if key == 'std' else ''}"
    for key in ("interpolation", "crop_mode"):
        if pretrained.get(key) is not None and not isinstance(pretrained[key], str):
            return f"has pretrained_cfg.{key} {pretrained[key]!r}; it must be a name (a string)"
    return None


def _find_weights(folder: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin", "model.pth", "open_clip_model.safetensors"):
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"checkpoint folder {folder} has no model.safetensors (or pytorch_model.bin)")


def _native_size(state_dict: dict[str, torch.Tensor], patch_stride: int, cfg_size: int, built_size: Any) -> int:
    """The size the checkpoint was trained at: a full-grid ``pos_embed``'s grid says it. Abs-win weights do not
    (their embeddings are a fixed global grid and one window), so there it is the ``img_size`` the net was built
    with (config.json ``model_args``: what timm's ``local-dir:`` builds; timm's own export leaves
    ``pretrained_cfg.input_size`` at the architecture's default), else the config's or timm's ``input_size``."""
    pos = state_dict.get("pos_embed")
    if pos is not None and pos.ndim == 3 and "pos_embed_win" not in state_dict:
        side = math.isqrt(pos.shape[1])
        if side * side != pos.shape[1]:
            raise UserError(f"pos_embed with {pos.shape[1]} tokens is not a square token grid")
        return side * patch_stride
    if isinstance(built_size, (list, tuple)) and len(built_size) == 2 and built_size[0] == built_size[1]:
        built_size = built_size[0]
    return built_size if isinstance(built_size, int) and not isinstance(built_size, bool) and built_size > 0 else cfg_size


def headless_reason(loaded: LoadedModel) -> str:
    """Why a checkpoint without a classifier (0 classes: a pretraining checkpoint) cannot be swept, naming what to
    sweep instead: timm's fine-tune of a hub pretraining checkpoint (hiera_tiny_224.mae -> ..mae_in1k_ft_in1k)."""
    import timm

    if not loaded.checkpoint.startswith("hf-hub:"):
        return (f"checkpoint {loaded.checkpoint} has no classifier (0 classes: a pretraining checkpoint?), so it can "
                "score no image; give a fine-tuned checkpoint")
    tags = [n for n in timm.list_pretrained(f"{loaded.arch}.*") if "_ft_" in n]
    tags.sort(key=lambda n: not n.split(".", 1)[1].startswith(f"{loaded.tag}_"))  # this pretraining's fine-tune first
    instead = f"use {' or '.join(tags[:2])}, or" if tags else "pass"
    return (f"{loaded.name} is a pretraining checkpoint without a classifier (0 classes), so it can score no image; "
            f"{instead} --checkpoint of a fine-tuned checkpoint")


def load_model(
    model: str | None = None,
    checkpoint: str | Path | None = None,
) -> LoadedModel:
    """Load a Hiera by name from timm's hub path, or from a local checkpoint (file or hub-style folder)."""
    import timm

    folder_cfg: dict[str, Any] = {}
    weights_path: Path | None = None
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.exists():
            raise UserError(f"--checkpoint {path} does not exist; give a .safetensors/.pth file or a hub-style folder")
        if path.is_dir() and not (path / "config.json").is_file() and (path / "snapshots").is_dir():
            path = checkpoint = _hub_snapshot(path)  # run.json names the snapshot read
        if path.is_dir():
            cfg_file = path / "config.json"
            if not cfg_file.is_file():
                raise UserError(f"checkpoint folder {path} has no config.json; pass the weights file itself")
            folder_cfg = read_folder_config(cfg_file)
            weights_path = _find_weights(path)
        else:
            weights_path = path
        model = model or folder_cfg.get("architecture")
        if not model:
            raise UserError(f"--checkpoint {path}: say which architecture it is with --model (e.g. hiera_small_224)")
    if not model:
        raise UserError("no model given; pass --model (see 'hiera-bench models')")
    arch, tag = resolve_name(model)

    if weights_path is None:
        return _load_from_hub(arch, tag)

    as_read = _file_version(weights_path)
    state_dict, trained = _read_state_dict(weights_path)
    state_dict = _renamed_as_timm(state_dict, weights_path)
    # the native size comes from the weights (img_size), and so does num_classes (the head): timm's own export
    # writes both into model_args
    model_args = {k: v for k, v in folder_cfg.get("model_args", {}).items() if k not in ("img_size", "num_classes")}
    overlay = dict(folder_cfg.get("pretrained_cfg", {}))
    head = state_dict.get("head.fc.weight")
    num_classes = head.shape[0] if head is not None else folder_cfg.get("num_classes", 1000)
    name = f"{arch}.{tag}" if tag else arch
    try:
        with torch.device("meta"):
            probe = timm.create_model(name, pretrained=False, pretrained_cfg_overlay=overlay or None,
                                      num_classes=num_classes, **model_args)
    except Exception as exc:  # timm's reply to model_args it cannot take: any error a config can cause
        if not folder_cfg:
            raise
        raise wrong(Path(checkpoint) / "config.json", "checkpoint config",
                    f"gives {name} arguments timm cannot build it with ({first_line(exc)})", CONFIG_FIX) from exc
    cfg = dict(probe.pretrained_cfg)
    given = folder_cfg.get("model_args", {}).get("img_size")
    built = given or trained.img_size
    native = _native_size(state_dict, probe.patch_stride[0], cfg["input_size"][-1], built)
    notes = [f"{weights_path.name} holds EMA weights too ({trained.ema}); these are the model's own (state_dict), as "
             f"timm's validate.py without --use-ema scores them; to score the EMA, save {trained.ema} as a file of its own"
             ] if trained.ema else []
    if not given and native == trained.img_size != cfg["input_size"][-1] and "pos_embed_win" in state_dict:
        notes.append(f"native size {native} px from {weights_path.name}'s training arguments (its abs-win embeddings "
                     f"do not say; timm's default for {name} is {cfg['input_size'][-1]})")
    cfg["input_size"] = (3, native, native)
    kwargs = dict(model_args, num_classes=num_classes)
    if model_args:
        _check_forward(name, cfg, native, kwargs, Path(checkpoint) / "config.json")
    net = timm.create_model(name, pretrained=False, pretrained_cfg_overlay=cfg, img_size=native, **kwargs)
    _load_strict(net, state_dict, arch, weights_path)
    net.eval()
    label_names = folder_cfg.get("label_names") or cfg.get("label_names")
    sha = file_sha256(weights_path)
    if _file_version(weights_path) != as_read:  # the cells would be keyed by other weights than they measure
        raise UserError(f"checkpoint {weights_path} changed while it was being read (a training job still writing "
                        "it?); run again once it is written")
    return LoadedModel(
        arch=arch, tag=tag, model=net, model_kwargs=kwargs, pretrained_cfg=cfg, native_size=native,
        checkpoint=str(weights_path), sha256=sha,
        label_names=list(label_names) if label_names else _default_labels(num_classes),
        license=cfg.get("license"), extra={"model_card": folder_cfg.get("model_card")} if folder_cfg else {},
        display_name=folder_cfg.get("model_name"),
        model_args=architecture_digest(model_args),
        notes=notes,
    )


def _hub_snapshot(entry: Path) -> Path:
    """The snapshot folder of a Hugging Face cache entry (``models--timm--NAME/`` holding ``refs/``, ``snapshots/<rev>/``
    and ``blobs/``): the one ``refs/main`` names, else its only one."""
    snapshots = entry / "snapshots"
    try:
        main = (entry / "refs" / "main").read_text().strip()
    except (OSError, UnicodeDecodeError):  # no refs/main (a revision fetched by hash), or not a revision
        main = ""
    if main and plain_name(main) and (snapshots / main).is_dir():
        return snapshots / main
    revisions = sorted(d for d in snapshots.iterdir() if d.is_dir())
    if len(revisions) == 1:
        return revisions[0]
    if not revisions:
        raise UserError(f"--checkpoint {entry} is a Hugging Face cache entry with no snapshot; download it again")
    raise UserError(f"--checkpoint {entry} is a Hugging Face cache entry of {len(revisions)} snapshots and no refs/main "
                    f"names one; give --checkpoint {snapshots}/<revision> (e.g. {revisions[-1].name})")


def _timm_names(keys: Iterable[str]) -> dict[str, str]:
    """timm's name of each checkpoint key (its ``checkpoint_filter_fn`` maps older names such as ``norm.*`` onto
    ``head.norm.*``), as {timm's name: the key it came from}; of keys that land on one name, the last."""
    from timm.models.hiera import checkpoint_filter_fn

    return checkpoint_filter_fn({key: key for key in keys})


def _renamed_as_timm(state_dict: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """``state_dict`` with timm's key names. Two tensors that land on one name are refused: the later one would
    win without a word, and the strict key check after the renaming could not see the other."""
    names = _timm_names(state_dict)
    lost = [key for key in state_dict if key not in set(names.values())]
    if lost:
        (twin,) = _timm_names([lost[0]])
        raise UserError(f"checkpoint {source} holds both {lost[0]} and {names[twin]}, which timm reads as one tensor "
                        f"({twin}); keep the one the model was trained with")
    return {new: state_dict[old] for new, old in names.items()}


def _check_forward(name: str, cfg: dict[str, Any], native: int, kwargs: dict[str, Any], cfg_file: Path) -> None:
    """The net a config's ``model_args`` build must run at its native size: tried on the meta device (shapes
    only, no memory or time), so a bad argument is one line, not a traceback in the sweep's first forward."""
    import timm

    with torch.device("meta"):
        trial = timm.create_model(name, pretrained=False, pretrained_cfg_overlay=cfg, img_size=native, **kwargs)
        try:
            trial(torch.empty(1, 3, native, native))
        except Exception as exc:  # noqa: BLE001  (whatever a shape error of the net raises: the config's fault)
            raise wrong(cfg_file, "checkpoint config",
                        f"gives {name} arguments its forward fails with at {native} px ({first_line(exc)})",
                        CONFIG_FIX) from exc


def _default_labels(num_classes: int) -> list[str] | None:
    if num_classes == 1000:
        from timm.data import ImageNetInfo

        return list(ImageNetInfo().label_names())
    return None


def _load_strict(net: nn.Module, state_dict: dict[str, torch.Tensor], arch: str, source: Path | str) -> None:
    own = net.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
        for k in own if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {listed(missing)}")
    if unexpected:
        problems.append(f"unexpected {listed(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch {', '.join(mismatched[:2])}")
    if problems:
        raise UserError(
            f"checkpoint {source} does not fit model {arch}: {'; '.join(problems)}; "
            "check --model (see 'hiera-bench models')"
        )
    check_weights(state_dict, own, source)
    net.load_state_dict(state_dict, strict=True)


def _non_finite(name: str, tensor: torch.Tensor) -> str | None:
    """``"<name> has 3 NaN values, 1 inf value"``, or None for a finite (or non-float) tensor."""
    if not (tensor.is_floating_point() or tensor.is_complex()) or bool(torch.isfinite(tensor).all()):
        return None
    counts = ((int(torch.isnan(tensor).sum()), "NaN"), (int(torch.isinf(tensor).sum()), "inf"))
    return f"{name} has " + ", ".join(f"{n} {what} value{'s' if n != 1 else ''}" for n, what in counts if n)


def check_weights(state_dict: dict[str, torch.Tensor], own: dict[str, torch.Tensor], source: Path | str) -> None:
    """Refuse weights that would score a silently wrong number.

    NaN or inf anywhere gives a plausible top-1 (a NaN classifier row just never wins) or crashes deep in the
    abswin fit; an integer or bool tensor where the model's is floating would be cast by ``load_state_dict``
    without a word. ``own`` is the model's state dict (its dtypes), ``source`` names the checkpoint.
    """
    checked = [(k, state_dict[k]) for k in own if k in state_dict]  # in the model's order
    wrong_type = [
        f"{k} is {str(v.dtype).removeprefix('torch.')} where the model's is {str(own[k].dtype).removeprefix('torch.')}"
        for k, v in checked if own[k].is_floating_point() and not (v.is_floating_point() or v.is_complex())
    ]
    if wrong_type:
        raise UserError(f"checkpoint {source} holds non-float weights: {listed(wrong_type)}; "
                        "hiera-bench does not cast weights: save them as floating point")
    non_finite = [found for k, v in checked if (found := _non_finite(k, v))]
    if non_finite:
        raise UserError(f"checkpoint {source} holds non-finite weights: {listed(non_finite)}; "
                        "the file is corrupt or its training diverged: use another checkpoint")


def _load_from_hub(arch: str, tag: str | None) -> LoadedModel:
    import timm

    name = f"{arch}.{tag}" if tag else arch
    if not tag:
        import timm.models

        default = timm.models.get_pretrained_cfg(arch)
        if default is None or not (default.hf_hub_id or default.url or default.file):
            raise UserError(f"{arch} has no pretrained weights on the hub; pass --checkpoint PATH")
    try:
        net = timm.create_model(name, pretrained=True)
    except Exception as exc:  # hub errors come in many types (offline, gated, missing file)
        from huggingface_hub.constants import HF_HUB_CACHE

        reason = _hub_reason(exc)
        if not _fetch_failed(exc):  # the file is there but does not load: the cache holds something else
            raise UserError(f"the weights of {name} in the HF cache ({HF_HUB_CACHE}) do not load into it ({reason}); "
                            "delete its cache entry and download it again, or pass --checkpoint PATH") from exc
        raise UserError(
            f"cannot get weights for {name} from the Hugging Face hub ({reason}); "
            f"pass --checkpoint PATH, or put them in the HF cache ({HF_HUB_CACHE}) and set HF_HUB_OFFLINE=1"
        ) from exc
    net.eval()
    cfg = dict(net.pretrained_cfg)
    source, state = f"hf-hub:{cfg.get('hf_hub_id') or name}", net.state_dict()
    _check_hub_dtypes(_hub_file(cfg), state, source)  # timm has cast them already: the file's header tells
    check_weights(state, state, source)
    sha = _hub_file_sha(cfg) or state_dict_sha256(state)
    native = cfg["input_size"][-1]
    return LoadedModel(
        arch=arch, tag=cfg.get("tag") or tag, model=net, model_kwargs={"num_classes": net.num_classes},
        pretrained_cfg=cfg, native_size=native, checkpoint=source,
        sha256=sha, label_names=cfg.get("label_names") or _default_labels(net.num_classes),
        license=cfg.get("license"),
    )


def _fetch_failed(exc: BaseException) -> bool:
    """The hub could not give the file (offline, gated, missing, a network error), rather than the file it gave
    failing to load into the model."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    causes = (exc, exc.__cause__, exc.__context__)
    return any(isinstance(c, (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, OSError)) for c in causes)


def _hub_reason(exc: BaseException) -> str:
    """A short cause for a failed hub download, by exception type where the hub library tells it."""
    from huggingface_hub import errors

    for cause in (exc, exc.__cause__, exc.__context__):
        if isinstance(cause, errors.LocalEntryNotFoundError):
            return "not in the local HF cache, and the hub is offline or unreachable"
        if isinstance(cause, errors.GatedRepoError):
            return "the repository is gated: accept its terms on the hub and log in"
        if isinstance(cause, errors.RepositoryNotFoundError):
            return "no such repository on the hub"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:120].rsplit(" ", 1)[0] + " …"


def _file_version(path: Path) -> tuple[int, int]:
    """(size, mtime_ns) of a weights file: a write between reading it and hashing it changes them."""
    found = path.stat()
    return found.st_size, found.st_mtime_ns


def _hub_file(cfg: dict[str, Any]) -> Path | None:
    """The weights file of a hub checkpoint in the HF cache (where timm read it from)."""
    from huggingface_hub import try_to_load_from_cache

    repo = cfg.get("hf_hub_id")
    if not repo:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return Path(found)
    return None


#: safetensors dtypes that are not floating point (timm casts them into a float model without a word).
_NOT_FLOAT = {"BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64"}


def _check_hub_dtypes(path: Path | None, own: dict[str, torch.Tensor], source: str) -> None:
    """The integer or bool tensors of a cached hub safetensors file where the model's are floating point, read
    from its header (timm has loaded and cast them already, so the loaded model cannot tell)."""
    if path is None or path.suffix != ".safetensors":
        return
    from safetensors import safe_open

    with reading(path, "checkpoint", REDOWNLOAD), safe_open(str(path), framework="pt") as found:
        dtypes = {key: found.get_slice(key).get_dtype() for key in found.keys()}
    names = _timm_names(dtypes)
    wrong_type = [f"{new} is {dtypes[old].lower()} where the model's is {str(own[new].dtype).removeprefix('torch.')}"
                  for new, old in names.items() if new in own and own[new].is_floating_point() and dtypes[old] in _NOT_FLOAT]
    if wrong_type:
        raise UserError(f"checkpoint {source} ({path}) holds non-float weights: {listed(wrong_type)}; "
                        "hiera-bench does not cast weights: use float weights")


def _hub_file_sha(cfg: dict[str, Any]) -> str | None:
    found = _hub_file(cfg)
    return file_sha256(found) if found is not None else None


def _has_tensors(module: nn.Module) -> bool:
    return any(True for _ in chain(module.parameters(), module.buffers()))


def build_at_size(loaded: LoadedModel, size: int, pos_embed: torch.Tensor) -> nn.Module:
    """A timm Hiera for ``img_size=size`` that shares every weight of ``loaded`` but the position embedding.

    ``pos_embed`` is the full token-grid embedding ``(1, (size/4)^2, C)`` for that size.
    """
    import timm

    kwargs = dict(loaded.model_kwargs, abs_win_pos_embed=False)
    with torch.device("meta"):
        net = timm.create_model(loaded.arch, pretrained=False, img_size=size, **kwargs)
    for name, child in loaded.model.named_children():
        if _has_tensors(child):
            setattr(net, name, child)
    expected = (1, math.prod(net.tokens_spatial_shape), pos_embed.shape[-1])
    if tuple(pos_embed.shape) != expected:
        raise ValueError(f"pos_embed {tuple(pos_embed.shape)} does not fit size {size} (want {expected})")
    # a copy: the sweep swaps each scheme's embedding into this parameter, which must not write through to the caller's
    net.pos_embed = nn.Parameter(pos_embed.to(next(loaded.model.parameters()).device, copy=True), requires_grad=False)
    net.pos_embed_win = None
    leftover = [n for n, t in chain(net.named_parameters(), net.named_buffers()) if t.is_meta]
    if leftover:
        raise RuntimeError(f"size-dependent tensors not grafted: {leftover[:3]}")
    net.pretrained_cfg = dict(loaded.pretrained_cfg, input_size=(3, size, size))
    return net.eval()
