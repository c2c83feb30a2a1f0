"""A sweep's options, and the checks that need neither the model nor the data (they fail in milliseconds)."""

from __future__ import annotations

import logging
import numbers
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

import torch

from ..errors import UserError
from ..grid import parse_spec
from ..posembed import Scheme, parse_schemes
from ..untrusted import check_label

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: ``--amp auto`` (a bare ``--amp``): bf16 autocast where it pays (CUDA), fp32 elsewhere.
AUTO_AMP = {"cuda": "bf16"}
DECODERS = ("pil", "device")


@dataclass
class SweepConfig:
    """Everything a sweep needs; the CLI fills it from its options."""

    model: str | None = None
    checkpoint: str | None = None
    res: str | None = None
    schemes: str = "interp,abswin"
    data: str | None = None
    data_format: str | None = None
    out: str | None = None
    batch_size: int | str = "auto"  # "auto": the largest power of two that fits (see runtime.auto_batch_size)
    workers: int | None = None
    device: str = "auto"
    amp: str = "none"
    limit: int | None = None
    per_class: int | None = None
    crop_pct: float | str | tuple[float, ...] | None = None  # one crop_pct or several ("0.875,0.95,1.0")
    interpolation: str | None = None
    global_size: int | None = None
    save_every: int = 2048
    force: bool = False
    strict: bool = False
    channels_last: bool = False
    compile: bool = False
    real_labels: str | None = None
    decode: str = "pil"  # "pil" (timm's, bit-identical) or "device" (torchvision decode_jpeg + resize on the device)
    max_failed: float = 0.01  # share of images that may fail to decode before the sweep is not ok
    command: str = ""
    label: str | None = None  # how reports name this checkpoint's runs; default: the model's name
    root: str = "results"  # where the run folder <root>/<label>/ goes when ``out`` is not given
    data_name: str | None = None  # how reports name this data set (``--data NAME=PATH``)
    class_subset: str | None = None  # imagenet-r, imagenet-a or a wnid file: score over those classes only
    config_file: str | None = None  # the --config TOML its options came from (the command line overriding it)
    plots: bool = True  # draw plots/top1-vs-size.png and top1-vs-gflops.png of the run folder's views

    @property
    def dtype_name(self) -> str:
        return "float32" if self.amp == "none" else self.amp


class Progress(Protocol):
    def start(self, total: int, description: str) -> None: ...

    def advance(self, n: int) -> None: ...

    def log(self, message: str) -> None: ...


class Quiet:
    """A :class:`Progress` that shows nothing."""

    def start(self, total: int, description: str) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def log(self, message: str) -> None:
        pass


class Logged(Quiet):
    """A :class:`Progress` for programs (the library default): no bar; each message a warning of the
    ``hiera_bench`` logger, which Python shows on stderr unless the program configures logging."""

    def log(self, message: str) -> None:
        logging.getLogger("hiera_bench").warning(message)


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _mps_count() -> int:
    return 1 if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else 0


#: Device types a sweep runs on, how many of each this host has, and what to say when there is none.
DEVICE_TYPES: dict[str, tuple[Callable[[], int], str]] = {
    "cpu": (lambda: 1, ""),
    "cuda": (_cuda_count, "no CUDA GPU is visible"),
    "mps": (_mps_count, "Apple MPS is not available here"),
}
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(name: str) -> torch.device:
    """``--device``: auto picks cuda, then mps, then cpu; anything else must be a type of :data:`DEVICE_TYPES`
    that this host has (torch also knows meta, xla, ... on which a sweep cannot run)."""
    if name == "auto":
        return torch.device(next(t for t in ("cuda", "mps", "cpu") if DEVICE_TYPES[t][0]()))
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {name!r} is not a device; use {DEVICE_CHOICES}") from None
    if device.type not in DEVICE_TYPES:
        raise UserError(f"--device {name}: a sweep cannot run on {device.type}; use {DEVICE_CHOICES}")
    count, missing = DEVICE_TYPES[device.type]
    available = count()
    if not available:
        raise UserError(f"--device {name}: {missing}; use --device cpu or auto")
    if device.index is not None and device.index >= available:
        raise UserError(f"--device {name}: this host has {available} {device.type} device(s), numbered from 0")
    return device


def parse_batch_size(value: int | str) -> int | str:
    """``--batch-size``: a positive integer or ``auto``."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        number = _whole(value)
    except (TypeError, ValueError):
        raise UserError(f"--batch-size must be a positive integer or auto, got {value!r}") from None
    if number < 1:
        raise UserError(f"--batch-size must be at least 1, got {number}; or use auto")
    return number


def parse_crops(value: float | str | Sequence[float] | None) -> tuple[float, ...] | None:
    """``--crop-pct``: one fraction or a comma list of distinct ones, each in (0, 1]; None: the checkpoint's."""
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",")] if isinstance(value, str) else (
        [value] if isinstance(value, (int, float)) else list(value))
    crops = []
    for part in parts:
        try:
            crop = float(part)
        except (TypeError, ValueError):
            raise UserError(f"--crop-pct {value!r}: {part!r} is not a number; give fractions like 0.875,0.95,1.0") from None
        if not 0.0 < crop <= 1.0:
            raise UserError(f"--crop-pct must be in (0, 1], got {part}")
        crops.append(crop)
    repeated = first_repeated(crops)
    if repeated is not None:
        raise UserError(f"--crop-pct lists {repeated:g} twice; give each crop once")
    return tuple(crops)


def first_repeated(names: list[str]) -> str | None:
    """The first name (in sorted order) that occurs more than once: each names a run folder."""
    return min((n for n in set(names) if names.count(n) > 1), default=None)


def named_data(values: list[str]) -> list[tuple[str | None, str]]:
    """``--data`` values: ``PATH`` or ``NAME=PATH``; several data sets need distinct names (given, else each
    path's last part)."""
    pairs = []
    for value in values:
        name, sep, path = value.partition("=")
        if sep and name and "/" not in name and not name.startswith("hf:"):
            check_label(name)
            pairs.append((name, path))
        else:
            pairs.append((None, value))
    if len(pairs) > 1:
        pairs = [(name or _named_after(path), path) for name, path in pairs]
        repeated = first_repeated([name for name, _ in pairs])
        if repeated:
            raise UserError(f"two --data sets are both named {repeated!r}; name each, e.g. --data val=/data/val "
                            "--data v2=/data/imagenetv2")
    return pairs


def _named_after(path: str) -> str:
    """An unnamed data set's name among several: its path's last part (a data file's without its suffix, so that its
    run folder is not named like a file)."""
    last = Path(path.rstrip("/"))
    return (last.stem if last.is_file() else last.name) or path


def several(cfg: SweepConfig, models: list[str], checkpoints: list[str], labels: list[str],
            data: list[str] | None = None) -> list[SweepConfig]:
    """One config per checkpoint of ``sweep -m A -m B`` / ``-c X -c Y`` (one model for every checkpoint, or
    paired by order), each labelled (``--label`` in order, else the checkpoint's or model's name) and given
    its own run folder ``<out>/<label>/``; one per data set too with several ``--data NAME=PATH``
    (``<out>/<label>/<name>/``). One model or checkpoint: ``cfg`` itself, ``--out`` its run folder."""
    check_out(cfg.out)  # before it becomes <out>/<label>/ or <out>/<label>/<name>/
    sets = named_data(data or ([cfg.data] if cfg.data else []))
    per_checkpoint = _several_checkpoints(cfg, models, checkpoints, labels)
    if len(sets) <= 1:
        name, path = sets[0] if sets else (None, cfg.data)
        return [replace(c, data=path, data_name=name) for c in per_checkpoint]
    return [replace(c, data=path, data_name=name, out=str(_run_base(c) / name))
            for c in per_checkpoint for name, path in sets]


def _run_base(cfg: SweepConfig) -> Path:
    """The folder a checkpoint's run folders go in when it is swept over several data sets."""
    return Path(cfg.out) if cfg.out else Path(cfg.root) / (cfg.label or _default_label(cfg.model, cfg.checkpoint))


def _several_checkpoints(cfg: SweepConfig, models: list[str], checkpoints: list[str],
                         labels: list[str]) -> list[SweepConfig]:
    models = [m.strip() for arg in models for m in arg.split(",") if m.strip()]
    if len(models) <= 1 and len(checkpoints) <= 1:
        if len(labels) > 1:
            raise UserError(f"{len(labels)} --label for one checkpoint; give one --label per checkpoint")
        return [replace(cfg, model=models[0] if models else None, checkpoint=checkpoints[0] if checkpoints else None,
                        label=labels[0] if labels else None)]
    if checkpoints and len(models) not in (0, 1, len(checkpoints)):
        raise UserError(f"{len(models)} --model for {len(checkpoints)} --checkpoint; give one model for all "
                        "checkpoints or one per checkpoint, in the same order")
    pairs = ([(models[i] if len(models) > 1 else (models[0] if models else None), c) for i, c in enumerate(checkpoints)]
             or [(m, None) for m in models])
    if labels and len(labels) != len(pairs):
        raise UserError(f"{len(labels)} --label for {len(pairs)} checkpoints; give one --label per checkpoint, in order")
    names = labels or [_default_label(m, c) for m, c in pairs]
    repeated = first_repeated(names)
    if repeated:
        raise UserError(f"two checkpoints would share the label {repeated!r} (and its run folder); "
                        "name each with --label, in the order of the checkpoints")
    root = cfg.out or cfg.root
    return [replace(cfg, model=m, checkpoint=c, label=name, out=None, root=root) for (m, c), name in zip(pairs, names)]


def _default_label(model: str | None, checkpoint: str | None) -> str:
    if checkpoint is None:
        return str(model)
    path = Path(checkpoint)
    return path.name if path.is_dir() or not path.suffix else path.stem


#: SweepConfig fields that name files or folders (a ``Path`` is as good as a string; ``~`` is the home folder).
PATH_FIELDS = ("checkpoint", "data", "out", "root", "real_labels", "class_subset", "config_file")
#: SweepConfig fields that hold a whole number (or None), by the option that sets them.
WHOLE_FIELDS = {"limit": "--limit", "per_class": "--per-class", "workers": "--workers",
                "global_size": "--global-size", "save_every": "--save-every"}


def normalised(cfg: SweepConfig) -> SweepConfig:
    """A copy of ``cfg`` in the types the sweep reads, as Python callers naturally give them: paths as ``Path``
    (``~`` expanded), ``res=96`` or ``[224, 256]``, ``schemes=["interp", "abswin"]``; a number that is not whole
    where a count belongs is refused. The caller's config is left as it was."""
    changes: dict[str, Any] = {}
    for name in PATH_FIELDS:
        value = getattr(cfg, name)
        if isinstance(value, os.PathLike) or (isinstance(value, str) and value.startswith("~")):
            changes[name] = os.path.expanduser(os.fspath(value))
    if cfg.res is not None and not isinstance(cfg.res, str):
        try:
            sizes = [cfg.res] if not isinstance(cfg.res, Iterable) else list(cfg.res)
            changes["res"] = ",".join(str(_whole(size)) for size in sizes)
        except (TypeError, ValueError):
            raise UserError(f"--res {cfg.res!r}: give sizes as 224, [224, 256] or a text like '224:352:32'") from None
    if isinstance(cfg.schemes, Iterable) and not isinstance(cfg.schemes, str):
        changes["schemes"] = ",".join(str(v) for v in cfg.schemes)
    for name, option in WHOLE_FIELDS.items():
        value = getattr(cfg, name)
        if value is None or type(value) is int:
            continue
        try:
            changes[name] = _whole(value)  # numpy integers too: run.json is JSON
        except (TypeError, ValueError):
            raise UserError(f"{option} must be a whole number, got {value!r}") from None
    return replace(cfg, **changes)


def _whole(value: Any) -> int:
    """``value`` as an int if it is a whole number (``8``, ``8.0``, ``"8"``); else ValueError/TypeError."""
    if isinstance(value, bool):
        raise TypeError("a bool is not a count")
    if isinstance(value, str):
        return int(value.strip())
    if isinstance(value, numbers.Integral) or (isinstance(value, numbers.Real) and float(value).is_integer()):
        return int(value)
    raise ValueError(f"{value!r} is not a whole number")


#: Endings of the files a run writes (and of tables generally): an ``--out`` so named meant a file, not a folder.
FILE_SUFFIXES = (".csv", ".tsv", ".parquet", ".json", ".jsonl", ".md", ".tex", ".txt", ".html", ".png", ".svg", ".pdf")


def check_out(out: str | os.PathLike | None) -> None:
    """Refuse an ``--out`` named as a file (``-o results.csv``): it is the folder the run's files go in, and
    a folder ``results.csv/`` holding a ``results.csv`` is not what was meant. A folder already so named is used."""
    if out is None:
        return
    path = Path(out)
    if path.suffix.lower() in FILE_SUFFIXES and not path.is_dir():
        raise UserError(f"--out {out} names a file, but --out is the run folder that results.csv, results.parquet, "
                        f"results.md, predictions.parquet and run.json go in; give a folder (e.g. -o "
                        f"{path.with_suffix('')}), or --json to print the table on stdout")


def validate_config(cfg: SweepConfig) -> tuple[list[Scheme], torch.device]:
    """Check every option that needs no model or data and fill ``cfg`` in (:func:`normalised` types, the batch
    size parsed, ``amp="auto"`` resolved); returns the schemes and the device."""
    for name, value in vars(normalised(cfg)).items():
        setattr(cfg, name, value)
    cfg.batch_size = parse_batch_size(cfg.batch_size)
    check_label(cfg.label)
    check_out(cfg.out)
    check_out(cfg.root)
    if cfg.limit is not None and cfg.limit < 1:
        raise UserError(f"--limit must be at least 1, got {cfg.limit}; leave it out to use every image")
    if cfg.per_class is not None and cfg.per_class < 1:
        raise UserError(f"--per-class must be at least 1, got {cfg.per_class}")
    if cfg.workers is not None and cfg.workers < 0:
        raise UserError(f"--workers must be 0 or more, got {cfg.workers}")
    if cfg.save_every < 1:
        raise UserError(f"--save-every must be at least 1, got {cfg.save_every}")
    if cfg.global_size is not None and cfg.global_size < 1:
        raise UserError(f"--global-size must be at least 1, got {cfg.global_size}")
    cfg.crop_pct = parse_crops(cfg.crop_pct)
    if not 0.0 <= cfg.max_failed <= 1.0:
        raise UserError(f"--max-failed must be a percentage from 0 to 100, got {100 * cfg.max_failed:g} "
                        f"(SweepConfig.max_failed={cfg.max_failed:g}: a share from 0 to 1)")
    if cfg.amp not in AMP_DTYPES and cfg.amp != "auto":
        raise UserError(f"--amp {cfg.amp!r}: choose none, bf16 or fp16 (or a bare --amp: bf16 on a CUDA GPU)")
    if cfg.res is not None:
        parse_spec(cfg.res)  # the syntax now; sizes against the model's stride once it is loaded
    if cfg.data_format and cfg.data and cfg.data.startswith("hf:") and cfg.data_format != "hub":
        raise UserError(f"--data {cfg.data} is a hub dataset but --data-format is {cfg.data_format!r}; drop one")
    if cfg.decode not in DECODERS:
        raise UserError(f"--decode {cfg.decode!r}: choose pil (timm's, bit-identical) or device (nvJPEG on a GPU)")
    schemes = parse_schemes(cfg.schemes)
    device = resolve_device(cfg.device)
    if cfg.amp == "auto":
        cfg.amp = AUTO_AMP.get(device.type, "none")
    if cfg.amp == "fp16" and device.type == "cpu":
        raise UserError("--amp fp16 conflicts with a CPU device; use --amp bf16 or none, or --device cuda")
    return schemes, device
